"""`moodle-commcare check`: both ends' checks in one list, and the owners the export would send to.

The Moodle half is pipelines/moodle/preflight.py, the CommCare half exports/commcare/preflight.py; this module
only gathers their findings, with the request counts and seconds each took, for the report and `--json`.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set

from .findings import Finding, Status, exit_code
from .warehouse import CASE_TYPES, Warehouse

MOODLE, COMMCARE = "moodle", "commcare"


@dataclass
class CheckReport:
    findings: List[Finding] = field(default_factory=list)
    requests: Dict[str, int] = field(default_factory=dict)  # per end
    seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return exit_code(self.findings)

    def problems(self) -> List[Finding]:
        return [f for f in self.findings if f.status in (Status.WARN, Status.FAIL)]

    def failed(self) -> bool:
        return any(f.status == Status.FAIL for f in self.findings)

    def to_json(self) -> Dict[str, Any]:
        return {"exit_code": self.exit_code, "requests": self.requests,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "findings": [f.to_json() for f in self.findings]}


def check_moodle_end(report: CheckReport, **moodle_options: Any) -> None:
    """The Moodle checks against the configured site (`moodle_options` win, as with run_extract)."""
    from pipelines.moodle.preflight import check_configured_moodle

    result = check_configured_moodle(**moodle_options)
    report.findings += result.findings
    report.requests[MOODLE] = result.requests
    report.seconds[MOODLE] = result.seconds


def check_commcare_end(report: CheckReport, warehouse: Optional[Warehouse] = None,
                       owner_ids: Optional[Iterable[str]] = None, student_workers: Optional[Iterable[str]] = None,
                       **commcare_options: Any) -> None:
    """The CommCare checks against the configured project, with these owners (and students' own workers), else those
    the warehouse's case tables and the owner map would send to."""
    from exports.commcare.config import CommCareConfigError, CommCareSettings
    from exports.commcare.preflight import check_commcare

    started = time.monotonic()
    count = [0]

    def counted() -> None:
        count[0] += 1

    try:
        settings = CommCareSettings.from_dlt(**commcare_options)
    except CommCareConfigError as exc:
        report.findings.append(Finding("CommCare", "commcare.settings", "Connector settings", Status.FAIL, str(exc),
                                       fix="the [commcare] settings in .dlt/config.toml, .dlt/secrets.toml or the "
                                           "COMMCARE__* environment variables",
                                       loses="Nothing is uploaded until the settings are fixed."))
    else:
        owners = planned_owner_ids(warehouse) if owner_ids is None else set(owner_ids)
        report.findings += check_commcare(settings, owner_ids=sorted(owners), on_request=counted,
                                          student_workers=planned_student_workers(warehouse)
                                          if student_workers is None else set(student_workers))
    report.requests[COMMCARE] = count[0]
    report.seconds[COMMCARE] = time.monotonic() - started


def _mart_owner_ids(warehouse: Optional[Warehouse], student_owned: bool, where: str = "") -> Set[str]:
    """The distinct owner ids of the case tables a student's own worker owns (student_owned) or the owner map gives;
    none when the warehouse cannot be read or a table is not built yet."""
    owners: Set[str] = set()
    if warehouse is None or not warehouse.exists():
        return owners
    try:
        con = warehouse.connect(read_only=True)
    except Exception:  # noqa: BLE001 - busy or not a warehouse yet
        return owners
    try:
        for case_type in (t for t in CASE_TYPES if t.student_owned == student_owned):
            try:
                rows = con.execute(f"select distinct owner_id from {case_type.relation} "
                                   f"where owner_id is not null{where}").fetchall()
            except Exception:  # noqa: BLE001 - no case tables yet (no transform has run)
                continue
            owners.update(str(r[0]) for r in rows if str(r[0]).strip())
    finally:
        con.close()
    return owners


def planned_student_workers(warehouse: Optional[Warehouse]) -> Set[str]:
    """The mobile workers of students with cases of their own to send (none before a transform)."""
    return _mart_owner_ids(warehouse, student_owned=True, where=" and close is null")


def planned_owner_ids(warehouse: Optional[Warehouse]) -> Set[str]:
    """The owner ids of the open cases in the warehouse's case tables when it has them (what the export sends), and
    those of the owner map seed (what the first transform will use); the students' own workers are apart."""
    from .transform import PROJECT_DIR

    owners = _mart_owner_ids(warehouse, student_owned=False)
    seed = PROJECT_DIR / "seeds" / "commcare_owner_map.csv"
    if seed.exists():
        with seed.open(newline="", encoding="utf-8") as f:
            owners.update(row["owner_id"].strip() for row in csv.DictReader(f) if (row.get("owner_id") or "").strip())
    return owners
