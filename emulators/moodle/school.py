"""A deterministic synthetic school: the data the Moodle emulator serves.

The same seed and scale always give the same school, so tests can compare what the connector loaded with
what the emulator holds. Per-(user, item) facts such as grades, completion and submissions are derived from
a hash on demand (a district has half a million of them) and only changes made by tests are stored.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from . import webhooks as wh

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z: the default "now" of a generated school
DAY = 86_400

FIRST_NAMES = [
    "Amina", "José", "Zoë", "Chloé", "Nguyễn", "Søren", "Łukasz", "Ærin", "Grace", "Peter", "Wanjiru", "Otieno",
    "Fatuma", "Kwame", "Émile", "Müller", "Ana", "Björk", "محمد", "Yui", "Raúl", "Ngozi", "Thabo", "Lerato",
    "Aisha", "Mary", "John", "Joy", "Brian", "Faith", "Kevin", "Esther",
]
LAST_NAMES = [
    "Okafor", "García", "Núñez", "O'Brien", "Kowalczyk", "Ødegaard", "Mwangi", "Achieng", "Smith", "Nakamura",
    "Ben-David", "Dubois", "Šimić", "Öztürk", "Wanjiku", "Kariuki", "Banda", "Phiri", "Mensah", "Tremblay",
    "Van der Berg", "Ali", "Hassan", "Mutua", "Njoroge", "Moyo",
]
COUNTRIES = [("KE", "Nairobi"), ("KE", "Kisumu"), ("UG", "Kampala"), ("TZ", "Arusha"), ("NG", "Lagos"),
             ("IN", "Pune"), ("ZA", "Durban"), ("GB", "Leeds"), ("US", "Denver"), ("", "")]
PHONE_SHAPES = {  # how people type them: national, international, with and without separators
    "KE": ["07{a} {b} {c}", "+254 7{a} {b}{c}", "254-7{a}-{b}-{c}", "(07{a}) {b}{c}"],
    "UG": ["07{a}{b}{c}", "+256 7{a} {b} {c}"],
    "TZ": ["06{a} {b} {c}", "+255 6{a}{b}{c}"],
    "NG": ["080{a}{b}{c}", "+234 80{a} {b} {c}"],
    "IN": ["09{a}{d}{b} {c}", "+91 9{a}{d}{b}{c}"],
    "ZA": ["08{a} {b} {c}", "+27 8{a}{b}{c}"],
    "GB": ["07{a} {b}{c}{d}", "+44 7{a}{b}{c}{d}"],
    "US": ["(303) {b}-{c}{d}", "303.{b}.{c}{d}", "+1 303 {b} {c}{d}"],
    "": ["{a}{b}{c}"],
}
MODULE_NAMES = {"assign": "Assignment", "quiz": "Quiz", "page": "Reading", "resource": "Handout", "forum": "Forum",
                "url": "Link"}
ROLE_IDS = {"manager": 1, "editingteacher": 3, "teacher": 4, "student": 5}
# enrol.status (lib/enrollib.php): ENROL_INSTANCE_ENABLED 0, ENROL_INSTANCE_DISABLED 1
ENROL_INSTANCE_ENABLED, ENROL_INSTANCE_DISABLED = 0, 1
ADMIN_ID = 2
# How a change reaches Moodle, which decides whose access times move: "web" is a page (the grader report, an
# assignment's grading or submission page, a CSV grade import, a profile form): require_login() logs the visit
# (user_accesstime_log); "webservice" is a web-service call, for which require_login() does not ("Do not update
# access time for webservice or ajax requests": if (!WS_SERVER && !AJAX_SCRIPT), lib/moodlelib.php); "cron" is a
# scheduled task (a regrade), acting as nobody (\core\event\base::USER_OTHER) and logging no access.
VIAS = ("web", "webservice", "cron")


@dataclass
class SchoolSpec:
    """Scale knobs; the defaults are the bundled demo school."""

    seed: int = 42
    categories: int = 4
    courses: int = 12
    students: int = 150
    enrolments_per_student: float = 3.0
    grade_items: int = 5
    activities: int = 6
    assignments: int = 2
    sections: int = 4
    suspended_enrolment_rate: float = 0.05
    hidden_course_rate: float = 0.1
    no_phone_rate: float = 0.2
    never_accessed_rate: float = 0.08
    completion: bool = True  # False: no course tracks completion (a site that never switched it on)
    submissions: bool = True  # False: the start of term, nobody has submitted anything yet
    edge_cases: bool = True  # groups, grade categories, hidden grades, team work, extensions, overrides, odd names
    # share of students whose profile holds their own CommCare mobile worker's id in a custom text field
    # (shortname commcareuserid, "Who is this field visible to": everyone), as the README's students' phones suggest
    student_phones: float = 0.0
    now: int = T0  # the site's "now": generated access times lie in the days before it


@dataclass(slots=True)
class User:
    id: int
    username: str
    firstname: str
    lastname: str
    email: str
    phone1: str = ""
    phone2: str = ""
    address: str = ""
    city: str = ""
    country: str = ""
    idnumber: str = ""
    institution: str = ""
    department: str = ""
    firstaccess: int = 0
    lastaccess: int = 0
    auth: str = "manual"
    suspended: int = 0
    confirmed: int = 1
    lang: str = "en"
    timezone: str = "99"
    description: str = ""
    customfields: List[dict] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.firstname} {self.lastname}"


@dataclass(slots=True)
class Enrolment:
    role: str
    active: bool
    lastcourseaccess: int = 0
    timestart: int = 0
    timecreated: int = 0  # the user_enrolments row's times and last modifier: user_enrolment_deleted sends the row
    timemodified: int = 0
    modifierid: int = ADMIN_ID
    # the course access generation gave it: the grades, completions and submissions derived from the hash hang on it,
    # so a later visit (record_access) moves lastcourseaccess without conjuring or re-dating them
    seeded_access: int = 0


@dataclass
class Category:
    id: int
    name: str
    idnumber: str
    parent: int
    path: str
    depth: int
    visible: int = 1
    timemodified: int = T0 - 300 * DAY
    description: str = ""


@dataclass
class Course:
    id: int
    shortname: str
    fullname: str
    idnumber: str
    categoryid: int
    summary: str
    startdate: int
    enddate: int
    visible: int = 1
    enablecompletion: int = 1
    timecreated: int = T0 - 200 * DAY
    timemodified: int = T0 - 100 * DAY
    format: str = "topics"
    lang: str = ""
    groupmode: int = 0  # 0 no groups, 1 SEPARATEGROUPS, 2 VISIBLEGROUPS (course setting, lib/grouplib.php)
    showrange: bool = True  # the user report's "Show ranges" for this course (grade/report/user/settings.php)


@dataclass
class Group:
    id: int
    course_id: int
    name: str
    members: Set[int] = field(default_factory=set)


@dataclass
class Module:
    """A course_modules row with what get_course_contents reads of it (lib/modinfolib.php cm_info::__construct)."""

    cmid: int
    course_id: int
    section: int
    modname: str
    instance: int
    name: str
    completion: int  # 0 none, 1 manual, 2 automatic
    visible: int = 1  # the eye icon; 0 too when its section was hidden (course/lib.php course_update_section)
    visibleoncoursepage: int = 1  # 0: a stealth activity, available by its link but not listed ($CFG->allowstealth)
    availability: Optional[str] = None  # "Restrict access" as Moodle stores it: JSON text, NULL when none
    timeopen: int = 0  # quiz: opens / closes (mod/quiz/lib.php quiz_get_coursemodule_info puts them in customdata)
    timeclose: int = 0


@dataclass
class GradeItem:
    id: int
    course_id: int
    itemname: Optional[str]
    itemtype: str
    itemmodule: Optional[str]
    iteminstance: int
    cmid: Optional[int]
    grademax: float = 100.0
    grademin: float = 0.0
    gradepass: float = 0.0  # a grade to pass above grademin puts a pass/fail icon in gradeformatted
    hidden: bool = False  # hidden from students in the gradebook
    categoryid: Optional[int] = None  # the gradebook category holding the item
    children: Tuple[int, ...] = ()  # for itemtype 'category': the items it totals


@dataclass
class Assignment:
    id: int
    cmid: int
    course_id: int
    name: str
    duedate: int
    cutoffdate: int
    allowsubmissionsfromdate: int
    timemodified: int
    teamsubmission: int = 0  # group submissions (userid 0, groupid set), with preventsubmissionnotingroup


@dataclass(frozen=True)
class EnrolInstance:
    """A row of the enrol table: one enrolment method of a course (lib/enrollib.php).

    A new course gets an instance of every enabled plugin whose 'defaultenrol' is set (enrol_course_updated() ->
    add_default_instance()): with the install default $CFG->enrol_plugins_enabled 'manual,guest,self,cohort' that is
    manual (enabled), guest (status from enrol_guest 'status', default disabled) and self (enrol_self 'status', default
    disabled), in that order, each self instance with roleid the student role (enrol/self/settings.php 'roleid')."""

    id: int
    course_id: int
    enrol: str  # the plugin: manual, guest, self
    status: int  # ENROL_INSTANCE_ENABLED or ENROL_INSTANCE_DISABLED
    roleid: int = ROLE_IDS["student"]


class School:
    """The whole site. Mutators take the lock, so tests may change it while the server answers."""

    def __init__(self, spec: Optional[SchoolSpec] = None) -> None:
        self.spec = spec or SchoolSpec()
        self.lock = threading.RLock()
        self.clock = self.spec.now
        self.sitename = "Demo Academy & Partners (emulated)"
        self.categories: Dict[int, Category] = {}
        self.courses: Dict[int, Course] = {}
        self.users: Dict[int, User] = {}
        self.enrolments: Dict[int, Dict[int, Enrolment]] = {}  # course id -> user id -> enrolment
        self.groups: Dict[int, List[Group]] = {}  # course id -> groups, by name (groups_cache_groupdata order)
        self.modules: Dict[int, List[Module]] = {}
        self.grade_items: Dict[int, List[GradeItem]] = {}  # in gradebook order: a category total after its items
        self.assignments: Dict[int, List[Assignment]] = {}
        self.sections: Dict[int, List[Tuple[int, int, str]]] = {}  # course -> (section id, number, name)
        self.hidden_sections: Set[int] = set()  # section ids with course_sections.visible = 0
        self.section_availability: Dict[int, str] = {}  # section id -> course_sections.availability (JSON text)
        # activities students could not have worked in (hidden from them, or not open yet): no grade is derived
        self.closed_cmids: Set[int] = set()
        self.extensions: Dict[Tuple[int, int], int] = {}  # (assignment, user) -> extensionduedate (assign_user_flags)
        self.user_overrides: Dict[Tuple[int, int], int] = {}  # (assignment, user) -> duedate (assign_overrides)
        self.group_overrides: Dict[Tuple[int, int], int] = {}  # (assignment, group) -> duedate
        self.grade_overrides: Dict[Tuple[int, int], Tuple[Optional[float], int]] = {}
        self.completion_overrides: Dict[Tuple[int, int], Tuple[int, int]] = {}
        self.submission_overrides: Dict[Tuple[int, int], Tuple[str, int]] = {}
        self.service_users: Dict[str, int] = {}  # profile -> the user its token acts as
        # course id -> its enrol instances (manual, guest, self); `enrolments` are the manual instance's user_enrolments
        self.enrol_instances: Dict[int, List[EnrolInstance]] = {}
        # course id -> students who also hold a user_enrolments row in the course's self instance (see
        # _generate_enrol_instances); only the custom report's participants source reads it (reports.py)
        self.self_enrolled: Dict[int, Set[int]] = {}
        # called with each Moodle event a change triggers (webhooks.moodle_event), e.g. the webhooks plugin's sender
        self.listeners: List[Callable[[Dict[str, Any]], None]] = []
        self._generate()

    # ------------------------------------------------------------------ derived facts
    def _h(self, *parts: object) -> int:
        key = ":".join(str(p) for p in (self.spec.seed, *parts)).encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")

    def tick(self) -> int:
        """Advance the site clock by a minute (Moodle updates access times at most once a minute)."""
        with self.lock:
            self.clock += 60
            return self.clock

    def teacher_of(self, course_id: int) -> int:
        return next(uid for uid, e in self.enrolments[course_id].items() if e.role == "editingteacher")

    def students_of(self, course_id: int, only_active: bool = False) -> List[int]:
        return sorted(uid for uid, e in self.enrolments[course_id].items()
                      if e.role == "student" and (e.active or not only_active))

    def groups_of(self, course_id: int, user_id: int) -> List["Group"]:
        return [g for g in self.groups.get(course_id, []) if user_id in g.members]

    def grade(self, item: GradeItem, user_id: int) -> Tuple[Optional[float], Optional[int]]:
        """(raw grade, time graded) of a user; None where not graded yet. Totals are derived from their items."""
        if item.itemtype in ("course", "category"):
            return self._total(item, user_id)
        if (item.id, user_id) in self.grade_overrides:
            return self.grade_overrides[(item.id, user_id)]
        if item.cmid is not None and item.cmid in self.closed_cmids:
            return None, None
        e = self.enrolments[item.course_id].get(user_id)
        h = self._h("g", item.id, user_id)
        if e is None or e.seeded_access == 0 or h % 5 == 0:
            return None, None
        share = (40 + h % 61) / 100  # 40%..100% of the range
        return round(item.grademin + share * (item.grademax - item.grademin), 2), int(e.seeded_access - (h % 20) * DAY // 2)

    def _total(self, total: GradeItem, user_id: int) -> Tuple[Optional[float], Optional[int]]:
        """Mean percentage of the graded items it covers (all leaf items for the course total), on its range."""
        leaves = [i for i in self.grade_items[total.course_id] if i.itemtype in ("mod", "manual")]
        covered = [i for i in leaves if i.id in total.children] if total.itemtype == "category" else leaves
        graded = [(value, at, i) for i in covered for value, at in [self.grade(i, user_id)] if value is not None]
        if not graded:
            return None, None
        share = sum((value - i.grademin) / (i.grademax - i.grademin) for value, _, i in graded) / len(graded)
        graded_at = max((at for _, at, _ in graded if at is not None), default=None)
        return round(total.grademin + share * (total.grademax - total.grademin), 5), graded_at

    def course_total(self, course_id: int, user_id: int) -> Tuple[Optional[float], Optional[int]]:
        item = next((i for i in self.grade_items[course_id] if i.itemtype == "course"), None)
        return self._total(item, user_id) if item else (None, None)

    def has_hidden_grade(self, course_id: int, user_id: int) -> bool:
        """Whether a hidden item holds a grade of this user: the total then depends on something hidden."""
        return any(i.hidden and self.grade(i, user_id)[0] is not None for i in self.grade_items[course_id])

    def completion(self, module: Module, user_id: int) -> Tuple[int, int]:
        """(state, timecompleted) of an activity: 0 incomplete, 1 complete, 2 pass, 3 fail."""
        if (module.cmid, user_id) in self.completion_overrides:
            return self.completion_overrides[(module.cmid, user_id)]
        e = self.enrolments[module.course_id].get(user_id)
        if module.completion == 0 or e is None or e.seeded_access == 0:
            return 0, 0
        h = self._h("c", module.cmid, user_id)
        if h % 3 == 0:
            return 0, 0
        return (1 if module.modname != "quiz" else 2 + (h % 4 == 0)), int(e.seeded_access - (h % 10) * 3600)

    def submission(self, assignment: Assignment, user_id: int) -> Optional[Tuple[str, int]]:
        """(status, timemodified) of a student's own submission row, None where none exists.

        In a team assignment the row belongs to the group (`group_submission`); students have none of their own.
        """
        if (assignment.id, user_id) in self.submission_overrides:
            return self.submission_overrides[(assignment.id, user_id)]
        if assignment.teamsubmission or not self.spec.submissions:
            return None
        e = self.enrolments[assignment.course_id].get(user_id)
        h = self._h("s", assignment.id, user_id)
        if e is None or e.seeded_access == 0 or h % 4 == 0:
            return None
        status = "submitted" if h % 4 != 1 else "draft"
        return status, int(min(e.seeded_access, assignment.duedate + (h % 3 - 1) * DAY))

    def group_submission(self, assignment: Assignment, group: "Group") -> Optional[Tuple[str, int]]:
        """The team's row (userid 0, groupid set) of a team assignment."""
        if (assignment.id, -group.id) in self.submission_overrides:
            return self.submission_overrides[(assignment.id, -group.id)]
        if not assignment.teamsubmission or not self.spec.submissions:
            return None
        h = self._h("gs", assignment.id, group.id)
        if h % 3 == 0:
            return None
        return ("submitted" if h % 3 == 1 else "draft"), int(assignment.duedate + (h % 3 - 1) * DAY)

    def submitted_by(self, assignment: Assignment, user_id: int) -> Optional[int]:
        """When the student's work counts as submitted: their own row, or their team's."""
        own = self.submission(assignment, user_id)
        if own and own[0] == "submitted":
            return own[1]
        for group in self.groups_of(assignment.course_id, user_id):
            team = self.group_submission(assignment, group)
            if team and team[0] == "submitted":
                return team[1]
        return None

    def override_due_date(self, assignment: Assignment, user_id: int) -> int:
        """A user override, else a group override, else the assignment's date (mod/assign/locallib.php override_exists)."""
        due = self.user_overrides.get((assignment.id, user_id))
        if due is None:
            group_dues = [self.group_overrides[(assignment.id, g.id)] for g in self.groups_of(assignment.course_id, user_id)
                          if (assignment.id, g.id) in self.group_overrides]
            due = group_dues[0] if group_dues else assignment.duedate
        return due

    def due_date_of(self, assignment: Assignment, user_id: int) -> int:
        """The student's own due date: their override, pushed later by an extension (assign_user_flags)."""
        return max(self.override_due_date(assignment, user_id), self.extensions.get((assignment.id, user_id), 0))

    # ------------------------------------------------------------------ what a student's phone may show offline
    def offline_hidden_cmids(self, course_id: int) -> Set[int]:
        """Activities a student's phone must not show: hidden (visible 0), stealth (not on the course page),
        restricted (any "Restrict access" condition, whoever it would let in), or in a hidden or restricted section.
        Read from the school's own data, not from what the web services answer: the oracle of end-to-end tests."""
        closed = {sid for sid, _, _ in self.sections[course_id]
                  if sid in self.hidden_sections or sid in self.section_availability}
        numbers = {number: sid for sid, number, _ in self.sections[course_id]}
        return {m.cmid for m in self.modules[course_id]
                if not m.visible or not m.visibleoncoursepage or m.availability or numbers.get(m.section) in closed}

    def due_of(self, module: Module) -> Optional[int]:
        """The activity's own due date (no student's override): an assignment's duedate, a quiz's timeclose."""
        if module.modname == "assign":
            a = next((a for a in self.assignments[module.course_id] if a.cmid == module.cmid), None)
            return (a.duedate or None) if a else None
        if module.modname == "quiz":
            return module.timeclose or None
        return None

    def outline(self, course_id: int) -> List[Tuple[int, str, List[Tuple[int, str, str, Optional[int]]]]]:
        """The course outline a student's phone shows: (section number, section name, [(cmid, name, modname, due
        timestamp or None)]) in Moodle's order (sections by number, activities in their section's sequence), without
        hidden or restricted sections and without offline_hidden_cmids. Names as the school holds them (before
        format_string: multilang spans and bare '&' included)."""
        hidden = self.offline_hidden_cmids(course_id)
        out = []
        for sid, number, name in sorted(self.sections[course_id], key=lambda row: row[1]):
            if sid in self.hidden_sections or sid in self.section_availability:
                continue
            out.append((number, name, [(m.cmid, m.name, m.modname, self.due_of(m)) for m in self.modules[course_id]
                                       if m.section == number and m.cmid not in hidden]))
        return out

    # ------------------------------------------------------------------ changes made by tests and benchmarks
    def record_access(self, user_id: int, course_id: Optional[int] = None, at: Optional[int] = None) -> int:
        with self.lock:
            at = at or self.tick()
            user = self.users[user_id]
            user.lastaccess = max(user.lastaccess, at)
            user.firstaccess = user.firstaccess or at
            if course_id is not None:
                e = self.enrolments[course_id][user_id]
                e.lastcourseaccess = max(e.lastcourseaccess, at)
            return at

    def _act(self, actor: int, course_id: Optional[int], via: str) -> int:
        """The time of a change, logging the actor's visit when it came through a page (VIAS): user_accesstime_log()
        sets the user's lastaccess and, for a course, their user_lastaccess row (lib/datalib.php), which only
        enrolled users show (lastcourseaccess)."""
        if via not in VIAS:
            raise ValueError(f"via must be one of {VIAS}")
        if via != "web" or actor <= 0 or actor not in self.users:
            return self.tick()
        enrolled = course_id is not None and actor in self.enrolments.get(course_id, {})
        return self.record_access(actor, course_id if enrolled else None)

    def _trigger(self, event: Dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event)

    # ids of the rows events name (Moodle's are sequences; these only need to be stable and distinct per table)
    @staticmethod
    def grade_grade_id(item_id: int, user_id: int) -> int:
        return item_id * 100_000 + user_id

    @staticmethod
    def user_enrolment_id(course_id: int, user_id: int) -> int:
        return course_id * 100_000 + user_id

    @staticmethod
    def role_assignment_id(course_id: int, user_id: int) -> int:
        return course_id * 100_000 + user_id

    @staticmethod
    def completion_id(cmid: int, user_id: int) -> int:
        return cmid * 100_000 + user_id

    @staticmethod
    def submission_id(assignment_id: int, user_id: int) -> int:
        return assignment_id * 100_000 + user_id  # as mod_assign_get_submissions answers (api.py)

    def set_grade(self, course_id: int, user_id: int, item_id: int, raw: Optional[float], by: Optional[int] = None,
                  via: str = "web") -> None:
        """Someone grades a user: by default the course's teacher through a page (the grader report, the
        assignment's grading page or a CSV import: all require_login() the course, so the teacher's course access
        moves); via="webservice" moves no access; via="cron" is a regrade acting as USER_OTHER.

        As grade_item::update_final_grade() (lib/grade/grade_item.php): nothing is written and nothing triggered when
        the value does not change (grade_floats_different); else the grade and its time are stored (gradedategraded
        of gradereport_user_get_grade_items), \\core\\event\\user_graded is triggered, and the user's regrade
        (grade_regrade_final_grades) triggers user_graded again for each category or course total whose value changed
        (grade_category::aggregate_grades, lib/grade/grade_category.php), totals after the items they cover.
        """
        with self.lock:
            items = self.grade_items[course_id]
            item = next(i for i in items if i.id == item_id)
            actor = by if by is not None else (wh.USER_OTHER if via == "cron" else self.teacher_of(course_id))
            old = self.grade(item, user_id)[0]  # before the visit: what is derived hangs on access times
            totals = [i for i in items if i.itemtype in ("category", "course")]
            before = {t.id: self.grade(t, user_id)[0] for t in totals}
            at = self._act(actor, course_id, via)
            if not _grades_differ(old, raw):
                return
            existed = old is not None or (item_id, user_id) in self.grade_overrides
            self.grade_overrides[(item_id, user_id)] = (raw, at)
            events = [self._user_graded(course_id, item, user_id, raw, actor, at, existed)]
            for total in totals:
                now = self.grade(total, user_id)[0]
                if _grades_differ(before[total.id], now):
                    events.append(self._user_graded(course_id, total, user_id, now, actor, at, before[total.id] is not None))
        for event in events:
            self._trigger(event)

    def _user_graded(self, course_id: int, item: GradeItem, user_id: int, finalgrade: Optional[float], actor: int,
                     at: int, existed: bool) -> Dict[str, Any]:
        # lib/classes/event/user_graded.php create_from_grade(): the course context, objectid the grade_grades id,
        # relateduserid the graded user, other {itemid, overridden, finalgrade}; courseid left to the context (a string).
        # A grade_grade read back from the database holds its ids as strings; one just inserted, the ints it was given.
        db: Callable[[int], Any] = str if existed else int
        return wh.moodle_event(
            "\\core\\event\\user_graded", crud="u", edulevel=wh.LEVEL_TEACHING, objecttable="grade_grades",
            objectid=db(self.grade_grade_id(item.id, user_id)), context=wh.course_context(course_id), userid=actor,
            timecreated=at, relateduserid=db(user_id),
            other={"itemid": db(item.id), "overridden": False,
                   "finalgrade": None if finalgrade is None else float(finalgrade)})

    def update_user(self, user_id: int, **fields: object) -> None:
        """A change written straight to the user table: no event (see update_profile)."""
        with self.lock:
            user = self.users[user_id]
            for name, value in fields.items():
                if not hasattr(user, name):
                    raise AttributeError(name)
                setattr(user, name, value)

    def update_profile(self, user_id: int, by: Optional[int] = None, via: str = "web", **fields: object) -> None:
        """Someone (by default the user) edits a profile: \\core\\event\\user_updated (user_update_user(),
        user/lib.php: user_updated::create_from_userid(): objectid and relateduserid the user, the user's context,
        courseid 0). From the profile page (user/edit.php, require_login()) the id is the user record's, a string,
        and the editor's lastaccess moves; from core_user_update_users, the int the caller sent."""
        with self.lock:
            actor = by if by is not None else user_id
            at = self._act(actor, None, via)
            self.update_user(user_id, **fields)
            uid: Any = str(user_id) if via == "web" else user_id
            event = wh.moodle_event("\\core\\event\\user_updated", crud="u", edulevel=wh.LEVEL_OTHER, objecttable="user",
                                 objectid=uid, context=wh.user_context(user_id), userid=actor, timecreated=at,
                                 relateduserid=uid)
        self._trigger(event)

    def enrol(self, course_id: int, user_id: int, role: str = "student", by: Optional[int] = None,
              timestart: int = 0) -> None:
        """A manual enrolment (enrol_plugin::enrol_user(), lib/enrollib.php): the user_enrolments row, then
        \\core\\event\\user_enrolment_created (objectid the new row's id, courseid the enrol instance's, a string;
        other {enrol: "manual"}), then role_assign() (lib/accesslib.php) triggers \\core\\event\\role_assigned
        (objectid the role id, other {id: the role_assignments id, component "", itemid 0}: enrol_manual does not
        protect its roles, roles_protected() false). Enrolling someone already enrolled only re-activates them
        (enrol_user() calls update_user_enrol() when the status differs). No one's access time moves: the admin
        enrols from the participants page through AJAX."""
        if role not in ROLE_IDS:
            raise ValueError(f"unknown role {role}")
        with self.lock:
            if user_id in self.enrolments[course_id]:
                existing = True
            else:
                existing = False
                actor = by if by is not None else ADMIN_ID
                at = self.tick()
                self.enrolments[course_id][user_id] = Enrolment(role=role, active=True, timestart=timestart,
                                                                timecreated=at, timemodified=at, modifierid=actor)
                context = wh.course_context(course_id)
                created = wh.moodle_event(
                    "\\core\\event\\user_enrolment_created", crud="c", edulevel=wh.LEVEL_OTHER,
                    objecttable="user_enrolments", objectid=self.user_enrolment_id(course_id, user_id),
                    context=context, userid=actor, timecreated=at, courseid=str(course_id), relateduserid=user_id,
                    other={"enrol": "manual"})
                assigned = wh.moodle_event(
                    "\\core\\event\\role_assigned", crud="c", edulevel=wh.LEVEL_OTHER, objecttable="role",
                    objectid=ROLE_IDS[role], context=context, userid=actor, timecreated=at, relateduserid=user_id,
                    other={"id": self.role_assignment_id(course_id, user_id), "component": "", "itemid": 0})
        if existing:
            self.suspend_enrolment(course_id, user_id, suspended=False, by=by)
            return
        self._trigger(created)
        self._trigger(assigned)

    def suspend_enrolment(self, course_id: int, user_id: int, suspended: bool = True, by: Optional[int] = None) -> None:
        """enrol_plugin::update_user_enrol() (lib/enrollib.php): nothing when the status is unchanged, else the row's
        status, then \\core\\event\\user_enrolment_updated with the row read back (ids as strings), other
        {enrol: "manual"}."""
        with self.lock:
            e = self.enrolments[course_id][user_id]
            if e.active == (not suspended):
                return
            actor = by if by is not None else ADMIN_ID
            at = self.tick()
            e.active, e.timemodified, e.modifierid = not suspended, at, actor
            event = wh.moodle_event(
                "\\core\\event\\user_enrolment_updated", crud="u", edulevel=wh.LEVEL_OTHER, objecttable="user_enrolments",
                objectid=str(self.user_enrolment_id(course_id, user_id)), context=wh.course_context(course_id),
                userid=actor, timecreated=at, courseid=str(course_id), relateduserid=str(user_id),
                other={"enrol": "manual"})
        self._trigger(event)

    def set_enrolment_active(self, course_id: int, user_id: int, active: bool) -> None:
        self.suspend_enrolment(course_id, user_id, suspended=not active)

    def unenrol(self, course_id: int, user_id: int, by: Optional[int] = None) -> None:
        """enrol_plugin::unenrol_user() (lib/enrollib.php) of the user's only enrolment in the course: the row goes,
        and with it ("the big cleanup") their roles, groups and course access (user_lastaccess); role_unassign_all()
        triggers \\core\\event\\role_unassigned per role assignment (from the rows read back: strings), then
        \\core\\event\\user_enrolment_deleted with other {userenrolment: the deleted row plus courseid, enrol and
        lastenrol, enrol: "manual"}."""
        with self.lock:
            e = self.enrolments[course_id].pop(user_id)
            for group in self.groups.get(course_id, []):
                group.members.discard(user_id)
            actor = by if by is not None else ADMIN_ID
            at = self.tick()
            context = wh.course_context(course_id)
            ue_id = str(self.user_enrolment_id(course_id, user_id))
            unassigned = wh.moodle_event(
                "\\core\\event\\role_unassigned", crud="d", edulevel=wh.LEVEL_OTHER, objecttable="role",
                objectid=str(ROLE_IDS[e.role]), context=context, userid=actor, timecreated=at, relateduserid=str(user_id),
                other={"id": str(self.role_assignment_id(course_id, user_id)), "component": "", "itemid": "0"})
            row = {"id": ue_id, "status": "0" if e.active else "1", "enrolid": str(course_id), "userid": str(user_id),
                   "timestart": str(e.timestart), "timeend": "0", "modifierid": str(e.modifierid),
                   "timecreated": str(e.timecreated), "timemodified": str(e.timemodified),
                   "courseid": str(course_id), "enrol": "manual", "lastenrol": True}
            deleted = wh.moodle_event(
                "\\core\\event\\user_enrolment_deleted", crud="d", edulevel=wh.LEVEL_OTHER, objecttable="user_enrolments",
                objectid=ue_id, context=context, userid=actor, timecreated=at, courseid=str(course_id),
                relateduserid=str(user_id), other={"userenrolment": row, "enrol": "manual"})
        self._trigger(unassigned)
        self._trigger(deleted)

    def complete_activity(self, course_id: int, user_id: int, cmid: int, via: str = "web") -> None:
        """A student completes an activity, through its page by default (their course access moves).
        completion_info::update_state() changes nothing when the state is already the one reached; else
        internal_set_data() (lib/completionlib.php) stores it and triggers \\core\\event\\course_module_completion_updated:
        objectid the course_modules_completion id, the module's context, relateduserid the student, other
        {relateduserid, overrideby, completionstate}. No course_completed follows: no course here has completion
        criteria (core_enrol_get_users_courses: completionhascriteria false)."""
        with self.lock:
            state = self._state(course_id, user_id, cmid)  # before the visit: what is derived hangs on access times
            event = self._complete(course_id, user_id, cmid, self._act(user_id, course_id, via), state)
        if event is not None:
            self._trigger(event)

    def _state(self, course_id: int, user_id: int, cmid: int) -> int:
        return self.completion(next(m for m in self.modules[course_id] if m.cmid == cmid), user_id)[0]

    def _complete(self, course_id: int, user_id: int, cmid: int, at: int, state: int) -> Optional[Dict[str, Any]]:
        if state == 1:
            return None
        existed = state != 0 or (cmid, user_id) in self.completion_overrides
        self.completion_overrides[(cmid, user_id)] = (1, at)
        # a row read back holds strings; a row just inserted, the ints it was given
        db: Callable[[int], Any] = str if existed else int
        return wh.moodle_event(
            "\\core\\event\\course_module_completion_updated", crud="u", edulevel=wh.LEVEL_PARTICIPATING,
            objecttable="course_modules_completion", objectid=db(self.completion_id(cmid, user_id)),
            context=wh.module_context(cmid, course_id), userid=user_id, timecreated=at, relateduserid=db(user_id),
            other={"relateduserid": db(user_id), "overrideby": None, "completionstate": 1})

    def submit(self, assignment_id: int, user_id: int, via: str = "web", text: str = "") -> None:
        """A student saves an online-text submission (assign::save_submission(), mod/assign/locallib.php; these
        assignments keep no drafts, submissiondrafts 0, so it is submitted at once), through the page by default
        (their course access moves). In order: the onlinetext plugin's save()
        (mod/assign/submission/onlinetext/locallib.php) triggers \\assignsubmission_onlinetext\\event\\
        assessable_uploaded (objectid the submission id, other {pathnamehashes, content, format}) and then
        submission_created, or submission_updated where the student already had a submission (objectid the
        assignsubmission_onlinetext row's id, relateduserid the submission's user, other {submissionid,
        submissionattempt, submissionstatus, onlinetextwordcount, groupid, groupname}); with completionsubmit the
        activity is completed (course_module_completion_updated, see complete_activity); last
        \\mod_assign\\event\\assessable_submitted (create_from_submission(): objectid the submission id, other
        {submission_editable: true}, no relateduserid). The submission and the course are records read from the
        database (get_user_submission() reads the row back even when it has just created it): their ids are strings.
        """
        with self.lock:
            a = next(a for rows in self.assignments.values() for a in rows if a.id == assignment_id)
            cid = a.course_id
            had = self.submission(a, user_id) is not None  # before the visit: what is derived hangs on access times
            state = self._state(cid, user_id, a.cmid)
            at = self._act(user_id, cid, via)
            self.submission_overrides[(assignment_id, user_id)] = ("submitted", at)
            sid = str(self.submission_id(assignment_id, user_id))
            context = wh.module_context(a.cmid, cid)
            events: List[Optional[Dict[str, Any]]] = [wh.moodle_event(
                "\\assignsubmission_onlinetext\\event\\assessable_uploaded", crud="c", edulevel=wh.LEVEL_PARTICIPATING,
                objecttable="assign_submission", objectid=sid, context=context, userid=user_id, timecreated=at,
                courseid=str(cid), other={"pathnamehashes": [], "content": text.strip(), "format": "1"})]
            kind = "submission_updated" if had else "submission_created"
            row_id = self.submission_id(assignment_id, user_id)  # the assignsubmission_onlinetext row
            events.append(wh.moodle_event(
                f"\\assignsubmission_onlinetext\\event\\{kind}", crud="u" if had else "c",
                edulevel=wh.LEVEL_PARTICIPATING, objecttable="assignsubmission_onlinetext",
                objectid=str(row_id) if had else row_id, context=context, userid=user_id, timecreated=at,
                courseid=str(cid), relateduserid=str(user_id),
                other={"submissionid": sid, "submissionattempt": "0", "submissionstatus": "submitted",
                       "onlinetextwordcount": len(text.split()), "groupid": 0, "groupname": None}))
            module = next(m for m in self.modules[cid] if m.cmid == a.cmid)
            if self.courses[cid].enablecompletion and module.completion:
                events.append(self._complete(cid, user_id, a.cmid, at, state))
            events.append(wh.moodle_event(
                "\\mod_assign\\event\\assessable_submitted", crud="u", edulevel=wh.LEVEL_PARTICIPATING,
                objecttable="assign_submission", objectid=sid, context=context, userid=user_id, timecreated=at,
                other={"submission_editable": True}))
        for event in events:
            if event is not None:
                self._trigger(event)

    def mutate(self, grades: int, profiles: int, seed: int = 1) -> Dict[str, List]:
        """Change `grades` graded student grades and `profiles` student cities: what a week of school does."""
        rng = random.Random(seed)
        with self.lock:
            pairs = sorted((cid, uid) for cid, uid, e in self.all_enrolments()
                           if e.role == "student" and e.active and any(i.itemtype == "mod" for i in self.grade_items[cid])
                           and not self.users[uid].suspended)  # a suspended student's cases are closed
            changed_pairs = rng.sample(pairs, min(grades, len(pairs)))
            for cid, uid in changed_pairs:
                item = next(i for i in self.grade_items[cid] if i.itemtype == "mod")
                current = self.grade(item, uid)[0]
                self.set_grade(cid, uid, item.id, round((current or 0.0) + 1.5 if (current or 0) + 1.5 <= item.grademax
                                                        else item.grademin + 0.5, 2))
            students = sorted({uid for _, uid in pairs})
            changed_users = rng.sample(students, min(profiles, len(students)))
            for uid in changed_users:
                self.update_user(uid, city=f"{self.users[uid].city or 'Town'} (moved)")
        return {"grades": [list(p) for p in changed_pairs], "profiles": changed_users}

    # ------------------------------------------------------------------ generation
    def _generate(self) -> None:
        spec = self.spec
        rng = random.Random(spec.seed)
        self._generate_categories()
        self._generate_courses(rng)
        self._generate_people(rng)
        self._generate_enrolments(rng)
        self._generate_groups()
        for course in self.courses.values():
            self._generate_course_contents(course)
        self._generate_due_date_changes()
        self._generate_service_users()
        self._generate_enrol_instances()
        for _, _, e in self.all_enrolments():
            e.seeded_access = e.lastcourseaccess

    def _generate_categories(self) -> None:
        names = ["Science", "Languages & Literature", "Mathematics", "Humanities", "Vocational", "Arts"]
        for i in range(1, self.spec.categories + 1):
            parent = 0 if i <= 2 else 1 + i % 2  # two top-level categories, the rest beneath them
            path = f"/{i}" if parent == 0 else f"/{parent}/{i}"
            self.categories[i] = Category(
                id=i, name=f"{names[(i - 1) % len(names)]} {i}", idnumber=f"CAT{i:03d}" if i % 3 else "",
                parent=parent, path=path, depth=path.count("/"), visible=0 if i == self.spec.categories and i > 2 else 1,
            )

    def _generate_courses(self, rng: random.Random) -> None:
        subjects = ["Biology", "Chemistry", "English", "Français", "Algebra", "Art & Design", "History", MULTILANG_SWAHILI,
                    "Physics", "Agriculture", "Geometry", "Computer Studies"]
        edge = self.spec.edge_cases
        for n in range(self.spec.courses):
            cid = n + 2  # id 1 is the site course
            start = self.spec.now - rng.randint(20, 120) * DAY
            subject = subjects[n % len(subjects)]
            short = SHORT_NAMES.get(subject, subject[:4].upper())
            self.courses[cid] = Course(
                id=cid, shortname=f"{short}-{cid}",
                fullname=f"{subject} {100 + n // len(subjects)} — Form {1 + n % 4}",
                idnumber=f"C{cid:05d}" if n % 4 else "",
                categoryid=1 + n % self.spec.categories,
                summary=f"<p>{subject} for form {1 + n % 4}.</p>",
                startdate=start, enddate=start + 180 * DAY if n % 5 else 0,
                visible=0 if rng.random() < self.spec.hidden_course_rate else 1,
                enablecompletion=0 if n % 7 == 6 or not self.spec.completion else 1,
                groupmode={1: 1, 3: 2}.get(n % 4, 0) if edge else 0,
                showrange=not (edge and n % 6 == 5),
            )

    def _phone(self, rng: random.Random, country: str) -> str:
        shape = rng.choice(PHONE_SHAPES[country])
        return shape.format(a=rng.randint(10, 99), b=rng.randint(100, 999), c=rng.randint(100, 999), d=rng.randint(0, 9))

    def _generate_people(self, rng: random.Random) -> None:
        spec = self.spec
        self.users[2] = User(id=2, username="admin", firstname="Site", lastname="Admin", email="admin@example.org",
                             lastaccess=self.spec.now)
        next_id = 3
        for _ in range(spec.courses):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            self.users[next_id] = User(
                id=next_id, username=f"teacher{next_id}", firstname=first, lastname=last,
                email=f"teacher{next_id}@school.example.org", phone1=self._phone(rng, "KE"), country="KE",
                city="Nairobi", institution="Demo Academy", department="Teaching staff",
                firstaccess=self.spec.now - 300 * DAY, lastaccess=self.spec.now - rng.randint(0, 5) * DAY,
            )
            next_id += 1
        for n in range(spec.students):
            uid = next_id + n
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            country, city = rng.choice(COUNTRIES)
            never = rng.random() < spec.never_accessed_rate
            self.users[uid] = User(
                id=uid, username=f"s{uid}", firstname=first, lastname=last,
                email=f"s{uid}@students.example.org",
                phone1="" if rng.random() < spec.no_phone_rate else self._phone(rng, country),
                phone2=self._phone(rng, country) if rng.random() < 0.1 else "",
                address=f"{rng.randint(1, 400)} {rng.choice(['Moi Ave', 'Rue Cler', 'Ngong Rd', 'Main St'])}" if n % 3 else "",
                city=city, country=country, idnumber=f"ST{uid:06d}" if n % 6 else "",
                institution="Demo Academy" if n % 5 else "", department=f"Form {1 + n % 4}",
                firstaccess=0 if never else self.spec.now - rng.randint(30, 200) * DAY,
                lastaccess=0 if never else self.spec.now - rng.randint(0, 30) * DAY,
                suspended=1 if n % 97 == 13 else 0,
                customfields=[{"type": "text", "value": f"G{1 + n % 3}", "name": "Guardian group",
                               "shortname": "guardiangroup"}] if n % 2 else [],
            )
            if n % 1000 < spec.student_phones * 1000:  # by position, not the generator: the rest stays as it was
                self.users[uid].customfields.append({"type": "text", "value": f"cc-worker-{uid}",
                                                     "name": "CommCare user id", "shortname": "commcareuserid"})

    def _generate_enrolments(self, rng: random.Random) -> None:
        spec = self.spec
        course_ids = sorted(self.courses)
        for i, cid in enumerate(course_ids):
            self.enrolments[cid] = {3 + i: Enrolment(role="editingteacher", active=True,
                                                     lastcourseaccess=self.spec.now - rng.randint(0, 5) * DAY)}
        students = sorted(uid for uid in self.users if uid >= 3 + spec.courses)
        want = int(round(spec.enrolments_per_student * len(students)))
        # every student gets at least one course; the rest are spread, one student lands in many courses
        pairs = set()
        for k, uid in enumerate(students):
            pairs.add((course_ids[k % len(course_ids)], uid))
        if students:
            for cid in course_ids[: min(len(course_ids), 6)]:
                pairs.add((cid, students[0]))
        attempts = 0
        while len(pairs) < want and attempts < want * 20:
            pairs.add((rng.choice(course_ids), rng.choice(students)))
            attempts += 1
        for cid, uid in sorted(pairs):
            user = self.users[uid]
            accessed = user.lastaccess and rng.random() > 0.1
            self.enrolments[cid][uid] = Enrolment(
                role="student",
                active=rng.random() >= spec.suspended_enrolment_rate,
                lastcourseaccess=max(0, user.lastaccess - rng.randint(0, 10) * DAY) if accessed else 0,
                timestart=self.courses[cid].startdate,
            )
        if spec.edge_cases and len(course_ids) >= 4:
            # the first course's teacher also teaches the second course (editing) and the fourth (non-editing):
            # the "teacher" token profile
            teacher = 3
            self.enrolments[course_ids[1]][teacher] = Enrolment(role="editingteacher", active=True,
                                                                lastcourseaccess=self.spec.now - DAY)
            self.enrolments[course_ids[3]][teacher] = Enrolment(role="teacher", active=True,
                                                                lastcourseaccess=self.spec.now - 2 * DAY)

    def _generate_groups(self) -> None:
        """Two cohorts in every course with a group mode; every seventh student is in no group."""
        for cid, course in self.courses.items():
            if not course.groupmode:
                continue
            cohorts = [Group(id=cid * 10 + 1, course_id=cid, name="Cohort A"),
                       Group(id=cid * 10 + 2, course_id=cid, name="Cohort B")]
            for k, uid in enumerate(self.students_of(cid)):
                if k % 7 != 6:
                    cohorts[k % 2].members.add(uid)
            for uid, e in self.enrolments[cid].items():
                if e.role == "teacher":  # a non-editing teacher works with one cohort
                    cohorts[0].members.add(uid)
            self.groups[cid] = cohorts

    def _generate_course_contents(self, course: Course) -> None:
        spec = self.spec
        cid = course.id
        n_course = cid - 2
        edge = spec.edge_cases
        gradable = max(spec.grade_items, spec.assignments)
        kinds = ["assign"] * spec.assignments + ["quiz"] * (gradable - spec.assignments)
        fillers = ["page", "forum", "resource", "url"]
        kinds += [fillers[i % len(fillers)] for i in range(max(0, spec.activities - len(kinds)))]
        self.sections[cid] = [(cid * 100 + s, s, "General" if s == 0 else f"Week {s}") for s in range(spec.sections)]
        modules, items, assignments = [], [], []
        for n, modname in enumerate(kinds):
            cmid = cid * 1000 + n + 1
            instance = cid * 100 + n + 1
            name = f"{MODULE_NAMES[modname]} {n + 1}" + (" — «ünïcödé»" if n == 1 else "")
            if edge and n == 0 and cid % 2 == 0:  # a name typed in two languages
                name = (f'<span lang="en" class="multilang">{MODULE_NAMES[modname]} {n + 1}</span>'
                        f'<span lang="sw" class="multilang">Zoezi {n + 1}</span>')
            elif edge and n == 2:
                name = f"{MODULE_NAMES[modname]} {n + 1} & review"
            modules.append(Module(cmid=cmid, course_id=cid, section=1 + n % max(1, spec.sections - 1),
                                  modname=modname, instance=instance, name=name,
                                  completion=0 if modname == "url" else (2 if modname in ("assign", "quiz") else 1)))
            if edge and modname == "quiz":  # a closing date on every quiz, an opening date on every other one
                modules[-1].timeclose = course.startdate + (n + 1) * 10 * DAY
                modules[-1].timeopen = course.startdate + n * 10 * DAY if n % 2 else 0
            if modname in ("assign", "quiz"):
                grademax = 100.0 if modname == "assign" else 10.0 * (1 + n % 3)
                items.append(GradeItem(id=cid * 1000 + n + 1, course_id=cid, itemname=name, itemtype="mod",
                                       itemmodule=modname, iteminstance=instance, cmid=cmid, grademax=grademax,
                                       gradepass=grademax / 2 if edge and modname == "quiz" and n_course % 2 else 0.0))
            if modname == "assign":
                due = course.startdate + (n + 1) * 14 * DAY
                team = int(edge and bool(course.groupmode) and n == 1)
                assignments.append(Assignment(id=instance, cmid=cmid, course_id=cid, name=name, duedate=due,
                                              cutoffdate=due + 7 * DAY, allowsubmissionsfromdate=course.startdate,
                                              timemodified=course.startdate, teamsubmission=team))
        if edge and items and n_course % 3 == 0:
            # a gradebook category "Coursework" over the assignments: its total follows them
            category = cid * 10
            graded = [i for i in items if i.itemmodule == "assign"]
            for i in graded:
                i.categoryid = category
            if graded:
                at = items.index(graded[-1]) + 1
                items.insert(at, GradeItem(id=cid * 1000 + 900, course_id=cid, itemname=None, itemtype="category",
                                           itemmodule=None, iteminstance=category, cmid=None,
                                           children=tuple(i.id for i in graded)))
        if edge and items and n_course % 2 == 0:
            items.append(GradeItem(id=cid * 1000 + 950, course_id=cid, itemname="Participation", itemtype="manual",
                                   itemmodule=None, iteminstance=0, cmid=None, grademax=10.0))
        if edge and items and n_course % 4 == 2:
            items.append(GradeItem(id=cid * 1000 + 960, course_id=cid, itemname="Moderation", itemtype="manual",
                                   itemmodule=None, iteminstance=0, cmid=None, grademax=10.0, hidden=True))
        if cid % 11 == 10:  # nothing graded: only the course total, which every Moodle course has
            items = []
        if edge:
            self._generate_closed_activities(course, modules, items, len(kinds))
        items.append(GradeItem(id=cid * 1000, course_id=cid, itemname=None, itemtype="course", itemmodule=None,
                               iteminstance=cid, cmid=None))
        self.modules[cid], self.grade_items[cid], self.assignments[cid] = modules, items, assignments

    def _generate_closed_activities(self, course: Course, modules: List[Module], items: List[GradeItem], n: int) -> None:
        """Activities a student's phone must not show, after the course's other activities (their ids, names, grades
        and completion stay as they were): a hidden quiz (a page where nothing is graded), a stealth page, a quiz
        restricted until a date, a page restricted until an activity is complete, a hidden section holding a
        handout. None tracks completion; the quizzes keep a grade item as Moodle does (hidden with the activity:
        set_coursemodule_visible, course/lib.php) and hold no grade, no student having been able to attempt them.
        Which courses get which: see the conditions below (k = course id - 2)."""
        spec, cid, k = self.spec, course.id, course.id - 2
        section = 1 if spec.sections > 1 else 0
        graded = bool(items)  # a course where nothing is graded (cid % 11 == 10) gets pages instead of quizzes

        def add(modname: str, label: str, **fields: Any) -> Module:
            nonlocal n
            m = Module(cmid=cid * 1000 + n + 1, course_id=cid, section=fields.pop("section", section), modname=modname,
                       instance=cid * 100 + n + 1, name=f"{MODULE_NAMES[modname]} {n + 1} ({label})", completion=0,
                       **fields)
            if modname == "quiz":  # ids after the course's other items: the gradebook lists them last
                later = sum(1 for i in items if i.id >= cid * 1000 + 970)
                items.append(GradeItem(id=cid * 1000 + 970 + later, course_id=cid, itemname=m.name, itemtype="mod",
                                       itemmodule="quiz", iteminstance=m.instance, cmid=m.cmid, grademax=10.0,
                                       hidden=not m.visible))
                self.closed_cmids.add(m.cmid)
            modules.append(m)
            n += 1
            return m

        if k % 3 == 0:  # hidden with the eye icon: only those with moodle/course:viewhiddenactivities see it
            add("quiz" if graded else "page", "draft", visible=0)
        if k % 3 == 1:  # stealth: available to whoever has the link, not listed on the course page
            add("page", "direct link", visibleoncoursepage=0)
        if k % 4 == 0:  # restricted until a date two weeks ahead, shown greyed out with the date ("showc" true)
            opens = spec.now + 14 * DAY
            add("quiz" if graded else "page", "end of term", timeopen=opens if graded else 0,
                timeclose=opens + 7 * DAY if graded else 0,
                availability=json.dumps({"op": "&", "c": [{"type": "date", "d": ">=", "t": opens}], "showc": [True]},
                                        separators=(",", ":")))
            self.closed_cmids.add(modules[-1].cmid)
        first = next((m for m in modules if m.completion), None)
        if k % 4 == 2 and first is not None:  # restricted until another activity is complete
            add("page", "after the first activity", availability=json.dumps(
                {"op": "&", "c": [{"type": "completion", "cm": first.cmid, "e": 1}], "showc": [True]},
                separators=(",", ":")))
        if k % 5 == 0:  # a hidden section after the others: hiding it hid its activities too (visibleold kept 1)
            number = spec.sections
            self.sections[cid].append((cid * 100 + number, number, f"Week {number} (teacher notes)"))
            self.hidden_sections.add(cid * 100 + number)
            add("resource", "answers", section=number, visible=0)

    def _generate_due_date_changes(self) -> None:
        """Extensions for some students, user overrides for others, a later date for cohort B of group courses."""
        if not self.spec.edge_cases:
            return
        for cid, rows in self.assignments.items():
            for a in rows:
                for uid in self.students_of(cid):
                    h = self._h("due", a.id, uid)
                    if h % 15 == 0:
                        self.extensions[(a.id, uid)] = a.duedate + 7 * DAY
                    elif h % 25 == 1:
                        self.user_overrides[(a.id, uid)] = a.duedate + 3 * DAY
                if self.groups.get(cid) and a is rows[0]:
                    self.group_overrides[(a.id, self.groups[cid][1].id)] = a.duedate + 2 * DAY

    def _generate_service_users(self) -> None:
        """Users the integration tokens act as: enrolled in no course (the usual set-up)."""
        next_id = max(self.users) + 1
        for profile, (username, first) in {"integration": ("wsintegration", "Connector"),
                                           "manager": ("wsmanager", "Manager")}.items():
            self.users[next_id] = User(id=next_id, username=username, firstname=first, lastname="Integration",
                                       email=f"{username}@example.org", lastaccess=self.spec.now)
            self.service_users[profile] = next_id
            next_id += 1
        self.service_users["admin"] = 2
        self.service_users["declared"] = self.service_users["integration"]
        self.service_users["teacher"] = 3

    def _generate_enrol_instances(self) -> None:
        """Every course's default instances (EnrolInstance), and a second user_enrolments row for some students.

        In every third course (ids 3, 6, 9, ...) self enrolment was open at the start of term and has since been closed
        (the instance disabled, its rows kept): a quarter of the course's students, chosen by a hash (no draw from the
        generator, so nothing else in the school moves), enrolled themselves before the teacher enrolled them manually.
        Moodle then holds two user_enrolments rows for them in the course, one per instance; the functions the
        connector reads list a user once per course and count only enabled instances (enrollmentmethods stays
        ["manual"], core_enrol_get_enrolled_users lists them once), and only the custom report's participants source,
        which joins enrol instances to user_enrolments, shows both rows (reports.py)."""
        for n, cid in enumerate(sorted(self.courses)):
            first = 3 * n + 1
            self.enrol_instances[cid] = [
                EnrolInstance(first, cid, "manual", ENROL_INSTANCE_ENABLED),
                EnrolInstance(first + 1, cid, "guest", ENROL_INSTANCE_DISABLED, roleid=0),
                EnrolInstance(first + 2, cid, "self", ENROL_INSTANCE_DISABLED)]
            if cid % 3 == 0:
                self.self_enrolled[cid] = {uid for uid in self.students_of(cid) if self._h("selfenrol", cid, uid) % 4 == 0}

    # ------------------------------------------------------------------ views
    def instance_users(self, instance: EnrolInstance) -> List[Tuple[int, bool, int]]:
        """The user_enrolments rows of an instance as (user id, status active, timestart), by user id.

        The manual instance holds the school's `enrolments` (their `active` is ue.status); a self instance holds the
        students of `self_enrolled`, active from the course start, whether or not `enrolments` still holds them
        (unenrol() removes the manual row only, as enrol_plugin::unenrol_user() of one instance does); a guest instance
        holds none (enrol_guest never enrols)."""
        with self.lock:
            cid = instance.course_id
            if instance.enrol == "manual":
                return [(uid, e.active, e.timestart) for uid, e in sorted(self.enrolments.get(cid, {}).items())]
            if instance.enrol == "self":
                start = self.courses[cid].startdate
                return [(uid, True, start) for uid in sorted(self.self_enrolled.get(cid, set()))]
            return []

    def all_enrolments(self) -> Iterator[Tuple[int, int, Enrolment]]:
        for cid, rows in self.enrolments.items():
            for uid, e in rows.items():
                yield cid, uid, e

    def roles_of(self, user_id: int) -> Dict[int, str]:
        """The roles a user holds in courses through an active enrolment."""
        return {cid: e.role for cid, rows in self.enrolments.items() if (e := rows.get(user_id)) and e.active}


def _grades_differ(a: Optional[float], b: Optional[float]) -> bool:
    """grade_floats_different() (lib/gradelib.php): grade_floatval() rounds to 5 decimals, null stays null."""
    return (None if a is None else round(a, 5)) != (None if b is None else round(b, 5))


MULTILANG_SWAHILI = '<span lang="en" class="multilang">Swahili</span> <span lang="sw" class="multilang">Kiswahili</span>'
SHORT_NAMES = {MULTILANG_SWAHILI: "KISW"}
