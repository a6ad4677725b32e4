"""Opening the warehouse's DuckDB file the same way everywhere: bounded memory, and a clear word when another
program holds it. The bottom of the core: imports nothing of this project (warehouse.py builds on it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Protocol, Tuple, Type

import duckdb

# DuckDB takes up to 80% of RAM by default; capped, a large merge or sort spills to disk instead. DuckDB also
# keeps the blocks it read, up to the cap, so the cap is what it holds, dbt's child process as much as the loader:
# 160MB keeps a district's run (15,000 students) under 600 MB with Python and dbt beside it, and builds up to six
# times that (90,000 students; not ten times: raise it, e.g. to 512MB, for such a site). See the README's Performance.
DEFAULT_MEMORY_LIMIT = "160MB"


try:  # the PostgreSQL warehouse's driver is an optional extra (pip install 'moodle-commcare[postgres]')
    import psycopg2
    import psycopg2.errors

    _PG_ERRORS: Tuple[Type[BaseException], ...] = (psycopg2.Error,)
    _PG_MISSING: Tuple[Type[BaseException], ...] = (psycopg2.errors.UndefinedTable,
                                                     psycopg2.errors.InvalidSchemaName)
except ImportError:  # pragma: no cover - the extra is installed wherever a PostgreSQL warehouse is used
    _PG_ERRORS = _PG_MISSING = ()

# What either engine raises: any database error, and "no such table" (a stage's tables before its first run).
DB_ERRORS: Tuple[Type[BaseException], ...] = (duckdb.Error, *_PG_ERRORS)
MISSING_TABLE: Tuple[Type[BaseException], ...] = (duckdb.CatalogException, *_PG_MISSING)


# A warehouse connection: DuckDB's, or postgres.PgConnection, which answers the same calls.
Connection = Any


class Opens(Protocol):
    """What the run log, markers and site key need of a warehouse (warehouse.Warehouse is one)."""

    def connect(self, read_only: bool = False) -> Connection: ...

    def exists(self) -> bool: ...


class WarehouseConfigError(ValueError):
    """The destination setting names something this version cannot use."""


class WarehouseBusy(Exception):
    """Another process holds the DuckDB file (a scheduled run, or an analyst's open session)."""


def busy(what: object) -> WarehouseBusy:
    """The one message for a file another process holds, whichever step met it."""
    return WarehouseBusy(
        f"{what} is open in another program (another moodle-commcare run, or an analyst's DuckDB session "
        "holding it for writing). Close it or wait for the run to end, then try again.")


# The time a row is written, in UTC as a plain timestamp: every ops and ledger table stamps rows this way.
UTC_NOW_SQL = "cast(timezone('UTC', current_timestamp) as timestamp)"


def one(con: duckdb.DuckDBPyConnection, sql: str, params: Optional[list] = None) -> tuple:
    """The one row a query answers (a count, an aggregate); a query that answers none is a bug, said as one."""
    row = con.execute(sql, params or []).fetchone()
    if row is None:
        raise LookupError(f"expected one row from: {' '.join(sql.split())[:120]}")
    return row


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Optional[list] = None) -> Any:
    """The first value of the one row a query answers (a count)."""
    return one(con, sql, params)[0]


def table_exists(con: Any, relation: str) -> bool:
    """Whether `schema.table` exists, on either engine (information_schema)."""
    schema, _, table = relation.partition(".")
    return bool(scalar(con, "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, table]))


def default_memory_limit() -> str:
    """DuckDB's cap for every connection: MOODLE_COMMCARE_DUCKDB_MEMORY_LIMIT, else 160MB."""
    return os.environ.get("MOODLE_COMMCARE_DUCKDB_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT)


def connect(path: Path | str, read_only: bool = False, memory_limit: Optional[str] = None) -> duckdb.DuckDBPyConnection:
    """Every connection of the connector opens here: the same memory cap, and WarehouseBusy, not DuckDB's
    IOException, when another process holds the file."""
    try:
        return duckdb.connect(str(path), read_only=read_only, config={
            "memory_limit": memory_limit or default_memory_limit(),
            "preserve_insertion_order": False,  # lets large CREATE TABLE AS and joins stream and spill
        })
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise busy(path) from None
        raise
