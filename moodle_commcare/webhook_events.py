"""Which Moodle events matter, and what each says to re-read: the courses and students a targeted sync refreshes.

Events come from the local_webhooks plugin as Moodle's own event data (lib/classes/event/base.php get_data():
eventname, objectid, courseid, relateduserid, contextinstanceid, contextlevel...), ids sometimes as strings. An
event only names what changed; the sync re-reads it from Moodle, the source of truth, so a lost or repeated event
costs nothing but a later update (the scheduled sync still catches everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Set

CONTEXT_COURSE = 50  # CONTEXT_COURSE (lib/accesslib.php): contextinstanceid is then the course id

# What each event means for the cases (Moodle's event classes; the class name is the eventname):
#   "course+user": the course's grades/outline and the student's engagement and completion may have changed;
#   "enrolment": who is enrolled, with which role, active or not (the course's enrolment lists);
#   "user": the user's profile (re-read with the courses they are enrolled in);
#   "course": the course itself (name, dates, outline).
KINDS: Dict[str, str] = {
    "core\\event\\user_graded": "course+user",  # grade/classes/... relateduserid: the graded student
    "core\\event\\user_enrolment_created": "enrolment",
    "core\\event\\user_enrolment_updated": "enrolment",  # suspended, dates changed
    "core\\event\\user_enrolment_deleted": "enrolment",
    "core\\event\\role_assigned": "enrolment",  # in a course context: becomes a student, a teacher...
    "core\\event\\role_unassigned": "enrolment",
    "core\\event\\user_updated": "user",  # objectid / relateduserid: the user whose profile changed
    "core\\event\\user_deleted": "user",
    "core\\event\\course_module_completion_updated": "course+user",
    "core\\event\\course_completed": "course+user",
    "core\\event\\course_updated": "course",
    "mod_assign\\event\\submission_created": "course+user",
    "mod_assign\\event\\submission_updated": "course+user",
    "mod_assign\\event\\submission_status_updated": "course+user",
    "mod_assign\\event\\assessable_submitted": "course+user",
    "mod_assign\\event\\submission_graded": "course+user",
}
# submission plugins' own events (assignsubmission_file\event\submission_updated...) count as submissions
SUBMISSION_PLUGIN_PREFIX = "assignsubmission_"


def event_name(event: Mapping[str, Any]) -> str:
    return str(event.get("eventname") or "").strip().lstrip("\\")


def kind_of(event: Mapping[str, Any]) -> Optional[str]:
    name = event_name(event)
    if name in KINDS:
        return KINDS[name]
    if name.startswith(SUBMISSION_PLUGIN_PREFIX) and name.split("\\")[-1] in ("submission_created",
                                                                              "submission_updated"):
        return "course+user"
    return None


def is_relevant(event: Mapping[str, Any]) -> Optional[str]:
    """None for an event to store; else why it is dropped (the receiver counts each reason)."""
    if not event_name(event):
        return "no eventname"
    if kind_of(event) is None:
        return "event the cases do not use"
    return None


def _int(value: Any) -> Optional[int]:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def course_of(event: Mapping[str, Any]) -> Optional[int]:
    course = _int(event.get("courseid"))
    if course is None and _int(event.get("contextlevel")) == CONTEXT_COURSE:
        course = _int(event.get("contextinstanceid"))
    if course is None and event_name(event) == "core\\event\\course_updated":
        course = _int(event.get("objectid"))
    return course if course != 1 else None  # course 1 is the front page (SITEID), never synced


def user_of(event: Mapping[str, Any]) -> Optional[int]:
    user = _int(event.get("relateduserid"))
    if user is None and event_name(event) in ("core\\event\\user_updated", "core\\event\\user_deleted"):
        user = _int(event.get("objectid"))
    return user


@dataclass
class Targets:
    """What one micro-batch re-reads: `courses` are extracted (their enrolment lists, profiles...), of which
    `refresh_courses` have their grades and outline re-read, and `refresh_users` their engagement and completion."""

    courses: Set[int] = field(default_factory=set)
    refresh_courses: Set[int] = field(default_factory=set)
    refresh_users: Set[int] = field(default_factory=set)
    events: int = 0
    outside: int = 0  # events about courses (or users) the synced selection does not hold: left to the next sync

    def __bool__(self) -> bool:
        return bool(self.courses)


def targets_of(events: Iterable[Mapping[str, Any]], known_courses: Set[int],
               courses_of_user: Callable[[int], Set[int]]) -> Targets:
    """The union of what the events name, within the courses the warehouse already syncs (a course outside the
    selection, or new since the last sync, waits for the scheduled sync)."""
    found = Targets()
    for event in events:
        found.events += 1
        kind, course, user = kind_of(event), course_of(event), user_of(event)
        if kind == "user":
            courses = courses_of_user(user) if user is not None else set()
        else:
            courses = {course} if course is not None else set()
        courses &= known_courses
        if not courses:
            found.outside += 1
            continue
        found.courses |= courses
        if kind in ("course+user", "course"):
            found.refresh_courses |= courses
        if user is not None and kind in ("course+user", "enrolment"):
            found.refresh_users.add(user)
    return found
