"""A transform killed half way, or one whose tests failed, never reaches CommCare.

dbt rebuilds the case tables one by one, then tests them: killed in between, one mart is new and the other
old; failed, a mart may hold what its tests refused. The transform marks its build until it has passed,
and the export refuses while the mark says 'building' or 'failed' (exit 7, "not ready").
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import run_export
from exports.commcare.errors import CommCareNotReady
from moodle_commcare.transform import TransformError, run_transform

from .export_support import assert_store_matches_marts, settings
from .oracle import VARS


def cases_of(hq: CommCareEmulator) -> dict:
    return {c.case_id: (c.closed, c.name, dict(c.properties)) for c in hq.cases.values()}


def test_a_transform_killed_between_two_marts_is_not_exported(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """`moodle-commcare transform` killed (kill -9, out of memory) once dbt has rebuilt the student cases: the
    point is read from dbt's own progress, which the command prints as it comes, so no clock is involved."""
    run_export(db, settings(hq, tmp_path), upload=True)
    before = cases_of(hq)
    args = ["transform", "--duckdb", str(db)] + [f"--var={k}={json.dumps(v) if not isinstance(v, str) else v}"
                                                  for k, v in VARS.items()]
    proc = subprocess.Popen([sys.executable, "-m", "moodle_commcare.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "commcare_student_cases" in line and "OK created" in line:
            dbt = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
            proc.send_signal(signal.SIGKILL)  # dbt, its child, dies with it (PR_SET_PDEATHSIG)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    for pid in dbt:  # wait for dbt's own end (it holds the warehouse until then): an event, not a clock
        with suppress(ProcessLookupError):
            handle = os.pidfd_open(pid)
            assert select.select([handle], [], [], 120)[0], f"dbt (process {pid}) outlived the transform it ran for"
            os.close(handle)
    with pytest.raises(CommCareNotReady, match="last transform stopped before it finished"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert cases_of(hq) == before

    run_transform(db, VARS)  # no dbt left behind holds the warehouse
    run_export(db, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, db)


def test_a_transform_whose_tests_failed_is_not_exported(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    before = cases_of(hq)
    bad_map = [{"scope": "school", "moodle_id": 1, "owner_id": "someone"}]  # a typo in the owner map
    with pytest.raises(TransformError, match="accepted_values"):
        run_transform(db, {**VARS, "commcare_owner_map": VARS["commcare_owner_map"] + bad_map})
    with pytest.raises(CommCareNotReady, match="last transform failed"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert cases_of(hq) == before
    status = subprocess.run([sys.executable, "-m", "moodle_commcare.cli", "status", "--duckdb", str(db)],
                            capture_output=True, text=True, timeout=120)
    assert "The last transform failed: export waits" in " ".join(status.stderr.split()), status.stderr

    run_transform(db, VARS)  # fixed
    run_export(db, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, db)
