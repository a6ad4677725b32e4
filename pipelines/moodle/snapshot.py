"""What one extraction run knows about the site, shared by all resources.

Several resources hang off the same expensive calls (the course list, the enrolment pages of every
course), so those are made once per run and cached here. This is also where incrementality is decided:
Moodle has no "changed since" filter for enrolments, grades, completion or course contents, but it does
record when each user last touched the site and each course. Anything that can change a student's
progress, a grade or a course's contents happens through someone's access (a student's attempt, a
teacher's grading or editing), so per-student and per-course detail is re-fetched only where an access
time moved past the previous run's watermark.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from . import settings
from .client import MoodleClient
from .config import MoodleSettings
from .errors import MoodleConfigError, MoodleFunctionNotAvailableError
from .params import options_list

WATERMARK_KEY = "activity_watermark"
KNOWN_COURSES_KEY = "known_courses"


@dataclass
class Enrolment:
    course_id: int
    user_id: int
    role_shortnames: Tuple[str, ...]
    role_ids: Tuple[int, ...]
    is_student: bool
    is_active: bool
    lastaccess: int
    lastcourseaccess: int


@dataclass
class Watermark:
    """The latest access time seen in a run, plus the keys seen exactly at it (so a tie is not lost)."""

    at: int = -1
    keys: Set[str] = field(default_factory=set)

    def is_after(self, when: int, key: str) -> bool:
        return when > self.at or (when == self.at and key not in self.keys)

    def observe(self, when: int, key: str) -> None:
        if when > self.at:
            self.at, self.keys = when, {key}
        elif when == self.at:
            self.keys.add(key)

    def to_state(self) -> Dict[str, Any]:
        return {"at": self.at, "keys": sorted(self.keys)}

    @classmethod
    def from_state(cls, value: Any) -> Optional["Watermark"]:
        if not isinstance(value, dict) or "at" not in value:
            return None
        return cls(at=int(value["at"]), keys=set(value.get("keys") or ()))


class MoodleSnapshot:
    def __init__(self, client: MoodleClient, config: MoodleSettings, state: Dict[str, Any]) -> None:
        self.client = client
        self.config = config
        self.state = state
        self.extracted_at = datetime.now(timezone.utc)
        self.previous: Optional[Watermark] = None if config.full_refresh else Watermark.from_state(state.get(WATERMARK_KEY))
        # courses whose detail an earlier run fetched; a course added to the selection since is fetched in full
        self.known_courses: Set[int] = set(state.get(KNOWN_COURSES_KEY) or ()) if self.previous else set()
        self._lock = threading.RLock()
        self._site_info: Optional[dict] = None
        self._categories: Optional[List[dict]] = None
        self._courses: Optional[List[dict]] = None
        self._enrolments: Optional[Dict[int, List[Enrolment]]] = None
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
                "External services > Functions), or leave that table out.",
                function=missing[0], errorcode="functionmissing",
            ))

    # ------------------------------------------------------------------ catalogue
    def categories(self) -> List[dict]:
        with self._lock:
            if self._categories is None:
                self._categories = list(self.client.call(settings.FN_CATEGORIES, {"addsubcategories": 1}) or [])
            return self._categories

    def courses(self) -> List[dict]:
        """Selected courses, without the site front page; unknown configured ids are an error."""
        with self._lock:
            if self._courses is None:
                params = {"options": {"ids": list(self.config.course_ids)}} if self.config.course_ids else {}
                courses = [c for c in self.client.call(settings.FN_COURSES, params) if c["id"] != settings.SITE_COURSE_ID]
                if self.config.course_ids:
                    missing = sorted(set(self.config.course_ids) - {c["id"] for c in courses})
                    if missing:
                        raise MoodleConfigError(
                            f"SOURCES__MOODLE__COURSE_IDS names courses Moodle does not have (or the token cannot "
                            f"see): {missing}. Remove them from the setting."
                        )
                if self.config.category_ids:
                    wanted = self._categories_with_descendants(self.config.category_ids)
                    courses = [c for c in courses if c.get("categoryid") in wanted]
                self._courses = sorted(courses, key=lambda c: c["id"])
            return self._courses

    def _categories_with_descendants(self, roots: Tuple[int, ...]) -> Set[int]:
        categories = self.categories()
        known = {c["id"] for c in categories}
        unknown = sorted(set(roots) - known)
        if unknown:
            raise MoodleConfigError(
                f"SOURCES__MOODLE__CATEGORY_IDS names categories Moodle does not have: {unknown}. Remove them."
            )
        wanted = set(roots)
        for category in categories:
            path_ids = {int(p) for p in str(category.get("path", "")).split("/") if p}
            if path_ids & set(roots):
                wanted.add(category["id"])
        return wanted

    # ------------------------------------------------------------------ enrolments
    def enrolments(self) -> Dict[int, List[Enrolment]]:
        """Every (user, course) pair of the selected courses, fetched once per run for all resources."""
        with self._lock:
            if self._enrolments is None:
                self._enrolments = {c["id"]: rows for c, rows in self.client.fan_out(self.courses(), self._course_enrolments)}
                self._store_watermark()
            return self._enrolments

    def _course_enrolments(self, course: dict) -> List[Enrolment]:
        course_id = course["id"]
        users = self._paged_users(course_id, settings.ENROLMENT_USERFIELDS, onlyactive=None)
        active = {u["id"] for u in self._paged_users(course_id, settings.ACTIVE_USERFIELDS, onlyactive=1)}
        student_roles = set(self.config.student_roles)
        rows = []
        for user in users:
            roles = sorted(user.get("roles") or [], key=lambda r: (r.get("sortorder", 0), r.get("roleid", 0)))
            shortnames = tuple(r.get("shortname", "") for r in roles)
            rows.append(Enrolment(
                course_id=course_id,
                user_id=int(user["id"]),
                role_shortnames=shortnames,
                role_ids=tuple(int(r.get("roleid", 0)) for r in roles),
                is_student=bool(student_roles.intersection(shortnames)),
                is_active=user["id"] in active,
                lastaccess=int(user.get("lastaccess") or 0),
                lastcourseaccess=int(user.get("lastcourseaccess") or 0),
            ))
        return rows

    def _paged_users(self, course_id: int, userfields: str, onlyactive: Optional[int]) -> List[dict]:
        size = self.config.page_size
        users: List[dict] = []
        offset = 0
        while True:
            page = self.client.call(settings.FN_ENROLLED_USERS, {
                "courseid": course_id,
                "options": options_list(onlyactive=onlyactive, userfields=userfields, limitfrom=offset, limitnumber=size),
            }) or []
            users.extend(page)
            if len(page) < size:
                return users
            offset += size

    # ------------------------------------------------------------------ incrementality
    def _store_watermark(self) -> None:
        mark = Watermark(at=self.previous.at, keys=set(self.previous.keys)) if self.previous else Watermark()
        for rows in self._enrolments.values():  # type: ignore[union-attr]
            for e in rows:
                mark.observe(e.lastcourseaccess, f"c{e.course_id}u{e.user_id}")
                mark.observe(e.lastaccess, f"u{e.user_id}")
        self.state[WATERMARK_KEY] = mark.to_state()
        self.state[KNOWN_COURSES_KEY] = sorted(self.known_courses | set(self._enrolments))  # type: ignore[arg-type]

    def pair_changed(self, e: Enrolment) -> bool:
        return (
            self.previous is None
            or e.course_id not in self.known_courses
            or self.previous.is_after(e.lastcourseaccess, f"c{e.course_id}u{e.user_id}")
        )

    def user_changed(self, e: Enrolment) -> bool:
        return self.previous is None or self.previous.is_after(e.lastaccess, f"u{e.user_id}")

    def all_enrolments(self) -> Iterator[Enrolment]:
        for rows in self.enrolments().values():
            yield from rows

    def changed_courses(self) -> List[dict]:
        """Courses someone (student or teacher) entered since the last run: grades and contents may differ."""
        by_id = self.enrolments()
        return [c for c in self.courses() if c["id"] not in self.known_courses or any(self.pair_changed(e) for e in by_id[c["id"]])]

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

    # ------------------------------------------------------------------ assignments
    def assignments(self) -> List[dict]:
        """Assignments of the selected courses, `DEFAULT_COURSE_BATCH_SIZE` courses per call."""
        with self._lock:
            if self._assignments is None:
                ids = [c["id"] for c in self.courses()]
                size = settings.DEFAULT_COURSE_BATCH_SIZE
                batches = [ids[i: i + size] for i in range(0, len(ids), size)]
                rows: List[dict] = []
                for _, answer in self.client.fan_out(
                    batches, lambda batch: self.client.call(settings.FN_ASSIGNMENTS, {"courseids": batch})
                ):
                    for course in answer.get("courses") or []:
                        for a in course.get("assignments") or []:
                            rows.append({"id": a["id"], "course_id": course["id"], **{k: a.get(k) for k in (
                                "cmid", "name", "duedate", "cutoffdate", "allowsubmissionsfromdate",
                                "gradingduedate", "timemodified", "nosubmissions")}})
                self._assignments = rows
            return self._assignments
