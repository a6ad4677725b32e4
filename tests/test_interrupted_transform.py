"""A transform killed half way, or one whose tests failed, never reaches CommCare.

dbt rebuilds the case tables one by one, then tests them: killed in between, one mart is new and the other
old; failed, a mart may hold what its tests refused. The transform marks its build until it has passed,
and the export refuses while the mark says 'building' or 'failed' (exit 7, "not ready").
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import run_export
from exports.commcare.errors import CommCareNotReady
from moodle_commcare.transform import TransformError, run_transform

from .export_support import assert_store_matches_marts, settings
from .oracle import VARS

KILLER = """
import json, os, signal, sys
from pathlib import Path
import dbt.cli.main
from moodle_commcare.transform import run_transform

init = dbt.cli.main.dbtRunner.__init__

def die_after_the_student_cases(event):  # dbt's own event stream: no clock, the point is a node
    if event.info.name == "NodeFinished" and event.data.node_info.node_name == "commcare_student_cases":
        os.kill(os.getpid(), signal.SIGKILL)

def with_killer(self, *args, **kwargs):
    init(self, *args, callbacks=[die_after_the_student_cases])

dbt.cli.main.dbtRunner.__init__ = with_killer
run_transform(Path(sys.argv[1]), json.loads(sys.argv[2]))
"""


def cases_of(hq: CommCareEmulator) -> dict:
    return {c.case_id: (c.closed, c.name, dict(c.properties)) for c in hq.cases.values()}


def test_a_transform_killed_between_two_marts_is_not_exported(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    import json

    run_export(db, settings(hq, tmp_path), upload=True)
    before = cases_of(hq)
    killed = subprocess.run([sys.executable, "-c", KILLER, str(db), json.dumps(VARS)], capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    with pytest.raises(CommCareNotReady, match="last transform stopped before it finished"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert cases_of(hq) == before

    run_transform(db, VARS)
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
