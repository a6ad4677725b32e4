"""Every failure a scheduler can meet ends in one line and the exit code the README documents for it.

The commands run as the scheduler runs them: `python -m moodle_commcare.cli …` in a child process, settings
from the environment, the Moodle emulator on 127.0.0.1. A run held in the middle of its fan-out (the
emulator holds its answers until the test lets them go) shows what a second runner and Ctrl-C meet.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import pytest

from moodle_commcare import runlock
from moodle_commcare.failures import ExitCode, classify
from pipelines.moodle import webservice
from pipelines.moodle.errors import MoodleConfigError, MoodleInvalidResponseError

from .cli_support import cli, moodle_env, one_line_failure, snapshot_of
from .conftest import Warehouse


def test_a_setting_that_is_not_a_number(warehouse: Warehouse) -> None:
    run = cli("extract", "--duckdb", str(warehouse.path),
              env=moodle_env(warehouse.moodle, SOURCES__MOODLE__MAX_CONCURRENCY="abc"))
    one_line_failure(run, ExitCode.SETTINGS, "SOURCES__MOODLE__MAX_CONCURRENCY='abc' is not a valid int")


def test_moodle_answering_null_for_a_list_loads_nothing(warehouse: Warehouse) -> None:
    warehouse.extract()
    before = snapshot_of(warehouse)
    warehouse.moodle.inject("null", function=webservice.FN_ENROLLED_USERS, times=1_000)
    run = cli("extract", "--skip-check", "--duckdb", str(warehouse.path), env=moodle_env(warehouse.moodle))
    one_line_failure(run, ExitCode.MOODLE, "answered core_enrol_get_enrolled_users with null where it returns a list")
    assert snapshot_of(warehouse) == before


def test_null_inside_an_answer_is_refused_too() -> None:
    """`{"courses": null}` would read as a site with no courses, and every case would close."""
    with pytest.raises(MoodleInvalidResponseError, match="with null for 'courses', which is always a list"):
        webservice.check_answer(webservice.FN_COURSES, {"courses": None, "warnings": []})
    webservice.check_answer(webservice.FN_COURSES, {"courses": [], "warnings": []})  # empty is an answer


def test_export_before_transform(warehouse: Warehouse) -> None:
    warehouse.extract()
    run = cli("export", "--duckdb", str(warehouse.path), env={})
    one_line_failure(run, ExitCode.NOT_READY, "run `moodle-commcare transform` before exporting")


@pytest.fixture
def held_extract(warehouse: Warehouse) -> Iterator[subprocess.Popen]:
    """An extract stopped in the middle of its enrolment fan-out: the emulator holds every enrolment answer
    until the test ends, so the run holds the run lock for as long as the test needs it."""
    warehouse.extract()
    gate = threading.Event()
    held = threading.Event()

    def hold(function: str, params: Dict[str, Any]) -> None:
        if function == webservice.FN_ENROLLED_USERS:
            held.set()
            gate.wait()

    warehouse.moodle.after_request(hold)
    proc = cli("extract", "--skip-check", "--duckdb", str(warehouse.path), wait=False,
               env=moodle_env(warehouse.moodle, SOURCES__MOODLE__REQUEST_TIMEOUT="600"))
    try:
        assert held.wait(120), "the extract reached the fan-out"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        gate.set()


@pytest.mark.parametrize("command", [["extract"], ["transform"], ["export"]])
def test_a_second_run_while_one_is_going_on(warehouse: Warehouse, held_extract: subprocess.Popen,
                                            command: List[str]) -> None:
    run = cli(*command, "--duckdb", str(warehouse.path), env=moodle_env(warehouse.moodle))
    out = one_line_failure(run, ExitCode.BUSY, "Another moodle-commcare run is using")
    assert f"its extract (process {held_extract.pid}" in " ".join(out.split())
    status = cli("status", "--duckdb", str(warehouse.path), env={})
    assert f"Running now: extract (process {held_extract.pid}" in " ".join(status.stdout.split()), status.stdout
    assert held_extract.poll() is None, "the first run goes on"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_in_the_fan_out_stops_at_once_and_keeps_nothing(warehouse: Warehouse, held_extract: subprocess.Popen,
                                                              stop: int) -> None:
    """Ctrl-C, or the SIGTERM a scheduler sends at its timeout."""
    before = snapshot_of(warehouse)
    held_extract.send_signal(stop)
    # Moodle still holds its answers (for up to the 600 s request timeout): only a prompt stop ends the process
    held_extract.wait(timeout=60)
    err = held_extract.stderr.read()  # type: ignore[union-attr]
    assert held_extract.returncode == ExitCode.INTERRUPTED, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err, err[-3000:]
    assert runlock.holder(warehouse.path) is None, "the run lock went with the process"
    assert snapshot_of(warehouse) == before


def test_the_run_lock_is_released_by_a_killed_run(warehouse: Warehouse, held_extract: subprocess.Popen) -> None:
    held_extract.kill()
    held_extract.wait()
    assert runlock.holder(warehouse.path) is None
    warehouse.moodle.hooks.clear()
    warehouse.extract()  # no stale lock to clear by hand


PROBE = """
import sys
from pathlib import Path
from moodle_commcare import runlock
try:
    with runlock.run_lock(Path(sys.argv[1]), "extract"):
        print("got it")
except runlock.RunLocked as exc:
    print(exc)
"""


def test_one_process_may_nest_stages_but_another_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with runlock.run_lock(db, "demo"), runlock.run_lock(db, "extract"):
        probe = subprocess.run([sys.executable, "-c", PROBE, str(db)], text=True, capture_output=True, timeout=60)
        assert "its demo (process" in probe.stdout, probe.stdout + probe.stderr
    assert runlock.holder(db) is None
    probe = subprocess.run([sys.executable, "-c", PROBE, str(db)], text=True, capture_output=True, timeout=60)
    assert probe.stdout.strip() == "got it", probe.stdout + probe.stderr


@pytest.mark.parametrize("error, code", [
    (MoodleConfigError("x"), ExitCode.SETTINGS),
    (MoodleInvalidResponseError("x"), ExitCode.MOODLE),
    (OSError(28, "No space left on device"), ExitCode.DISK_FULL),
    (KeyboardInterrupt(), ExitCode.INTERRUPTED),
])
def test_errors_behind_dlt_wrappers_keep_their_code(error: BaseException, code: ExitCode) -> None:
    from dlt.pipeline.exceptions import PipelineStepFailed

    try:
        try:
            raise error
        except BaseException as inner:
            pipeline = SimpleNamespace(has_pending_data=False, pipeline_name="moodle")
            raise PipelineStepFailed(pipeline, "extract", "x", inner) from None  # type: ignore[arg-type]
    except PipelineStepFailed as wrapped:
        found = classify(wrapped)
    assert found is not None and found[0] == code
    assert classify(ValueError("a bug")) is None, "a bug keeps its traceback"
