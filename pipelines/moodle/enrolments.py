"""Who is enrolled in the selected courses, read so that nobody is lost: every list paged to an empty page, a
course where someone of the last run is missing read twice, and every list proved whole against Moodle's own
enrolment counts before anything is loaded.

Moodle reports no unenrolment: a pair missing from a course's latest read is read as having left (and its case
closed), so a list Moodle thinned out for the token's user, or a page that skipped someone, must never be loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from . import webservice
from .client import MoodleClient
from .config import ENROLLED_USERS_PER_REQUEST
from .errors import MoodleAccessError
from .gaps import GAP_LAST_ACCESS, Gaps, ids_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Page:
    """A page of one of a course's two enrolment lists, and whether the page before it came back full."""

    course_id: int
    active_only: bool
    offset: int
    after_full: bool


@dataclass
class Enrolment:
    """One user in one course, as this run read them."""

    course_id: int
    user_id: int
    role_shortnames: Tuple[str, ...]
    role_ids: Tuple[int, ...]
    is_student: bool
    is_active: bool
    lastaccess: Optional[int]  # None: Moodle hid it ("Hide user fields"), which is unknown, not never
    lastcourseaccess: Optional[int]
    group_ids: Tuple[int, ...] = ()


class EnrolmentReader:
    """Reads the enrolments of courses for one run. `known`: course id -> {user id: is_active} as the last loaded
    run read them (it applies with full_refresh too, being about who is enrolled, not what changed)."""

    def __init__(self, client: MoodleClient, gaps: Gaps, student_roles: Sequence[str], page_size: int,
                 known: Optional[Mapping[int, Mapping[int, bool]]] = None) -> None:
        self.client = client
        self.gaps = gaps
        self.student_roles = set(student_roles)
        self.page_size = page_size
        self.known = {int(c): {int(u): bool(a) for u, a in users.items()} for c, users in (known or {}).items()}
        self._reread: Set[int] = set()  # courses read twice to confirm a departure

    def read(self, courses: Sequence[dict]) -> Dict[int, List[Enrolment]]:
        """Every (user, course) pair of `courses`, proved whole, or a MoodleDataGapError naming what to change."""
        by_id = {c["id"]: c for c in courses}
        read = self._read_courses(list(by_id))
        self._check_nobody_left_out(read, by_id)
        self._check_access_times(read)
        if self._reread:
            log.info("Read the enrolments of %d of %d courses twice: members of the last run were missing or "
                     "suspended in the first read (courses %s).", len(self._reread), len(read),
                     ids_text(sorted(self._reread)))
        return read

    def _read_courses(self, course_ids: Sequence[int]) -> Dict[int, List[Enrolment]]:
        """Courses' enrolments; a departure or a suspension counts only once a second read confirms it.

        Moodle pages get_enrolled_users in SQL, ordered by user id, with limitfrom/limitnumber (enrol/externallib.php
        get_enrolled_users): a user unenrolled (or, in the onlyactive list, suspended) from a page already read
        moves everyone after them one place up, so the first user of the next page is never read. Their absence
        would read as an unenrolment (int_moodle__enrolments: missing from the course's latest read) and close
        their case, or as a suspension; the enrolment count cannot tell, having dropped by one too. So a course
        where someone enrolled at the last run is missing, or someone active then reads inactive, is read once
        more, and the two reads merged: every user of either (the second read's row where both have them), active
        if either active list has them. Who is missing from both has left; a departure that raced the first read
        is confirmed by the next run. Only those courses cost a second read.
        """
        members, active = self._read_lists(course_ids)
        again = [cid for cid in course_ids if self._loses_someone(cid, members[cid], active[cid])]
        if again:
            members_again, active_again = self._read_lists(again)
            for cid in again:
                members[cid] = {**members[cid], **members_again[cid]}
                active[cid] |= active_again[cid]
            self._reread.update(again)
        read: Dict[int, List[Enrolment]] = {}
        for cid in course_ids:
            read[cid] = [members[cid][uid] for uid in sorted(members[cid])]
            for e in read[cid]:
                e.is_active = e.user_id in active[cid]
        return read

    def _read_lists(self, course_ids: Sequence[int]) -> Tuple[Dict[int, Dict[int, Enrolment]], Dict[int, Set[int]]]:
        """Both lists of each course (its members by id, a user a shifted page repeats counted once; the ids of the
        active list), each paged until an empty page: Moodle pages in SQL, then drops in PHP the users the caller
        may not see, so a page can come back short in the middle of a list (enrol/externallib.php
        get_enrolled_users). Round by round, every list's next page together, in batches where the service allows
        (client.call_each): a course's pages cost rounds of the whole run, not requests one after another."""
        members: Dict[int, Dict[int, Enrolment]] = {cid: {} for cid in course_ids}
        active: Dict[int, Set[int]] = {cid: set() for cid in course_ids}
        pages = [_Page(cid, active_only, 0, after_full=True) for cid in course_ids for active_only in (False, True)]
        while pages:
            answers = self.client.call_each(
                webservice.FN_ENROLLED_USERS, pages,
                lambda p: webservice.enrolled_users_params(p.course_id, p.offset, self.page_size,
                                                           active_only=p.active_only),
                needs=lambda p: webservice.enrolled_users_needs(p.active_only),
                weight=self._weight, budget=ENROLLED_USERS_PER_REQUEST)
            following = []
            for page, users in answers:
                if not users:
                    continue
                if page.active_only:
                    active[page.course_id].update(int(u["id"]) for u in users)
                else:
                    members[page.course_id].update((int(u["id"]), self._enrolment(page.course_id, u)) for u in users)
                following.append(_Page(page.course_id, page.active_only, page.offset + self.page_size,
                                       after_full=len(users) >= self.page_size))
            pages = following
        return members, active

    def _weight(self, page: _Page) -> int:
        """The users a page is expected to hold, to keep a batch's server time in bounds: a full page, unless the
        page before came back short, which almost always means the list has ended (an empty page is cheap)."""
        return self.page_size if page.after_full else max(1, self.page_size // 4)

    def _enrolment(self, course_id: int, user: Mapping[str, Any]) -> Enrolment:
        """A member as the all-users list shows them (active once the active list is read)."""
        roles = sorted(user.get("roles") or [], key=lambda r: (r.get("sortorder", 0), r.get("roleid", 0)))
        shortnames = tuple(r.get("shortname", "") for r in roles)
        return Enrolment(
            course_id=course_id,
            user_id=int(user["id"]),
            role_shortnames=shortnames,
            role_ids=tuple(int(r.get("roleid", 0)) for r in roles),
            is_student=bool(self.student_roles.intersection(shortnames)),
            is_active=False,
            lastaccess=_time(user.get("lastaccess")),
            lastcourseaccess=_time(user.get("lastcourseaccess")),
            group_ids=tuple(sorted(int(g["id"]) for g in user.get("groups") or [])),
        )

    def _loses_someone(self, course_id: int, members: Mapping[int, Enrolment], active: Set[int]) -> bool:
        """Whether a member of the course at the last loaded run is missing from this read, or was active and is not."""
        return any(uid not in members or (was_active and uid not in active)
                   for uid, was_active in self.known.get(course_id, {}).items())

    # ------------------------------------------------------------------ proving the lists whole
    def _check_nobody_left_out(self, by_course: Dict[int, List[Enrolment]], courses: Mapping[int, dict]) -> None:
        """Moodle leaves out, without a word, users the caller may not see (no moodle/user:viewdetails) and, in a
        separate-groups course, everyone outside the caller's groups. core_enrol_get_users_courses counts a
        course's enrolments without either filter, so one call per few courses proves each list whole."""
        self._check_empty_courses([cid for cid, rows in by_course.items() if not rows])
        counts = self._enrolment_counts(by_course)
        short = {cid: n for cid, n in counts.items() if n > len(by_course[cid])}
        # someone may have enrolled while the run read the lists: read those once more (departures confirmed as ever)
        by_course.update(self._read_courses(list(short)))
        for cid in list(short):
            if len(by_course[cid]) >= short[cid]:
                del short[cid]
        if short:
            separate = [c for c in short if courses[c].get("groupmode") == 1]
            self.gaps.fail(
                "enrolments_hidden",
                "Moodle showed the token's user only part of the enrolments of "
                + "; ".join(f"course {c} ({len(by_course[c])} of {n})" for c, n in sorted(short.items())[:10])
                + ". Loading them would close the cases of everyone left out.",
                "give the role moodle/user:viewdetails"
                + (f" and {webservice.CAP_ALLGROUPS} (courses {ids_text(separate)} use separate groups)"
                   if separate else ""),
            )

    def _check_empty_courses(self, empty: List[int]) -> None:
        """An empty list has nobody to count it through. The grade report lists graded users by other rules: it says
        notingroup where a separate-groups list was emptied for a caller in no group, and lists the students a
        caller without moodle/user:viewdetails was not shown."""

        def report(course_id: int) -> Any:
            try:
                return webservice.grade_report(self.client, course_id)
            except MoodleAccessError as exc:
                if exc.errorcode != "notingroup":
                    raise
                return exc

        for cid, answer in self.client.fan_out(empty, report):
            if isinstance(answer, MoodleAccessError):
                self.gaps.fail("enrolments_hidden",
                               f"Moodle showed the token's user no enrolment of course {cid}, which uses separate "
                               "groups: a user in none of its groups sees nobody.",
                               f"give the role {webservice.CAP_ALLGROUPS}")
            elif answer.get("usergrades"):
                self.gaps.fail("enrolments_hidden",
                               f"Moodle showed the token's user no enrolment of course {cid}, though its grade report "
                               f"lists {len(answer['usergrades'])} students.", "give the role moodle/user:viewdetails")

    def _enrolment_counts(self, by_course: Dict[int, List[Enrolment]]) -> Dict[int, int]:
        """Enrolment counts per course from as few users' course lists as cover every course (greedy). A course
        missing from the chosen user's list (hidden from students, or the user not visible to the caller) is
        asked once more through a teacher of it."""
        courses_of: Dict[int, Set[int]] = {}
        for cid, rows in by_course.items():
            for e in rows:
                courses_of.setdefault(e.user_id, set()).add(cid)
        counts: Dict[int, int] = {}
        uncovered = {cid for cid, rows in by_course.items() if rows}
        rankings = (  # users in most courses first; then the teachers of what is still uncounted
            lambda: sorted(courses_of, key=lambda u: (-len(courses_of[u]), u)),
            lambda: sorted({e.user_id for c in uncovered for e in by_course[c] if not e.is_student}),
        )
        for ranking in rankings:
            chosen = _cover(ranking(), courses_of, uncovered)
            for _, listed in self.client.call_each(webservice.FN_USERS_COURSES, chosen,
                                                   lambda u: webservice.users_courses_params(u, with_counts=True)):
                listed = listed or []
                counts.update({c["id"]: int(c["enrolledusercount"]) for c in listed
                               if c["id"] in by_course and "enrolledusercount" in c})
            uncovered -= set(counts)
            if not uncovered:
                return counts
        self.gaps.warn("enrolments_unverified",
                       f"Moodle gave no enrolment count for courses {ids_text(sorted(uncovered))}, so the run could not "
                       "prove their enrolment lists whole.", "give the role moodle/user:viewdetails")
        return counts

    def _check_access_times(self, by_course: Dict[int, List[Enrolment]]) -> None:
        """"Hide user fields" with lastaccess leaves both access times out unless the role holds
        moodle/course:viewhiddenuserfields: engagement then has nothing to go on."""
        hidden = [e for rows in by_course.values() for e in rows if e.lastcourseaccess is None]
        if hidden:
            self.gaps.report(
                GAP_LAST_ACCESS,
                f"Moodle hid the last access of {len(hidden)} enrolments from the token's user: engagement cannot "
                "tell an inactive student from one who never started, and every run re-reads those courses in full.",
                "give the role moodle/course:viewhiddenuserfields, or take lastaccess out of Site administration > Users "
                "> Permissions > User policies > Hide user fields",
            )


def _cover(candidates: Sequence[int], courses_of: Dict[int, Set[int]], wanted: Set[int]) -> List[int]:
    """Users, in the order given, until their courses cover `wanted`: each chosen one adds a course still missing."""
    chosen, missing = [], set(wanted)
    for uid in candidates:
        if not missing:
            break
        if courses_of[uid] & missing:
            chosen.append(uid)
            missing -= courses_of[uid]
    return chosen


def _time(value: Any) -> Optional[int]:
    return None if value is None else int(value)
