"""Checks shared by the export tests (their fixtures, `export_template`, `db` and `hq`, are in conftest.py):
above all the one assertion that matters, that CommCare holds exactly what the marts say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Union

from emulators.commcare import CommCareEmulator
from exports.commcare import CommCareSettings
from moodle_commcare.database import MISSING_TABLE
from moodle_commcare.warehouse import Warehouse

Where = Union[Path, Warehouse]  # a DuckDB file, or any warehouse (the engine tests pass PostgreSQL ones)

OWNERS = {"owner-default", "demo-location-science", "demo-group-biology"}


def settings(hq: CommCareEmulator, tmp_path: Path, **extra: Any) -> CommCareSettings:
    values: Dict[str, Any] = dict(base_url=hq.base_url, project=hq.domain, username=hq.username, api_key=hq.api_key,
                                  allow_insecure_http=True, out_dir=tmp_path / "out", poll_interval=0.01,
                                  backoff_factor=0.01, max_retry_delay=2.0, max_attempts=3)
    values.update(extra)
    return CommCareSettings(**values)


def mart(db: Where, table: str) -> Dict[str, Dict[str, Any]]:
    with Warehouse.of(db).connect() as con:
        cur = con.execute(f"select * from commcare.{table}")
        names = [d[0] for d in cur.description]
        return {r[1]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def as_text(value: Any) -> str:
    """What a mart value must look like in CommCare: text, ISO dates, integers without .0."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value == int(value) else f"{value:.6f}".rstrip("0").rstrip(".")
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "hour") else value.strftime("%Y-%m-%d")
    return str(value)


def current_ids(db: Where, case_type: str) -> Dict[str, str]:
    """The mart's external id -> the id CommCare knows for its current episode (-r<n> after a reopen)."""
    with Warehouse.of(db).connect() as con:
        try:
            rows = con.execute("select external_id, episode from commcare_export.case_ledger where case_type = ?",
                               [case_type]).fetchall()
        except MISSING_TABLE:
            rows = []
    return {ext: (f"{ext}-r{ep}" if ep else ext) for ext, ep in rows}


def assert_store_matches_marts(hq: CommCareEmulator, db: Where) -> None:
    """Every open mart case exactly once, open, with the mart's values; every case to close closed or never
    created; every other case in CommCare an earlier, closed episode; no duplicates anywhere."""
    assert hq.duplicates() == {}
    for case_type, table in (("student", "commcare_student_cases"), ("course_enrolment", "commcare_enrolment_cases")):
        store = hq.by_external_id(case_type)
        rows = mart(db, table)
        ids = current_ids(db, case_type)
        parents = current_ids(db, "student")
        current = set()
        for ext, row in rows.items():
            sent = ids.get(ext, ext)
            current.add(sent)
            case = store.get(sent)
            if row["close"] == "yes":
                assert case is None or case.closed, f"{sent} should be closed"
                continue
            assert case is not None and not case.closed, f"{sent} should be open in CommCare"
            assert case.name == row["name"] and case.owner_id == row["owner_id"]
            special = {"case_type", "external_id", "name", "owner_id", "parent_external_id", "parent_type", "close"}
            props = {k: as_text(v) for k, v in row.items() if k not in special}
            assert case.properties == props, ext
            if case_type == "course_enrolment":
                parent = hq.cases[case.parent[1]]  # type: ignore[index]
                want = parents.get(row["parent_external_id"], row["parent_external_id"])
                assert (parent.external_id, parent.case_type, parent.closed) == (want, "student", False)
        for ext, case in store.items():
            assert ext in current or case.closed, f"{ext} is in CommCare, open, but no longer current"


def spawn_export(db: Where, hq: CommCareEmulator, tmp_path: Path, *extra: str) -> "subprocess.Popen[bytes]":
    """`moodle-commcare export --upload` in its own process, so a test can kill it with SIGKILL."""
    env = {**os.environ, "COMMCARE__BASE_URL": hq.base_url, "COMMCARE__PROJECT": hq.domain,
           "COMMCARE__USERNAME": hq.username, "COMMCARE__API_KEY": hq.api_key,
           "COMMCARE__ALLOW_INSECURE_HTTP": "true", "COMMCARE__POLL_INTERVAL": "0.01",
           "COMMCARE__OUT_DIR": str(tmp_path / "out")}
    args: List[str] = [sys.executable, "-m", "moodle_commcare.cli", "export", "--upload", "--skip-check", "--duckdb",
                       str(db), *extra]
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def export_killed_at(point: str, db: Where, hq: CommCareEmulator, tmp_path: Path) -> None:
    """`export --upload` in its own process, killed with SIGKILL at `point`: before_post (dies mid-POST: CommCare never
    queues the job), after_post (CommCare queued the job; its answer reaches no one), while_polling, or
    before_ledger_write (the job is done; its result never reaches the ledger). Returns once whatever CommCare queued
    has finished, as by the next scheduled run."""
    procs: List[Any] = []

    def kill(*_: Any) -> None:
        if procs and procs[0].poll() is None:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()

    if point == "before_post":
        hq.before_queue = lambda: (kill(), False)[1]
    elif point == "after_post":
        hq.after_queue = kill
    elif point == "while_polling":
        hq.on_status = kill
    else:
        hq.before_success_status = kill
    procs.append(spawn_export(db, hq, tmp_path))
    procs[0].wait(timeout=120)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].stdout.read().decode()[-3000:]
    hq.before_queue = hq.after_queue = hq.on_status = hq.before_success_status = None
    hq.wait_for_jobs()
