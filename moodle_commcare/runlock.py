"""One run at a time per warehouse, across extract, transform and export.

Two extracts at once share dlt's working folder: the second would finish (or wipe) the first's load package,
and each stage reads what the one before left. DuckDB's own file lock only covers the moments a stage holds
the file, not the minutes of fetching between them, so every stage takes this lock first, for its whole
length. It is an advisory `flock` on `<warehouse>.lock`: the kernel drops it when the holder dies, even by
kill -9, so a crashed run never leaves a stale lock behind. The file says who holds it, for the message the
second runner sees (and for `status`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, Optional


class RunLocked(Exception):
    """Another moodle-commcare run holds this warehouse."""


WAIT_POLL_SECONDS = 1.0  # how often a run told to wait tries the lock again
_held: Dict[Path, int] = {}  # lock files this process holds -> depth (demo and sync run stages inside one lock)
_guard = threading.Lock()


def lock_path(db: Path) -> Path:
    """Beside the warehouse, so every process that finds the warehouse finds its lock."""
    return db.with_name(db.name + ".lock")


@contextmanager
def run_lock(db: Path, stage: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the warehouse's run lock while the block runs; raise RunLocked if another process has it still after
    `wait` seconds (0: at once)."""
    path = lock_path(db)
    with _guard:
        if path in _held:
            _held[path] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncate on open: the holder's note is read by others
    try:
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunLocked(refusal(db, _read(fd), wait)) from None
                time.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"stage": stage, "pid": os.getpid(), "host": socket.gethostname(),
                                  "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode(), 0)
        with _guard:
            _held[path] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def holder(db: Path) -> Optional[Dict[str, Any]]:
    """Who holds the run lock now (stage, pid, host, started_at), or None when no run is going on."""
    path = lock_path(db)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> Dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is between truncating and writing its note
        return {}


def refusal(db: object, note: Dict[str, Any], waited: float = 0.0) -> str:
    who = (f"its {note.get('stage')} (process {note.get('pid')} on {note.get('host')}, since {note.get('started_at')})"
           if note else "its run")
    after = f" (still, after waiting {waited:g} s)" if waited > 0 else ""
    return (f"Another moodle-commcare run is using {db}{after}: {who}. Only one run at a time may work on a warehouse. "
            "Wait for it to finish (`moodle-commcare status` shows it), or stop that process; then run again.")
