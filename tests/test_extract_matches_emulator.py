"""Every table the source loads holds exactly what the emulated Moodle holds, row for row."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from emulators.moodle.school import School

from .conftest import Warehouse, module_warehouse


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    with module_warehouse(tmp_path_factory, "loaded") as wh:
        wh.report = wh.extract()  # type: ignore[attr-defined]
        yield wh


def school(wh: Warehouse) -> School:
    return wh.moodle.school


def test_every_resource_becomes_a_table(loaded: Warehouse) -> None:
    assert loaded.tables() == sorted([
        "access_gaps", "activity_completion", "assignment_due_dates", "assignment_submissions", "assignment_user_flags",
        "assignments", "course_categories", "course_engagement", "course_modules", "course_sections", "courses",
        "enrolment_snapshots", "enrolments", "grades", "site_info", "users",
    ])


def test_site_info(loaded: Warehouse) -> None:
    [(siteurl, release, version, functions)] = loaded.rows("select siteurl, release, version, functions from site_info")
    assert siteurl == loaded.moodle.api.base_url
    assert (release, version) == (loaded.moodle.site.release, loaded.moodle.site.version_number)
    assert "core_user_get_users_by_field" in json.loads(functions)


def test_courses_without_site_course_and_with_hidden_ones(loaded: Warehouse) -> None:
    got = loaded.rows("select id, shortname, fullname, categoryid, visible, startdate, enddate, summary from courses order by id")
    want = [(c.id, c.shortname, c.fullname, c.categoryid, c.visible, c.startdate, c.enddate, c.summary)
            for c in sorted(school(loaded).courses.values(), key=lambda c: c.id)]
    assert got == want
    assert 1 not in [r[0] for r in got]
    assert any(r[4] == 0 for r in got), "the demo school has hidden courses"


def test_categories(loaded: Warehouse) -> None:
    got = loaded.rows("select id, name, parent, path, visible from course_categories order by id")
    # `visible` only for moodle/category:manage, which the README's role does not hold
    want = [(c.id, c.name, c.parent, c.path, None) for c in school(loaded).categories.values()]
    assert got == want


def test_enrolments_every_pair_with_role_status_and_access(loaded: Warehouse) -> None:
    got = set(loaded.rows("select course_id, user_id, roles, is_student, is_active, lastcourseaccess from enrolments"))
    want = {(cid, uid, e.role, e.role == "student", e.active, e.lastcourseaccess)
            for cid, uid, e in school(loaded).all_enrolments()}
    assert got == want
    assert any(not r[4] for r in got), "suspended enrolments are loaded, flagged inactive"
    snapshots = dict(loaded.rows("select course_id, enrolled_count from enrolment_snapshots"))
    assert snapshots == {cid: len(rows) for cid, rows in school(loaded).enrolments.items()}


def test_user_profiles_match_including_missing_phones_and_non_ascii(loaded: Warehouse) -> None:
    got = {r[0]: r[1:] for r in loaded.rows(
        "select id, firstname, lastname, email, phone1, phone2, address, city, country, idnumber, institution, "
        "department, lastaccess, suspended, customfields from users")}
    s = school(loaded)
    enrolled = {uid for _, uid, _ in s.all_enrolments()}
    assert set(got) == enrolled
    for uid in enrolled:
        u = s.users[uid]
        custom = {f["shortname"]: f["value"] for f in u.customfields} or None
        # Moodle shows `address` to site admins only (user/lib.php): the README's role never sees it
        want = (u.firstname, u.lastname, u.email, u.phone1 or None, u.phone2 or None, None,
                u.city or None, u.country or None, u.idnumber or None, u.institution or None, u.department or None,
                u.lastaccess, bool(u.suspended))
        assert got[uid][:-1] == want, uid
        assert (json.loads(got[uid][-1]) if got[uid][-1] else None) == custom
    assert any(r[3] is None for r in got.values()), "some students have no phone"
    assert any(not r[0].isascii() or not r[1].isascii() for r in got.values()), "non-ASCII names survive"
    assert any(r[12] for r in got.values()), "suspended users are flagged"


def test_grades_every_item_of_every_active_student(loaded: Warehouse) -> None:
    """As the README's role sees them: no hidden items (no moodle/grade:viewhidden), and so a total that includes a
    hidden grade comes back blank; no range where the course hides ranges."""
    s = school(loaded)
    got = {(r[0], r[1], r[2]): r[3:] for r in loaded.rows(
        "select course_id, user_id, grade_item_id, graderaw, itemtype, grademax, gradedategraded from grades")}
    want = {}
    for cid, items in s.grade_items.items():
        for uid in s.students_of(cid, only_active=True):
            for item in items:
                if item.hidden:
                    continue
                raw, when = s.grade(item, uid)
                if item.itemtype in ("course", "category") and s.has_hidden_grade(cid, uid):
                    raw, when = None, None
                want[(cid, uid, item.id)] = (raw, item.itemtype, item.grademax if s.courses[cid].showrange else None, when)
    assert got == want
    assert {k[0] for k in got} == {cid for cid in s.grade_items if s.students_of(cid, True)}
    assert {r[1] for r in got.values()} == {"mod", "manual", "category", "course"}, "every kind of grade item"


def test_engagement_progress_and_last_access(loaded: Warehouse) -> None:
    s = school(loaded)
    got = {(r[0], r[1]): r[2:] for r in loaded.rows(
        "select user_id, course_id, progress, completed, lastaccess from course_engagement")}
    want = {}
    for cid, uid, e in s.all_enrolments():
        if e.role != "student" or not e.active or not s.courses[cid].visible:
            continue  # a student's list of courses leaves out hidden ones (enrol_get_users_courses)
        tracked = [m for m in s.modules[cid] if m.completion]
        done = sum(1 for m in tracked if s.completion(m, uid)[0] in (1, 2))
        progress = done / len(tracked) * 100.0 if s.courses[cid].enablecompletion and tracked else None
        completed = (progress >= 100) if progress is not None else None
        want[(uid, cid)] = (progress, completed, e.lastcourseaccess or None)
    assert got == want
    assert any(not c.visible for c in s.courses.values()), "the school has hidden courses"


def test_activity_completion_per_student_and_activity(loaded: Warehouse) -> None:
    s = school(loaded)
    got = {(r[0], r[1]): r[2:] for r in loaded.rows(
        "select user_id, cmid, course_id, state, timecompleted from activity_completion")}
    want = {}
    for cid, uid, e in s.all_enrolments():
        if e.role == "student" and e.active and s.courses[cid].enablecompletion:
            for m in s.modules[cid]:
                if m.completion:
                    want[(uid, m.cmid)] = (cid, *s.completion(m, uid))
    assert got == want


def test_course_outline_sections_and_modules(loaded: Warehouse) -> None:
    """As the README's role sees them (get_course_contents): no hidden section (it lacks viewhiddensections), no
    hidden activity (viewhiddenactivities); stealth and restricted ones with what marks them, the restriction JSON
    withheld (sent only with viewhiddenactivities or course:update), due dates from each activity's `dates`."""
    s = school(loaded)
    sections = set(loaded.rows("select id, course_id, section, name, uservisible, availabilityinfo from course_sections"))
    assert sections == {(sid, cid, n, name, True, None) for cid, rows in s.sections.items() for sid, n, name in rows
                        if sid not in s.hidden_sections}
    modules = set(loaded.rows(
        "select m.id, m.course_id, s.section, m.modname, m.name, m.visible, m.visibleoncoursepage, m.uservisible, "
        "m.availability, m.availabilityinfo is not null, m.due_at from course_modules m "
        "join course_sections s on s.id = m.section_id"))
    assert modules == {(m.cmid, cid, m.section, m.modname, m.name, 1, m.visibleoncoursepage, not m.availability, None,
                        bool(m.availability), s.due_of(m))
                       for cid, ms in s.modules.items() for m in ms if m.visible}
    assert any(r[10] for r in modules) and any(r[6] == 0 for r in modules) and any(r[9] for r in modules), \
        "due dates, a stealth activity and a restricted one loaded"


def test_assignments_and_submissions(loaded: Warehouse) -> None:
    s = school(loaded)
    got = set(loaded.rows("select id, course_id, cmid, name, duedate, teamsubmission from assignments"))
    assert got == {(a.id, cid, a.cmid, a.name, a.duedate, a.teamsubmission) for cid, rows in s.assignments.items() for a in rows}
    subs = {(r[0], r[1], r[2]): r[3:] for r in loaded.rows(
        "select assignment_id, userid, groupid, status, timemodified from assignment_submissions")}
    want: dict[Any, Any] = {}
    for cid, rows in s.assignments.items():
        for a in rows:
            for uid in s.students_of(cid):
                got_sub = s.submission(a, uid)
                if got_sub:
                    want[(a.id, uid, 0)] = got_sub
            for group in s.groups.get(cid, []):
                team = s.group_submission(a, group)
                if team:  # a team's submission: userid 0, the group's id
                    want[(a.id, 0, group.id)] = team
    assert subs == want
    assert any(k[1] == 0 for k in subs), "team submissions arrive"
    flags = set(loaded.rows("select assignment_id, user_id, extensionduedate from assignment_user_flags"))
    assert flags == {(aid, uid, due) for (aid, uid), due in s.extensions.items()}


def test_report_counts_rows_and_requests(loaded: Warehouse) -> None:
    report = loaded.report  # type: ignore[attr-defined]
    assert report.table_rows["enrolments"] == len(list(school(loaded).all_enrolments()))
    assert report.rows_loaded["enrolments"] == report.table_rows["enrolments"]
    assert report.stats.requests == loaded.moodle.requests
