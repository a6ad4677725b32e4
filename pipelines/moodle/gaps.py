"""Data Moodle leaves out for this token's user, and what the run does about it.

Moodle answers a caller who may not see something by leaving it out: a field absent, a user skipped, one
group instead of all. Loaded as it is, that reads as "no phone", "never accessed" or "unenrolled", and the
export would clear phones or close cases. So every gap the run can detect either stops the run, naming the
capability or setting to change, or (for the gaps a site may choose, listed in ACCEPTABLE_GAPS and
accepted with SOURCES__MOODLE__ALLOW_HIDDEN) is recorded: in the `access_gaps` table, which the dbt models
read to mark the affected values unknown, and in the run log. The checks on what the run read are here too;
those on enrolment lists are in enrolments.py, the one on the course list in selection.py.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Collection, Dict, Iterable, List, Mapping, Sequence

from .errors import MoodleDataGapError
from .webservice import CAP_ALLGROUPS

logger = logging.getLogger("moodle_commcare.moodle")

# Gaps a run may be told to accept (SOURCES__MOODLE__ALLOW_HIDDEN): data Moodle hides that the run then leaves out.
GAP_PHONES = "phones"
GAP_LAST_ACCESS = "last_access"
ACCEPTABLE_GAPS = (GAP_PHONES, GAP_LAST_ACCESS)
# Fields the cases can do without: loaded empty when hidden, with a warning (the README lists them).
GAP_NAMES, GAP_EMAILS, GAP_USERNAMES, GAP_PROGRESS = "names_hidden", "emails_hidden", "usernames_hidden", "progress_hidden"
# which gaps each table's rows of access_gaps carry
ENROLMENT_GAPS = (GAP_LAST_ACCESS, "enrolments_unverified")
PROFILE_GAPS = (GAP_PHONES, GAP_NAMES, GAP_EMAILS, GAP_USERNAMES, "inactive_profiles_hidden")
PROGRESS_GAPS = (GAP_PROGRESS,)
GAP_OUTLINE = "outline_incomplete"  # activities with grades that the outline leaves out (mod/<type>:view missing)
OUTLINE_GAPS = (GAP_OUTLINE,)


@dataclass(frozen=True)
class Gap:
    code: str
    what: str
    fix: str
    accepted: bool

    def row(self) -> Dict[str, object]:
        return {"code": self.code, "what": self.what, "fix": self.fix, "accepted": self.accepted}


class Gaps:
    def __init__(self, accepted: Iterable[str]) -> None:
        self.accepted = set(accepted)
        self._lock = threading.Lock()
        self._found: Dict[str, Gap] = {}

    def fail(self, code: str, what: str, fix: str) -> None:
        """A gap no setting makes acceptable: the run stops."""
        raise MoodleDataGapError(f"{what} To fix: {fix}; then run again.", code=code, fix=fix)

    def report(self, code: str, what: str, fix: str) -> None:
        """A gap the site may choose to live with: stops the run unless SOURCES__MOODLE__ALLOW_HIDDEN lists it."""
        if code not in self.accepted:
            accepted = json.dumps(sorted(self.accepted | {code}))
            raise MoodleDataGapError(
                f"{what} To fix: {fix}; or, to load without it, set SOURCES__MOODLE__ALLOW_HIDDEN='{accepted}'.",
                code=code, fix=fix)
        self._record(Gap(code, what, fix, accepted=True))

    def warn(self, code: str, what: str, fix: str) -> None:
        """A field the cases can do without (the README lists them): loaded empty, and said so."""
        self._record(Gap(code, what, fix, accepted=False))

    def _record(self, gap: Gap) -> None:
        with self._lock:
            if gap.code not in self._found:
                logger.warning("%s (%s)", gap.what, gap.fix)
            self._found[gap.code] = gap

    @property
    def found(self) -> List[Gap]:
        with self._lock:
            return sorted(self._found.values(), key=lambda g: g.code)

    # ------------------------------------------------------------------ checks of what the run read
    def check_profiles(self, missing: Sequence[int], seen: Mapping[str, int], students: int,
                       active: Collection[int]) -> None:
        """core_user_get_users_by_field skips users the caller may not see, and each profile field follows its own
        rule (user/lib.php user_get_user_details): absent is hidden, or empty, never said which. `missing`: ids
        asked for and not answered; `seen`: how many students' profiles show each field; `active`: the users with
        an active enrolment."""
        lost = sorted(set(missing) & set(active))
        if lost:
            self.fail(
                "profiles_hidden",
                f"Moodle returned no profile for {len(lost)} enrolled users (ids {ids_text(lost)}).",
                "give the role moodle/user:viewdetails and moodle/user:viewhiddendetails at system level",
            )
        if missing:  # a course role sees profiles through active enrolments only (user_get_user_details_courses)
            self.warn(
                "inactive_profiles_hidden",
                f"Moodle returned no profile for {len(missing)} users whose enrolments are all suspended or ended "
                f"(ids {ids_text(missing)}): their cases close from the enrolment alone.",
                "give the role moodle/user:viewdetails at system level",
            )
        if not students:
            return
        if not seen.get("suspended"):  # always set (true or false) unless "Hide user fields" lists it
            self.fail(
                "suspended_hidden",
                "No profile says whether the account is suspended: suspended students' cases would stay open.",
                "give the role moodle/user:viewhiddendetails, or take suspended out of Hide user fields",
            )
        if not (seen.get("phone1") or seen.get("phone2")):
            self.report(
                GAP_PHONES,
                f"None of the {students} students' profiles shows a phone number: Moodle shows phone1 and phone2 only "
                "to a site admin, or when \"Show user identity\" lists them and the role holds "
                "moodle/site:viewuseridentity. SMS phones would all come out empty.",
                "add phone1 and phone2 to Site administration > Users > Permissions > User policies > Show user "
                "identity, and give the role moodle/site:viewuseridentity (if your students really have no phone "
                "numbers, accept the gap)",
            )
        for field_name, code, fix in (
            ("firstname", GAP_NAMES, "give the role moodle/site:viewfullnames"),
            ("email", GAP_EMAILS, "add email to Show user identity and give the role moodle/site:viewuseridentity"),
            ("username", GAP_USERNAMES, "give the role moodle/user:viewalldetails"),
        ):
            if not seen.get(field_name):
                self.warn(code, f"No student profile shows a {field_name}: that column stays empty.", fix)

    def check_progress(self, tracked_rows: int, with_progress: int) -> None:
        """Course progress comes only with report/completion:view (completion_can_view_data)."""
        if tracked_rows and not with_progress:
            self.warn(GAP_PROGRESS,
                      f"Moodle gave no course progress for any of {tracked_rows} enrolments in completion-tracked "
                      "courses: course_progress_percent stays empty.", "give the role report/completion:view")

    def check_outline(self, course_id: int, graded: Mapping[int, str], listed: Collection[int]) -> None:
        """get_course_contents leaves out, without a word, every activity whose mod/<type>:view the caller lacks
        (lib/modinfolib.php cm_info::is_user_access_restricted_by_capability); the grade report still shows its grade
        item. Such activities cannot reach students' phones: loaded without, and said so."""
        missing = {cmid: module for cmid, module in graded.items() if cmid not in listed}
        if missing:
            kinds = sorted(set(missing.values()))
            self.warn(GAP_OUTLINE, f"{len(missing)} graded activities of course {course_id} ({', '.join(kinds)}) are "
                      "missing from its outline: the role lacks " + " / ".join(f"mod/{k}:view" for k in kinds)
                      + ", or a restriction hides them entirely.",
                      "give the role " + ", ".join(f"mod/{k}:view" for k in kinds))

    def check_grade_report(self, course: Mapping[str, Any], report: Mapping[str, Any], expected: Collection[int]) -> None:
        """The grade report lists the active students of one group only, when the caller lacks accessallgroups
        in a course with groups (a web-service call's active group is the first; lib/grouplib.php). `expected`:
        the course's active students."""
        listed = {int(u["userid"]) for u in report.get("usergrades") or []}
        missing = set(expected) - listed
        if missing and report.get("usergrades") is not None:
            grouped = bool(course.get("groupmode"))
            self.fail(
                "grades_hidden",
                f"Moodle's grade report for course {course['id']} left out {len(missing)} of its {len(expected)} active "
                f"students (user ids {ids_text(sorted(missing))}).",
                f"give the role {CAP_ALLGROUPS}" if grouped else
                "check that their role is a graded role (Site administration > Grades > General settings > Graded "
                "roles), or set SOURCES__MOODLE__STUDENT_ROLES to the roles that are",
            )

    def check_assignments_answer(self, warnings: Sequence[Mapping[str, Any]]) -> None:
        """mod_assign_get_assignments names the courses and modules it refused in its warnings."""
        courses = [w.get("itemid") for w in warnings if w.get("item") == "course"]
        modules = [w.get("itemid") for w in warnings if w.get("item") == "module"]
        if courses:
            self.fail("assignments_hidden",
                      f"mod_assign_get_assignments refused courses {ids_text(courses)} (not enrolled, no access).",
                      "give the role moodle/course:view")
        if modules:
            self.fail("assignments_hidden",
                      f"mod_assign_get_assignments refused assignments with course module ids {ids_text(modules)}.",
                      "give the role mod/assign:view")

    def check_grading_answer(self, function: str, answer: Mapping[str, Any]) -> None:
        """get_submissions and get_user_flags answer an assignment the caller may not grade with warning 1."""
        refused = [w.get("itemid") for w in answer.get("warnings") or [] if str(w.get("warningcode")) == "1"]
        if refused:
            self.fail("assignments_hidden", f"{function} refused assignments {ids_text(refused)}.",
                      "give the role mod/assign:grade")


def ids_text(values: Sequence[Any]) -> str:
    """The first ten ids, and how many more."""
    shown = ", ".join(str(v) for v in list(values)[:10])
    return shown + (f" and {len(values) - 10} more" if len(values) > 10 else "")


def graded_activities(report: Mapping[str, Any]) -> Dict[int, str]:
    """cmid -> module type of the activities whose grade items a course's grade report shows (hidden ones not)."""
    return {int(i["cmid"]): str(i.get("itemmodule") or "") for u in report.get("usergrades") or []
            for i in u.get("gradeitems") or [] if i.get("cmid") and not i.get("gradeishidden")}
