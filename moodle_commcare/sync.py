"""`moodle-commcare sync`: extract, transform and export --upload as one run, for a scheduler.

One run id, the run lock held from the first stage to the last (no other run slips in between them), the
pre-flight checks of both ends before anything is read or sent, one record in the run log (besides each stage's
own), one exit code a scheduler branches on, an optional notification when it fails, and a read-only copy of the
warehouse published for analysts when it succeeds (analysts.py). Each stage's own command keeps working.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .failures import ExitCode, classify
from .findings import Status
from .warehouse import Warehouse

Say = Callable[[str], None]


@dataclass
class SyncReport:
    """What one sync did: per stage its outcome and figures, the warnings, and the error that stopped it."""

    run_id: str
    full_refresh: bool
    stages: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # stage -> {"status", "seconds", ...}
    warnings: List[str] = field(default_factory=list)
    error: Optional[str] = None
    failed_stage: Optional[str] = None
    exit_code: int = ExitCode.OK
    seconds: float = 0.0
    extract: Any = None  # the stages' own reports, for the CLI's tables
    transform: Any = None
    export: Any = None
    published: Optional[str] = None  # the analysts' copy

    def summary(self) -> Dict[str, Any]:
        """For the run log and the notification: counts, texts already scrubbed of secrets, no settings."""
        return {"run_id": self.run_id, "full_refresh": self.full_refresh, "exit_code": int(self.exit_code),
                "seconds": round(self.seconds, 1), "stages": self.stages, "warnings": self.warnings,
                "error": self.error, "failed_stage": self.failed_stage, "published": self.published}


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run_sync(warehouse: Warehouse, *, run_id: Optional[str] = None, full_refresh: bool = False,
             skip_check: bool = False, publish: bool = True, moodle_options: Optional[Dict[str, Any]] = None,
             commcare_options: Optional[Dict[str, Any]] = None, dbt_vars: Optional[Dict[str, Any]] = None,
             on_progress: Optional[Say] = None) -> SyncReport:
    """The three stages, then the analysts' copy, under the run lock the caller holds. Never raises for a failure
    a user can cause: the report carries the exit code and the one line to read (failures.classify); a bug, and
    Ctrl-C, still raise."""
    from exports.commcare import CommCareSettings, run_export
    from pipelines.moodle.preflight import GAP_CHECKS
    from pipelines.moodle_pipeline import run_extract

    from .check import CheckReport, check_commcare_end, check_moodle_end
    from .transform import run_transform

    say = on_progress or (lambda _: None)
    report = SyncReport(run_id=run_id or new_run_id(), full_refresh=full_refresh)
    moodle_options = dict(moodle_options or {})
    commcare_options = dict(commcare_options or {})
    started = time.monotonic()
    stage = "check"
    try:
        if not skip_check:
            say("Checking Moodle and CommCare…")
            began = time.monotonic()
            checked = CheckReport()
            check_moodle_end(checked, **moodle_options)
            check_commcare_end(checked, warehouse, **commcare_options)
            report.stages["check"] = {"status": "failed" if checked.failed() else "ok", "requests": checked.requests,
                                      "seconds": round(time.monotonic() - began, 1)}
            # the data gaps the extract meets again and reports itself are left to it: said once, not twice
            report.warnings += [f"{f.system}: {f.title}: {f.detail} (fix: {f.fix})" for f in checked.problems()
                                if f.status == Status.WARN and f.check not in set(GAP_CHECKS.values())]
            failures = [f for f in checked.problems() if f.status == Status.FAIL]
            if failures:
                first = failures[0]
                wrong_settings = any(f.check.endswith(".settings") for f in failures)
                code = (ExitCode.SETTINGS if wrong_settings else
                        ExitCode.MOODLE if first.system == "Moodle" else ExitCode.COMMCARE)
                report.exit_code, report.failed_stage = code, "check"
                report.error = "; ".join(f"{f.system}: {f.title}: {f.detail} (fix: {f.fix})" for f in failures)
                return report

        stage = "extract"
        say("Extracting from Moodle…")
        extract_options: Dict[str, Any] = {**moodle_options, **({"full_refresh": True} if full_refresh else {})}
        extracted = run_extract(warehouse, **extract_options)
        report.extract = extracted
        report.stages["extract"] = {"status": "ok", "seconds": round(extracted.seconds, 1),
                                    "requests": extracted.stats.total_requests,
                                    "rows": sum(extracted.rows_loaded.values())}
        report.warnings += [f"Moodle: {w['what']} (fix: {w['fix']})" for w in extracted.warnings]

        stage = "transform"
        say("Building the case tables (dbt)…")
        began = time.monotonic()
        report.transform = run_transform(warehouse, dbt_vars=dbt_vars)
        report.stages["transform"] = {"status": "ok", "seconds": round(time.monotonic() - began, 1),
                                      "models": report.transform.count("model")}

        stage = "export"
        say("Exporting changed cases to CommCare…")
        began = time.monotonic()
        settings = CommCareSettings.from_dlt(**commcare_options)
        exported = run_export(warehouse, settings, upload=True, on_progress=say)
        report.export = exported
        report.stages["export"] = {
            "status": "ok", "seconds": round(time.monotonic() - began, 1),
            "sent": sum(t.created + t.updated + t.closed for t in exported.types),
            "failed": sum(t.failed for t in exported.types),
            **{t.case_type: {"created": t.created, "updated": t.updated, "closed": t.closed, "failed": t.failed}
               for t in exported.types}}
        if report.stages["export"]["failed"]:
            report.exit_code, report.failed_stage = ExitCode.ROWS_REJECTED, "export"
            report.error = (f"CommCare rejected {report.stages['export']['failed']} rows: they stay pending and are "
                            "sent again by the next run (`moodle-commcare status` lists them).")
        elif report.warnings:
            report.exit_code = ExitCode.WARNINGS

        if publish and warehouse.engine == "duckdb":  # a server warehouse: analysts read the server itself
            stage = "publish"
            say("Publishing the analysts' copy…")
            began = time.monotonic()
            report.published = str(warehouse.publish_analysts_copy())
            report.stages["publish"] = {"status": "ok", "seconds": round(time.monotonic() - began, 1)}
    except BaseException as exc:  # noqa: BLE001 - classify() decides; a bug (None) is raised as it is
        found = classify(exc)
        if found is None:
            raise
        code, cause = found
        report.exit_code, report.failed_stage = code, stage
        report.stages.setdefault(stage, {})["status"] = "failed"
        report.error = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if code == ExitCode.INTERRUPTED:
            raise
    finally:
        report.seconds = time.monotonic() - started
    return report
