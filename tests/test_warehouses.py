"""The same end-to-end runs on both warehouses: the embedded DuckDB file and a PostgreSQL server (a real one, started
by scripts/postgres-server; `postgres_database` gives each test a database of its own).

Extract, transform and export with the ledger; an unchanged re-run that sends nothing and a changed grade that sends
one case; an export killed at the worst moments and an extract killed mid-load, each followed by a normal run that
loses nothing and duplicates nothing; two runs at once; the run log `status` reads.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from exports.commcare import run_export
from moodle_commcare.failures import ExitCode
from moodle_commcare.transform import TransformError, run_transform
from moodle_commcare.warehouse import Warehouse

from .conftest import SMALL
from .conftest import Warehouse as Extracts
from .export_support import assert_store_matches_marts, export_killed_at, settings, spawn_export
from .oracle import VARS


@pytest.fixture(params=["duckdb", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """The warehouse under test: a DuckDB file, or a fresh PostgreSQL database."""
    if request.param == "duckdb":
        return Warehouse.of(tmp_path / "moodle.duckdb")
    return Warehouse.of(request.getfixturevalue("postgres_database"))


@pytest.fixture
def school(target: Warehouse) -> Iterator[Extracts]:
    with MoodleEmulator(spec=SMALL) as moodle:
        yield Extracts(moodle, target)  # type: ignore[arg-type]  # run_extract takes any warehouse


def _built(school: Extracts) -> Warehouse:
    """Extracted and transformed once."""
    school.extract()
    run_transform(school.path, VARS)
    return school.path  # type: ignore[return-value]


def _graded(school: Extracts, grade: float) -> tuple:
    """A new grade for one active student's activity in Moodle: (course id, user id)."""
    s = school.moodle.school
    cid, uid = next((c, u) for c, u, e in s.all_enrolments()
                    if e.role == "student" and e.active and s.grade_items[c] and not s.users[u].suspended)
    s.set_grade(cid, uid, next(i for i in s.grade_items[cid] if i.itemtype == "mod").id, grade)
    return cid, uid


def test_the_whole_job_then_a_quiet_rerun_then_one_changed_grade(school: Extracts, hq: CommCareEmulator,
                                                                  tmp_path: Path) -> None:
    loaded = school.extract()
    assert {t: n for t, n in loaded.rows_loaded.items() if n} == {t: n for t, n in loaded.table_rows.items() if n}, \
        "a first run loads every row in the tables, counted as rows (dlt's CSV writer counts cells)"
    wh = school.path  # type: ignore[assignment]
    run_transform(wh, VARS)
    first = run_export(wh, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, wh)
    assert first.types[0].created == len(hq.by_external_id("student")) > 0
    assert [u["case_type"] for u in hq.uploads] == ["student", "course_enrolment"], "parents first"

    again = school.extract()  # nothing changed in Moodle: fewer requests, nothing to send
    assert again.stats.total_requests > 0
    run_transform(wh, VARS)
    quiet = run_export(wh, settings(hq, tmp_path), upload=True)
    assert all(t.to_send == 0 for t in quiet.types) and len(hq.uploads) == 2

    cid, uid = _graded(school, 1.25)
    school.extract()
    run_transform(wh, VARS)
    changed = run_export(wh, settings(hq, tmp_path), upload=True)
    assert [t.to_send for t in changed.types[:2]] == [0, 1] and changed.types[1].updated == 1
    case = hq.by_external_id("course_enrolment")[f"moodle-moodle-demo-academy-example-e-{cid}-{uid}"]
    assert "1.25/" in case.properties["grade_summary"]
    assert_store_matches_marts(hq, wh)

    runs = {r["stage"]: r for r in wh.last_runs()}  # the run log `status` shows
    assert {s: r["status"] for s, r in runs.items()} == {"extract": "ok", "transform": "ok", "export": "ok"}
    assert runs["export"]["summary"]["course_enrolment"]["updated"] == 1


@pytest.mark.parametrize("point", ["after_post", "before_ledger_write"])
def test_an_export_killed_then_a_normal_one_duplicates_nothing_and_loses_nothing(
        school: Extracts, hq: CommCareEmulator, tmp_path: Path, point: str) -> None:
    wh = _built(school)
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
        school: Extracts, hq: CommCareEmulator, tmp_path: Path) -> None:
    wh = _built(school)
    run_export(wh, settings(hq, tmp_path), upload=True)
    before = {c.case_id: (c.closed, dict(c.properties)) for c in hq.cases.values()}
    _graded(school, 3.5)
    s = school.moodle.school
    cid = next(c for c in s.courses if len(s.students_of(c, True)) > 1)
    s.unenrol(cid, s.students_of(cid, True)[-1])  # one real departure, to arrive once all is loaded

    killed = subprocess.run([sys.executable, "-c", KILL_MID_LOAD, str(wh), school.moodle.base_url,
                             school.moodle.token], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with pytest.raises(TransformError, match="stopped while loading"):
        run_transform(wh, VARS)
    run_export(wh, settings(hq, tmp_path), upload=True)
    assert {c.case_id: (c.closed, dict(c.properties)) for c in hq.cases.values()} == before, "CommCare untouched"

    again = school.extract()
    assert again.recovered >= 1, "the interrupted load was finished first"
    run_transform(wh, VARS)
    report = run_export(wh, settings(hq, tmp_path), upload=True)
    assert report.types[1].closed == 1, "only the real departure closes"
    assert_store_matches_marts(hq, wh)


def test_a_second_run_is_refused_while_one_holds_the_warehouse(school: Extracts, hq: CommCareEmulator,
                                                               tmp_path: Path) -> None:
    wh = _built(school)
    with wh.run_lock("sync"):  # this process runs; another one is started meanwhile
        holder = wh.lock_holder()
        assert holder is not None and holder["stage"] == "sync"
        proc = spawn_export(wh, hq, tmp_path)
        out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == ExitCode.BUSY, out[-2000:]
    assert "Another moodle-commcare run is using" in " ".join(out.split()) and "sync" in out
    assert hq.requests["upload"] == 0
    assert wh.lock_holder() is None
    proc = spawn_export(wh, hq, tmp_path)  # once it is over, the next run goes ahead
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out[-2000:]
    assert_store_matches_marts(hq, wh)


def test_a_duckdb_warehouse_moved_to_postgresql_sends_nothing_again(
        tmp_path: Path, hq: CommCareEmulator, postgres_database: str) -> None:
    """The README's migration: copy the connector's own state, re-read Moodle into the new warehouse, and the first
    export from it finds every case as CommCare already has it (the same text, digested alike on both engines)."""
    from moodle_commcare.migrate import MigrationRefused, migrate

    with MoodleEmulator(spec=SMALL) as moodle:
        old = Warehouse.of(tmp_path / "moodle.duckdb")
        school = Extracts(moodle, old)  # type: ignore[arg-type]
        _built(school)
        run_export(old, settings(hq, tmp_path), upload=True)
        uploads = hq.requests["upload"]

        new = Warehouse.of(postgres_database)
        report = migrate(old, new)
        assert report.copied["commcare_export.case_ledger"] == len(hq.cases) > 0
        assert report.copied["ops.site_identity"] == 1
        with pytest.raises(MigrationRefused, match="already has an export ledger"):
            migrate(old, new)  # twice would mix two ledgers

        moved = Extracts(moodle, new)  # type: ignore[arg-type]
        moved.extract(full_refresh=True)
        run_transform(new, VARS)
        first = run_export(new, settings(hq, tmp_path), upload=True)
        assert all(t.to_send == 0 for t in first.types), [t.planned for t in first.types]
        assert hq.requests["upload"] == uploads
        _graded(moved, 2.75)  # and it goes on from there: a change in Moodle reaches CommCare from the new one
        moved.extract()
        run_transform(new, VARS)
        assert run_export(new, settings(hq, tmp_path), upload=True).types[1].updated == 1
        assert_store_matches_marts(hq, new)


def test_a_scheduled_sync_on_postgresql_records_its_run_and_status_reads_it(
        tmp_path: Path, hq: CommCareEmulator, postgres_database: str) -> None:
    """`sync` as a scheduler runs it, on a server warehouse: every stage, one record, no analysts' copy (analysts
    read the server), and `status` naming the warehouse by its URL without a password."""
    from .cli_support import cli
    from .test_sync import env_for, sync_args

    url = postgres_database.replace("postgresql://postgres@", "postgresql://postgres:not-needed@")  # trust: unused
    hq.owners |= {"owner-default"}
    with MoodleEmulator(spec=SMALL) as moodle:
        run = cli(*sync_args(url), env=env_for(moodle, hq, tmp_path))  # type: ignore[arg-type]
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    wh = Warehouse.of(postgres_database)
    assert_store_matches_marts(hq, wh)
    [record] = wh.recent_runs("sync")
    assert record["status"] == "ok" and record["summary"]["published"] is None
    assert set(record["summary"]["stages"]) == {"check", "extract", "transform", "export"}
    status = cli("status", "--warehouse", url, env={})
    said = " ".join(status.stdout.split())
    assert status.returncode == 0 and "Recent syncs" in said and postgres_database in said, said
    assert "not-needed" not in run.stdout + run.stderr + status.stdout + status.stderr
    written = [f for f in tmp_path.rglob("*") if f.is_file()]  # dlt's state and trace, dbt's artifacts, the log
    assert any(".dlt_pipelines" in str(f) for f in written) and Path(record["summary"]["log_file"]) in written
    assert not [f for f in written if b"not-needed" in f.read_bytes()]
