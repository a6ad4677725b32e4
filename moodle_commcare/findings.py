"""What `moodle-commcare check` found: one finding per check, for a site admin to act on.

Both stages' checks (pipelines/moodle/preflight.py, exports/commcare/preflight.py) answer in this shape, so the
report (report.py) and `--json` print them alike and the exit code follows from the worst one. A finding never
carries a secret: the checks write what they saw (a function missing, a field hidden), never the token, the API
key or a URL's password.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Dict, Iterable


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"  # the run works, but loses or cannot prove something: `loses` says what
    FAIL = "FAIL"  # the run would stop, or would write wrong cases (close, clear): fix before running
    SKIPPED = "SKIPPED"  # not checked, because an earlier check failed (no token, no such site)


@dataclass(frozen=True)
class Finding:
    """One check's outcome. `fix` is the exact place to change (a menu path in Moodle or CommCare, a setting),
    `capability` the Moodle capability and its context where one is missing, `loses` the data lost if left."""

    system: str  # "Moodle" or "CommCare"
    check: str  # a stable id, e.g. "moodle.functions": scripts read it from --json
    title: str  # what was checked, in a few words
    status: Status
    detail: str  # what was found
    fix: str = ""
    capability: str = ""
    loses: str = ""

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


# exit codes of `check` (the contract; the README lists them): 0 all OK, 1 warnings only, 2 a failure
EXIT_OK, EXIT_WARNINGS, EXIT_FAILURES = 0, 1, 2


def exit_code(findings: Iterable[Finding]) -> int:
    statuses = {f.status for f in findings}
    if Status.FAIL in statuses:
        return EXIT_FAILURES
    if Status.WARN in statuses:
        return EXIT_WARNINGS
    return EXIT_OK
