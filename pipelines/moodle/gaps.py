"""Data Moodle leaves out for this token's user, and what the run does about it.

Moodle answers a caller who may not see something by leaving it out: a field absent, a user skipped, one
group instead of all. Loaded as it is, that reads as "no phone", "never accessed" or "unenrolled", and the
export would clear phones or close cases. So every gap the run can detect either stops the run, naming the
capability or setting to change, or (for the gaps a site may choose, listed in settings.ACCEPTABLE_GAPS and
accepted with SOURCES__MOODLE__ALLOW_HIDDEN) is recorded: in the `access_gaps` table, which the dbt models
read to mark the affected values unknown, and in the run log.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Dict, Iterable, List

from .errors import MoodleDataGapError

logger = logging.getLogger("moodle_commcare.moodle")


@dataclass(frozen=True)
class Gap:
    code: str
    what: str
    fix: str
    accepted: bool

    def row(self) -> Dict[str, object]:
        return {"code": self.code, "what": self.what, "fix": self.fix, "accepted": self.accepted}


class Gaps:
    def __init__(self, accepted: Iterable[str]) -> None:
        self.accepted = set(accepted)
        self._lock = threading.Lock()
        self._found: Dict[str, Gap] = {}

    def fail(self, code: str, what: str, fix: str) -> None:
        """A gap no setting makes acceptable: the run stops."""
        raise MoodleDataGapError(f"{what} To fix: {fix}; then run again.", code=code, fix=fix)

    def report(self, code: str, what: str, fix: str) -> None:
        """A gap the site may choose to live with: stops the run unless SOURCES__MOODLE__ALLOW_HIDDEN lists it."""
        if code not in self.accepted:
            accepted = json.dumps(sorted(self.accepted | {code}))
            raise MoodleDataGapError(
                f"{what} To fix: {fix}; or, to load without it, set SOURCES__MOODLE__ALLOW_HIDDEN='{accepted}'.",
                code=code, fix=fix)
        self._record(Gap(code, what, fix, accepted=True))

    def warn(self, code: str, what: str, fix: str) -> None:
        """A field the cases can do without (the README lists them): loaded empty, and said so."""
        self._record(Gap(code, what, fix, accepted=False))

    def _record(self, gap: Gap) -> None:
        with self._lock:
            if gap.code not in self._found:
                logger.warning("%s (%s)", gap.what, gap.fix)
            self._found[gap.code] = gap

    @property
    def found(self) -> List[Gap]:
        with self._lock:
            return sorted(self._found.values(), key=lambda g: g.code)
