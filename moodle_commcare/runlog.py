"""One table, ops.run_log, that says when each stage last ran and what it did (`moodle-commcare status`)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from .database import DB_ERRORS, Opens, table_exists

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def record(db: Opens, stage: str, status: str, started_at: datetime, summary: Dict[str, Any],
           con: Optional[Any] = None) -> None:
    """Append a run; never holds a secret (summaries are counts and paths)."""
    own = con is None
    con = con or db.connect()
    try:
        ensure_table(con)
        con.execute("insert into ops.run_log values (?, ?, ?, ?, ?)",
                    [stage, status, started_at, _now(), json.dumps(summary, default=str)])
    finally:
        if own:
            con.close()


def ensure_table(con: Any) -> None:
    con.execute("create schema if not exists ops")
    con.execute("""create table if not exists ops.run_log (
        stage varchar, status varchar, started_at timestamp, finished_at timestamp, summary json)""")


def record_failure(db: Opens, stage: str, status: str, started_at: datetime, summary: Dict[str, Any],
                   con: Optional[Any] = None) -> None:
    """Record a run that is failing: if the log cannot be written either (the disk that stopped the run is
    full, or the file is held), say so in the log and let the error that stopped the run be the one shown."""
    try:
        record(db, stage, status, started_at, summary, con=con)
    except (*DB_ERRORS, OSError) as exc:  # type: ignore[misc]  # a tuple of exception classes
        log.warning("Could not record the failed %s in ops.run_log: %s", stage, str(exc).splitlines()[0])


def latest(db: Opens) -> List[Dict[str, Any]]:
    """The last run of each stage."""
    return _runs(db, """
        select stage, status, started_at, finished_at, summary from (
            select *, row_number() over (partition by stage order by finished_at desc) as _n from ops.run_log
        ) as runs where _n = 1
        order by case stage when 'extract' then 1 when 'transform' then 2 else 3 end""")


def recent(db: Opens, stage: str, limit: int = 10) -> List[Dict[str, Any]]:
    """The last `limit` runs of one stage (e.g. sync), newest first."""
    return _runs(db, "select stage, status, started_at, finished_at, summary from ops.run_log where stage = ? "
                     "order by finished_at desc limit ?", [stage, limit])


def _runs(db: Opens, sql: str, params: Optional[List[Any]] = None) -> List[Dict[str, Any]]:
    """Runs the query selects from ops.run_log; none before the warehouse or its log exists."""
    if not db.exists():
        return []
    with db.connect(read_only=True) as con:
        if not table_exists(con, "ops.run_log"):
            return []
        rows = con.execute(sql, params or []).fetchall()
    return [{"stage": s, "status": st, "started_at": a, "finished_at": f, "summary": json.loads(j)}
            for s, st, a, f, j in rows]


utcnow = _now
