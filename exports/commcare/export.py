"""Bring CommCare in step with the case marts: settle earlier jobs, plan, write workbooks, upload, record.

Order matters and is kept:
1. Every job an earlier run left unfinished is settled first (journal.py), so nothing is planned from a
   ledger that a job still in CommCare's queue is about to change, and no row is ever in two jobs at once.
2. Per case type, students before enrolments (parents must exist first), each type's upsert workbooks are
   imported (job finished) before its update-only close workbooks.
3. Only what CommCare confirmed enters the ledger; anything else stays pending or 'maybe' and is sent again.
A crash anywhere leaves the journal saying which jobs may exist; the next run settles them first.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from moodle_commcare import markers, runlog
from moodle_commcare.database import DB_ERRORS, Connection
from moodle_commcare.warehouse import Warehouse

from . import journal, ledger
from .client import CommCareClient, JobResult
from .config import CommCareSettings
from .errors import (
    CommCareAuthError,
    CommCareJobFailed,
    CommCareMassChange,
    CommCareNotReady,
    CommCareUnavailable,
    CommCareUploadRejected,
    CommCareUploadUncertain,
)
from .xlsx import Truncation, write_workbook

Say = Callable[[str], None]


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
    truncated: List[Truncation] = field(default_factory=list)  # values cut to what the importer takes

    @property
    def to_send(self) -> int:
        return sum(self.planned.get(a, 0) for a in ("create", "update", "resend", "close", "reopen"))


@dataclass
class SettleReport:
    jobs: int = 0  # unfinished jobs found
    settled: int = 0
    still_open: int = 0  # still running, or answer lost within the grace: their rows are withheld
    looked_up: int = 0  # rows resolved through Case API v2
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)


@dataclass
class ExportReport:
    """What one export did per case type, what settling earlier jobs found, and why it stopped if it did."""
    uploaded: bool
    dry_run: bool
    out_dir: Optional[Path]
    types: List[TypeReport]
    settle: SettleReport = field(default_factory=SettleReport)
    refusal: Optional[str] = None  # why the safety thresholds stop this export (a dry run only reports it)


MIN_CASES_FOR_THRESHOLDS = 50  # below this, a share says little: a school's first days are all change


def run_export(db: Union[Warehouse, Path, str, None], settings: CommCareSettings, *, upload: bool = False,
               dry_run: bool = False, full: bool = False, allow_mass_change: bool = False,
               on_progress: Optional[Say] = None) -> ExportReport:
    """Settle earlier jobs, plan what changed, write the workbooks and (with upload) send them. Holds the
    warehouse's run lock throughout: an extract or transform meanwhile would change the marts under the plan.

    `db` is the warehouse, or what Warehouse.of reads as one (a path; None for the configured one)."""
    warehouse = Warehouse.of(db)
    with warehouse.run_lock("export"):
        return _run_export(warehouse, settings, upload=upload, dry_run=dry_run, full=full,
                           allow_mass_change=allow_mass_change, on_progress=on_progress)


def _run_export(db: Warehouse, settings: CommCareSettings, *, upload: bool, dry_run: bool, full: bool,
                allow_mass_change: bool, on_progress: Optional[Say]) -> ExportReport:
    started = runlog.utcnow()
    say = on_progress or (lambda _: None)
    client = CommCareClient(settings) if upload and not dry_run else None
    if not db.exists():
        raise CommCareNotReady(f"{db} does not exist: run `moodle-commcare extract` and `transform` first.")
    out_dir = None if dry_run else settings.out_dir / started.strftime("%Y%m%dT%H%M%SZ")
    for scratch in settings.out_dir.glob("*/.writing-*"):  # a workbook an export killed mid-write left half done
        shutil.rmtree(scratch, ignore_errors=True)
    report = ExportReport(uploaded=client is not None, dry_run=dry_run, out_dir=out_dir, types=[])
    con = db.connect()
    status = "failed"
    try:
        missing = ledger.missing_case_tables(con)
        if missing:
            raise CommCareNotReady(f"{db} has no case tables ({', '.join(missing)}): run `moodle-commcare "
                                   "transform` before exporting.")
        _require_a_finished_transform(con)
        ledger.ensure_tables(con)
        journal.ensure_tables(con)
        if not dry_run:
            journal.prune(con)
        if client is not None:
            report.settle = settle(con, client, settings, say)
        if not dry_run:  # after settling: jobs of the version before still carry its digests
            ledger.migrate_hashes(con, settings.chunk_rows)
        journal.withhold_unsettled(con)  # what settling left open stays so for this whole export
        report.refusal = check_thresholds(con, settings, full=full, allow=allow_mass_change)
        if report.refusal and not dry_run:
            raise CommCareMassChange(report.refusal)
        for table in ledger.CASE_TABLES:
            columns = ledger.plan(con, table, settings.chunk_rows, full=full)
            part = TypeReport(table.case_type, planned=ledger.counts(con, table))
            report.types.append(part)
            if dry_run:
                part.examples = _examples(con, table, columns)
                ledger.drop_plan(con, table)
                continue
            for mode in (ledger.UPSERT, ledger.CLOSE):
                for chunk in ledger.chunks(con, table, mode):
                    suffix = "" if mode == ledger.UPSERT else "-close"
                    path = out_dir / f"{table.case_type}{suffix}-{chunk + 1:03d}.xlsx"  # type: ignore[operator]
                    rows = write_workbook(path, columns, ledger.rows_of_chunk(con, table, columns, mode, chunk),
                                          truncated=part.truncated)
                    part.files.append(path)
                    say(f"wrote {path} ({rows:,} {table.case_type} cases{', to close' if suffix else ''})")
                    if client is not None:
                        _send(con, client, table, mode, chunk, path, part, say)
            ledger.drop_plan(con, table)
        status = "ok" if all(t.failed == 0 for t in report.types) else "partial"
        return report
    finally:
        summary: Dict[str, Any] = {
            t.case_type: {"planned": t.planned, "created": t.created, "updated": t.updated, "closed": t.closed,
                          "failed": t.failed, "files": [str(f) for f in t.files],
                          "truncated": [{"external_id": x.external_id, "column": x.column, "length": x.length,
                                         "cut_to": x.limit} for x in t.truncated]} for t in report.types}
        summary["uploaded"] = report.uploaded
        summary["settle"] = {"jobs": report.settle.jobs, "settled": report.settle.settled,
                             "still_open": report.settle.still_open, "seconds": round(report.settle.seconds, 2)}
        if status == "failed":  # a scratch plan holds copies of profiles: not kept past the run (best effort:
            for table in ledger.CASE_TABLES:  # on a full disk the next run replaces it)
                try:
                    ledger.drop_plan(con, table)
                except DB_ERRORS:
                    pass
        if not dry_run:
            if status == "failed":
                db.record_failure("export", status, started, summary, con=con)
            else:
                db.record("export", status, started, summary, con=con)
        con.close()


def _require_a_finished_transform(con: Connection) -> None:
    """dbt rebuilds the case tables one by one and runs their tests after building them: after a transform that
    was killed or failed, they may be half rebuilt or hold what the tests refused (duplicate cases, say)."""
    state = markers.read_marker_on(con, markers.TRANSFORM_BUILD)
    if state == "building":
        raise CommCareNotReady("The last transform stopped before it finished (killed, out of memory, Ctrl-C): the "
                               "case tables may be half rebuilt. Run `moodle-commcare transform` again, then export.")
    if state == "failed":
        raise CommCareNotReady("The last transform failed (see `moodle-commcare status`): the case tables may hold "
                               "what its tests refused. Fix what it reported, run `moodle-commcare transform` again, "
                               "then export.")


def check_thresholds(con: Connection, settings: CommCareSettings, *, full: bool,
                     allow: bool) -> Optional[str]:
    """Why this export must not go ahead without --allow-mass-change, or None.

    A run that would close or update a large share of the cases open in CommCare is far more often a fault
    upstream (an extract cut short, a role that lost a capability, a site setting hiding users) than a real
    change, and CommCare cannot reopen a closed case. So it stops before anything is sent. --full asks for
    every update on purpose, so only closes are checked then; re-sends of cases an earlier job left
    unconfirmed are recovery, not change, and are not counted.
    """
    if allow:
        return None
    findings = []
    for table in ledger.CASE_TABLES:
        ledger.plan(con, table, settings.chunk_rows, full=full)
        planned = ledger.counts(con, table)
        ledger.drop_plan(con, table)
        base = ledger.open_in_commcare(con, table)
        if base < MIN_CASES_FOR_THRESHOLDS:
            continue
        checks = [("close", planned.get("close", 0), settings.max_close_share, "MAX_CLOSE_SHARE")]
        if not full:
            checks.append(("update", planned.get("update", 0), settings.max_update_share, "MAX_UPDATE_SHARE"))
        for verb, n, limit, name in checks:
            if n > limit * base:
                findings.append(f"{verb} {n:,} of the {base:,} open {table.case_type} cases ({n / base:.0%}; "
                                f"COMMCARE__{name} is {limit:.0%})")
    if not findings:
        return None
    return ("This export would " + " and ".join(findings) + ". Nothing was sent. A change this large is more often "
            "a fault upstream (an extract cut short, a Moodle role or setting hiding users) than real: check "
            "`moodle-commcare status` and `moodle-commcare export --dry-run`. If it is right (say, the end of a "
            "term), run the export again with --allow-mass-change.")


def settle(con: Connection, client: CommCareClient, settings: CommCareSettings,
           say: Say) -> SettleReport:
    """Bring every job an earlier run left open to its end (or leave its rows withheld), oldest first."""
    began = time.monotonic()
    out = SettleReport()
    open_jobs = journal.open_jobs(con)
    out.jobs = len(open_jobs)
    deadline = began + settings.poll_timeout
    for job in open_jobs:
        if job.state == "prepared":
            journal.apply_not_sent(con, job.job_id, "the run stopped before sending it")
            out.settled += 1
        elif job.state == "queued":
            say(f"settling CommCare job for {Path(job.file).name} from an earlier run")
            result = client.wait(job.status_url or "", timeout=max(deadline - time.monotonic(), 0.0))
            if result is None:
                out.still_open += 1
                out.notes.append(f"{Path(job.file).name}: CommCare is still importing it; its {job.rows:,} rows "
                                 "wait for the next run")
                continue
            _apply(con, job.job_id, result)
            out.settled += 1
        else:  # sending: the POST's answer was lost
            age = (runlog.utcnow().replace(tzinfo=None) - job.sent_at).total_seconds() if job.sent_at else 0.0
            if age < settings.unknown_job_grace:
                out.still_open += 1
                out.notes.append(
                    f"{Path(job.file).name}: CommCare may still be importing it (its answer was lost {age / 60:.0f} "
                    f"min ago); its {job.rows:,} rows are held back until "
                    f"{settings.unknown_job_grace / 60:.0f} min have passed, then looked up in CommCare")
                continue
            found = client.find_external_ids(journal.sent_ids(con, job.job_id))
            counts = journal.apply_lookup(con, job.job_id, found)
            out.looked_up += counts["rows"]
            out.settled += 1
    out.seconds = time.monotonic() - began
    return out


def _apply(con: Connection, job_id: str, result: JobResult) -> None:
    if result.succeeded:
        journal.apply_success(con, job_id, result.row_errors(), result.upload_id)
    else:
        journal.apply_unconfirmed(con, job_id, f"Import job ended unconfirmed: {result.failure}")


def _send(con: Connection, client: CommCareClient, table: ledger.CaseTable, mode: str, chunk: int,
          path: Path, part: TypeReport, say: Say) -> None:
    job_id = journal.record(con, table, mode, chunk, str(path))
    journal.mark_sending(con, job_id)
    try:
        status_url = client.upload(path, table.case_type, create_new_cases=mode == ledger.UPSERT)
    except (CommCareUploadRejected, CommCareAuthError, CommCareUnavailable) as exc:
        journal.apply_not_sent(con, job_id, str(exc))  # no job can exist: the rows stay pending
        raise
    except CommCareUploadUncertain as exc:
        settings = client.settings
        raise CommCareUploadUncertain(
            f"{exc} CommCare may have queued it, so its rows are not sent again until CommCare shows what it "
            f"did: the next exports hold them back for {settings.unknown_job_grace / 60:.0f} min, then "
            "looks them up by external id. Nothing is lost.") from None
    journal.mark_queued(con, job_id, status_url)
    say(f"uploaded {path.name}; waiting for CommCare's import job")
    result = client.wait(status_url)
    if result is None:
        raise CommCareJobFailed(
            f"CommCare's import job for {path.name} did not finish within {client.settings.poll_timeout:g}s. It is "
            "in the job journal: the next export waits for it (or reads its result) before sending anything else "
            "for those cases, so nothing is sent twice and nothing is lost.")
    _apply(con, job_id, result)
    rows = journal.rows_of(con, job_id)
    if not result.succeeded:
        part.failed += len(rows)
        _note(part, {ext: f"Import failed: {result.failure}" for ext, _ in rows.values()})
        return
    row_errors = result.row_errors()
    closed = sum(1 for r, (_, closing) in rows.items() if closing and r not in row_errors)
    part.created += result.created
    part.updated += result.updated - closed
    part.closed += closed
    part.failed += len(row_errors)
    _note(part, {rows[r][0]: e for r, e in row_errors.items() if r in rows})


def _note(part: TypeReport, failed: Dict[str, str]) -> None:
    for ext, error in failed.items():
        if len(part.errors) >= 50:
            break
        part.errors[ext] = error


def _examples(con: Connection, table: ledger.CaseTable, columns: List[str]) -> List[Dict[str, Any]]:
    return ledger.examples(con, table, [c for c in columns if c in ("name", "owner_id", "engagement_status", "close")])
