"""Bring CommCare in step with the case marts: plan, write workbooks, upload, record what was accepted.

Order matters and is kept: every student workbook is imported (job finished) before any enrolment
workbook, so parents exist first. Only rows CommCare confirmed enter the ledger; anything else stays
pending and is sent again next run. A crash anywhere leaves the ledger as it was before the chunk, so the
next run re-sends rather than skips (the import is an upsert by external id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import duckdb

from moodle_commcare import runlog
from moodle_commcare.warehouse import connect

from . import ledger
from .client import CommCareClient
from .config import CommCareSettings
from .errors import CommCareError
from .xlsx import write_workbook


@dataclass
class TypeReport:
    case_type: str
    planned: Dict[str, int] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    closed: int = 0
    failed: int = 0
    errors: Dict[str, str] = field(default_factory=dict)  # external id -> CommCare's error (first 50)
    files: List[Path] = field(default_factory=list)
    examples: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def to_send(self) -> int:
        return sum(self.planned.get(a, 0) for a in ("create", "update", "close"))


@dataclass
class ExportReport:
    uploaded: bool
    dry_run: bool
    out_dir: Optional[Path]
    types: List[TypeReport]


def run_export(db: Path, settings: CommCareSettings, *, upload: bool = False, dry_run: bool = False,
               full: bool = False, on_progress: Optional[Callable[[str], None]] = None) -> ExportReport:
    started = runlog.utcnow()
    say = on_progress or (lambda _: None)
    client = CommCareClient(settings) if upload and not dry_run else None
    if not db.exists():
        raise CommCareError(f"{db} does not exist: run `moodle-commcare extract` and `transform` first.")
    out_dir = None if dry_run else settings.out_dir / started.strftime("%Y%m%dT%H%M%SZ")
    report = ExportReport(uploaded=client is not None, dry_run=dry_run, out_dir=out_dir, types=[])
    con = connect(db)
    status = "failed"
    try:
        ledger.ensure_tables(con)
        for table in ledger.CASE_TABLES:
            columns = ledger.plan(con, table, settings.chunk_rows, full=full)
            part = TypeReport(table.case_type, planned=ledger.counts(con, table))
            report.types.append(part)
            if dry_run:
                part.examples = _examples(con, table, columns)
                ledger.drop_plan(con, table)
                continue
            for chunk in ledger.chunks(con, table):
                path = out_dir / f"{table.case_type}-{chunk + 1:03d}.xlsx"  # type: ignore[operator]
                rows = write_workbook(path, columns, ledger.rows_of_chunk(con, table, columns, chunk))
                part.files.append(path)
                say(f"wrote {path} ({rows:,} {table.case_type} cases)")
                if client is not None:
                    _upload_chunk(con, client, table, chunk, path, part, say)
            ledger.drop_plan(con, table)
        status = "ok" if all(t.failed == 0 for t in report.types) else "partial"
        return report
    finally:
        summary = {t.case_type: {"planned": t.planned, "created": t.created, "updated": t.updated,
                                 "closed": t.closed, "failed": t.failed, "files": [str(f) for f in t.files]}
                   for t in report.types}
        summary["uploaded"] = report.uploaded
        if not dry_run:
            runlog.record(db, "export", status, started, summary, con=con)
        con.close()


def _upload_chunk(con: duckdb.DuckDBPyConnection, client: CommCareClient, table: ledger.CaseTable, chunk: int,
                  path: Path, part: TypeReport, say: Callable[[str], None]) -> None:
    status_url = client.upload(path, table.case_type)
    say(f"uploaded {path.name}; waiting for CommCare's import job")
    result = client.wait(status_url)
    if result.state == 3:
        # the job failed as a whole; earlier chunks of 100 may have been applied (no rollback), so every
        # row stays pending and is re-sent: the upsert makes that safe
        rows = con.execute(f"select _sheet_row from {ledger.plan_table(table)} where _chunk = ?", [chunk]).fetchall()
        _note_failures(part, ledger.reject(con, table, chunk, {r[0]: f"Import failed: {result.failure}" for r in rows}))
        return
    row_errors = result.row_errors()
    closing = dict(con.execute(
        f"select _sheet_row, _action = 'close' from {ledger.plan_table(table)} where _chunk = ?", [chunk]).fetchall())
    ledger.accept(con, table, chunk, row_errors, result.upload_id)
    part.created += result.created
    part.updated += result.updated
    part.closed += sum(1 for row, is_close in closing.items() if is_close and row not in row_errors)
    _note_failures(part, ledger.reject(con, table, chunk, row_errors))


def _note_failures(part: TypeReport, failed: Dict[str, str]) -> None:
    part.failed += len(failed)
    for ext, error in failed.items():
        if len(part.errors) >= 50:
            break
        part.errors[ext] = error


def _examples(con: duckdb.DuckDBPyConnection, table: ledger.CaseTable, columns: List[str]) -> List[Dict[str, Any]]:
    shown = [c for c in columns if c in ("external_id", "name", "owner_id", "engagement_status", "close")]
    cols = ", ".join(f'"{c}"' for c in shown)
    rows = con.execute(f"select _action, {cols} from {ledger.plan_table(table)} "
                       "where _seq is not null order by _seq limit 3").fetchall()
    return [dict(zip(["action", *shown], r)) for r in rows]
