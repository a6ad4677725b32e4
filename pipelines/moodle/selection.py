"""What a run reads: the courses the settings select, and within them what changed since the last run.

Moodle has no "changed since" filter for enrolments, grades, completion or course contents, but it does record
when each user last touched the site and each course. Anything that can change a student's progress, a grade or a
course's contents happens through someone's access (a student's attempt, a teacher's grading or editing), so
per-student and per-course detail is re-read only where an access time moved past that course's *watermark*
from the last run that read it. Submissions have Moodle's own filter (`since`), kept per course as a *cursor*.
Both live in dlt's source state.

Everything wrong here is said with a public error: MoodleConfigError naming the setting (COURSE_IDS,
CATEGORY_IDS), or a gap (gaps.py) naming the capability.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Sequence, Set, Tuple

from . import webservice
from .client import MoodleClient
from .config import MoodleSettings, env_name
from .enrolments import Enrolment
from .errors import MoodleConfigError
from .gaps import Gaps, ids_text

log = logging.getLogger(__name__)

COURSE_MARKS_KEY = "course_watermarks"
SUBMISSION_SINCE_KEY = "submission_since"
# state of runs before per-course watermarks: read once, so an upgrade does not re-fetch everything
LEGACY_WATERMARK_KEY = "activity_watermark"
LEGACY_KNOWN_COURSES_KEY = "known_courses"
# A time Moodle reports further ahead of this machine's clock than this is a typo or a broken clock (a
# lastaccess in 2100): it never moves a watermark or cursor, or every later change would stay unseen.
CLOCK_SKEW_SECONDS = 600


# ---------------------------------------------------------------------------------------------- courses
def selected_courses(client: MoodleClient, settings: MoodleSettings, categories: Callable[[], List[dict]],
                     gaps: Gaps) -> List[dict]:
    """The courses the settings select, asked for in the scope the token may read: by id (COURSE_IDS), by category
    and its sub-categories (CATEGORY_IDS), or every course it can open; sorted by id, the front page left out."""
    if settings.course_ids:
        answers = [webservice.courses_by_field(client, "ids", ",".join(map(str, settings.course_ids)))]
    elif settings.category_ids:
        wanted = sorted(categories_with_descendants(categories(), settings.category_ids))
        answers = [a for _, a in client.fan_out(wanted, lambda c: webservice.courses_by_field(client, "category", c))]
    else:
        answers = [webservice.courses_by_field(client)]
    courses = {c["id"]: c for a in answers for c in a.get("courses") or [] if c["id"] != webservice.SITE_COURSE_ID}
    missing = sorted(set(settings.course_ids) - set(courses))
    if missing:
        raise MoodleConfigError(
            f"{env_name('course_ids')} names courses Moodle does not have, or hides from the token's user: {missing}. "
            "Remove them from the setting, or give the role moodle/course:viewhiddencourses if they are hidden courses."
        )
    selected = sorted(courses.values(), key=lambda c: c["id"])
    # core_course_get_courses_by_field answers a course the user may not enter with its public part only (no
    # `format`, no `visible`): its enrolments, grades and contents would all be refused later
    closed = [c["id"] for c in selected if "visible" not in c or "format" not in c]
    if closed:
        gaps.fail(
            "courses_closed",
            f"The token's user cannot open {len(closed)} of the selected courses ({ids_text(closed)}): Moodle "
            "shows it their public description only.",
            "give the role moodle/course:view at system level (or on their category), or limit the run with "
            f"{env_name('course_ids')} / CATEGORY_IDS to the courses it can open",
        )
    return selected


def categories_with_descendants(categories: Sequence[Mapping[str, Any]], roots: Iterable[int]) -> Set[int]:
    """`roots` and every category below them (Moodle's `path`, /1/4/9)."""
    roots = set(roots)
    unknown = sorted(roots - {c["id"] for c in categories})
    if unknown:
        raise MoodleConfigError(
            f"{env_name('category_ids')} names categories Moodle does not have, or hides from the token's user: "
            f"{unknown}. Remove them, or give the role moodle/category:viewhiddencategories if they are hidden."
        )
    wanted = set(roots)
    for category in categories:
        path_ids = {int(p) for p in str(category.get("path", "")).split("/") if p}
        if path_ids & roots:
            wanted.add(category["id"])
    return wanted


# ---------------------------------------------------------------------------------------------- watermarks
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
    def from_state(cls, value: Any) -> "Watermark | None":
        if not isinstance(value, dict) or "at" not in value:
            return None
        return cls(at=int(value["at"]), keys=set(value.get("keys") or ()))


class CourseWatermarks:
    """Each course's watermark from the last run that read it, and what moved past it in this run's enrolments.

    A run limited to some courses moves only theirs, so grading in another course is still found by the next full
    run. An access time Moodle hides counts as changed, never as "no change"."""

    def __init__(self, state: Mapping[str, Any], full_refresh: bool) -> None:
        self.previous: Dict[int, Watermark] = {} if full_refresh else _previous_marks(state)

    def pair_changed(self, e: Enrolment) -> bool:
        """The user entered the course since its watermark."""
        mark = self.previous.get(e.course_id)
        return mark is None or e.lastcourseaccess is None or mark.is_after(e.lastcourseaccess, f"c{e.user_id}")

    def user_changed(self, e: Enrolment) -> bool:
        """The user entered the site since the course's watermark."""
        mark = self.previous.get(e.course_id)
        return mark is None or e.lastaccess is None or mark.is_after(e.lastaccess, f"s{e.user_id}")

    def course_changed(self, course_id: int, enrolments: Iterable[Enrolment]) -> bool:
        """Someone (student or teacher) entered the course since the last run: grades and contents may differ."""
        return course_id not in self.previous or any(self.pair_changed(e) for e in enrolments)

    def store(self, state: MutableMapping[str, Any], by_course: Mapping[int, Sequence[Enrolment]], horizon: int) -> None:
        """Moves the watermarks of the courses read to the latest access time seen, times beyond `horizon` (the
        future) left out and logged. Courses outside this run keep theirs."""
        marks = dict(state.get(COURSE_MARKS_KEY) or {})
        future: List[Tuple[int, int, int]] = []  # (course, user, time) beyond the horizon, for the log
        for course_id, rows in by_course.items():
            mark = self.previous[course_id].copy() if course_id in self.previous else Watermark()
            for e in rows:
                for when, key in ((e.lastcourseaccess, f"c{e.user_id}"), (e.lastaccess, f"s{e.user_id}")):
                    if when is not None and when > horizon:
                        future.append((course_id, e.user_id, when))
                    elif when is not None:
                        mark.observe(when, key)
            marks[str(course_id)] = mark.to_state()
        state[COURSE_MARKS_KEY] = marks
        if future:
            course_id, user_id, when = future[0]
            log.warning("Moodle reported %d access times in the future (e.g. user %s in course %s at %s); they do "
                        "not move the incremental watermarks. Check the Moodle server's clock, or those users' "
                        "records.", len(future), user_id, course_id,
                        datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds"))
        state.pop(LEGACY_WATERMARK_KEY, None)
        state.pop(LEGACY_KNOWN_COURSES_KEY, None)


def _previous_marks(state: Mapping[str, Any]) -> Dict[int, Watermark]:
    marks = {int(k): m for k, v in (state.get(COURSE_MARKS_KEY) or {}).items() if (m := Watermark.from_state(v))}
    legacy = Watermark.from_state(state.get(LEGACY_WATERMARK_KEY))
    if not marks and legacy is not None:
        marks = {int(c): legacy.copy() for c in state.get(LEGACY_KNOWN_COURSES_KEY) or ()}
    return marks


# ---------------------------------------------------------------------------------------------- submission cursors
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


class SubmissionCursors:
    """Each course's submission cursor, kept per course in the source state: one site-wide cursor would hide a newly
    selected course's older submissions. Not a dlt incremental: it drops rows below its stored value even when a
    full refresh asks Moodle for everything."""

    def __init__(self, state: MutableMapping[str, Any], full_refresh: bool) -> None:
        self._state = state
        self._cursors: Dict[str, Any] = dict(state.get(SUBMISSION_SINCE_KEY) or {})  # other courses keep theirs
        self.previous: Dict[int, Cursor] = {} if full_refresh else {
            int(k): Cursor.from_state(v) for k, v in self._cursors.items()}

    def since(self) -> Dict[int, int]:
        """Each course's `since` (courses missing start at 0: all their submissions)."""
        return {c: cur.since for c, cur in self.previous.items()}

    def seen_at(self, course_ids: Iterable[int]) -> Set[int]:
        """The submission ids the last run saw at these courses' cursors."""
        return set().union(*(self.previous[c].ids for c in course_ids if c in self.previous))

    def advance(self, course_ids: Iterable[int], cursor: Cursor) -> None:
        for cid in course_ids:
            self._cursors[str(cid)] = cursor.to_state()

    def store(self) -> None:
        """Into the source state, once every batch was read."""
        self._state[SUBMISSION_SINCE_KEY] = self._cursors
