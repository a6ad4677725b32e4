"""What each way a run can fail means to whoever scheduled it: one line to read, one exit code to branch on.

A scheduler (cron, Airflow, a Windows task) sees only the exit code, so codes say what kind of action is
needed, not which module failed. The table is in the README ("Exit codes"); a test runs a command into each.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from typing import Iterator, Optional, Tuple

from .database import DB_ERRORS


class ExitCode(IntEnum):
    """What a scheduler can branch on; the README's "Exit codes" table lists the same."""
    OK = 0
    BUG = 1  # an unexpected error: its traceback is shown, please report it
    SETTINGS = 2  # a setting or option is wrong; nothing was sent
    ROWS_REJECTED = 3  # the export finished, but CommCare rejected some rows (they are re-sent next run)
    MOODLE = 4  # Moodle could not be reached, refused, or hid data the cases need
    COMMCARE = 5  # CommCare could not be reached or refused; the cases stay pending
    BUSY = 6  # another run, or an analyst's session, holds the warehouse; or its PostgreSQL server is unreachable
    NOT_READY = 7  # the warehouse is not ready for this step (half-loaded extract, site moved, no case tables...)
    MASS_CHANGE = 8  # the export would close or update too many cases; nothing was sent
    DISK_FULL = 9  # a disk (or a file-size limit) is full; nothing half-written is kept
    WARNINGS = 10  # sync only: done, with warnings (data Moodle hid that the settings accept, a check's WARN)
    INTERRUPTED = 130  # Ctrl-C or SIGTERM, as shells report a SIGINT death (128 + 2)


# What a scheduler does with a failed run (the README's "Running on a schedule"): run it again later, or call a person.
RETRY_SAFE = frozenset({ExitCode.MOODLE, ExitCode.COMMCARE, ExitCode.BUSY, ExitCode.INTERRUPTED})
SUCCESS = frozenset({ExitCode.OK, ExitCode.WARNINGS})


def needs_a_person(code: int) -> bool:
    return code not in SUCCESS and code not in RETRY_SAFE


# ENOSPC: no space left; EDQUOT: the user's quota; EFBIG: a file-size limit (ulimit -f) or the filesystem's own
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_TEXTS = ("no space left on device", "disk quota exceeded", "file too large")


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it: __cause__, __context__ and the `exception` dlt's step errors wrap."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__ or getattr(current, "exception", None)


def disk_full(exc: BaseException) -> Optional[BaseException]:
    """The error behind `exc` that says a disk is full, from the OS (errno) or DuckDB (its message)."""
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS:
            return cause
        if isinstance(cause, (*DB_ERRORS, OSError)) and any(t in str(cause).lower() for t in _DISK_TEXTS):
            return cause
    return None


def classify(exc: BaseException) -> Optional[Tuple[ExitCode, BaseException]]:
    """The exit code for `exc` and the error whose message the user should read; None for a bug."""
    from exports.commcare import errors as commcare
    from pipelines.moodle import errors as moodle

    from .postgres import PostgresUnavailable
    from .runlock import RunLocked
    from .transform import TransformError
    from .warehouse import WarehouseBusy, WarehouseConfigError

    full = disk_full(exc)
    if full is not None:
        return ExitCode.DISK_FULL, full
    for cause in causes(exc):
        if isinstance(cause, KeyboardInterrupt):  # dlt's SignalReceivedException is one too
            return ExitCode.INTERRUPTED, cause
        for kinds, code in (
            ((moodle.MoodleConfigError, commcare.CommCareConfigError, WarehouseConfigError), ExitCode.SETTINGS),
            ((RunLocked, WarehouseBusy, PostgresUnavailable), ExitCode.BUSY),
            ((TransformError, commcare.CommCareNotReady), ExitCode.NOT_READY),
            ((commcare.CommCareMassChange,), ExitCode.MASS_CHANGE),
            ((moodle.MoodleError,), ExitCode.MOODLE),
            ((commcare.CommCareError,), ExitCode.COMMCARE),
        ):
            if isinstance(cause, kinds):
                return code, cause
    return None


def disk_full_message(cause: BaseException, where: str) -> str:
    """Says which folder to free: the OS error alone names a file, or nothing."""
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return (f"The disk is full, or a file-size limit was reached ({detail}). Free space where {where} lives and "
            "run again: nothing half-done reaches CommCare, and the next run finishes or redoes what this one "
            "could not.")
