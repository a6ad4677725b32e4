"""The webhook receiver's durable store: the Moodle events it accepted, until a sync has used them.

An SQLite file beside the warehouse (`events_path`: moodle.duckdb -> moodle.events.sqlite), never the DuckDB
file itself: the receiver answers Moodle while a sync holds the warehouse for minutes, so it must never wait on
DuckDB's lock. SQLite in WAL mode lets the receiver write while a sync reads; `synchronous=FULL` makes every
commit reach the disk before it returns, so an event `add()` returned for (and the receiver answered 200 for)
survives a kill -9 or a power cut. Every write is one `BEGIN IMMEDIATE` transaction, so writers in several
threads and processes queue on SQLite's own lock (busy_timeout) instead of failing halfway.

An event's life: pending -> taken (by a batch: `take`) -> done (`finish`), or back to pending (`release`, when
the batch failed). A batch belongs to the EventStore that took it, which holds an advisory `flock` on a small
owner file for as long as it is open: the kernel drops that lock when the process dies, even by kill -9, so
on open any batch whose owner's lock is free (a killed process, or a store closed without finishing) goes back
to pending, while a batch a live process is still working on is left alone (runlock.py uses the same idea).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another writer (each holds the lock for one short commit)
REASON_MAX_CHARS = 200

PENDING, TAKEN, DONE = "pending", "taken", "done"

_SCHEMA = """
create table if not exists events (
    id integer primary key autoincrement,   -- arrival order
    received_at real not null,              -- unix time the receiver stored it
    source_ip text not null,
    body text not null,                     -- the event's JSON as Moodle sent it, less its token
    state text not null default 'pending' check (state in ('pending', 'taken', 'done')),
    batch_id text
);
create index if not exists events_state on events (state, id);
create index if not exists events_batch on events (batch_id) where batch_id is not null;
create table if not exists batches (
    batch_id text primary key,
    owner text not null,                    -- the EventStore (owner lock file) that took it
    state text not null check (state in ('open', 'finished', 'released')),
    taken_at real not null,
    ended_at real
);
create table if not exists ignored (
    reason text primary key,
    count integer not null
);
"""


def events_path(warehouse_path: Path) -> Path:
    """Where the receiver keeps its events for this warehouse: moodle.duckdb -> moodle.events.sqlite."""
    warehouse_path = Path(warehouse_path)
    return warehouse_path.with_name(f"{warehouse_path.stem}.events.sqlite")


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event: Dict[str, Any]
    received_at: float


class BatchError(ValueError):
    """take/finish/release asked for something the store's state does not allow (named in the message)."""


class EventStore:
    """Accepted Moodle events in SQLite. Safe to share between threads; any number of processes may open it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owners_dir = self.path.with_name(self.path.name + ".owners")
        self._owner = uuid.uuid4().hex
        self._owner_fd: Optional[int] = None
        self._lock = threading.RLock()  # one connection, used by one thread at a time
        self._con: Optional[sqlite3.Connection] = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        con = self._con
        con.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = con.execute("pragma journal_mode = wal").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite could not use WAL mode here (got {mode!r})")
        con.execute("pragma synchronous = full")
        with self._write() as cur:  # (executescript would commit on its own: one statement at a time)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
        self._recover()

    # -- connection ----------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            raise RuntimeError(f"{self.path}: the event store is closed")
        return self._con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One transaction that holds SQLite's write lock from its start; committed (durably) on leaving."""
        with self._lock:
            con = self._connection()
            cur = con.cursor()
            cur.execute("begin immediate")
            try:
                yield cur
            except BaseException:
                cur.execute("rollback")
                raise
            cur.execute("commit")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> List[Any]:
        with self._lock:
            return self._connection().execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        """Close the file; batches this store took and left open go back to pending at the next open."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._owner_fd is not None:  # this owner's open batches are abandoned: the next open releases them
                try:
                    (self._owners_dir / f"{self._owner}.lock").unlink()
                except FileNotFoundError:
                    pass
                os.close(self._owner_fd)  # (closing the descriptor drops the flock)
                self._owner_fd = None

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the receiver's side -------------------------------------------------------------------------------

    def add(self, event: Dict[str, Any], source_ip: str) -> int:
        """Store one accepted event (all of it but its `token`); returns its id once it is on disk."""
        body = json.dumps({k: v for k, v in event.items() if k != "token"}, ensure_ascii=False,
                          separators=(",", ":"), sort_keys=True)
        with self._write() as cur:
            cur.execute("insert into events (received_at, source_ip, body) values (?, ?, ?)",
                        (time.time(), str(source_ip), body))
            event_id = cur.lastrowid
        assert event_id is not None
        return int(event_id)

    def count_ignored(self, reason: str) -> None:
        """One more event dropped for `reason` ("unknown event", ...); only the count is kept, never the event."""
        reason = (str(reason).strip() or "unspecified")[:REASON_MAX_CHARS]
        with self._write() as cur:
            cur.execute("insert into ignored (reason, count) values (?, 1) "
                        "on conflict (reason) do update set count = count + 1", (reason,))

    # -- the consumer's side -------------------------------------------------------------------------------

    def pending(self, limit: Optional[int] = None) -> List[StoredEvent]:
        """Events no batch holds, oldest first (at most `limit`)."""
        sql = "select id, body, received_at from events where state = 'pending' order by id"
        params: List[Any] = []
        if limit is not None:
            sql += " limit ?"
            params.append(int(limit))
        return [StoredEvent(int(i), json.loads(body), float(at)) for i, body, at in self._read(sql, params)]

    def oldest_pending_received_at(self) -> Optional[float]:
        rows = self._read("select min(received_at) from events where state = 'pending'")
        return None if rows[0][0] is None else float(rows[0][0])

    def take(self, batch_id: str, ids: Iterable[int]) -> None:
        """Hold these pending events for `batch_id` (this store owns the batch until finish or release).

        All or nothing: an id that is not pending (another batch has it, or it is done or unknown) raises
        BatchError and takes none. A batch may take more events while it is open, from this store only."""
        wanted = sorted({int(i) for i in ids})
        owner = self._owner_lock()
        with self._write() as cur:
            row = cur.execute("select owner, state from batches where batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                cur.execute("insert into batches (batch_id, owner, state, taken_at) values (?, ?, 'open', ?)",
                            (batch_id, owner, time.time()))
            elif row[1] != "open" or row[0] != owner:
                raise BatchError(f"batch {batch_id!r} is {row[1]}" if row[1] != "open"
                                 else f"batch {batch_id!r} belongs to another process")
            taken = 0
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                taken += cur.execute(f"update events set state = 'taken', batch_id = ? "
                                     f"where state = 'pending' and id in ({marks})", (batch_id, *chunk)).rowcount
            if taken != len(wanted):
                raise BatchError(f"{len(wanted) - taken} of the {len(wanted)} events are not pending")

    def finish(self, batch_id: str) -> None:
        """The batch's events were used: they are done."""
        self._end(batch_id, "finished", "done")

    def release(self, batch_id: str) -> None:
        """The batch failed: its events go back to pending, in their old order."""
        self._end(batch_id, "released", "pending")

    def _end(self, batch_id: str, batch_state: str, event_state: str) -> None:
        with self._write() as cur:
            row = cur.execute("select state from batches where batch_id = ?", (batch_id,)).fetchone()
            if row is None or row[0] != "open":
                raise BatchError(f"batch {batch_id!r} is {'unknown' if row is None else row[0]}")
            new_batch = batch_id if event_state == DONE else None
            cur.execute("update events set state = ?, batch_id = ? where batch_id = ? and state = 'taken'",
                        (event_state, new_batch, batch_id))
            cur.execute("update batches set state = ?, ended_at = ? where batch_id = ?",
                        (batch_state, time.time(), batch_id))

    def prune_done(self, older_than_seconds: float) -> int:
        """Delete done events received more than `older_than_seconds` ago; returns how many."""
        with self._write() as cur:
            return int(cur.execute("delete from events where state = 'done' and received_at < ?",
                                   (time.time() - older_than_seconds,)).rowcount)

    def counts(self) -> Dict[str, int]:
        """pending, taken, done; ignored (all reasons) and `ignored: <reason>` for each reason."""
        out = {PENDING: 0, TAKEN: 0, DONE: 0}
        for state, n in self._read("select state, count(*) from events group by state"):
            out[str(state)] = int(n)
        ignored = self._read("select reason, count from ignored order by reason")
        out["ignored"] = sum(int(n) for _, n in ignored)
        for reason, n in ignored:
            out[f"ignored: {reason}"] = int(n)
        return out

    # -- batch owners --------------------------------------------------------------------------------------

    def _owner_lock(self) -> str:
        """This store's owner id, its flock taken first (before any batch names it)."""
        with self._lock:
            if self._owner_fd is None:
                self._owners_dir.mkdir(exist_ok=True)
                fd = os.open(self._owners_dir / f"{self._owner}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh uuid's file: nobody else wants it
                self._owner_fd = fd
            return self._owner

    def _owner_alive(self, owner: str) -> bool:
        if owner == self._owner:
            return self._owner_fd is not None
        try:
            fd = os.open(self._owners_dir / f"{owner}.lock", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # its holder is running
        finally:
            os.close(fd)
        return False

    def _recover(self) -> None:
        """Batches whose owner is gone (killed, or closed without finishing): their events back to pending."""
        owners = [str(o) for (o,) in self._read("select distinct owner from batches where state = 'open'")]
        for owner in owners:
            if self._owner_alive(owner):
                continue
            with self._write() as cur:
                batches = [b for (b,) in cur.execute(
                    "select batch_id from batches where owner = ? and state = 'open'", (owner,)).fetchall()]
                for batch_id in batches:
                    cur.execute("update events set state = 'pending', batch_id = null "
                                "where batch_id = ? and state = 'taken'", (batch_id,))
                    cur.execute("update batches set state = 'released', ended_at = ? where batch_id = ?",
                                (time.time(), batch_id))
            try:
                (self._owners_dir / f"{owner}.lock").unlink()
            except FileNotFoundError:
                pass
