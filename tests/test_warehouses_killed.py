"""Runs killed at the worst moments, on both warehouses (see tests/test_warehouses.py): an export killed after its
POST or before its ledger write, and an extract killed mid-load, each followed by a normal run that loses nothing and
duplicates nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import run_export
from moodle_commcare.transform import TransformError, run_transform

from .conftest import Warehouse as Extracts
from .export_support import assert_store_matches_marts, export_killed_at, settings
from .oracle import VARS
from .warehouse_support import built, graded


@pytest.mark.parametrize("point", ["after_post", "before_ledger_write"])
def test_an_export_killed_then_a_normal_one_duplicates_nothing_and_loses_nothing(
        engine_school: Extracts, hq: CommCareEmulator, tmp_path: Path, point: str) -> None:
    wh = built(engine_school)
    export_killed_at(point, wh, hq, tmp_path)
    uploads = hq.requests["upload"]
    run_export(wh, settings(hq, tmp_path, unknown_job_grace=0), upload=True)
    assert_store_matches_marts(hq, wh)
    quiet = run_export(wh, settings(hq, tmp_path), upload=True)
    assert all(t.to_send == 0 for t in quiet.types)
    assert hq.requests["upload"] >= uploads


KILL_MID_LOAD = """
import os, signal, sys
from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob
from dlt.destinations.impl.postgres.postgres import PostgresCsvCopyJob
from pipelines.moodle_pipeline import run_extract

where, base_url, token = sys.argv[1:]
for job in (DuckDbCopyJob, PostgresCsvCopyJob):  # the second table's load job kills the process
    def run(self, _copy=job.run, _done=[0]):
        _copy(self)
        _done[0] += 1
        if _done[0] >= 2:
            os.kill(os.getpid(), signal.SIGKILL)
    job.run = run
run_extract(where, base_url=base_url, token=token, allow_insecure_http=True)
"""


def test_an_extract_killed_mid_load_is_not_transformed_and_the_next_run_finishes_it(
        engine_school: Extracts, hq: CommCareEmulator, tmp_path: Path) -> None:
    wh = built(engine_school)
    run_export(wh, settings(hq, tmp_path), upload=True)
    before = {c.case_id: (c.closed, dict(c.properties)) for c in hq.cases.values()}
    graded(engine_school, 3.5)
    s = engine_school.moodle.school
    cid = next(c for c in s.courses if len(s.students_of(c, True)) > 1)
    s.unenrol(cid, s.students_of(cid, True)[-1])  # one real departure, to arrive once all is loaded

    killed = subprocess.run([sys.executable, "-c", KILL_MID_LOAD, str(wh), engine_school.moodle.base_url,
                             engine_school.moodle.token], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with pytest.raises(TransformError, match="stopped while loading"):
        run_transform(wh, VARS)
    run_export(wh, settings(hq, tmp_path), upload=True)
    assert {c.case_id: (c.closed, dict(c.properties)) for c in hq.cases.values()} == before, "CommCare untouched"

    again = engine_school.extract()
    assert again.recovered >= 1, "the interrupted load was finished first"
    run_transform(wh, VARS)
    report = run_export(wh, settings(hq, tmp_path), upload=True)
    assert report.types[1].closed == 1, "only the real departure closes"
    assert_store_matches_marts(hq, wh)
