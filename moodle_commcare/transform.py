"""Run the dbt project (dbt-duckdb) against the warehouse the pipeline loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Union

from .warehouse import CASE_TYPES, UNMAPPED_TABLE, UNOWNED_TABLE, Warehouse, scalar

Where = Union[Warehouse, Path, str, None]  # a warehouse, or what Warehouse.of reads as one

# Shipped as package data, so an installed moodle-commcare finds it as a checkout does.
PROJECT_DIR = Path(str(files("dbt_project"))).resolve()


def artifacts_dir(db: Where = None) -> Path:
    """Where dbt writes its target (manifest, run results, partial-parse cache) and logs for a warehouse."""
    return Warehouse.of(db).dbt_artifacts_dir


def _dbt_error(output: str) -> str:
    """The lines of dbt's output from its error on: what a user needs, without dbt's start-up chatter."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "error" in line.lower()), max(len(lines) - 6, 0))
    return " ".join(line.strip() for line in lines[start:start + 8])


class TransformError(Exception):
    """dbt failed: a model did not build or a data test failed."""


@dataclass
class TransformReport:
    """What dbt built and tested: one entry per node, for the CLI's table and the run log."""
    duckdb: Path
    results: List[Dict[str, Any]] = field(default_factory=list)

    def count(self, resource_type: str, status: Optional[str] = None) -> int:
        return sum(1 for r in self.results if r["type"] == resource_type and (status is None or r["status"] == status))


@dataclass
class DbtResult:
    """What a dbt command did: its exit code, each node's result (run_results.json), and the end of its output."""

    returncode: int
    nodes: List[Dict[str, Any]] = field(default_factory=list)
    output_tail: str = ""

    @property
    def success(self) -> bool:
        return self.returncode == 0

    @property
    def error(self) -> Optional[str]:
        """dbt's own error (a compilation error, a bad var) when it stopped before running nodes."""
        if self.returncode in (0, 1):  # 1: ran, and some node failed (the nodes say which)
            return None
        return self.output_tail.strip() or f"dbt exited with code {self.returncode}"


def run_dbt(args: List[str], db: Where = None, dbt_vars: Optional[Dict[str, Any]] = None,
            quiet: bool = True) -> DbtResult:
    """Run dbt on the project in a child process, with the warehouse path and vars.

    A child, not dbtRunner in this process: dbt-duckdb keeps its DuckDB handle (and its memory) for the life
    of the process it runs in, so the file stays locked and the memory held until the process ends. The child
    dies with this process (a kill of the run leaves no dbt writing behind it), and its output is shown unless
    quiet, keeping the end of it for an error message.
    """
    warehouse = Warehouse.of(db)
    if not warehouse.exists():
        raise TransformError(f"{warehouse} does not exist: run `moodle-commcare extract` first (or name the "
                             "warehouse with --warehouse or MOODLE_COMMCARE_WAREHOUSE).")
    artifacts = warehouse.dbt_artifacts_dir
    results_file = artifacts / "target" / "run_results.json"
    results_file.unlink(missing_ok=True)  # never read an earlier command's results as this one's
    full = [sys.executable, "-m", "dbt.cli.main", *args, "--project-dir", str(PROJECT_DIR),
            "--profiles-dir", str(PROJECT_DIR), "--target-path", str(artifacts / "target"),
            "--log-path", str(artifacts / "logs")]
    if quiet:
        full.append("--quiet")
    if dbt_vars:
        full += ["--vars", json.dumps(dbt_vars)]
    env = {**os.environ, **warehouse.dbt_env()}
    tail: Deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_die_with_parent)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            if not quiet:
                sys.stdout.write(line)
                sys.stdout.flush()  # live progress, also through a pipe
        returncode = proc.wait()
    except BaseException:  # Ctrl-C or SIGTERM here: the child gets no say
        proc.kill()
        proc.wait()
        raise
    if returncode < 0 and -returncode in (signal.SIGINT, signal.SIGTERM):
        raise KeyboardInterrupt(f"dbt stopped by signal {-returncode}")
    nodes: List[Dict[str, Any]] = []
    if results_file.exists():
        for r in json.loads(results_file.read_text(encoding="utf-8")).get("results", []):
            parts = str(r.get("unique_id", "")).split(".")
            nodes.append({"type": parts[0], "name": parts[-1] if parts[0] == "unit_test" else ".".join(parts[2:3]),
                          "status": str(r.get("status")), "message": r.get("message"), "failures": r.get("failures")})
    return DbtResult(returncode=returncode, nodes=nodes, output_tail="".join(tail))


def _die_with_parent() -> None:
    """In the child, before dbt starts: SIGKILL it when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the run lock still keeps a second run out
        pass


def run_transform(db: Where = None, dbt_vars: Optional[Dict[str, Any]] = None,
                  select: Optional[str] = None, quiet: bool = True, accept_site_move: bool = False) -> TransformReport:
    """`dbt build`: seeds, models, unit and data tests. Raises TransformError listing what failed."""
    warehouse = Warehouse.of(db)
    with warehouse.run_lock("transform"):
        return _run_transform(warehouse, dbt_vars, select, quiet, accept_site_move)


def _run_transform(warehouse: Warehouse, dbt_vars: Optional[Dict[str, Any]], select: Optional[str], quiet: bool,
                   accept_site_move: bool) -> TransformReport:
    from . import markers, runlog, site_identity

    began = runlog.utcnow()
    if warehouse.marker(markers.EXTRACT_LOAD) == "loading":
        raise TransformError(
            "The last extract stopped while loading (killed, out of memory or disk full): the raw tables may hold "
            "part of one run and part of another, which would read as students leaving. Run `moodle-commcare "
            "extract` again: it finishes the interrupted load first, then this transform can run.")
    if warehouse.exists():
        try:
            key = site_identity.pin(warehouse, dbt_vars, accept_move=accept_site_move)
        except site_identity.SiteMoved as exc:
            raise TransformError(str(exc)) from None
        if key is not None:
            dbt_vars = {**(dbt_vars or {}), "moodle_site_key": key}
        # dbt rebuilds model by model: the export reads nothing until all passed
        warehouse.set_marker(markers.TRANSFORM_BUILD, "building")
    args = ["build"] + (["--select", select] if select else [])
    result = run_dbt(args, warehouse, dbt_vars, quiet)
    report = TransformReport(duckdb=warehouse.path, results=result.nodes)
    failures = [f"{r['type']} {r['name']}: {r['message']}" for r in result.nodes if r["status"] in ("error", "fail")]
    summary = {kind: report.count(kind) for kind in ("model", "seed", "unit_test", "test")}
    if not result.success:
        warehouse.set_marker(markers.TRANSFORM_BUILD, "failed")
        warehouse.record_failure("transform", "failed", began, {**summary, "failures": failures[:20]})
    if result.error is not None:
        if "could not set lock" in result.error.lower():
            raise warehouse.busy()
        raise TransformError(f"dbt could not run: {_dbt_error(result.error)}")
    if not result.success:
        raise TransformError("dbt build failed:\n  " + "\n  ".join(failures or ["see dbt's output above"]))
    with warehouse.connect(read_only=True) as con:
        for table in [t.table for t in CASE_TYPES] + [UNOWNED_TABLE, UNMAPPED_TABLE]:
            summary[table] = scalar(con, f"select count(*) from {warehouse.mart(table)}")
    warehouse.set_marker(markers.TRANSFORM_BUILD, "complete")
    warehouse.record("transform", "ok", began, summary)
    return report


QUOTED_DASH = "'-'"


def case_summary(db: Where = None) -> List[Dict[str, Any]]:
    """Cases per type and status, read from the marts: what the export will have to send."""
    warehouse = Warehouse.of(db)
    with warehouse.connect(read_only=True) as con:
        with_status = {r[0] for r in con.execute(
            "select table_schema || '.' || table_name from information_schema.columns "
            "where column_name = 'engagement_status'").fetchall()}
        cases = " union all ".join(  # a course case has no engagement of its own
            f"select case_type, {'engagement_status' if t.relation in with_status else QUOTED_DASH}, close "
            f"from {t.relation}" for t in CASE_TYPES)
        rows = con.execute(f"""
            select case_type, engagement_status, count(*) filter (where close is null), count(*) filter (where close = 'yes')
            from ({cases}) as cases group by 1, 2 order by 1, 2""").fetchall()
        unowned = con.execute(f"select case_type, count(*) from {warehouse.mart(UNOWNED_TABLE)} group by 1").fetchall()
    out = [{"case_type": t, "engagement_status": s, "open": o, "to_close": c} for t, s, o, c in rows]
    out += [{"case_type": t, "engagement_status": "(no owner: not exported)", "open": n, "to_close": 0} for t, n in unowned]
    return out
