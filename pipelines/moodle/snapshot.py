"""What one extraction run knows about the site, shared by all resources.

Several resources hang off the same expensive calls (the course list, the enrolment pages of every
course), so those are made once per run and cached here. This is also where incrementality is decided:
Moodle has no "changed since" filter for enrolments, grades, completion or course contents, but it does
record when each user last touched the site and each course. Anything that can change a student's
progress, a grade or a course's contents happens through someone's access (a student's attempt, a
teacher's grading or editing), so per-student and per-course detail is re-fetched only where an access
time moved past that course's watermark from the previous run.

It is also where the run refuses to load data Moodle silently thinned out for this token's user (see
gaps.py): a run either loads what the cases need or stops naming the capability or setting to change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from . import settings
from .client import MoodleClient
from .config import MoodleSettings
from .errors import MoodleAccessError, MoodleConfigError, MoodleFunctionNotAvailableError
from .gaps import Gaps
from .params import options_list

log = logging.getLogger(__name__)

COURSE_MARKS_KEY = "course_watermarks"
SUBMISSION_SINCE_KEY = "submission_since"
# state of runs before per-course watermarks: read once, so an upgrade does not re-fetch everything
LEGACY_WATERMARK_KEY = "activity_watermark"
LEGACY_KNOWN_COURSES_KEY = "known_courses"


@dataclass
class Enrolment:
    course_id: int
    user_id: int
    role_shortnames: Tuple[str, ...]
    role_ids: Tuple[int, ...]
    is_student: bool
    is_active: bool
    lastaccess: Optional[int]  # None: Moodle hid it ("Hide user fields"), which is unknown, not never
    lastcourseaccess: Optional[int]
    group_ids: Tuple[int, ...] = ()


@dataclass
class Watermark:
    """The latest access time seen in a course, plus the keys seen exactly at it (so a tie is not lost)."""

    at: int = -1
    keys: Set[str] = field(default_factory=set)

    def is_after(self, when: int, key: str) -> bool:
        return when > self.at or (when == self.at and key not in self.keys)

    def observe(self, when: int, key: str) -> None:
        if when > self.at:
            self.at, self.keys = when, {key}
        elif when == self.at:
            self.keys.add(key)

    def copy(self) -> "Watermark":
        return Watermark(self.at, set(self.keys))

    def to_state(self) -> Dict[str, Any]:
        return {"at": self.at, "keys": sorted(self.keys)}

    @classmethod
    def from_state(cls, value: Any) -> Optional["Watermark"]:
        if not isinstance(value, dict) or "at" not in value:
            return None
        return cls(at=int(value["at"]), keys=set(value.get("keys") or ()))


@dataclass
class Cursor:
    """A course's `since` for mod_assign_get_submissions, with the ids seen at that very second: Moodle's filter is
    `timemodified >= since`, so those come again and are skipped."""

    since: int = 0
    ids: Set[int] = field(default_factory=set)

    @classmethod
    def after(cls, since: int, seen: Set[int], rows: Sequence[Dict[str, Any]], horizon: int) -> "Cursor":
        """The cursor past `rows`; a row stamped beyond `horizon` (the future) does not move it."""
        rows = [r for r in rows if int(r["timemodified"] or 0) <= horizon]
        newest = max([since, *(int(r["timemodified"] or 0) for r in rows)])
        at_newest = {int(r["id"]) for r in rows if int(r["timemodified"] or 0) == newest}
        return cls(newest, at_newest | set(seen) if newest == since else at_newest)

    def to_state(self) -> List[Any]:
        return [self.since, sorted(self.ids)]

    @classmethod
    def from_state(cls, value: Any) -> "Cursor":
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return cls(int(value[0]), {int(i) for i in value[1]})
        return cls(int(value or 0))


def previous_marks(state: Dict[str, Any], full_refresh: bool) -> Dict[int, Watermark]:
    """Each course's watermark from the last run that read it. A run limited to some courses moves only theirs,
    so grading in another course is still found by the next full run."""
    if full_refresh:
        return {}
    marks = {int(k): m for k, v in (state.get(COURSE_MARKS_KEY) or {}).items() if (m := Watermark.from_state(v))}
    legacy = Watermark.from_state(state.get(LEGACY_WATERMARK_KEY))
    if not marks and legacy is not None:
        marks = {int(c): legacy.copy() for c in state.get(LEGACY_KNOWN_COURSES_KEY) or ()}
    return marks


class MoodleSnapshot:
    """One run's view of the site, shared by all resources: the course list and enrolments are read once,
    and the watermarks decide which per-course and per-student calls the run makes."""
    def __init__(self, client: MoodleClient, config: MoodleSettings, state: Dict[str, Any],
                 known_enrolments: Optional[Mapping[int, Mapping[int, bool]]] = None) -> None:
        """`known_enrolments`: course id -> {user id: is_active} as the last loaded run read them (see
        `_course_enrolments`); it applies with full_refresh too, being about who is enrolled, not what changed."""
        self.client = client
        self.config = config
        self.state = state
        self.known = {int(c): {int(u): bool(a) for u, a in users.items()}
                      for c, users in (known_enrolments or {}).items()}
        self._reread: Set[int] = set()  # courses read twice to confirm a departure (filled from fan_out threads)
        self._reread_lock = threading.Lock()
        self.extracted_at = datetime.now(timezone.utc)
        self.horizon = int(self.extracted_at.timestamp()) + settings.CLOCK_SKEW_SECONDS
        self.previous = previous_marks(state, config.full_refresh)
        self.gaps = Gaps(config.allow_hidden)
        self._lock = threading.RLock()
        self._site_info: Optional[dict] = None
        self._categories: Optional[List[dict]] = None
        self._courses: Optional[List[dict]] = None
        self._enrolments: Optional[Dict[int, List[Enrolment]]] = None
        self._enrolments_refused: Optional[BaseException] = None
        self._assignments: Optional[List[dict]] = None

    # ------------------------------------------------------------------ site
    def site_info(self) -> dict:
        with self._lock:
            if self._site_info is None:
                self._site_info = self.client.call(settings.FN_SITE_INFO)
            return self._site_info

    def require(self, resource: str) -> None:
        """Fail before extracting when the token's service lacks a function this resource calls."""
        available = {f.get("name") for f in self.site_info().get("functions") or []}
        missing = [fn for fn in settings.RESOURCE_FUNCTIONS[resource] if fn not in available]
        if missing:
            raise self.client._fail(MoodleFunctionNotAvailableError(
                f"The Moodle web service behind this token lacks {', '.join(missing)}, needed for the "
                f"'{resource}' table. Add it to the service (Site administration > Server > Web services > "
                "External services > Functions).",
                function=missing[0], errorcode="functionmissing",
            ))

    # ------------------------------------------------------------------ catalogue
    def categories(self) -> List[dict]:
        with self._lock:
            if self._categories is None:
                self._categories = list(self.client.call(settings.FN_CATEGORIES, {"addsubcategories": 1}) or [])
            return self._categories

    def courses(self) -> List[dict]:
        """Selected courses, asked for in the scope the token may read: by id, by category, or all it can open."""
        with self._lock:
            if self._courses is None:
                if self.config.course_ids:
                    answers = [self._courses_by_field("ids", ",".join(map(str, self.config.course_ids)))]
                elif self.config.category_ids:
                    wanted = sorted(self._categories_with_descendants(self.config.category_ids))
                    answers = [a for _, a in self.client.fan_out(wanted, lambda c: self._courses_by_field("category", c))]
                else:
                    answers = [self._courses_by_field("", "")]
                courses = {c["id"]: c for a in answers for c in a.get("courses") or [] if c["id"] != settings.SITE_COURSE_ID}
                if self.config.course_ids:
                    missing = sorted(set(self.config.course_ids) - set(courses))
                    if missing:
                        raise MoodleConfigError(
                            f"SOURCES__MOODLE__COURSE_IDS names courses Moodle does not have, or hides from the token's "
                            f"user: {missing}. Remove them from the setting, or give the role "
                            "moodle/course:viewhiddencourses if they are hidden courses."
                        )
                self._courses = sorted(courses.values(), key=lambda c: c["id"])
                self._refuse_courses_it_cannot_open(self._courses)
            return self._courses

    def _courses_by_field(self, field_name: str, value: Any) -> dict:
        return self.client.call(settings.FN_COURSES, {"field": field_name, "value": value})

    def _refuse_courses_it_cannot_open(self, courses: Sequence[dict]) -> None:
        """core_course_get_courses_by_field answers a course the user may not enter with its public part only
        (no `format`, no `visible`): its enrolments, grades and contents would all be refused later."""
        closed = [c["id"] for c in courses if "visible" not in c or "format" not in c]
        if closed:
            self.gaps.fail(
                "courses_closed",
                f"The token's user cannot open {len(closed)} of the selected courses ({_ids(closed)}): Moodle "
                "shows it their public description only.",
                "give the role moodle/course:view at system level (or on their category), or limit the run with "
                "SOURCES__MOODLE__COURSE_IDS / CATEGORY_IDS to the courses it can open",
            )

    def _categories_with_descendants(self, roots: Tuple[int, ...]) -> Set[int]:
        categories = self.categories()
        known = {c["id"] for c in categories}
        unknown = sorted(set(roots) - known)
        if unknown:
            raise MoodleConfigError(
                f"SOURCES__MOODLE__CATEGORY_IDS names categories Moodle does not have, or hides from the token's user: "
                f"{unknown}. Remove them, or give the role moodle/category:viewhiddencategories if they are hidden."
            )
        wanted = set(roots)
        for category in categories:
            path_ids = {int(p) for p in str(category.get("path", "")).split("/") if p}
            if path_ids & set(roots):
                wanted.add(category["id"])
        return wanted

    def course(self, course_id: int) -> dict:
        return next(c for c in self.courses() if c["id"] == course_id)

    # ------------------------------------------------------------------ enrolments
    def enrolments(self) -> Dict[int, List[Enrolment]]:
        """Every (user, course) pair of the selected courses, fetched once per run for all resources."""
        with self._lock:
            if self._enrolments_refused is not None:  # every resource that needs them fails the same way
                raise self._enrolments_refused
            if self._enrolments is None:
                read = {c["id"]: rows for c, rows in self.client.fan_out(self.courses(), self._course_enrolments)}
                try:
                    self._check_nobody_left_out(read)
                    self._check_access_times(read)
                except Exception as exc:
                    self._enrolments_refused = exc
                    raise
                if self._reread:
                    log.info("Read the enrolments of %d of %d courses twice: members of the last run were missing or "
                             "suspended in the first read (courses %s).", len(self._reread), len(read),
                             _ids(sorted(self._reread)))
                self._enrolments = read
                self._store_watermarks()
            return self._enrolments

    def _course_enrolments(self, course: dict) -> List[Enrolment]:
        """A course's enrolments; a departure or a suspension counts only once a second read confirms it.

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
        course_id = course["id"]
        users, active = self._read_course(course_id)
        if self._loses_someone(course_id, users, active):
            again, again_active = self._read_course(course_id)
            users, active = {**users, **again}, active | again_active
            with self._reread_lock:
                self._reread.add(course_id)
        student_roles = set(self.config.student_roles)
        rows = []
        for _, user in sorted(users.items()):
            roles = sorted(user.get("roles") or [], key=lambda r: (r.get("sortorder", 0), r.get("roleid", 0)))
            shortnames = tuple(r.get("shortname", "") for r in roles)
            rows.append(Enrolment(
                course_id=course_id,
                user_id=int(user["id"]),
                role_shortnames=shortnames,
                role_ids=tuple(int(r.get("roleid", 0)) for r in roles),
                is_student=bool(student_roles.intersection(shortnames)),
                is_active=int(user["id"]) in active,
                lastaccess=_time(user.get("lastaccess")),
                lastcourseaccess=_time(user.get("lastcourseaccess")),
                group_ids=tuple(sorted(int(g["id"]) for g in user.get("groups") or [])),
            ))
        return rows

    def _read_course(self, course_id: int) -> Tuple[Dict[int, dict], Set[int]]:
        """One read of a course: its users by id (a user a shifted page repeats counts once), and the active ids."""
        users = {int(u["id"]): u for u in self._paged_users(course_id, settings.ENROLMENT_USERFIELDS, onlyactive=None)}
        active = {int(u["id"]) for u in self._paged_users(course_id, settings.ACTIVE_USERFIELDS, onlyactive=1)}
        return users, active

    def _loses_someone(self, course_id: int, users: Mapping[int, dict], active: Set[int]) -> bool:
        """Whether a member of the course at the last loaded run is missing from this read, or was active and is not."""
        return any(uid not in users or (was_active and uid not in active)
                   for uid, was_active in self.known.get(course_id, {}).items())

    def _paged_users(self, course_id: int, userfields: str, onlyactive: Optional[int]) -> List[dict]:
        """Pages until an empty one: Moodle pages in SQL, then drops in PHP the users the caller may not see, so a
        page can come back short in the middle of the list (enrol/externallib.php get_enrolled_users)."""
        size = self.config.page_size
        users: List[dict] = []
        offset = 0
        while True:
            page = self.client.call(settings.FN_ENROLLED_USERS, {
                "courseid": course_id,
                "options": options_list(onlyactive=onlyactive, userfields=userfields, limitfrom=offset, limitnumber=size),
            }, needs=settings.CAP_ENROLREVIEW if onlyactive else None) or []
            if not page:
                return users
            users.extend(page)
            offset += size

    def _check_nobody_left_out(self, by_course: Dict[int, List[Enrolment]]) -> None:
        """Moodle leaves out, without a word, users the caller may not see (no moodle/user:viewdetails) and, in a
        separate-groups course, everyone outside the caller's groups. core_enrol_get_users_courses counts a
        course's enrolments without either filter, so one call per few courses proves each list whole."""
        self._check_empty_courses([cid for cid, rows in by_course.items() if not rows])
        counts = self._enrolment_counts(by_course)
        short = {cid: n for cid, n in counts.items() if n > len(by_course[cid])}
        # someone may have enrolled while the run read the lists: read those once more (departures confirmed as ever)
        for cid in list(short):
            by_course[cid] = self._course_enrolments(self.course(cid))
            if len(by_course[cid]) >= short[cid]:
                del short[cid]
        if short:
            separate = [c for c in short if self.course(c).get("groupmode") == 1]
            self.gaps.fail(
                "enrolments_hidden",
                "Moodle showed the token's user only part of the enrolments of "
                + "; ".join(f"course {c} ({len(by_course[c])} of {n})" for c, n in sorted(short.items())[:10])
                + ". Loading them would close the cases of everyone left out.",
                "give the role moodle/user:viewdetails"
                + (f" and {settings.CAP_ALLGROUPS} (courses {_ids(separate)} use separate groups)" if separate else ""),
            )

    def _check_empty_courses(self, empty: List[int]) -> None:
        """An empty list has nobody to count it through. The grade report lists graded users by other rules: it says
        notingroup where a separate-groups list was emptied for a caller in no group, and lists the students a
        caller without moodle/user:viewdetails was not shown."""

        def report(course_id: int) -> Any:
            try:
                return self.client.call(settings.FN_GRADE_ITEMS, {"courseid": course_id, "userid": 0})
            except MoodleAccessError as exc:
                if exc.errorcode != "notingroup":
                    raise
                return exc

        for cid, answer in self.client.fan_out(empty, report):
            if isinstance(answer, MoodleAccessError):
                self.gaps.fail("enrolments_hidden",
                               f"Moodle showed the token's user no enrolment of course {cid}, which uses separate "
                               "groups: a user in none of its groups sees nobody.", f"give the role {settings.CAP_ALLGROUPS}")
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
            for _, listed in self.client.fan_out(chosen, self._courses_with_counts):
                counts.update({c["id"]: int(c["enrolledusercount"]) for c in listed
                               if c["id"] in by_course and "enrolledusercount" in c})
            uncovered -= set(counts)
            if not uncovered:
                return counts
        self.gaps.warn("enrolments_unverified",
                       f"Moodle gave no enrolment count for courses {_ids(sorted(uncovered))}, so the run could not "
                       "prove their enrolment lists whole.", "give the role moodle/user:viewdetails")
        return counts

    def _courses_with_counts(self, user_id: int) -> List[dict]:
        return self.client.call(settings.FN_USERS_COURSES, {"userid": user_id, "returnusercount": 1}) or []

    def _check_access_times(self, by_course: Dict[int, List[Enrolment]]) -> None:
        """"Hide user fields" with lastaccess leaves both access times out unless the role holds
        moodle/course:viewhiddenuserfields: engagement then has nothing to go on."""
        hidden = [e for rows in by_course.values() for e in rows if e.lastcourseaccess is None]
        if hidden:
            self.gaps.report(
                settings.GAP_LAST_ACCESS,
                f"Moodle hid the last access of {len(hidden)} enrolments from the token's user: engagement cannot "
                "tell an inactive student from one who never started, and every run re-reads those courses in full.",
                "give the role moodle/course:viewhiddenuserfields, or take lastaccess out of Site administration > Users "
                "> Permissions > User policies > Hide user fields",
            )

    # ------------------------------------------------------------------ incrementality
    def _store_watermarks(self) -> None:
        marks = dict(self.state.get(COURSE_MARKS_KEY) or {})  # courses outside this run keep theirs
        future: List[Tuple[int, int, int]] = []  # (course, user, time) beyond the horizon, for the log
        for course_id, rows in (self._enrolments or {}).items():
            mark = self.previous[course_id].copy() if course_id in self.previous else Watermark()
            for e in rows:
                for when, key in ((e.lastcourseaccess, f"c{e.user_id}"), (e.lastaccess, f"s{e.user_id}")):
                    if when is not None and when > self.horizon:
                        future.append((course_id, e.user_id, when))
                    elif when is not None:
                        mark.observe(when, key)
            marks[str(course_id)] = mark.to_state()
        self.state[COURSE_MARKS_KEY] = marks
        if future:
            course_id, user_id, when = future[0]
            log.warning("Moodle reported %d access times in the future (e.g. user %s in course %s at %s); they do "
                        "not move the incremental watermarks. Check the Moodle server's clock, or those users' "
                        "records.", len(future), user_id, course_id,
                        datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds"))
        self.state.pop(LEGACY_WATERMARK_KEY, None)
        self.state.pop(LEGACY_KNOWN_COURSES_KEY, None)

    def pair_changed(self, e: Enrolment) -> bool:
        mark = self.previous.get(e.course_id)
        return mark is None or e.lastcourseaccess is None or mark.is_after(e.lastcourseaccess, f"c{e.user_id}")

    def user_changed(self, e: Enrolment) -> bool:
        mark = self.previous.get(e.course_id)
        return mark is None or e.lastaccess is None or mark.is_after(e.lastaccess, f"s{e.user_id}")

    def all_enrolments(self) -> Iterator[Enrolment]:
        for rows in self.enrolments().values():
            yield from rows

    def changed_courses(self) -> List[dict]:
        """Courses someone (student or teacher) entered since the last run: grades and contents may differ."""
        by_id = self.enrolments()
        return [c for c in self.courses() if c["id"] not in self.previous or any(self.pair_changed(e) for e in by_id[c["id"]])]

    def changed_students(self) -> List[int]:
        """Students with an active enrolment whose site or course access moved since the last run."""
        changed: Set[int] = set()
        for e in self.all_enrolments():
            if e.is_student and e.is_active and (self.user_changed(e) or self.pair_changed(e)):
                changed.add(e.user_id)
        return sorted(changed)

    def changed_student_pairs(self) -> List[Enrolment]:
        """Active student enrolments, in completion-tracked courses, that saw course access since the last run."""
        tracked = {c["id"] for c in self.courses() if c.get("enablecompletion")}
        return [
            e for e in self.all_enrolments()
            if e.is_student and e.is_active and e.course_id in tracked and self.pair_changed(e)
        ]

    def user_ids(self) -> List[int]:
        return sorted({e.user_id for e in self.all_enrolments()})

    def student_ids(self) -> Set[int]:
        return {e.user_id for e in self.all_enrolments() if e.is_student}

    # ------------------------------------------------------------------ profiles
    def check_profiles(self, missing: List[int], seen: Dict[str, int], students: int) -> None:
        """core_user_get_users_by_field skips users the caller may not see, and each profile field follows its own
        rule (user/lib.php user_get_user_details): absent is hidden, or empty, never said which."""
        active = {e.user_id for e in self.all_enrolments() if e.is_active}
        if set(missing) & active:
            lost = sorted(set(missing) & active)
            self.gaps.fail(
                "profiles_hidden",
                f"Moodle returned no profile for {len(lost)} enrolled users (ids {_ids(lost)}).",
                "give the role moodle/user:viewdetails and moodle/user:viewhiddendetails at system level",
            )
        if missing:  # a course role sees profiles through active enrolments only (user_get_user_details_courses)
            self.gaps.warn(
                "inactive_profiles_hidden",
                f"Moodle returned no profile for {len(missing)} users whose enrolments are all suspended or ended "
                f"(ids {_ids(missing)}): their cases close from the enrolment alone.",
                "give the role moodle/user:viewdetails at system level",
            )
        if not students:
            return
        if not seen.get("suspended"):  # always set (true or false) unless "Hide user fields" lists it
            self.gaps.fail(
                "suspended_hidden",
                "No profile says whether the account is suspended: suspended students' cases would stay open.",
                "give the role moodle/user:viewhiddendetails, or take suspended out of Hide user fields",
            )
        if not (seen.get("phone1") or seen.get("phone2")):
            self.gaps.report(
                settings.GAP_PHONES,
                f"None of the {students} students' profiles shows a phone number: Moodle shows phone1 and phone2 only "
                "to a site admin, or when \"Show user identity\" lists them and the role holds "
                "moodle/site:viewuseridentity. SMS phones would all come out empty.",
                "add phone1 and phone2 to Site administration > Users > Permissions > User policies > Show user "
                "identity, and give the role moodle/site:viewuseridentity (if your students really have no phone "
                "numbers, accept the gap)",
            )
        for field_name, code, fix in (
            ("firstname", settings.GAP_NAMES, "give the role moodle/site:viewfullnames"),
            ("email", settings.GAP_EMAILS, "add email to Show user identity and give the role moodle/site:viewuseridentity"),
            ("username", settings.GAP_USERNAMES, "give the role moodle/user:viewalldetails"),
        ):
            if not seen.get(field_name):
                self.gaps.warn(code, f"No student profile shows a {field_name}: that column stays empty.", fix)

    def check_progress(self, tracked_rows: int, with_progress: int) -> None:
        """Course progress comes only with report/completion:view (completion_can_view_data)."""
        if tracked_rows and not with_progress:
            self.gaps.warn(settings.GAP_PROGRESS,
                           f"Moodle gave no course progress for any of {tracked_rows} enrolments in completion-tracked "
                           "courses: course_progress_percent stays empty.", "give the role report/completion:view")

    # ------------------------------------------------------------------ grades
    def check_grade_report(self, course: dict, report: dict) -> None:
        """The grade report lists the active students of one group only, when the caller lacks accessallgroups
        in a course with groups (a web-service call's active group is the first; lib/grouplib.php)."""
        expected = {e.user_id for e in self.enrolments()[course["id"]] if e.is_student and e.is_active}
        listed = {int(u["userid"]) for u in report.get("usergrades") or []}
        missing = expected - listed
        if missing and report.get("usergrades") is not None:
            grouped = bool(course.get("groupmode"))
            self.gaps.fail(
                "grades_hidden",
                f"Moodle's grade report for course {course['id']} left out {len(missing)} of its {len(expected)} active "
                f"students (user ids {_ids(sorted(missing))}).",
                f"give the role {settings.CAP_ALLGROUPS}" if grouped else
                "check that their role is a graded role (Site administration > Grades > General settings > Graded "
                "roles), or set SOURCES__MOODLE__STUDENT_ROLES to the roles that are",
            )

    # ------------------------------------------------------------------ assignments
    def assignments(self) -> List[dict]:
        """Assignments of the selected courses, `DEFAULT_COURSE_BATCH_SIZE` courses per call.

        includenotenrolledcourses=1: without it Moodle answers only courses the token's user is enrolled in,
        and an integration user is enrolled in none (mod/assign/externallib.php get_assignments).
        """
        with self._lock:
            if self._assignments is None:
                ids = [c["id"] for c in self.courses()]
                size = settings.DEFAULT_COURSE_BATCH_SIZE
                batches = [ids[i: i + size] for i in range(0, len(ids), size)]
                rows: List[dict] = []
                for _, answer in self.client.fan_out(batches, lambda batch: self.client.call(
                        settings.FN_ASSIGNMENTS, {"courseids": batch, "includenotenrolledcourses": 1})):
                    self._refuse_assignment_warnings(answer.get("warnings") or [])
                    for course in answer.get("courses") or []:
                        for a in course.get("assignments") or []:
                            rows.append({"id": a["id"], "course_id": course["id"], **{k: a.get(k) for k in (
                                "cmid", "name", "duedate", "cutoffdate", "allowsubmissionsfromdate",
                                "gradingduedate", "timemodified", "nosubmissions", "teamsubmission",
                                "preventsubmissionnotingroup")}})
                self._assignments = rows
            return self._assignments

    def _refuse_assignment_warnings(self, warnings: List[dict]) -> None:
        courses = [w.get("itemid") for w in warnings if w.get("item") == "course"]
        modules = [w.get("itemid") for w in warnings if w.get("item") == "module"]
        if courses:
            self.gaps.fail("assignments_hidden",
                           f"mod_assign_get_assignments refused courses {_ids(courses)} (not enrolled, no access).",
                           "give the role moodle/course:view")
        if modules:
            self.gaps.fail("assignments_hidden",
                           f"mod_assign_get_assignments refused assignments with course module ids {_ids(modules)}.",
                           "give the role mod/assign:view")

    def assignment_warnings(self, function: str, answer: dict) -> None:
        """get_submissions and get_user_flags answer an assignment the caller may not grade with warning 1."""
        refused = [w.get("itemid") for w in answer.get("warnings") or [] if str(w.get("warningcode")) == "1"]
        if refused:
            self.gaps.fail("assignments_hidden", f"{function} refused assignments {_ids(refused)}.",
                           "give the role mod/assign:grade")

    def assignment_batches(self, courses: Sequence[int], since_of: Dict[int, int]) -> List[Tuple[int, List[int], List[int]]]:
        """(since, course ids, assignment ids) batches: courses with the same cursor share calls, at most
        DEFAULT_ASSIGNMENT_BATCH_SIZE assignments each, so per-course cursors cost no extra calls in steady state."""
        by_course: Dict[int, List[int]] = {}
        for a in self.assignments():
            if a["course_id"] in courses:
                by_course.setdefault(a["course_id"], []).append(a["id"])
        groups: Dict[int, List[int]] = {}
        for cid in sorted(by_course):
            groups.setdefault(since_of.get(cid, 0), []).append(cid)
        batches: List[Tuple[int, List[int], List[int]]] = []
        size = settings.DEFAULT_ASSIGNMENT_BATCH_SIZE
        for since, cids in sorted(groups.items()):
            current: Tuple[List[int], List[int]] = ([], [])
            for cid in cids:
                if current[1] and len(current[1]) + len(by_course[cid]) > size:
                    batches.append((since, *current))
                    current = ([], [])
                current[0].append(cid)
                current[1].extend(by_course[cid])
            if current[1]:
                batches.append((since, *current))
        return batches


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


def _ids(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in list(values)[:10])
    return shown + (f" and {len(values) - 10} more" if len(values) > 10 else "")

