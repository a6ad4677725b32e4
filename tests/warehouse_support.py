"""What both warehouse test files do to the engine-parametrised school (conftest `engine_school`: a DuckDB file or a
fresh PostgreSQL database). Two files (tests/test_warehouses.py, tests/test_warehouses_killed.py), so that
pytest-xdist runs them on two workers."""

from __future__ import annotations

from moodle_commcare.transform import run_transform
from moodle_commcare.warehouse import Warehouse

from .conftest import Warehouse as Extracts
from .oracle import VARS


def built(school: Extracts) -> Warehouse:
    """Extracted and transformed once."""
    school.extract()
    run_transform(school.path, VARS)
    return school.path  # type: ignore[return-value]


def graded(school: Extracts, grade: float) -> tuple:
    """A new grade for one active student's activity in Moodle: (course id, user id)."""
    s = school.moodle.school
    cid, uid = next((c, u) for c, u, e in s.all_enrolments()
                    if e.role == "student" and e.active and s.grade_items[c] and not s.users[u].suspended)
    s.set_grade(cid, uid, next(i for i in s.grade_items[cid] if i.itemtype == "mod").id, grade)
    return cid, uid
