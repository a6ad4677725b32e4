"""Markers that fence off a stage's output while the stage is writing it.

dlt merges raw tables one by one and dbt rebuilds models one by one, neither in one transaction: a run
killed (or failing) half way leaves tables from two runs side by side. Each such stage sets its marker
before it writes and clears it once everything is written; the next stage refuses to read while the marker
is set, and says what to run again.
"""

from __future__ import annotations

from typing import Any, Optional

from .database import MISSING_TABLE, UTC_NOW_SQL, Opens

EXTRACT_LOAD = "ops.extract_load"  # 'loading' | 'complete'
TRANSFORM_BUILD = "ops.transform_build"  # 'building' | 'failed' | 'complete'


def set_marker(db: Opens, table: str, state: str) -> None:
    """Replace the marker's state in one transaction, so a reader never sees none between two states."""
    con = db.connect()
    try:
        con.execute("create schema if not exists ops")
        con.execute(f"create table if not exists {table} (state varchar not null, changed_at timestamp not null)")
        _write(con, table, state)
    finally:
        con.close()


def _write(con: Any, table: str, state: str) -> None:
    con.execute("begin transaction")
    try:
        con.execute(f"delete from {table}")
        con.execute(f"insert into {table} values (?, {UTC_NOW_SQL})", [state])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def read_marker(db: Opens, table: str) -> Optional[str]:
    """The marker's state, or None when the stage never set it (before its first run, or an older version)."""
    if not db.exists():
        return None
    con = db.connect(read_only=True)
    try:
        return read_marker_on(con, table)
    finally:
        con.close()


def read_marker_on(con: Any, table: str) -> Optional[str]:
    """read_marker on a connection the caller holds (DuckDB refuses a second, read-only one in-process)."""
    try:
        row = con.execute(f"select state from {table}").fetchone()
    except MISSING_TABLE:
        return None
    return str(row[0]) if row else None
