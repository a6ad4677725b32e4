"""Issue 16: a student mapped to a CommCare mobile worker carries their courses and grades offline.

End to end through real HTTP: the Moodle emulator's school is extracted, dbt builds the case tables, the export
uploads them to the CommCare emulator, and `phone_cases` answers what a restore would send to the student's phone
(HQ's livequery rules: owned open cases and their parents; never a parent's other children). The values on the
phone are checked against the school's own data (tests/oracle.py), never against the connector's SQL.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from emulators.commcare import CommCareEmulator
from emulators.moodle.school import School
from exports.commcare import run_export
from moodle_commcare.transform import run_transform

from . import oracle
from .conftest import Warehouse, module_warehouse
from .export_support import OWNERS, settings

# students with a phone of their own, two students sharing one worker id (refused), and everyone else unmapped
MAPPED = 3


def _pick(school: School) -> Tuple[List[int], List[int], int]:
    """Active students of two or more courses with an edge-case course among them, then a shared pair, then one
    unmapped classmate of the first."""
    def courses(uid: int) -> List[int]:
        return [c for c in school.courses if (e := school.enrolments[c].get(uid)) and e.role == "student"]

    hiding = {c for c in school.courses if school.offline_hidden_cmids(c)}
    candidates = sorted(u for u in school.users if not school.users[u].suspended and len(courses(u)) >= 2
                        and all(school.enrolments[c][u].active for c in courses(u)))
    first = [u for u in candidates if hiding & set(courses(u))]
    assert first, "the school needs a student in a course with hidden or restricted activities"
    mapped = [first[0]] + [u for u in candidates if u != first[0]][:MAPPED - 1]
    rest = [u for u in candidates if u not in mapped]
    shared = rest[:2]
    classmates = [u for c in courses(mapped[0]) for u in school.students_of(c, only_active=True)
                  if u not in mapped and u not in shared]
    return mapped, shared, classmates[0]


def worker(uid: int) -> str:
    return f"worker-of-{uid}"


def _vars(school: School, mapped: List[int], shared: List[int]) -> Dict[str, Any]:
    rows = [{"moodle_username": school.users[u].username, "commcare_user_id": worker(u)} for u in mapped]
    rows += [{"moodle_username": school.users[u].username, "commcare_user_id": "worker-shared"} for u in shared]
    return {**oracle.VARS, "commcare_student_workers": rows}


@pytest.fixture(scope="module")
def phone_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Warehouse, Any]]:
    """A warehouse extracted and transformed once with student mappings; each test works on its own copy."""
    with module_warehouse(tmp_path_factory, "phones") as wh:
        school = wh.moodle.school
        mapped, shared, unmapped = _pick(school)
        wh.extract()
        run_transform(wh.path, _vars(school, mapped, shared))
        yield wh, (mapped, shared, unmapped)


@pytest.fixture
def phones(phone_template: Tuple[Warehouse, Any], tmp_path: Path) -> Iterator[Tuple[Path, School, Any, Any]]:
    wh, people = phone_template
    copy = tmp_path / "moodle.duckdb"
    shutil.copy(wh.path, copy)
    mapped, shared, _ = people
    with CommCareEmulator(owners=set(OWNERS) | {worker(u) for u in mapped} | {"worker-shared"}) as hq:
        yield copy, wh.moodle.school, (mapped, shared, people[2], Warehouse(wh.moodle, copy)), hq


def _active_courses(school: School, uid: int) -> List[int]:
    return sorted(c for c in school.courses if (e := school.enrolments[c].get(uid)) and e.role == "student"
                  and e.active)


def test_a_mapped_student_gets_every_course_with_outline_grades_completion_and_due_items(
        phones: Tuple[Path, School, Any, CommCareEmulator], tmp_path: Path) -> None:
    db, school, (mapped, _, _, _), hq = phones
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert all(t.failed == 0 for t in report.types), [t.errors for t in report.types]
    for uid in mapped:
        phone = hq.phone_cases(worker(uid))
        own = {c.properties["moodle_course_id"]: c for c in phone.values() if c.case_type == "student_course"}
        courses = {c.properties["moodle_course_id"]: c for c in phone.values() if c.case_type == "course"}
        want = [str(c) for c in _active_courses(school, uid)]
        assert sorted(own) == sorted(want) and sorted(courses) == sorted(want), uid
        assert {c.case_type for c in phone.values()} == {"student_course", "course"}, "nothing else on the phone"
        for cid in _active_courses(school, uid):
            case, course = own[str(cid)], courses[str(cid)]
            assert case.indices["parent"][1] == course.case_id and case.owner_id == worker(uid)
            assert course.properties["outline"] == oracle.outline_text(school, cid), cid
            assert course.properties["course_url"] == f"{hq_moodle_url(db)}/course/view.php?id={cid}"
            expected = oracle.student_course_case(school, cid, uid)
            for name, value in expected.items():
                assert case.properties.get(name, "") == (value or ""), (uid, cid, name)
            assert case.properties["moodle_user_id"] == str(uid)


def hq_moodle_url(db: Path) -> str:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("select site_url from moodle_staging.stg_moodle__site_info limit 1").fetchone()
    assert row is not None
    return str(row[0])


def test_hidden_and_restricted_activities_never_reach_the_phone(
        phones: Tuple[Path, School, Any, CommCareEmulator], tmp_path: Path) -> None:
    db, school, (mapped, _, _, _), hq = phones
    run_export(db, settings(hq, tmp_path), upload=True)
    checked = 0
    for uid in mapped:
        for case in hq.phone_cases(worker(uid)).values():
            cid = int(case.properties["moodle_course_id"])
            hidden = [m for m in school.modules[cid] if m.cmid in school.offline_hidden_cmids(cid)]
            text = "\n".join(v for k, v in case.properties.items()
                             if k in ("outline", "grades", "completion", "overdue", "to_do", "submitted_late"))
            for m in hidden:
                name = oracle.plain(m.name) or ""
                assert not any(line.startswith((f"- {name} (", f"{name}:", f"{name} (due"))
                               for line in text.splitlines()), (cid, name)
                checked += 1
    assert checked, "no hidden or restricted activity was in a mapped student's courses"


def test_a_student_without_a_worker_gets_nothing_and_is_listed(
        phones: Tuple[Path, School, Any, CommCareEmulator], tmp_path: Path) -> None:
    import duckdb

    db, _, (mapped, shared, unmapped, _), hq = phones
    run_export(db, settings(hq, tmp_path), upload=True)
    theirs = [c for c in hq.cases.values() if c.case_type == "student_course"
              and c.properties.get("moodle_user_id") in {str(u) for u in [unmapped, *shared]}]
    assert theirs == []
    assert hq.phone_cases("worker-shared") == {}
    # and their coach still has them: the enrolment cases are there as before
    assert any(c.properties.get("moodle_user_id") == str(unmapped) for c in hq.cases.values()
               if c.case_type == "course_enrolment")
    with duckdb.connect(str(db), read_only=True) as con:
        reasons = dict(con.execute("select moodle_user_id, reason from commcare.commcare_unmapped_students")
                       .fetchall())
        unowned = con.execute("select count(*) from commcare.commcare_unowned_cases where case_type in "
                              "('course', 'student_course')").fetchone()
    assert unowned == (0,), "every course has an owner: nothing of the students' own is unowned"
    assert "no CommCare mobile worker" in reasons[unmapped]
    assert all("worker-shared is mapped to 2 Moodle students" in reasons[u] for u in shared)
    assert not set(mapped) & set(reasons)


def test_only_changes_go_out_a_new_grade_resends_one_students_case(
        phones: Tuple[Path, School, Any, CommCareEmulator], tmp_path: Path) -> None:
    db, school, (mapped, shared, _, copy), hq = phones
    run_export(db, settings(hq, tmp_path), upload=True)
    quiet = run_export(db, settings(hq, tmp_path), upload=True)
    for t in quiet.types:
        assert t.to_send == 0, (t.case_type, t.planned)
    # a teacher grades one of the mapped student's items
    uid = mapped[0]
    cid = _active_courses(school, uid)[0]
    item = next(i for i in school.grade_items[cid] if i.itemtype == "mod" and not i.hidden
                and i.cmid not in school.offline_hidden_cmids(cid))
    before = school.grade(item, uid)[0]
    school.set_grade(cid, uid, item.id, 12.0 if before != 12.0 else 13.0)  # in the gradebook: the course changed
    copy.extract()
    run_transform(db, _vars(school, mapped, shared))
    again = run_export(db, settings(hq, tmp_path), upload=True)
    by_type = {t.case_type: t for t in again.types}
    assert by_type["student_course"].planned.get("update") == 1, by_type["student_course"].planned
    assert by_type["course"].to_send == 0
    case = next(c for c in hq.phone_cases(worker(uid)).values()
                if c.case_type == "student_course" and c.properties["moodle_course_id"] == str(cid))
    assert case.properties["grades"] == oracle.student_course_case(school, cid, uid)["grades"]


def test_a_student_who_loses_their_worker_loses_the_cases_from_their_phone(
        phones: Tuple[Path, School, Any, CommCareEmulator], tmp_path: Path) -> None:
    db, school, (mapped, shared, _, _), hq = phones
    run_export(db, settings(hq, tmp_path), upload=True)
    gone = mapped[-1]
    assert hq.phone_cases(worker(gone))
    run_transform(db, _vars(school, mapped[:-1], shared))
    report = run_export(db, settings(hq, tmp_path), upload=True)
    closed = {t.case_type: t.closed for t in report.types}
    assert closed["student_course"] == len(_active_courses(school, gone))
    assert hq.phone_cases(worker(gone)) == {}
    assert all(hq.phone_cases(worker(u)) for u in mapped[:-1])



def test_the_worker_can_come_from_a_moodle_profile_field(tmp_path: Path) -> None:
    """var commcare_student_worker_field names a custom profile field holding the worker's CommCare user id (as
    core_user_get_users_by_field returns customfields); the seed, when it names the student too, wins."""
    import dataclasses

    import duckdb

    from emulators.moodle import MoodleEmulator

    from .conftest import SMALL

    with MoodleEmulator(spec=dataclasses.replace(SMALL, student_phones=0.2)) as moodle:
        school = moodle.school
        fielded = {u.id: f["value"] for u in school.users.values() for f in u.customfields
                   if f["shortname"] == "commcareuserid"}
        students = {u for c in school.courses for u in school.students_of(c)}
        assert fielded and set(fielded) & students
        wh = Warehouse(moodle, tmp_path / "moodle.duckdb")
        wh.extract()
        first = sorted(set(fielded) & students)[0]
        run_transform(wh.path, {**oracle.VARS, "commcare_student_worker_field": "commcareuserid",
                                "commcare_student_workers": [{"moodle_username": school.users[first].username,
                                                              "commcare_user_id": "from-the-seed"}]})
        with duckdb.connect(str(wh.path), read_only=True) as con:
            got = dict(con.execute("select user_id, commcare_user_id from moodle_intermediate."
                                   "int_commcare__student_workers where commcare_user_id is not null").fetchall())
            owners = dict(con.execute("select moodle_user_id, any_value(owner_id) from commcare."
                                      "commcare_student_course_cases where close is null group by 1").fetchall())
    want = {u: w for u, w in fielded.items() if u in students}
    want[first] = "from-the-seed"
    assert got == want
    assert set(owners) <= set(want) and all(owners[u] == want[u] for u in owners)
