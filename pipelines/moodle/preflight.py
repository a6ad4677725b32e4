"""`moodle-commcare check`, the Moodle half: before a run, what the site and the token's role would make the
extract stop or lose, each with the place to fix it.

It reads a small sample of the selected courses through the extract's own code (the course selection, the
enrolment reader that proves lists whole, the checks of gaps.py), so what it reports is what the extract would
meet, not a second opinion that could drift from it. The sample holds a course with separate groups and one
tracking completion when the selection has them, since that is where a role's missing capability shows. It makes
a few dozen requests whatever the site's size, and changes nothing: every function it calls only reads.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple
from xml.etree import ElementTree

from moodle_commcare.findings import Finding, Status
from moodle_commcare.http_settings import is_loopback

from . import report as participants
from . import webservice
from .client import MoodleClient, RequestStats
from .config import CREDENTIALS_PREFIX, MoodleSettings, env_name
from .enrolments import Enrolment, EnrolmentReader
from .errors import (
    MoodleAccessError,
    MoodleConfigError,
    MoodleError,
    MoodleInvalidTokenError,
    MoodleLoginError,
    MoodleMaintenanceError,
    MoodleTransportError,
)
from .gaps import Gaps, graded_activities, ids_text
from .selection import selected_courses

SYSTEM = "Moodle"
SAMPLE_COURSES = 3  # courses read in full; more only while the sample has no student
MAX_SAMPLE_COURSES = 6
REPORT_SAMPLE_ROWS = 200  # rows of the participants report the check reads and calibrates
PROGRESS_SAMPLE_STUDENTS = 2  # core_enrol_get_users_courses calls that show whether progress is visible
# Moodle releases the connector is tested against (the emulator answers as either: emulators/moodle/site.py)
TESTED = ("4.1", "4.5")
ROLE_PLACE = ("Site administration > Users > Permissions > Define roles > the connector's role (context: System) > "
              "allow {}")

# Each check: its title, and what is lost while it fails (FAIL) or warns (WARN).
CHECKS: Dict[str, Tuple[str, str]] = {
    "moodle.settings": ("Connector settings", "Nothing runs until the settings are fixed."),
    "moodle.site": ("Site answers as a Moodle web service", "Every run stops: CommCare gets no update."),
    "moodle.token": ("Token (or login) accepted", "Every run stops: CommCare gets no update."),
    "moodle.version": ("Moodle version", "Untested behaviour: check the case tables after the first run."),
    "moodle.functions": ("Functions in the external service", "Every run stops before reading anything."),
    "moodle.courses": ("Selected courses readable", "Every run stops."),
    "moodle.completion_settings": ("Courses track completion",
                                   "Activity completion and course progress stay empty: coaches see no progress."),
    "moodle.enrolments": ("Enrolment lists complete (all groups, all users)",
                          "Every run stops: loading a thinned list would close the cases of everyone left out."),
    "moodle.enrolment_status": ("Enrolment status (active or suspended) visible", "Every run stops."),
    "moodle.last_access": ("Last access visible",
                           "Engagement (days since last access, at-risk flags) becomes unknown, and every run re-reads "
                           "those courses in full."),
    "moodle.profiles": ("Student profiles readable", "Every run stops, or students lose their case."),
    "moodle.phones": ("Phone numbers for SMS (Show user identity)",
                      "SMS phones on every student case are empty: coaches cannot send nudges."),
    "moodle.profile_fields": ("Names, email and username", "Those case properties stay empty."),
    "moodle.grades": ("Grade report lists every student", "Every run stops."),
    "moodle.progress": ("Course progress visible", "course_progress_percent stays empty on enrolment cases."),
    "moodle.activity_completion": ("Activity completion readable", "Every run stops."),
    "moodle.contents": ("Course outline readable", "Every run stops."),
    "moodle.assignments": ("Assignments, submissions and extensions readable",
                           "Every run stops (missing submissions cannot be counted)."),
    "moodle.due_dates": ("Per-student due dates (DUE_DATE_OVERRIDES)", "Every run stops."),
    "moodle.participants_report": ("Participants report (PARTICIPANTS_REPORT_ID) reads as English and UTC",
                                   "Every run stops."),
}
# which check a gap (gaps.py, enrolments.py, selection.py) belongs to
GAP_CHECKS = {
    "courses_closed": "moodle.courses",
    "enrolments_hidden": "moodle.enrolments", "enrolments_unverified": "moodle.enrolments",
    "last_access": "moodle.last_access",
    "profiles_hidden": "moodle.profiles", "inactive_profiles_hidden": "moodle.profiles",
    "suspended_hidden": "moodle.profiles",
    "phones": "moodle.phones",
    "names_hidden": "moodle.profile_fields", "emails_hidden": "moodle.profile_fields",
    "usernames_hidden": "moodle.profile_fields",
    "grades_hidden": "moodle.grades",
    "progress_hidden": "moodle.progress",
    "assignments_hidden": "moodle.assignments",
    "outline_incomplete": "moodle.contents",
}
# what is lost while a gap that only warns is left, where it is not what its check's failure loses
GAP_LOSES = {"outline_incomplete": "Those activities, their due dates and their grades stay off students' phones."}
# the functions each probe calls beyond site info (a probe whose function the service lacks is skipped)
PROBE_FUNCTIONS = {
    "moodle.courses": [webservice.FN_COURSES],
    "moodle.enrolments": [webservice.FN_ENROLLED_USERS, webservice.FN_USERS_COURSES],
    "moodle.profiles": [webservice.FN_USERS_BY_FIELD],
    "moodle.grades": [webservice.FN_GRADE_ITEMS],
    "moodle.progress": [webservice.FN_USERS_COURSES],
    "moodle.activity_completion": [webservice.FN_ACTIVITIES_COMPLETION],
    "moodle.contents": [webservice.FN_COURSE_CONTENTS],
    "moodle.assignments": [webservice.FN_ASSIGNMENTS, webservice.FN_SUBMISSIONS, webservice.FN_USER_FLAGS],
    "moodle.due_dates": [webservice.FN_PARTICIPANT],
    "moodle.participants_report": [webservice.FN_RETRIEVE_REPORT, webservice.FN_USERS_COURSES],
}
_CAPABILITY = re.compile(r"\b(?:moodle|report|gradereport|mod|webservice)/[a-z_]+:[a-z_]+\b")


def required_functions(settings: MoodleSettings) -> List[str]:
    """Every function the extract calls with these settings, in the order the README lists them."""
    resources = [r for r in webservice.RESOURCE_FUNCTIONS if r != "assignment_due_dates" or settings.due_date_overrides]
    needed: List[str] = []
    for resource in resources:
        needed += [fn for fn in webservice.RESOURCE_FUNCTIONS[resource] if fn not in needed]
    if settings.participants_report_id:
        needed.append(webservice.FN_RETRIEVE_REPORT)
    return needed


@dataclass
class MoodleCheck:
    """The findings, in CHECKS order, and what the check cost."""

    findings: List[Finding]
    requests: int
    seconds: float
    sampled_courses: List[int] = field(default_factory=list)


class _CollectingGaps(Gaps):
    """The extract's gaps, recorded instead of stopping: a check reports every problem, not the first."""

    def __init__(self, accepted: Iterable[str]) -> None:
        super().__init__(accepted)
        self.problems: Dict[str, List[Tuple[Status, str, str, str]]] = {}  # check id -> (status, code, what, fix)

    def _note(self, status: Status, code: str, what: str, fix: str) -> None:
        self.problems.setdefault(GAP_CHECKS.get(code, "moodle.enrolments"), []).append((status, code, what, fix))

    def fail(self, code: str, what: str, fix: str) -> None:
        self._note(Status.FAIL, code, what, fix)

    def report(self, code: str, what: str, fix: str) -> None:
        if code in self.accepted:
            self._note(Status.WARN, code, f"{what} Accepted ({env_name('allow_hidden')} lists {code!r}).", fix)
        else:
            self._note(Status.FAIL, code, what,
                       f"{fix}; or, to run without it, add {code!r} to {env_name('allow_hidden')}")

    def warn(self, code: str, what: str, fix: str) -> None:
        self._note(Status.WARN, code, what, fix)


class _Checker:
    def __init__(self, settings: MoodleSettings, stats: RequestStats) -> None:
        self.settings = settings
        self.client = MoodleClient(settings, stats=stats)
        self.gaps = _CollectingGaps(settings.allow_hidden)
        self.results: Dict[str, Finding] = {}
        self.functions: Set[str] = set()
        self.courses: List[dict] = []
        self.sample: List[dict] = []
        self.enrolments: Dict[int, List[Enrolment]] = {}
        self.ok_details: Dict[str, str] = {}
        self.due_date_pair: Optional[Tuple[int, int]] = None  # (assignment id, active student) for the due-date probe
        self.graded_activities: Dict[int, Dict[int, str]] = {}  # course -> cmid -> module of its shown grade items

    # ------------------------------------------------------------------ recording
    def set(self, check: str, status: Status, detail: str, fix: str = "", capability: str = "",
            loses: str = "") -> None:
        title, stops = CHECKS[check]
        self.results[check] = Finding(SYSTEM, check, title, status, self.client.redact(detail),
                                      fix=self.client.redact(fix), capability=capability,
                                      loses=(loses or stops) if status in (Status.FAIL, Status.WARN) else "")

    def skip_rest(self, why: str) -> None:
        for check in CHECKS:
            if check not in self.results and self._applies(check):
                self.set(check, Status.SKIPPED, why)

    def _applies(self, check: str) -> bool:
        if check == "moodle.participants_report":
            return bool(self.settings.participants_report_id)
        return check != "moodle.due_dates" or bool(self.settings.due_date_overrides)

    def probe(self, check: str, work: Callable[[], Optional[str]]) -> None:
        """Run one probe: its OK detail, or the error Moodle answered as that check's FAIL."""
        lacking = [fn for fn in PROBE_FUNCTIONS.get(check, []) if fn not in self.functions]
        if lacking:
            self.set(check, Status.SKIPPED, f"Not checked: the service lacks {', '.join(lacking)} (see the functions "
                                            "check).")
            return
        try:
            detail = work()
        except MoodleConfigError as exc:
            self.set(check, Status.FAIL, str(exc), fix=_setting_fix(str(exc)))
            return
        except MoodleAccessError as exc:
            capability = exc.capability or ", ".join(_CAPABILITY.findall(str(exc)))
            self.set(check, Status.FAIL, str(exc), fix=ROLE_PLACE.format(capability) if capability else "",
                     capability=_in_system_context(capability))
            return
        except MoodleError as exc:
            self.set(check, Status.FAIL, str(exc))
            return
        self.ok_details[check] = detail or ""

    def settle(self) -> None:
        """Each probe's outcome: the worst gap recorded for it, else OK with what was read; and the gaps a probe
        found for another check (the course selection's)."""
        others = [c for c in self.gaps.problems if c not in self.ok_details and c not in self.results]
        for check in [*self.ok_details, *others]:
            problems = self.gaps.problems.get(check, [])
            if not problems:
                self.set(check, Status.OK, self.ok_details[check])
                continue
            worst = Status.FAIL if any(p[0] == Status.FAIL for p in problems) else Status.WARN
            shown = [p for p in problems if p[0] == worst]
            capability = ", ".join(dict.fromkeys(c for p in shown for c in _CAPABILITY.findall(p[3])))
            self.set(check, worst, " ".join(p[2] for p in shown), fix="; ".join(dict.fromkeys(p[3] for p in shown)),
                     capability=_in_system_context(capability),
                     loses=next((GAP_LOSES[p[1]] for p in shown if p[1] in GAP_LOSES), ""))

    # ------------------------------------------------------------------ the site and the token
    def site(self) -> bool:
        """Site info: whether the address is a Moodle web service, the token works, and what the service offers."""
        try:
            info = webservice.site_info(self.client)
        except MoodleLoginError as exc:
            self.set("moodle.site", Status.OK, f"{self.settings.base_url} answered login/token.php.")
            self.set("moodle.token", Status.FAIL, str(exc), fix=_login_fix(exc.errorcode))
            return False
        except MoodleInvalidTokenError as exc:
            self.set("moodle.site", Status.OK, f"{self.settings.base_url} answers as a Moodle web service.")
            self.set("moodle.token", Status.FAIL, str(exc),
                     fix="Site administration > Server > Web services > Manage tokens: create a token for the "
                         f"connector's user and service, and set {CREDENTIALS_PREFIX}TOKEN")
            return False
        except MoodleAccessError as exc:
            if exc.errorcode == "http403":  # the REST protocol is off: the server refuses before any token check
                self.set("moodle.site", Status.FAIL, str(exc),
                         fix="Site administration > Server > Web services > Manage protocols: enable REST protocol")
                return False
            self.set("moodle.site", Status.OK, f"{self.settings.base_url} answers as a Moodle web service.")
            self.set("moodle.token", Status.FAIL, str(exc),
                     fix="Site administration > Advanced features: Enable web services; then Site administration > "
                         "Server > Web services > Manage tokens: the token's user, its IP restriction and valid-until "
                         "date; the user must not be suspended and needs webservice/rest:use",
                     capability=_in_system_context("webservice/rest:use"))
            return False
        except MoodleMaintenanceError as exc:
            self.set("moodle.site", Status.FAIL, str(exc),
                     fix="Wait until the site leaves maintenance mode (Site administration > Server > Maintenance "
                         "mode), then check again")
            return False
        except (MoodleTransportError, MoodleError) as exc:
            self.set("moodle.site", Status.FAIL, str(exc),
                     fix=f"{env_name('base_url')}: the site root (the address of Moodle's front page), reachable from "
                         "this machine; web services and the REST protocol enabled in Moodle")
            return False
        # plain http carries the token in clear text, except to this very machine (a tunnel, a test server)
        insecure = self.settings.base_url.startswith("http://") and not is_loopback(self.settings.base_url)
        self.set("moodle.site", Status.WARN if insecure else Status.OK,
                 f"{self.settings.base_url} answers as a Moodle web service ({info.get('sitename') or 'no name'})"
                 + (": over plain http, the token travels in clear text." if insecure else "."),
                 fix=f"serve Moodle over https and unset {env_name('allow_insecure_http')}" if insecure else "",
                 loses="Anyone on the network path can read the token, and the students' data." if insecure else "")
        who = info.get("username") or f"user {info.get('userid')}"
        self.set("moodle.token", Status.OK,
                 f"The token acts as {who}" + (" (a site administrator: it may read more than the job needs)."
                                               if info.get("userissiteadmin") else "."))
        self.version(info)
        self.functions = {f.get("name") for f in info.get("functions") or []}
        missing = [fn for fn in required_functions(self.settings) if fn not in self.functions]
        service = self.settings.login.service if self.settings.login else "the token's service"
        if missing:
            self.set("moodle.functions", Status.FAIL, f"The service lacks {len(missing)} of the functions the run "
                                                      f"calls: {', '.join(missing)}.",
                     fix=f"Site administration > Server > Web services > External services > {service} > Functions: "
                         f"add {', '.join(missing)}")
        else:
            from .client import BATCH_FUNCTION

            batching = (f" So is {BATCH_FUNCTION}: per-student calls go {self.settings.call_batch_size} to a request, "
                        "enrolment pages and course outlines several courses' to a request."
                        if BATCH_FUNCTION in self.functions else
                        f" {BATCH_FUNCTION} is not: every call is a request of its own (add it to the service "
                        "for a first run several times faster against a far-away site).")
            self.set("moodle.functions", Status.OK, f"All {len(required_functions(self.settings))} functions the run "
                                                    "calls are in the service." +
                     (batching if self.settings.call_batch_size > 1 else ""))
        return True

    def version(self, info: Mapping[str, Any]) -> None:
        release = str(info.get("release") or "")
        found = re.match(r"\s*(\d+)\.(\d+)", release)
        if not found:
            self.set("moodle.version", Status.WARN, f"Moodle reported no release ({release!r}).",
                     fix="check that the address is a Moodle site")
            return
        version = (int(found.group(1)), int(found.group(2)))
        low, high = (tuple(map(int, v.split("."))) for v in (TESTED[0], TESTED[-1]))
        said = f"Moodle {release.strip()}."
        if version < low:
            self.set("moodle.version", Status.WARN,
                     f"{said} Older than {TESTED[0]}, the oldest release the connector is tested with: before 4.1 "
                     "Moodle showed phones to roles that see hidden user fields, and answers may differ in shape.",
                     fix="upgrade Moodle to a supported release (4.1 LTS or later)")
        elif version > high:
            self.set("moodle.version", Status.WARN,
                     f"{said} Newer than {TESTED[-1]}, the newest release the connector is tested with.",
                     fix="run the extract on a copy first and compare the case tables; report differences")
        else:
            self.set("moodle.version", Status.OK,
                     f"{said} Tested. Phones reach the token only through Show user identity (from 4.1 on); error "
                     + ("class names are namespaced (core\\exception, 4.5)." if version >= (4, 5) else
                        "class names are plain (before 4.5)."))

    # ------------------------------------------------------------------ the probes
    def select_courses(self) -> str:
        self.courses = selected_courses(self.client, self.settings, lambda: webservice.categories(self.client),
                                        self.gaps)
        if not self.courses:
            raise MoodleConfigError(
                "The settings select no course the token's user can see: nothing would be loaded, and the export "
                "would find every case gone.")
        closed = {c["id"] for c in self.courses if "visible" not in c or "format" not in c}
        self.sample = sample_courses([c for c in self.courses if c["id"] not in closed], SAMPLE_COURSES)
        scope = (f"{env_name('course_ids')}" if self.settings.course_ids else
                 f"{env_name('category_ids')}" if self.settings.category_ids else "every course the token can open")
        return f"{len(self.courses)} courses selected ({scope})."

    def completion_settings(self) -> None:
        """Whether the selection tracks completion at all (core_course_get_courses_by_field shows enablecompletion to
        anyone who may enter a course): without it the engagement columns built on completion stay empty."""
        if "moodle.courses" not in self.ok_details:
            return
        readable = [c for c in self.courses if "visible" in c]
        tracked = [c["id"] for c in readable if c.get("enablecompletion")]
        if readable and not tracked:
            self.set("moodle.completion_settings", Status.WARN,
                     f"None of the {len(readable)} selected courses tracks completion.",
                     fix="Site administration > Advanced features: Enable completion tracking; then in each course, "
                         "Settings > Completion tracking: Yes, and completion conditions on its activities")
            return
        self.set("moodle.completion_settings", Status.OK, f"{len(tracked)} of {len(readable)} selected courses track "
                                                          "completion.")

    def read_enrolments(self) -> str:
        """The sample's enrolments, read and proved whole as the extract does; more courses while none has a student."""
        reader = EnrolmentReader(self.client, self.gaps, self.settings.student_roles, self.settings.page_size)
        self.enrolments = reader.read(self.sample)
        spare = [c for c in self.courses if c not in self.sample and "visible" in c and "format" in c]
        while spare and len(self.sample) < MAX_SAMPLE_COURSES and not self.students():
            course = spare.pop(0)
            self.sample.append(course)
            self.enrolments.update(reader.read([course]))
        pairs = sum(len(rows) for rows in self.enrolments.values())
        grouped = [c["id"] for c in self.sample if c.get("groupmode") == 1]
        return (f"Read {pairs} enrolments of courses {ids_text([c['id'] for c in self.sample])} (a sample of "
                f"{len(self.courses)}" + (f"; course {grouped[0]} uses separate groups" if grouped else "")
                + "): each list matches Moodle's own enrolment count.")

    def enrolment_status(self) -> None:
        """The active list needs moodle/course:enrolreview: the enrolment probe already asked for it."""
        if "moodle.enrolments" in self.ok_details:
            active = sum(1 for rows in self.enrolments.values() for e in rows if e.is_active)
            self.set("moodle.enrolment_status", Status.OK,
                     f"{active} of {sum(len(r) for r in self.enrolments.values())} sampled enrolments read as active.")
        elif "moodle.enrolment_status" not in self.results:
            failed = self.results.get("moodle.enrolments")
            if failed is not None and webservice.CAP_ENROLREVIEW in failed.capability:
                self.results["moodle.enrolment_status"] = Finding(
                    SYSTEM, "moodle.enrolment_status", CHECKS["moodle.enrolment_status"][0], Status.FAIL, failed.detail,
                    fix=ROLE_PLACE.format(webservice.CAP_ENROLREVIEW),
                    capability=_in_system_context(webservice.CAP_ENROLREVIEW), loses=CHECKS["moodle.enrolment_status"][1])
                self.results["moodle.enrolments"] = Finding(
                    SYSTEM, "moodle.enrolments", failed.title, Status.SKIPPED,
                    "Not checked whole: the active list was refused (see enrolment status).")
            else:
                self.set("moodle.enrolment_status", Status.SKIPPED, "Not checked: the enrolment lists could not be read.")

    def last_access(self) -> None:
        if "moodle.enrolments" in self.ok_details and "moodle.last_access" not in self.gaps.problems:
            self.ok_details["moodle.last_access"] = "Every sampled enrolment shows its last access."

    def students(self) -> Set[int]:
        return {e.user_id for rows in self.enrolments.values() for e in rows if e.is_student}

    def active_students(self, course_id: int) -> List[int]:
        return sorted(e.user_id for e in self.enrolments.get(course_id, []) if e.is_student and e.is_active)

    def profiles(self) -> str:
        ids = sorted({e.user_id for rows in self.enrolments.values() for e in rows})[: self.settings.user_batch_size]
        students = self.students()
        found = webservice.users_by_id(self.client, ids) if ids else []
        missing = sorted(set(ids) - {int(u["id"]) for u in found})
        seen: Counter[str] = Counter(k for u in found if int(u["id"]) in students for k, v in u.items()
                                     if v is not None and v != "")
        active = {e.user_id for rows in self.enrolments.values() for e in rows if e.is_active}
        self.gaps.check_profiles(missing, seen, sum(1 for i in ids if i in students), active)
        with_phone = sum(1 for u in found if int(u["id"]) in students and (u.get("phone1") or u.get("phone2")))
        sampled = sum(1 for i in ids if i in students)
        if "phones" not in {p[1] for p in self.gaps.problems.get("moodle.phones", [])}:
            self.ok_details["moodle.phones"] = f"{with_phone} of {sampled} sampled students' profiles show a phone."
        if not self.gaps.problems.get("moodle.profile_fields"):
            self.ok_details["moodle.profile_fields"] = "Names, email and username are visible."
        return f"Read {len(found)} of {len(ids)} sampled users' profiles (one request)."

    def grades(self) -> str:
        graded = [c for c in self.sample if self.active_students(c["id"])]
        for course, report in self.client.fan_out(graded, lambda c: webservice.grade_report(self.client, c["id"])):
            self.gaps.check_grade_report(course, report, set(self.active_students(course["id"])))
            self.graded_activities[course["id"]] = graded_activities(report)
        return f"The grade reports of {len(graded)} sampled courses list every active student."

    def progress(self) -> str:
        tracked = {c["id"] for c in self.sample if c.get("enablecompletion")}
        chosen: List[int] = []
        for cid in sorted(tracked):
            chosen += [u for u in self.active_students(cid) if u not in chosen][:1]
        chosen = chosen[:PROGRESS_SAMPLE_STUDENTS]
        tracked_rows = with_progress = 0
        for _, listed in self.client.fan_out(chosen, lambda u: webservice.users_courses(self.client, u,
                                                                                        with_counts=False)):
            rows = [c for c in listed if c["id"] in tracked]
            tracked_rows += len(rows)
            with_progress += sum(1 for c in rows if c.get("progress") is not None)
        self.gaps.check_progress(tracked_rows, with_progress)
        return (f"Progress shows for {with_progress} of {tracked_rows} sampled enrolments in tracked courses."
                if tracked_rows else "No sampled student is in a completion-tracked course: not checked.")

    def activity_completion(self) -> str:
        tracked = [c for c in self.sample if c.get("enablecompletion") and self.active_students(c["id"])]
        tracked.sort(key=lambda c: c.get("groupmode") != 1)  # a separate-groups course shows a missing accessallgroups
        if not tracked:
            return "No sampled course tracks completion: not checked."
        course = tracked[0]
        student = self.active_students(course["id"])[0]
        answer = webservice.activities_completion(self.client, course["id"], student)
        return (f"Read {len(answer.get('statuses') or [])} activities' completion of a student in course "
                f"{course['id']}.")

    def contents(self) -> str:
        """The outline of a sampled course, compared with the activities its grade report shows: Moodle leaves out of
        get_course_contents every activity whose mod/<type>:view the caller lacks (cm_info::
        is_user_access_restricted_by_capability), without a word, and then it cannot reach students' phones."""
        course = next((c for c in self.sample if self.graded_activities.get(c["id"])), self.sample[0])
        sections = webservice.course_contents(self.client, course["id"])
        listed = {int(m["id"]) for s in sections for m in s.get("modules") or []}
        self.gaps.check_outline(course["id"], self.graded_activities.get(course["id"], {}), listed)
        return f"Read course {course['id']}'s outline: {len(sections)} sections, {len(listed)} activities."

    def assignments(self) -> str:
        found = self._assignments_of([c["id"] for c in self.sample])
        if not found:  # none in the sample: one more call over other courses, so mod/assign:grade is still tried
            others = [c["id"] for c in self.courses if c not in self.sample][: webservice.COURSES_PER_ASSIGNMENTS_CALL]
            found = self._assignments_of(others) if others else []
        if not found:
            return "No assignment in the selected courses yet: submissions not checked."
        assignment_ids = [aid for _, aid in found][: webservice.ASSIGNMENTS_PER_CALL]
        # `since` now: Moodle checks the caller's rights on every assignment and sends back (nearly) no submission
        self.gaps.check_grading_answer(webservice.FN_SUBMISSIONS,
                                       webservice.submissions(self.client, assignment_ids, int(time.time())))
        self.gaps.check_grading_answer(webservice.FN_USER_FLAGS, webservice.user_flags(self.client, assignment_ids))
        self.due_date_pair = next(((aid, student) for cid, aid in found for student in self.active_students(cid)[:1]),
                                  None)
        return f"Read {len(found)} assignments; their submissions and extensions are readable."

    def _assignments_of(self, course_ids: List[int]) -> List[Tuple[int, int]]:
        """(course id, assignment id) of these courses' assignments; the courses Moodle refused are gaps."""
        answer = webservice.assignments(self.client, course_ids)
        self.gaps.check_assignments_answer(answer.get("warnings") or [])
        return [(c["id"], a["id"]) for c in answer.get("courses") or [] for a in c.get("assignments") or []]

    def participants_report(self) -> str:
        """The report's first page, read and calibrated as the extract does (report.py): its source, its five
        columns under their English headings, and its cells against a few students' own answers."""
        report_id = int(self.settings.participants_report_id or 0)
        answer = participants.retrieve(self.client, report_id, 0, REPORT_SAMPLE_ROWS)
        rows = participants.Columns(report_id, answer).rows(report_id, [answer])
        tracked = [c["id"] for c in self.courses if c.get("enablecompletion")]
        compared = participants.calibrate(self.client, report_id, rows, sorted(rows), tracked)
        total = int(answer["data"].get("totalrowcount") or 0)
        return (f"Report {report_id} ({(answer.get('details') or {}).get('name')!r}) lists {total:,} rows; its first "
                f"{len(rows)} read as English and UTC" + (f" (compared with {compared}'s own values)." if compared
                                                          else ", with no enrolment to compare yet."))

    def due_dates(self) -> str:
        if self.due_date_pair is None:
            return "No assignment with an active student in the sample: not checked."
        assignment_id, student = self.due_date_pair
        webservice.participant(self.client, assignment_id, student)
        return "A student's own due date is readable (mod_assign_get_participant)."


def check_moodle(settings: MoodleSettings, stats: Optional[RequestStats] = None) -> MoodleCheck:
    """Every check against the site these settings name, as Findings in CHECKS order."""
    stats = stats or RequestStats()
    started = time.monotonic()
    checker = _Checker(settings, stats)
    checker.set("moodle.settings", Status.OK, f"Settings read: {settings.base_url}, "
                + ("a token." if settings.token else f"a login for service {settings.login.service!r}."
                   if settings.login else "no credentials."))
    if checker.site():
        checker.probe("moodle.courses", checker.select_courses)
        checker.completion_settings()
        if checker.sample:
            checker.probe("moodle.enrolments", checker.read_enrolments)
            checker.enrolment_status()
            checker.last_access()
            if "moodle.enrolments" in checker.ok_details:
                checker.probe("moodle.profiles", checker.profiles)
                checker.probe("moodle.grades", checker.grades)
                checker.probe("moodle.progress", checker.progress)
                checker.probe("moodle.activity_completion", checker.activity_completion)
            checker.probe("moodle.contents", checker.contents)
            checker.probe("moodle.assignments", checker.assignments)
            if settings.due_date_overrides and "moodle.assignments" in checker.ok_details:
                checker.probe("moodle.due_dates", checker.due_dates)
        if settings.participants_report_id:
            checker.probe("moodle.participants_report", checker.participants_report)
        checker.settle()
        checker.skip_rest("Not checked: an earlier check failed (see above).")
    else:
        checker.skip_rest("Not checked: Moodle did not accept the connection (see above).")
    findings = [checker.results[c] for c in CHECKS if c in checker.results]
    return MoodleCheck(findings, stats.total_requests, time.monotonic() - started,
                       [c["id"] for c in checker.sample])


def check_configured_moodle(**options: Any) -> MoodleCheck:
    """The checks against the configured site ([sources.moodle], SOURCES__MOODLE__*; `options` win, as with
    run_extract): settings that cannot be read are the first finding, and nothing is sent."""
    try:
        settings = MoodleSettings.from_dlt(**options)
    except MoodleConfigError as exc:
        title, loses = CHECKS["moodle.settings"]
        failed = [Finding(SYSTEM, "moodle.settings", title, Status.FAIL, str(exc), fix=_setting_fix(str(exc)),
                          loses=loses)]
        return MoodleCheck(failed + [Finding(SYSTEM, c, CHECKS[c][0], Status.SKIPPED, "Not checked: the settings "
                                             "could not be read.") for c in CHECKS if c not in ("moodle.settings",
                                                                                                "moodle.due_dates")],
                           0, 0.0)
    return check_moodle(settings)


def sample_courses(courses: Sequence[dict], size: int) -> List[dict]:
    """Up to `size` courses, in id order: the first with separate groups (its enrolment list, grade report and
    completion need moodle/site:accessallgroups), the first with visible groups (its grade report shows one group
    without it), the first other tracking completion, then the first others."""
    chosen: List[dict] = []
    for wanted in (lambda c: c.get("groupmode") == 1, lambda c: c.get("groupmode") == 2,
                   lambda c: bool(c.get("enablecompletion"))):
        pick = next((c for c in courses if wanted(c) and c not in chosen), None)
        if pick is not None and len(chosen) < size:
            chosen.append(pick)
    chosen += [c for c in courses if c not in chosen][: max(0, size - len(chosen))]
    return sorted(chosen, key=lambda c: c["id"])


def _in_system_context(capability: str) -> str:
    return f"{capability} (System context)" if capability else ""


def _setting_fix(message: str) -> str:
    names = re.findall(r"\b(?:SOURCES__MOODLE__[A-Z_]+)\b", message)
    where = ", ".join(dict.fromkeys(names)) if names else "the [sources.moodle] settings"
    return f"{where} in .dlt/config.toml, .dlt/secrets.toml or the environment"


def _login_fix(errorcode: Optional[str]) -> str:
    return {
        "invalidlogin": f"{CREDENTIALS_PREFIX}USERNAME and {CREDENTIALS_PREFIX}PASSWORD: the connector user's login",
        "servicenotavailable": (f"{CREDENTIALS_PREFIX}SERVICE: the external service's short name; Site administration > "
                                "Server > Web services > External services > the service > Authorised users (if "
                                "restricted): add the connector's user"),
        "enablewsdescription": "Site administration > Advanced features: Enable web services",
        "cannotcreatetoken": ("Site administration > Users > Permissions > Define roles > the connector's role: allow "
                              "moodle/webservice:createtoken"),
        "sitemaintenance": "wait until the site leaves maintenance mode, then check again",
    }.get(str(errorcode), "the username, password and service")


def role_preset(login: bool = False) -> str:
    """The connector's Moodle role as a role preset file, which Moodle reads on the "Add a new role" page
    (admin/roles/classes/preset.php parse_preset, validated by admin/roles/role_schema.xml): a System role that
    allows exactly webservice.ROLE_CAPABILITIES (with `login`, also what login/token.php needs)."""
    role = ElementTree.Element("role")
    for tag, text in (("shortname", "commcaresync"), ("name", "CommCare sync (read-only)"),
                      ("description", "Read-only role of the moodle-commcare connector's web-service user, assigned at "
                                      "system level."), ("archetype", "")):
        ElementTree.SubElement(role, tag).text = text
    ElementTree.SubElement(ElementTree.SubElement(role, "contextlevels"), "level").text = "system"
    for tag in ("allowassign", "allowoverride", "allowswitch"):
        ElementTree.SubElement(role, tag)
    permissions = ElementTree.SubElement(role, "permissions")
    for capability in sorted(webservice.ROLE_CAPABILITIES + ((webservice.CAP_CREATETOKEN,) if login else ())):
        ElementTree.SubElement(permissions, "allow").text = capability
    ElementTree.indent(role)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(role, encoding="unicode") + "\n"
