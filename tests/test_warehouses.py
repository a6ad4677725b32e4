"""The same end-to-end runs on both warehouses: the embedded DuckDB file and a PostgreSQL server (a real one, started
by scripts/postgres-server; `postgres_database` gives each test a database of its own).

Extract, transform and export with the ledger; an unchanged re-run that sends nothing and a changed grade that sends
one case; two runs at once; the run log `status` reads. Runs killed midway are in tests/test_warehouses_killed.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from exports.commcare import run_export
from moodle_commcare.failures import ExitCode
from moodle_commcare.transform import run_transform
from moodle_commcare.warehouse import Warehouse

from .conftest import SMALL
from .conftest import Warehouse as Extracts
from .export_support import assert_store_matches_marts, settings, spawn_export
from .oracle import VARS
from .warehouse_support import built, graded


def test_the_whole_job_then_a_quiet_rerun_then_one_changed_grade(engine_school: Extracts, hq: CommCareEmulator,
                                                                  tmp_path: Path) -> None:
    loaded = engine_school.extract()
    assert {t: n for t, n in loaded.rows_loaded.items() if n} == {t: n for t, n in loaded.table_rows.items() if n}, \
        "a first run loads every row in the tables, counted as rows (dlt's CSV writer counts cells)"
    wh = engine_school.path  # type: ignore[assignment]
    run_transform(wh, VARS)
    first = run_export(wh, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, wh)
    assert first.types[0].created == len(hq.by_external_id("student")) > 0
    assert [u["case_type"] for u in hq.uploads] == ["student", "course_enrolment"], "parents first"

    again = engine_school.extract()  # nothing changed in Moodle: fewer requests, nothing to send
    assert again.stats.total_requests > 0
    run_transform(wh, VARS)
    quiet = run_export(wh, settings(hq, tmp_path), upload=True)
    assert all(t.to_send == 0 for t in quiet.types) and len(hq.uploads) == 2

    cid, uid = graded(engine_school, 1.25)
    engine_school.extract()
    run_transform(wh, VARS)
    changed = run_export(wh, settings(hq, tmp_path), upload=True)
    assert [t.to_send for t in changed.types[:2]] == [0, 1] and changed.types[1].updated == 1
    case = hq.by_external_id("course_enrolment")[f"moodle-moodle-demo-academy-example-e-{cid}-{uid}"]
    assert "1.25/" in case.properties["grade_summary"]
    assert_store_matches_marts(hq, wh)

    runs = {r["stage"]: r for r in wh.last_runs()}  # the run log `status` shows
    assert {s: r["status"] for s, r in runs.items()} == {"extract": "ok", "transform": "ok", "export": "ok"}
    assert runs["export"]["summary"]["course_enrolment"]["updated"] == 1


def test_a_second_run_is_refused_while_one_holds_the_warehouse(engine_school: Extracts, hq: CommCareEmulator,
                                                               tmp_path: Path) -> None:
    wh = built(engine_school)
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
        engine_school = Extracts(moodle, old)  # type: ignore[arg-type]
        built(engine_school)
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
        graded(moved, 2.75)  # and it goes on from there: a change in Moodle reaches CommCare from the new one
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
