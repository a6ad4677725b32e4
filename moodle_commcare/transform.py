"""Run the dbt project (dbt-duckdb) against the warehouse the pipeline loaded."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional

from .warehouse import connect, scalar
from .warehouse import resolve as duckdb_path

# Shipped as package data, so an installed moodle-commcare finds it as a checkout does.
PROJECT_DIR = Path(str(files("dbt_project"))).resolve()


def artifacts_dir(db: Optional[Path | str] = None) -> Path:
    """Where dbt writes its target (manifest, run results, partial-parse cache) and logs for a warehouse: beside
    the warehouse file, as dlt's working folder is, never inside the installed or checked-out project."""
    path = duckdb_path(db)
    return path.parent / ".dbt" / path.stem


class TransformError(Exception):
    """dbt failed: a model did not build or a data test failed."""


@dataclass
class TransformReport:
    """What dbt built and tested: one entry per node, for the CLI's table and the run log."""
    duckdb: Path
    results: List[Dict[str, Any]] = field(default_factory=list)

    def count(self, resource_type: str, status: Optional[str] = None) -> int:
        return sum(1 for r in self.results if r["type"] == resource_type and (status is None or r["status"] == status))


def run_dbt(args: List[str], db: Optional[Path | str] = None, dbt_vars: Optional[Dict[str, Any]] = None,
            quiet: bool = True) -> Any:
    """Invoke dbt in-process on our project with the warehouse path and vars; returns dbt's result."""
    from dbt.cli.main import dbtRunner

    path = duckdb_path(db)
    if not path.exists():
        raise TransformError(f"{path} does not exist: run `moodle-commcare extract` first (or set MOODLE_COMMCARE_DUCKDB).")
    os.environ["MOODLE_COMMCARE_DUCKDB"] = str(path)
    artifacts = artifacts_dir(path)
    full = [*args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
            "--target-path", str(artifacts / "target"), "--log-path", str(artifacts / "logs")]
    if quiet:
        full.append("--quiet")
    if dbt_vars:
        full += ["--vars", json.dumps(dbt_vars)]
    try:
        return dbtRunner().invoke(full)
    finally:
        _release_duckdb()


def _release_duckdb() -> None:
    """dbt-duckdb keeps its DuckDB handle open for the life of the process; close it so the file is free
    (checkpointed, unlocked) for analysts, other processes and the export step."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def run_transform(db: Optional[Path | str] = None, dbt_vars: Optional[Dict[str, Any]] = None,
                  select: Optional[str] = None, quiet: bool = True, accept_site_move: bool = False) -> TransformReport:
    """`dbt build`: seeds, models, unit and data tests. Raises TransformError listing what failed."""
    from .runlock import run_lock

    with run_lock(duckdb_path(db), "transform"):
        return _run_transform(db, dbt_vars, select, quiet, accept_site_move)


def _run_transform(db: Optional[Path | str], dbt_vars: Optional[Dict[str, Any]], select: Optional[str], quiet: bool,
                   accept_site_move: bool) -> TransformReport:
    from . import markers, runlog, site_identity

    began = runlog.utcnow()
    if markers.read_marker(duckdb_path(db), markers.EXTRACT_LOAD) == "loading":
        raise TransformError(
            "The last extract stopped while loading (killed, out of memory or disk full): the raw tables may hold "
            "part of one run and part of another, which would read as students leaving. Run `moodle-commcare "
            "extract` again: it finishes the interrupted load first, then this transform can run.")
    if duckdb_path(db).exists():
        try:
            key = site_identity.pin(duckdb_path(db), dbt_vars, accept_move=accept_site_move)
        except site_identity.SiteMoved as exc:
            raise TransformError(str(exc)) from None
        if key is not None:
            dbt_vars = {**(dbt_vars or {}), "moodle_site_key": key}
    args = ["build"] + (["--select", select] if select else [])
    if duckdb_path(db).exists():  # dbt rebuilds model by model: the export reads nothing until all passed
        markers.set_marker(duckdb_path(db), markers.TRANSFORM_BUILD, "building")
    result = run_dbt(args, db, dbt_vars, quiet)
    if isinstance(result.exception, KeyboardInterrupt):  # dbt hands Ctrl-C back as its result
        raise result.exception
    report = TransformReport(duckdb=duckdb_path(db))
    failures = []
    for r in result.result or []:
        node = r.node
        status = str(r.status)
        report.results.append({"name": node.name, "type": node.resource_type.value, "status": status,
                               "message": r.message, "failures": getattr(r, "failures", None)})
        if status in ("error", "fail"):
            failures.append(f"{node.resource_type.value} {node.name}: {r.message}")
    summary = {kind: report.count(kind) for kind in ("model", "seed", "unit_test", "test")}
    if result.exception is not None or failures or not result.success:
        markers.set_marker(report.duckdb, markers.TRANSFORM_BUILD, "failed")
        runlog.record_failure(report.duckdb, "transform", "failed", began, {**summary, "failures": failures[:20]})
    if result.exception is not None:
        raise TransformError(f"dbt could not run: {result.exception}")
    if failures or not result.success:
        raise TransformError("dbt build failed:\n  " + "\n  ".join(failures or ["see dbt's output above"]))
    with connect(report.duckdb, read_only=True) as con:
        for table in ("commcare_student_cases", "commcare_enrolment_cases", "commcare_unowned_cases"):
            summary[table] = scalar(con, f"select count(*) from commcare.{table}")
    markers.set_marker(report.duckdb, markers.TRANSFORM_BUILD, "complete")
    runlog.record(report.duckdb, "transform", "ok", began, summary)
    return report


def case_summary(db: Optional[Path | str] = None) -> List[Dict[str, Any]]:
    """Cases per type and status, read from the marts: what the export will have to send."""

    path = duckdb_path(db)
    with connect(path, read_only=True) as con:
        rows = con.execute("""
            select case_type, engagement_status, count(*) filter (where close is null), count(*) filter (where close = 'yes')
            from (select case_type, engagement_status, close from commcare.commcare_student_cases
                  union all select case_type, engagement_status, close from commcare.commcare_enrolment_cases)
            group by all order by 1, 2""").fetchall()
        unowned = con.execute("select case_type, count(*) from commcare.commcare_unowned_cases group by 1").fetchall()
    out = [{"case_type": t, "engagement_status": s, "open": o, "to_close": c} for t, s, o, c in rows]
    out += [{"case_type": t, "engagement_status": "(no owner: not exported)", "open": n, "to_close": 0} for t, n in unowned]
    return out
