"""What the case tables should hold, computed from the emulated school alone (never from the connector's code)."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Optional

import duckdb
import phonenumbers

from emulators.moodle.school import School
from emulators.moodle.site import multilang
from moodle_commcare.demo import OWNER_MAP

from .conftest import SMALL

AS_OF = datetime.fromtimestamp(SMALL.now, timezone.utc).replace(tzinfo=None)
DEFAULT_OWNER = "owner-default"
VARS = {"as_of": AS_OF.isoformat(sep=" "), "commcare_default_owner_id": DEFAULT_OWNER, "commcare_owner_map": OWNER_MAP}
SITE = "moodle-moodle-demo-academy-example"


def cases(db: Any, table: str) -> Dict[str, Dict[str, Any]]:
    with duckdb.connect(str(db)) as con:
        cur = con.execute(f"select * from commcare.{table}")
        names = [d[0] for d in cur.description]
        return {row[1]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def ts(seconds: int) -> Optional[datetime]:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None) if seconds else None


def owner_of(school: School, course_id: int) -> str:
    if course_id == 2:
        return "demo-group-biology"
    path = school.categories[school.courses[course_id].categoryid].path
    return "demo-location-science" if "1" in path.strip("/").split("/") else DEFAULT_OWNER


def due(school: School, a: Any, user_id: int, overrides: bool = False) -> int:
    """The student's own due date as the extract knows it: the extension always, overrides only when read."""
    return school.due_date_of(a, user_id) if overrides else max(a.duedate, school.extensions.get((a.id, user_id), 0))


def missing(school: School, course_id: int, user_id: int, overrides: bool = False) -> int:
    """Past the student's own due date, with no work of theirs or their team's."""
    return sum(1 for a in school.assignments[course_id]
               if due(school, a, user_id, overrides) < SMALL.now and school.submitted_by(a, user_id) is None)


def late(school: School, course_id: int, user_id: int, overrides: bool = False) -> int:
    return sum(1 for a in school.assignments[course_id]
               if (at := school.submitted_by(a, user_id)) is not None and at > due(school, a, user_id, overrides))


def engagement(school: School, course_id: int, user_id: int, overrides: bool = False) -> str:
    e = school.enrolments[course_id][user_id]
    if not e.lastcourseaccess:
        return "not_started"
    days = (AS_OF.date() - ts(e.lastcourseaccess).date()).days  # type: ignore[union-attr]
    if days > 21:
        return "inactive"
    if days > 7 or missing(school, course_id, user_id, overrides) >= 2:
        return "at_risk"
    return "active"


def plain(name: Optional[str]) -> Optional[str]:
    """A stored name as a phone shows it: Moodle's multilang filter for English (the emulator's copy), unescaped."""
    return None if name is None else html.unescape(multilang(name, "en"))


def e164(raw: str, country: str) -> Optional[str]:
    if not raw:
        return None
    try:
        n = phonenumbers.parse(raw, country or None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) if phonenumbers.is_valid_number(n) else None


def enrolment_cases(school: School, course_ids: Iterable[int], overrides: bool = False) -> Dict[str, Dict[str, Any]]:
    """Key properties of every enrolment case of the selected courses."""
    out = {}
    for cid in course_ids:
        for uid, e in school.enrolments[cid].items():
            if e.role != "student":
                continue
            active = e.active and not school.users[uid].suspended
            total = None if school.has_hidden_grade(cid, uid) else school.course_total(cid, uid)[0]
            graded = sum(1 for i in school.grade_items[cid]
                         if i.itemtype in ("mod", "manual") and not i.hidden and school.grade(i, uid)[0] is not None)
            out[f"{SITE}-e-{cid}-{uid}"] = {
                "course_fullname": plain(school.courses[cid].fullname),
                "enrolment_status": "active" if e.active else "suspended",
                "close": None if active else "yes",
                "final_grade_raw": (None if total is None else round(total, 4)) if e.active else "(not read)",
                "graded_items": graded if e.active else "(not read)",
                "missing_submissions": missing(school, cid, uid, overrides),
                "engagement_status": engagement(school, cid, uid, overrides),
            }
    return out


def student_cases(school: School, course_ids: Iterable[int]) -> Dict[str, Dict[str, Any]]:
    out = {}
    course_ids = list(course_ids)
    for uid in {u for c in course_ids for u, e in school.enrolments[c].items() if e.role == "student"}:
        u = school.users[uid]
        active = sum(1 for c in course_ids if (e := school.enrolments[c].get(uid)) and e.role == "student" and e.active)
        phone = e164(u.phone1, u.country) or e164(u.phone2, u.country)
        out[f"{SITE}-u-{uid}"] = {
            "name": u.fullname,
            "sms_phone": phone,
            "sms_phone_status": "ok" if phone else ("invalid" if (u.phone1 or u.phone2) else "none"),
            "active_course_count": active,
            "close": "yes" if active == 0 or u.suspended else None,
        }
    return out


def compare(got: Dict[str, Dict[str, Any]], want: Dict[str, Dict[str, Any]]) -> None:
    """Every case expected, none more, and each expected property equal ("(not read)": Moodle does not report it)."""
    assert set(got) == set(want)
    for key, props in want.items():
        for name, value in props.items():
            if value == "(not read)":
                continue
            actual = got[key][name]
            if isinstance(value, float) and actual is not None:
                actual = round(actual, 4)
            assert actual == value, (key, name, actual, value)


KIND = {"assign": "assignment", "url": "link", "resource": "file", "h5pactivity": "H5P", "scorm": "SCORM package",
        "data": "database", "lti": "external tool", "bigbluebuttonbn": "online meeting"}


def day(seconds: Optional[int]) -> Optional[str]:
    return None if not seconds else datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d")


def outline_text(school: School, course_id: int) -> str:
    """A course's outline as the phone must show it, from the school's own outline (School.outline)."""
    lines = []
    for _, section_name, activities in school.outline(course_id):
        shown = [a for a in activities if a[2] != "label"]
        if not shown:
            continue
        lines.append(plain(section_name) or "")
        for _, name, modname, due_at in shown:
            lines.append(f"- {plain(name)} ({KIND.get(modname, modname)}" + (f", due {day(due_at)}" if due_at else "")
                         + ")")
    return "\n".join(lines)


def _g(x: float) -> str:
    return f"{round(x, 2):g}"


def student_course_case(school: School, course_id: int, user_id: int) -> Dict[str, Any]:
    """What a student's own course case must say, from the school alone: grades of the items Moodle shows the
    student, completion and due items of the activities the outline shows (no hidden, stealth or restricted one)."""
    order = {cmid: n for n, (cmid, *_rest) in enumerate(
        a for _, _, acts in school.outline(course_id) for a in acts if a[2] != "label")}
    hidden = school.offline_hidden_cmids(course_id)
    items = [i for i in school.grade_items[course_id] if i.itemtype in ("mod", "manual") and not i.hidden
             and (i.cmid is None or i.cmid in order)]
    items.sort(key=lambda i: (order.get(i.cmid, 10**6) if i.cmid is not None else 10**6, i.id))
    grades = []
    for i in items:
        raw = school.grade(i, user_id)[0]
        if not school.courses[course_id].showrange:  # no range to show: Moodle's formatted grade
            grades.append(f"{plain(i.itemname)}: " + ("-" if raw is None else f"{raw:.2f}"))
            continue
        grades.append(f"{plain(i.itemname)}: " + (f"{_g(raw)}/{_g(i.grademax)}" if raw is not None
                                                   else f"-/{_g(i.grademax)}"))
    modules = sorted((m for m in school.modules[course_id] if m.cmid in order and m.completion > 0),
                     key=lambda m: order[m.cmid])
    completion = []
    if school.courses[course_id].enablecompletion:
        for m in modules:
            state = school.completion(m, user_id)[0]
            completion.append(f"{plain(m.name)}: " + ("done" if state in (1, 2) else "failed" if state == 3
                                                       else "not done"))
    overdue, to_do, late_lines = [], [], []
    for a in sorted((a for a in school.assignments[course_id] if a.cmid not in hidden and a.cmid in order),
                    key=lambda a: (due(school, a, user_id) or 10**11, a.id)):
        at = due(school, a, user_id)
        sent = school.submitted_by(a, user_id)
        note = f"{plain(a.name)} (due {day(at) or 'no date'})"
        if sent is None and at and at < SMALL.now:
            overdue.append(note)
        if sent is None and (not at or at >= SMALL.now):
            to_do.append(note)
        if sent is not None and at and sent > at:
            late_lines.append(f"{note}, submitted {day(sent)}")
    return {"grades": "\n".join(grades) or None, "completion": "\n".join(completion) or None,
            "overdue": "\n".join(overdue) or None, "to_do": "\n".join(to_do) or None,
            "submitted_late": "\n".join(late_lines) or None}
