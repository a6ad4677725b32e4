"""An unenrolment while the run pages a course must not close another student's case (issue 11).

Moodle pages core_enrol_get_enrolled_users with limitfrom/limitnumber over users ordered by id: a user A of a
page already read who leaves moves everyone after them one place up, and B, first on the next page, is never
read. Missing from the course's latest read, B would come out unenrolled (or, in the onlyactive list,
suspended) and B's CommCare case closed. A teacher acting between two pages is the emulator's after_request
hook; the extract must read B, and A's departure must arrive by the next run.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import duckdb
import pytest

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from exports.commcare import run_export
from moodle_commcare.transform import run_transform

from .conftest import SMALL, Warehouse
from .export_support import assert_store_matches_marts, current_ids, settings
from .oracle import VARS

PAGE = 5
ENROLLED_USERS = "core_enrol_get_enrolled_users"


@pytest.fixture(params=[False, True], ids=["one_call_per_request", "batched"])
def moodle(request: pytest.FixtureRequest) -> Iterator[MoodleEmulator]:
    """Batched, every course's next pages go together round by round, so a page is answered long after the one
    before it: the race has more time, and the re-read must work the same."""
    with MoodleEmulator(spec=SMALL, batch_function=request.param) as emulator:
        yield emulator


def _sync(warehouse: Warehouse, hq: CommCareEmulator, tmp_path: Path) -> None:
    warehouse.extract(page_size=PAGE)
    run_transform(warehouse.path, VARS)
    run_export(warehouse.path, settings(hq, tmp_path), upload=True)


def _pick(warehouse: Warehouse, only_active: bool) -> Tuple[int, int, int]:
    """(course, A, B): B the first user of the list's second page, A a student of its first, both active students
    whose cases are open."""
    s = warehouse.moodle.school

    def ok(cid: int, uid: int) -> bool:
        e = s.enrolments[cid][uid]
        return e.role == "student" and e.active and not s.users[uid].suspended

    for cid in sorted(s.enrolments):
        listed = sorted(u for u, e in s.enrolments[cid].items() if e.active or not only_active)
        if len(s.students_of(cid)) > PAGE and len(listed) > PAGE + 1 and ok(cid, listed[PAGE]):
            firsts = [u for u in listed[:PAGE] if ok(cid, u)]
            if firsts:
                return cid, firsts[-1], listed[PAGE]
    raise AssertionError("no course with a student on each side of a page boundary")


def _enrolment(db: Path, hq: CommCareEmulator, cid: int, uid: int) -> Tuple[Dict[str, Any], Any]:
    """The pair's mart row and its current case in CommCare."""
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute("select * from commcare.commcare_enrolment_cases where moodle_course_id = ? and "
                          "moodle_user_id = ?", [cid, uid])
        names = [d[0] for d in cur.description]
        [row] = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        [(enrolled, status)] = con.execute("select is_enrolled, enrolment_status from moodle_intermediate."
                                           "int_moodle__enrolments where course_id = ? and user_id = ?",
                                           [cid, uid]).fetchall()
    row.update(is_enrolled=enrolled, status=status)
    external = row["external_id"]
    case = hq.by_external_id("course_enrolment").get(current_ids(db, "course_enrolment").get(external, external))
    return row, case


@pytest.mark.parametrize("only_active", [False, True], ids=["all_users", "active_users"])
def test_unenrolment_while_paging_closes_nobody_else(warehouse: Warehouse, hq: CommCareEmulator, tmp_path: Path,
                                                     only_active: bool, caplog: pytest.LogCaptureFixture) -> None:
    _sync(warehouse, hq, tmp_path)
    cid, a, b = _pick(warehouse, only_active)
    for uid in (a, b):
        row, case = _enrolment(warehouse.path, hq, cid, uid)
        assert row["status"] == "active" and case is not None and not case.closed, uid

    fired: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def teacher_unenrols_a(function: str, params: Dict[str, Any]) -> None:
        """The first time page 1 of the list is answered, A leaves: B moves onto page 1, which was read."""
        options = {o["name"]: o["value"] for o in params.get("options") or []}
        if (function != ENROLLED_USERS or str(params.get("courseid")) != str(cid)
                or int(options.get("limitfrom", -1)) != 0 or (options.get("onlyactive") == "1") != only_active):
            return
        with lock:
            if fired:
                return
            fired.append(options)
        warehouse.moodle.school.unenrol(cid, a)

    warehouse.moodle.after_request(teacher_unenrols_a)
    with caplog.at_level(logging.INFO, logger="pipelines.moodle.enrolments"):
        _sync(warehouse, hq, tmp_path)
    assert len(fired) == 1, "the hook unenrolled A between two pages"
    assert a not in warehouse.moodle.school.enrolments[cid]

    row, case = _enrolment(warehouse.path, hq, cid, b)
    assert (row["is_enrolled"], row["status"], row["enrolment_status"], row["close"]) == (
        True, "active", "active", None), "B was read"
    assert case is not None and not case.closed, "B's case stays open"
    assert case.properties.get("enrolment_status") == "active"
    assert f"(courses {cid})" in caplog.text, "only the raced course was read twice"
    assert_store_matches_marts(hq, warehouse.path)

    _sync(warehouse, hq, tmp_path)  # the next run confirms A's departure, and still has B
    row, case = _enrolment(warehouse.path, hq, cid, a)
    assert (row["is_enrolled"], row["status"], row["close"]) == (False, "unenrolled", "yes")
    assert case is not None and case.closed, "A's case closed"
    row, case = _enrolment(warehouse.path, hq, cid, b)
    assert row["status"] == "active" and case is not None and not case.closed
    assert_store_matches_marts(hq, warehouse.path)
