"""Stored webhook events become targeted syncs: micro-batches, debounced, under the run lock every run takes.

The first pending event opens a window (`window` seconds); when it closes, every event pending then is one batch,
so a burst (a bulk enrolment of 5,000 students) costs a handful of syncs, not thousands. A batch extracts only the
courses its events name, re-reads their grades and the named students' engagement and completion (the extract's
refresh_course_ids / refresh_user_ids), rebuilds the marts and exports what changed: the same stages as `sync`,
without the checks and the analysts' copy. A batch that fails goes back to pending and is tried again after
`retry_after` seconds; the scheduled sync still catches everything the events never said.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set

from .failures import ExitCode, classify
from .runlock import RunLocked
from .runlog import utcnow
from .warehouse import Warehouse
from .webhook_events import Targets, targets_of
from .webhook_store import EventStore

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 15.0
DEFAULT_LOCK_WAIT_SECONDS = 900.0  # a scheduled sync holding the warehouse: wait for it rather than give up
DEFAULT_RETRY_SECONDS = 60.0
DONE = {ExitCode.OK, ExitCode.WARNINGS, ExitCode.ROWS_REJECTED}  # rejected rows stay pending in the ledger itself


@dataclass
class BatchResult:
    batch_id: str
    events: int
    courses: List[int] = field(default_factory=list)
    refreshed_users: int = 0
    exit_code: int = ExitCode.OK
    error: Optional[str] = None
    requests: int = 0
    sent: int = 0
    seconds: float = 0.0
    oldest_event_age: float = 0.0  # from the oldest event's arrival to the batch's end: the slowest event's latency

    @property
    def done(self) -> bool:
        return self.exit_code in DONE


class MicroBatcher:
    def __init__(self, warehouse: Warehouse, store: EventStore, *, window: float = DEFAULT_WINDOW_SECONDS,
                 lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS, retry_after: float = DEFAULT_RETRY_SECONDS,
                 dbt_vars: Optional[Dict[str, Any]] = None, moodle_options: Optional[Dict[str, Any]] = None,
                 commcare_options: Optional[Dict[str, Any]] = None,
                 on_batch: Optional[Callable[[BatchResult], None]] = None) -> None:
        self.warehouse = warehouse
        self.store = store
        self.window = window
        self.lock_wait = lock_wait
        self.retry_after = retry_after
        self.dbt_vars = dbt_vars
        self.moodle_options = dict(moodle_options or {})
        self.commcare_options = dict(commcare_options or {})
        self.on_batch = on_batch
        self.results: List[BatchResult] = []
        self._not_before = 0.0  # after a failed batch, no new one before this (monotonic)

    def due(self) -> bool:
        oldest = self.store.oldest_pending_received_at()
        return (oldest is not None and time.time() - oldest >= self.window
                and time.monotonic() >= self._not_before)

    def run_forever(self, stop: threading.Event, poll: float = 0.25) -> None:
        while not stop.is_set():
            if self.due():
                self.run_once()
            stop.wait(poll)

    def run_once(self) -> Optional[BatchResult]:
        """One batch of every pending event; None when there is none."""
        from .sync import run_sync

        pending = self.store.pending()
        if not pending:
            return None
        batch_id = uuid.uuid4().hex[:12]
        self.store.take(batch_id, [e.id for e in pending])
        oldest = min(e.received_at for e in pending)
        result = BatchResult(batch_id=batch_id, events=len(pending))
        started = time.monotonic()
        began = utcnow()
        try:
            with self.warehouse.run_lock("webhooks", wait=self.lock_wait):
                targets = self._targets([e.event for e in pending])
                result.courses, result.refreshed_users = sorted(targets.courses), len(targets.refresh_users)
                if targets:
                    report = run_sync(self.warehouse, run_id=batch_id, skip_check=True, publish=False,
                                      dbt_vars=self.dbt_vars, commcare_options=self.commcare_options,
                                      moodle_options={**self.moodle_options, "course_ids": sorted(targets.courses),
                                                      "refresh_course_ids": sorted(targets.refresh_courses),
                                                      "refresh_user_ids": sorted(targets.refresh_users)})
                    result.exit_code, result.error = report.exit_code, report.error
                    result.requests = int((report.stages.get("extract") or {}).get("requests", 0))
                    result.sent = int((report.stages.get("export") or {}).get("sent", 0))
                result.seconds = time.monotonic() - started
                result.oldest_event_age = time.time() - oldest
                self.warehouse.record("webhooks", "ok" if result.done else "failed", began, {
                    "batch_id": batch_id, "events": result.events, "courses": result.courses,
                    "refreshed_users": result.refreshed_users, "exit_code": int(result.exit_code),
                    "error": result.error, "requests": result.requests, "sent": result.sent,
                    "seconds": round(result.seconds, 1), "outside_selection": targets.outside})
        except RunLocked as exc:
            result.exit_code, result.error = ExitCode.BUSY, str(exc)
        except Exception as exc:  # noqa: BLE001 - the receiver keeps running; the batch is kept and tried again
            found = classify(exc)
            result.exit_code = found[0] if found else ExitCode.BUG
            result.error = str(found[1] if found else exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if result.done:
            self.store.finish(batch_id)
        else:
            self.store.release(batch_id)  # tried again after retry_after; the scheduled sync covers it meanwhile
            self._not_before = time.monotonic() + self.retry_after
            log.warning("Webhook batch %s (%d events) failed with exit code %d: %s; its events are kept and tried "
                        "again in %.0f s.", batch_id, result.events, result.exit_code, result.error, self.retry_after)
        self.results.append(result)
        if self.on_batch is not None:
            self.on_batch(result)
        return result

    def _targets(self, events: List[Dict[str, Any]]) -> Targets:
        """What the events name, within the courses the warehouse syncs; read under the run lock."""
        known: Set[int] = set()
        by_user: Dict[int, Set[int]] = {}
        if self.warehouse.exists():
            con = self.warehouse.connect(read_only=True)
            try:
                known = {int(r[0]) for r in con.execute(f"select id from {self.warehouse.raw('courses')}").fetchall()}
                users = sorted({int(str(u).strip()) for e in events for u in (e.get("relateduserid"), e.get("objectid"))
                                if str(u or "").strip().isdigit()})
                if users:
                    for user_id, course_id in con.execute(
                            f"select distinct user_id, course_id from {self.warehouse.raw('enrolments')} "
                            "where user_id in (select unnest(?::bigint[]))", [users]).fetchall():
                        by_user.setdefault(int(user_id), set()).add(int(course_id))
            except Exception as exc:  # noqa: BLE001 - no extract has run yet: nothing is known to target
                log.warning("The warehouse holds no synced courses yet (%s): events wait for the first sync.",
                            str(exc).splitlines()[0])
            finally:
                con.close()
        return targets_of(events, known, lambda user: by_user.get(user, set()))
