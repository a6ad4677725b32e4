"""`moodle-commcare sync`, run as a scheduler runs it: one lock, one record, one exit code, a notification, and an
analysts' copy that never blocks a run."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import duckdb
import pytest

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from moodle_commcare.demo import OWNERS
from moodle_commcare.failures import ExitCode
from moodle_commcare.warehouse import Warehouse

from .cli_support import cli, moodle_env
from .conftest import SMALL
from .export_support import assert_store_matches_marts
from .oracle import VARS


def sync_args(db: Path, *extra: str) -> List[str]:
    return ["sync", "--warehouse", str(db), *extra,
            *(f"--var={name}={json.dumps(value) if not isinstance(value, str) else value}"
              for name, value in VARS.items())]


def env_for(moodle: MoodleEmulator, hq: CommCareEmulator, tmp_path: Path, **extra: str) -> Dict[str, str]:
    return {**moodle_env(moodle), "COMMCARE__BASE_URL": hq.base_url, "COMMCARE__PROJECT": hq.domain,
            "COMMCARE__USERNAME": hq.username, "COMMCARE__API_KEY": hq.api_key, "COMMCARE__ALLOW_INSECURE_HTTP": "true",
            "COMMCARE__OUT_DIR": str(tmp_path / "out"), "COMMCARE__POLL_INTERVAL": "0.01",
            "COMMCARE__BACKOFF_FACTOR": "0.01", "COMMCARE__MAX_ATTEMPTS": "2", **extra}


@pytest.fixture
def ends() -> Iterator[Any]:
    with MoodleEmulator(spec=SMALL) as moodle, CommCareEmulator(owners=OWNERS | {"owner-default"}) as hq:
        yield moodle, hq


def syncs(db: Path) -> List[Dict[str, Any]]:
    return Warehouse.of(db).recent_runs("sync")


def test_a_sync_runs_every_stage_and_records_one_run(ends: Any, tmp_path: Path) -> None:
    moodle, hq = ends
    db = tmp_path / "m.duckdb"
    run = cli(*sync_args(db), env=env_for(moodle, hq, tmp_path))
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    assert_store_matches_marts(hq, db)
    [record] = syncs(db)
    summary = record["summary"]
    assert record["status"] == "ok" and summary["exit_code"] == 0
    assert set(summary["stages"]) == {"check", "extract", "transform", "export", "publish"}
    assert summary["stages"]["export"]["sent"] == len(hq.cases)
    stages = {r["stage"] for r in Warehouse.of(db).last_runs()}
    assert {"extract", "transform", "export", "sync"} <= stages, "each stage's own record as well"
    lines = [json.loads(line) for line in Path(summary["log_file"]).read_text().splitlines()]
    assert lines and all(line["run_id"] == summary["run_id"] for line in lines)
    assert moodle.token not in Path(summary["log_file"]).read_text() + run.stdout + run.stderr
    with duckdb.connect(str(summary["published"]), read_only=True) as analyst:
        assert analyst.execute("select count(*) from commcare.commcare_student_cases").fetchone()[0] > 0

    status = cli("status", "--warehouse", str(db), env={"MOODLE_COMMCARE_SCHEDULE": "15 2 * * *"})
    said = " ".join(status.stdout.split())
    assert "Recent syncs" in said and "next sync due" in said and " 02:15" in said


def test_two_syncs_at_once_one_runs_the_other_refuses_and_nothing_is_sent_twice(ends: Any, tmp_path: Path) -> None:
    moodle, hq = ends
    moodle.latency = 0.01  # the first run holds the lock for a while
    db = tmp_path / "m.duckdb"
    env = env_for(moodle, hq, tmp_path, MOODLE_COMMCARE_NOTIFY_COMMAND=f"cat > {tmp_path / 'told.json'}")
    first, second = (cli(*sync_args(db), env=env, wait=False) for _ in range(2))
    outs = [p.communicate(timeout=600) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [ExitCode.OK, ExitCode.BUSY], outs
    told = json.loads((tmp_path / "told.json").read_text())
    assert told["exit_code"] == ExitCode.BUSY and told["failed_stage"] == "lock", "the refused run notified"
    refused = next(o for p, o in zip((first, second), outs, strict=True) if p.returncode == ExitCode.BUSY)
    assert "Another moodle-commcare run is using" in " ".join(refused[1].split())
    assert not hq.duplicates() and hq.requests["upload"] == 2, "one job per case type, once"
    assert len(syncs(db)) == 1

    waited = cli(*sync_args(db, "--wait", "600"), env=env, wait=False)
    again = cli(*sync_args(db), env=env, wait=False)
    for proc in (waited, again):
        proc.communicate(timeout=600)
    assert {waited.returncode, again.returncode} <= {ExitCode.OK, ExitCode.BUSY}
    assert waited.returncode == ExitCode.OK, "the one told to wait ran after the other"
    assert not hq.duplicates() and hq.requests["upload"] == 2, "nothing changed in Moodle: nothing more sent"


def test_an_analyst_connected_through_a_sync_keeps_reading(ends: Any, tmp_path: Path) -> None:
    moodle, hq = ends
    db = tmp_path / "m.duckdb"
    env = env_for(moodle, hq, tmp_path)
    assert cli(*sync_args(db), env=env).returncode == ExitCode.OK
    copy = Warehouse.of(db).analysts_copy
    analyst = duckdb.connect(str(copy), read_only=True)
    try:
        before = analyst.execute("select count(*) from moodle_raw.users").fetchone()[0]
        school = moodle.school
        course = next(c for c in school.enrolments if school.students_of(c, True))
        school.unenrol(course, school.students_of(course, True)[0])
        run = cli(*sync_args(db), env=env)
        assert run.returncode == ExitCode.OK, run.stdout + run.stderr
        assert analyst.execute("select count(*) from moodle_raw.users").fetchone()[0] == before, "still reading"
    finally:
        analyst.close()
    with duckdb.connect(str(copy), read_only=True) as fresh:
        closing = fresh.execute("select count(*) from commcare.commcare_enrolment_cases where close = 'yes'").fetchone()[0]
    assert closing >= 1, "a new connection reads the new copy"


class _Hook(BaseHTTPRequestHandler):
    received: List[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        _Hook.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def _notified(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def test_moodle_down_exit_4_recorded_and_notified_then_the_next_sync_completes(ends: Any, tmp_path: Path,
                                                                             hook: str) -> None:
    moodle, hq = ends
    db = tmp_path / "m.duckdb"
    note = tmp_path / "note.json"
    env = env_for(moodle, hq, tmp_path, MOODLE_COMMCARE_NOTIFY_COMMAND=f"cat > {note}", MOODLE_COMMCARE_NOTIFY_URL=hook)
    moodle.maintenance = "html"
    run = cli(*sync_args(db), env=env)
    assert run.returncode == ExitCode.MOODLE, run.stdout + run.stderr
    [record] = syncs(db)
    assert record["status"] == "failed" and record["summary"]["failed_stage"] == "check"
    sent = _notified(note)
    assert sent["exit_code"] == ExitCode.MOODLE and "maintenance" in sent["error"]
    assert json.loads(_Hook.received[0]) == sent
    assert moodle.token not in note.read_text() and hq.api_key not in note.read_text()
    assert not hq.cases

    moodle.maintenance = None
    note.unlink()
    assert cli(*sync_args(db), env=env).returncode == ExitCode.OK
    assert not note.exists(), "a good run notifies nobody (MOODLE_COMMCARE_NOTIFY_ON=failure)"
    assert_store_matches_marts(hq, db)


def test_commcare_401_mid_run_leaves_the_cases_pending_for_the_next_sync(ends: Any, tmp_path: Path) -> None:
    moodle, hq = ends
    db = tmp_path / "m.duckdb"
    env = env_for(moodle, hq, tmp_path)
    bad = cli(*sync_args(db, "--skip-check"), env={**env, "COMMCARE__API_KEY": "revoked-key-0000"})
    assert bad.returncode == ExitCode.COMMCARE, bad.stdout + bad.stderr
    assert syncs(db)[0]["summary"]["failed_stage"] == "export"
    assert not hq.cases and "revoked-key-0000" not in bad.stdout + bad.stderr
    assert cli(*sync_args(db), env=env).returncode == ExitCode.OK
    assert_store_matches_marts(hq, db)
    assert not hq.duplicates()


def test_a_dbt_test_failure_stops_before_the_export(ends: Any, tmp_path: Path) -> None:
    moodle, hq = ends
    db = tmp_path / "m.duckdb"
    env = env_for(moodle, hq, tmp_path)
    bad_map = '--var=commcare_owner_map=[{"scope": "galaxy", "moodle_id": 1, "owner_id": "x"}]'
    run = cli(*sync_args(db), bad_map, env=env)
    assert run.returncode == ExitCode.NOT_READY, run.stdout + run.stderr
    assert syncs(db)[0]["summary"]["failed_stage"] == "transform"
    assert not hq.cases and not Warehouse.of(db).analysts_copy.exists()


def test_warnings_exit_10(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle, CommCareEmulator(owners=OWNERS | {"owner-default"}) as hq:
        moodle.prohibit("report/completion:view")  # progress stays empty: a warning, the run goes on
        run = cli(*sync_args(tmp_path / "m.duckdb"), env=env_for(moodle, hq, tmp_path))
        assert run.returncode == ExitCode.WARNINGS, run.stdout + run.stderr
        assert "report/completion:view" in " ".join(run.stdout.split())
        assert_store_matches_marts(hq, tmp_path / "m.duckdb")


def test_the_exit_codes_split_into_retry_and_person() -> None:
    from moodle_commcare.failures import RETRY_SAFE, SUCCESS, needs_a_person

    assert {int(c) for c in RETRY_SAFE} == {4, 5, 6, 130} and {int(c) for c in SUCCESS} == {0, 10}
    assert all(needs_a_person(c) for c in (1, 2, 3, 7, 8, 9)) and not any(needs_a_person(c) for c in (0, 4, 10))
