"""An extract killed at any step leaves nothing half-done for transform and export to act on.

dlt's DuckDB merge deletes and then inserts, table by table, without one transaction: killed mid-load, the
raw tables hold parts of two runs, and enrolments missing from one read as students leaving. The extract
marks its load step ('loading' until finished), transform refuses while it is marked, and the next
extract finishes the interrupted load before fetching anything. The kill points are reached by patching
dlt in the killed process (no clock involved).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import run_export
from moodle_commcare.transform import TransformError, run_transform

from .conftest import Warehouse
from .export_support import assert_store_matches_marts, settings
from .oracle import VARS

KILLER = """
import os, signal, sys
from pathlib import Path
import dlt
from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob
from pipelines.moodle_pipeline import run_extract

point, jobs, db, base_url, token = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after_extract":
    dlt.Pipeline.normalize = die
elif point == "before_load":
    dlt.Pipeline.load = die
else:
    done = [0]
    copy = DuckDbCopyJob.run
    def run(self):
        copy(self)
        done[0] += 1
        if done[0] >= jobs:
            die()
    DuckDbCopyJob.run = run
run_extract(Path(db), base_url=base_url, token=token, allow_insecure_http=True)
"""


@pytest.mark.parametrize("point, jobs", [("after_extract", 0), ("before_load", 0), ("mid_load", 1), ("mid_load", 6)])
def test_killed_extract_changes_nothing_in_commcare_and_the_next_run_recovers(
        warehouse: Warehouse, hq: CommCareEmulator, tmp_path: Path, point: str, jobs: int) -> None:
    warehouse.extract()
    run_transform(warehouse.path, VARS)
    run_export(warehouse.path, settings(hq, tmp_path), upload=True)
    before = {c.case_id: (c.closed, dict(c.properties)) for c in hq.cases.values()}
    s = warehouse.moodle.school
    cid = next(c for c, items in s.grade_items.items() if items and s.students_of(c, True))
    uid = s.students_of(cid, True)[0]
    s.set_grade(cid, uid, next(i for i in s.grade_items[cid] if i.itemtype == "mod").id, 3.5)
    s.unenrol(cid, s.students_of(cid, True)[-1])  # one real departure, to arrive once all is loaded

    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(jobs), str(warehouse.path),
                             warehouse.moodle.base_url, warehouse.moodle.token], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    if point in ("before_load", "mid_load"):
        with pytest.raises(TransformError, match="stopped while loading"):
            run_transform(warehouse.path, VARS)
    else:
        run_transform(warehouse.path, VARS)  # nothing was loaded: the last good run's tables
    run_export(warehouse.path, settings(hq, tmp_path), upload=True)
    assert {c.case_id: (c.closed, dict(c.properties)) for c in hq.cases.values()} == before, "CommCare untouched"

    again = warehouse.extract()
    assert again.recovered >= 1 or point == "after_extract", "the interrupted load was finished first"
    assert again.stats.total_requests > 0, "and then this run did its own work"
    run_transform(warehouse.path, VARS)
    report = run_export(warehouse.path, settings(hq, tmp_path), upload=True)
    assert report.types[1].closed == 1, "only the real departure closes"
    assert_store_matches_marts(hq, warehouse.path)
