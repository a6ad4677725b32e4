"""A disk that fills up in the middle of a run: one line and exit code 9; the warehouse, the ledger and
CommCare as they were; no half-written workbook; the next run (with space again) does the work.

The disk fills for the child process only, through its file-size limit (RLIMIT_FSIZE; Python ignores
SIGXFSZ, so writes past the limit fail with EFBIG, as they fail with ENOSPC on a full disk): no privileges,
no special filesystem, and every file the run writes, DuckDB's included, meets it. The limits are chosen
so the run fails while writing (dlt's load packages, DuckDB's log, a workbook); where exactly is up to the
run, and the outcome must not depend on it.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import duckdb
import openpyxl
import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import run_export
from moodle_commcare.failures import ExitCode
from moodle_commcare.transform import TransformError, run_transform
from pipelines.moodle_pipeline import load_state

from .cli_support import moodle_env, one_line_failure, snapshot_of, without_dlt_log_level
from .conftest import Warehouse
from .export_support import assert_store_matches_marts, settings
from .oracle import VARS


def file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def cli_on_a_full_disk(limit: int, *args: str, env: Dict[str, str]) -> Any:
    return subprocess.run([sys.executable, "-m", "moodle_commcare.cli", *args], capture_output=True, text=True,
                          env={**without_dlt_log_level(), "COLUMNS": "200", **env}, timeout=300,
                          preexec_fn=file_size_limit(limit))


def commcare_env(hq: CommCareEmulator, out: Path) -> Dict[str, str]:
    return {"COMMCARE__BASE_URL": hq.base_url, "COMMCARE__PROJECT": hq.domain, "COMMCARE__USERNAME": hq.username,
            "COMMCARE__API_KEY": hq.api_key, "COMMCARE__ALLOW_INSECURE_HTTP": "true",
            "COMMCARE__POLL_INTERVAL": "0.01", "COMMCARE__OUT_DIR": str(out)}


def ledger_rows(db: Path) -> List[Any]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("select table_schema || '.' || table_name from information_schema.tables "
                                            "where table_schema = 'commcare_export' order by 1").fetchall()]
        return [(t, sorted(map(repr, con.execute(f"select * from {t}").fetchall()))) for t in tables]


def commcare_cases(hq: CommCareEmulator) -> Dict[str, Any]:
    return {c.case_id: (c.closed, c.name, dict(c.properties)) for c in hq.cases.values()}


@pytest.mark.parametrize("limit_kb, while_loading", [(8, False), (64, True)])
def test_disk_full_during_extract(warehouse: Warehouse, limit_kb: int, while_loading: bool) -> None:
    warehouse.extract()
    before = snapshot_of(warehouse)
    school = warehouse.moodle.school
    course = next(c for c in school.enrolments if school.students_of(c, True))
    school.unenrol(course, school.students_of(course, True)[0])  # a change the run would load

    run = cli_on_a_full_disk(limit_kb * 1024, "extract", "--duckdb", str(warehouse.path),
                             env=moodle_env(warehouse.moodle))
    out = one_line_failure(run, ExitCode.DISK_FULL, "The disk is full")
    assert f"Free space where the warehouse ({warehouse.path.parent}) lives" in " ".join(out.split())
    assert (load_state(warehouse.path) == "loading") == while_loading
    if while_loading:  # dlt merges table by table: the load marker keeps the half-loaded tables from the marts
        with pytest.raises(TransformError, match="stopped while loading"):
            run_transform(warehouse.path, VARS)
    else:  # full while writing dlt's load package: nothing of the run reached the warehouse
        assert snapshot_of(warehouse) == before, "nothing of the failed run is in the warehouse"

    report = warehouse.extract()  # space again: the run loads, the departure with it
    assert report.table_rows["enrolments"] >= len(list(school.all_enrolments()))
    run_transform(warehouse.path, VARS)


WORKBOOK_ON_A_FULL_DISK = """
import errno, sys, zipfile
from moodle_commcare.cli import app

write = zipfile.ZipFile.write
def full(self, *args, **kwargs):  # the disk fills while xlsxwriter zips a workbook's parts
    if len(self.filelist) >= 3:
        raise OSError(errno.ENOSPC, "No space left on device")
    return write(self, *args, **kwargs)
zipfile.ZipFile.write = full
app(sys.argv[1:])
"""


@pytest.mark.parametrize("where", ["planning", "workbook", "after_upload"])
def test_disk_full_during_export(db: Path, hq: CommCareEmulator, tmp_path: Path, where: str) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)  # CommCare in step with the marts
    with duckdb.connect(str(db)) as con:  # then every student's name changes: one large workbook to write
        con.execute("update commcare.commcare_student_cases set name = name || ' (renamed)'")
    ledger, cases = ledger_rows(db), commcare_cases(hq)
    out = tmp_path / "out"
    shutil.rmtree(out)
    args = ["export", "--upload", "--allow-mass-change", "--duckdb", str(db)]
    env = {**without_dlt_log_level(), "COLUMNS": "200", **commcare_env(hq, out)}
    if where == "workbook":  # ENOSPC itself, raised where a full disk meets the workbook
        run = subprocess.run([sys.executable, "-c", WORKBOOK_ON_A_FULL_DISK, *args], env=env, capture_output=True,
                             text=True, timeout=300)
    else:  # DuckDB's log fills while the export plans (16 KB), or once the upload has gone (160 KB)
        run = cli_on_a_full_disk({"planning": 16, "after_upload": 160}[where] * 1024, *args, env=env)
    said = one_line_failure(run, ExitCode.DISK_FULL, "The disk is full")
    assert f"or the workbook folder ({out}) lives" in " ".join(said.split())

    after = dict(ledger_rows(db))
    assert after["commcare_export.case_ledger"] == dict(ledger)["commcare_export.case_ledger"]
    if where == "after_upload":  # CommCare may have the job: the journal holds it unsettled, its rows withheld
        with duckdb.connect(str(db), read_only=True) as con:
            states = [s for (s,) in con.execute("select state from commcare_export.jobs where created_at > "
                                                 "(select max(created_at) from commcare_export.jobs where state = "
                                                 "'succeeded')").fetchall()]
        assert states and set(states) <= {"sending", "queued"}, states
    else:
        assert ledger_rows(db) == ledger, "the ledger and the job journal are as they were"
        assert commcare_cases(hq) == cases, "nothing reached CommCare"
    for path in (out.rglob("*") if out.exists() else []):  # a workbook under its own name is whole; no parts
        assert (path.is_dir() and not path.name.startswith(".")) or openpyxl.load_workbook(path, read_only=True), path

    run_export(db, settings(hq, tmp_path, unknown_job_grace=0), upload=True, allow_mass_change=True)
    assert_store_matches_marts(hq, db)
