"""One extraction run's reads of the site, shared by every resource.

Several resources hang off the same expensive calls (the site info, the course list, the enrolment pages of every
course, the assignments), so those are made once per run and kept here, whichever resource asks first (dlt runs
resources side by side). The watermarks (selection.py) then decide which per-course and per-student calls the
resources make, and `gaps` collects what Moodle left out.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple

import dlt

from . import webservice
from .client import MoodleClient
from .config import MoodleSettings
from .enrolments import Enrolment, EnrolmentReader
from .gaps import Gaps
from .selection import CLOCK_SKEW_SECONDS, CourseWatermarks, selected_courses


class MoodleRun:
    """What one run read of the site. `known_enrolments` is who each course had at the last loaded run ({course id:
    {user id: is_active}}, see enrolments.py); `state` the source's dlt state (watermarks and cursors), by default
    dlt's, read at first use (inside the extract)."""

    def __init__(self, client: MoodleClient, settings: MoodleSettings,
                 known_enrolments: Optional[Mapping[int, Mapping[int, bool]]] = None,
                 state: Optional[MutableMapping[str, Any]] = None) -> None:
        self.client = client
        self.settings = settings
        self._state = state
        self._watermarks: Optional[CourseWatermarks] = None
        self.extracted_at = datetime.now(timezone.utc)
        # times beyond this (this machine's clock and some minutes) are a typo or a broken clock
        self.horizon = int(self.extracted_at.timestamp()) + CLOCK_SKEW_SECONDS
        self.gaps = Gaps(settings.allow_hidden)
        # course -> cmid -> module type of the activities its grade report shows (outline completeness, gaps.py)
        self.graded_activities: Dict[int, Dict[int, str]] = {}
        self._reader = EnrolmentReader(client, self.gaps, settings.student_roles, settings.page_size, known_enrolments)
        self._lock = threading.RLock()
        self._site_info: Optional[dict] = None
        self._categories: Optional[List[dict]] = None
        self._courses: Optional[List[dict]] = None
        self._enrolments: Optional[Dict[int, List[Enrolment]]] = None
        self._enrolments_refused: Optional[BaseException] = None
        self._assignments: Optional[List[dict]] = None

    @property
    def state(self) -> MutableMapping[str, Any]:
        with self._lock:
            if self._state is None:
                self._state = dlt.current.source_state()
            return self._state

    @property
    def watermarks(self) -> CourseWatermarks:
        """Each course's watermark from the last run that read it."""
        with self._lock:
            if self._watermarks is None:
                self._watermarks = CourseWatermarks(self.state, self.settings.full_refresh)
            return self._watermarks

    # ------------------------------------------------------------------ site
    def site_info(self) -> dict:
        with self._lock:
            if self._site_info is None:
                self._site_info = webservice.site_info(self.client)
                self.client.use_batches(self._site_info)
            return self._site_info

    def require(self, resource: str) -> None:
        """Fail before extracting when the token's service lacks a function this resource calls."""
        webservice.require_functions(self.site_info(), resource)

    # ------------------------------------------------------------------ catalogue
    def categories(self) -> List[dict]:
        with self._lock:
            if self._categories is None:
                self._categories = webservice.categories(self.client)
            return self._categories

    def courses(self) -> List[dict]:
        """The selected courses (selection.py), read once."""
        with self._lock:
            if self._courses is None:
                self._courses = selected_courses(self.client, self.settings, self.categories, self.gaps)
            return self._courses

    # ------------------------------------------------------------------ enrolments
    def enrolments(self) -> Dict[int, List[Enrolment]]:
        """Every (user, course) pair of the selected courses, read once per run for all resources and proved whole;
        reading them moves the watermarks."""
        with self._lock:
            if self._enrolments_refused is not None:  # every resource that needs them fails the same way
                raise self._enrolments_refused
            if self._enrolments is None:
                try:
                    read = self._reader.read(self.courses())
                except Exception as exc:
                    self._enrolments_refused = exc
                    raise
                self._enrolments = read
                self.watermarks.store(self.state, read, self.horizon)
            return self._enrolments

    def all_enrolments(self) -> Iterator[Enrolment]:
        for rows in self.enrolments().values():
            yield from rows

    def user_ids(self) -> List[int]:
        return sorted({e.user_id for e in self.all_enrolments()})

    def student_ids(self) -> Set[int]:
        return {e.user_id for e in self.all_enrolments() if e.is_student}

    def active_user_ids(self) -> Set[int]:
        return {e.user_id for e in self.all_enrolments() if e.is_active}

    def active_students(self, course_id: int) -> Set[int]:
        return {e.user_id for e in self.enrolments()[course_id] if e.is_student and e.is_active}

    # ------------------------------------------------------------------ what changed since the last run
    def changed_courses(self) -> List[dict]:
        """Courses someone (student or teacher) entered since the last run: grades and contents may differ; and
        those the settings name to refresh (an event said so: a change no access reveals)."""
        by_id = self.enrolments()
        forced = set(self.settings.refresh_course_ids)
        return [c for c in self.courses()
                if c["id"] in forced or self.watermarks.course_changed(c["id"], by_id[c["id"]])]

    def changed_students(self) -> List[int]:
        """Students with an active enrolment whose site or course access moved since the last run, or whom the
        settings name to refresh."""
        marks = self.watermarks
        forced = set(self.settings.refresh_user_ids)
        return sorted({e.user_id for e in self.all_enrolments()
                       if e.is_student and e.is_active
                       and (e.user_id in forced or marks.user_changed(e) or marks.pair_changed(e))})

    def changed_student_pairs(self) -> List[Enrolment]:
        """Active student enrolments, in completion-tracked courses, that saw course access since the last run (or
        whose student the settings name to refresh)."""
        tracked = {c["id"] for c in self.courses() if c.get("enablecompletion")}
        forced = set(self.settings.refresh_user_ids)
        return [e for e in self.all_enrolments()
                if e.is_student and e.is_active and e.course_id in tracked
                and (e.user_id in forced or self.watermarks.pair_changed(e))]

    # ------------------------------------------------------------------ assignments
    def assignments(self) -> List[dict]:
        """Assignments of the selected courses, webservice.COURSES_PER_ASSIGNMENTS_CALL courses per call."""
        with self._lock:
            if self._assignments is None:
                ids = [c["id"] for c in self.courses()]
                size = webservice.COURSES_PER_ASSIGNMENTS_CALL
                batches = [ids[i: i + size] for i in range(0, len(ids), size)]
                rows: List[dict] = []
                for _, answer in self.client.fan_out(batches, lambda batch: webservice.assignments(self.client, batch)):
                    self.gaps.check_assignments_answer(answer.get("warnings") or [])
                    for course in answer.get("courses") or []:
                        for a in course.get("assignments") or []:
                            rows.append({"id": a["id"], "course_id": course["id"], **{k: a.get(k) for k in (
                                "cmid", "name", "duedate", "cutoffdate", "allowsubmissionsfromdate",
                                "gradingduedate", "timemodified", "nosubmissions", "teamsubmission",
                                "preventsubmissionnotingroup")}})
                self._assignments = rows
            return self._assignments

    def assignment_batches(self, courses: Sequence[int],
                           since_of: Mapping[int, int]) -> List[Tuple[int, List[int], List[int]]]:
        """(since, course ids, assignment ids) batches: courses with the same cursor share calls, at most
        webservice.ASSIGNMENTS_PER_CALL assignments each, so per-course cursors cost no extra calls in steady state."""
        by_course: Dict[int, List[int]] = {}
        for a in self.assignments():
            if a["course_id"] in courses:
                by_course.setdefault(a["course_id"], []).append(a["id"])
        groups: Dict[int, List[int]] = {}
        for cid in sorted(by_course):
            groups.setdefault(since_of.get(cid, 0), []).append(cid)
        batches: List[Tuple[int, List[int], List[int]]] = []
        size = webservice.ASSIGNMENTS_PER_CALL
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
