"""A PostgreSQL warehouse: its connection settings, connections that behave like the DuckDB ones the stages were
written for, and the run lock as a PostgreSQL advisory lock.

The stages talk to the warehouse through a small surface (`execute(sql, params)` returning something with
`fetchone/fetchall/fetchmany`, `executemany`, `close`, use as a context manager, explicit `begin`/`commit`).
psycopg2 offers the same with `%s` placeholders and an implicit transaction per statement; `PgConnection` takes
`?` placeholders and runs in autocommit, so a stage's own `begin ... commit` is the only transaction, as on DuckDB.
Every session runs in UTC (the marts' timestamps are UTC without a zone, as DuckDB's are).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence
from urllib.parse import quote, unquote, urlsplit

from .database import WarehouseConfigError

DEFAULT_PORT = 5432
PASSWORD_ENV = "MOODLE_COMMCARE_WAREHOUSE_PASSWORD"
SCHEMES = ("postgresql", "postgres")
APPLICATION = "moodle-commcare"


class PostgresUnavailable(Exception):
    """The PostgreSQL server did not accept a connection (down, unreachable, refused the login)."""


@dataclass(frozen=True)
class PgSettings:
    """Where the warehouse's PostgreSQL database is. The password is never part of str() or repr()."""

    host: str
    port: int
    dbname: str
    user: str
    password: Optional[str] = field(default=None, repr=False, compare=False)
    sslmode: str = "prefer"

    @classmethod
    def from_url(cls, url: str, setting: str, password: Optional[str] = None) -> "PgSettings":
        """postgresql://user[:password]@host[:port]/dbname[?sslmode=...]. The password comes from the URL, else
        `password` (the setting or secret that holds it), else libpq's own PGPASSWORD or ~/.pgpass."""
        parts = urlsplit(url)
        dbname = unquote(parts.path.lstrip("/"))
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise WarehouseConfigError(f"{setting} has a port that is not a number: give e.g. "
                                       "postgresql://moodle_commcare@db.school.org:5432/warehouse.") from None
        if not parts.hostname or not dbname or "/" in dbname:
            raise WarehouseConfigError(
                f"{setting} names a PostgreSQL warehouse without a host or database: give "
                "postgresql://USER@HOST:PORT/DATABASE (the password in MOODLE_COMMCARE_WAREHOUSE_PASSWORD).")
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return cls(host=parts.hostname, port=port, dbname=dbname,
                   user=unquote(parts.username or "") or os.environ.get("PGUSER", "") or "postgres",
                   password=unquote(parts.password) if parts.password else password,
                   sslmode=query.get("sslmode", "prefer"))

    def __str__(self) -> str:
        """The URL without the password: what messages and logs name."""
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(self.dbname)}"

    def dbt_env(self) -> Dict[str, str]:
        """What dbt_project/profiles.yml's `postgres` target reads."""
        env = {"MOODLE_COMMCARE_DBT_TARGET": "postgres", "MOODLE_COMMCARE_PG_HOST": self.host,
               "MOODLE_COMMCARE_PG_PORT": str(self.port), "MOODLE_COMMCARE_PG_USER": self.user,
               "MOODLE_COMMCARE_PG_DBNAME": self.dbname, "MOODLE_COMMCARE_PG_SSLMODE": self.sslmode,
               "PGTZ": "UTC"}
        if self.password:
            env["MOODLE_COMMCARE_PG_PASSWORD"] = self.password
        return env


def connect(settings: PgSettings, application: str = APPLICATION) -> "PgConnection":
    """A connection in autocommit and UTC; PostgresUnavailable (naming the server, never the password) when the
    server does not answer or refuses the login."""
    try:
        import psycopg2
        import psycopg2.extras
    except ImportError:
        raise WarehouseConfigError(
            f"The warehouse {settings} is a PostgreSQL database, and PostgreSQL's driver is not installed: "
            "pip install 'moodle-commcare[postgres]' (from a checkout: pip install '.[postgres]').") from None
    try:
        raw = psycopg2.connect(host=settings.host, port=settings.port, dbname=settings.dbname, user=settings.user,
                               password=settings.password or None, sslmode=settings.sslmode,
                               application_name=application[:63], connect_timeout=15,
                               options="-c TimeZone=UTC")
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        if settings.password:
            reason = reason.replace(settings.password, "***")
        raise PostgresUnavailable(
            f"Could not connect to the PostgreSQL warehouse {settings}: {reason}. Check that the server runs and "
            "accepts this user, and MOODLE_COMMCARE_WAREHOUSE (or --warehouse) and its password "
            f"({PASSWORD_ENV}).") from None
    raw.autocommit = True
    # json and jsonb come back as text, as DuckDB returns them: the callers parse them themselves
    psycopg2.extras.register_default_json(raw, loads=lambda text: text)
    psycopg2.extras.register_default_jsonb(raw, loads=lambda text: text)
    return PgConnection(raw)


def _placeholders(sql: str) -> str:
    """DuckDB's `?` placeholders as psycopg2's `%s`, and a literal % as %% (psycopg2 formats the whole text when
    given parameters). Quoted text and identifiers are left as they are, but for their % signs."""
    out: List[str] = []
    quote_char: Optional[str] = None
    for ch in sql:
        if quote_char:
            if ch == quote_char:
                quote_char = None
        elif ch in ("'", '"'):
            quote_char = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


class PgCursor:
    """The result of one statement, read as a DuckDB result is."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def fetchone(self) -> Optional[tuple]:
        return self._cursor.fetchone()

    def fetchall(self) -> List[tuple]:
        return self._cursor.fetchall()

    def fetchmany(self, size: int) -> List[tuple]:
        return self._cursor.fetchmany(size)

    @property
    def description(self) -> Any:
        return self._cursor.description


class PgConnection:
    """A psycopg2 connection with the DuckDB connection's surface the stages use."""

    dialect = "postgres"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Optional[Sequence[Any]] = None) -> PgCursor:
        # a named cursor would stream, but only inside a transaction; results here are small or read in parts by
        # fetchmany from the client-side buffer (the export's chunks are at most one workbook's rows)
        cursor = self.raw.cursor()
        if params:
            cursor.execute(_placeholders(sql), list(params))
        else:
            cursor.execute(sql)
        return PgCursor(cursor)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        import psycopg2.extras

        if rows:
            with self.raw.cursor() as cursor:
                psycopg2.extras.execute_batch(cursor, _placeholders(sql), rows, page_size=1000)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "PgConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- the run lock
LOCK_KEY = zlib.crc32(b"moodle-commcare run lock")  # one lock per database: advisory locks are per database
_held: Dict[str, int] = {}
_guard = threading.Lock()
WAIT_POLL_SECONDS = 1.0


def _holder_of(con: PgConnection) -> Optional[Dict[str, Any]]:
    row = con.execute(
        "select a.application_name, a.pid, coalesce(host(a.client_addr), 'local'), a.backend_start "
        "from pg_locks as l join pg_stat_activity as a using (pid) "
        "where l.locktype = 'advisory' and l.granted and l.objid = ? and l.classid = 0 "
        "and l.database = (select oid from pg_database where datname = current_database())", [LOCK_KEY]).fetchone()
    if row is None:
        return None
    name, pid, addr, since = row
    # application_name: "moodle-commcare <stage> <pid>@<host>", set by the holder
    words = str(name or "").split()
    stage = words[1] if len(words) > 1 else "run"
    where = words[2] if len(words) > 2 else f"{pid}@{addr}"
    proc, _, host = where.partition("@")
    return {"stage": stage, "pid": proc, "host": host or addr,
            "started_at": since.isoformat(timespec="seconds") if since else None}


@contextmanager
def advisory_lock(settings: PgSettings, stage: str, wait: float, refusal: Any) -> Iterator[None]:
    """Hold the database's advisory lock on a connection of its own for the block. The server drops it when that
    connection ends, whatever ends it (a crash, kill -9, a lost network), so no stale lock is ever left; the
    application name says who holds it. `refusal(note, waited)` builds the exception raised when it is held."""
    key = str(settings)
    with _guard:
        nested = key in _held
        if nested:
            _held[key] += 1
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    con = connect(settings, application=f"{APPLICATION} {stage} {os.getpid()}@{socket.gethostname()}")
    try:
        deadline = time.monotonic() + max(0.0, wait)
        while not con.execute("select pg_try_advisory_lock(?)", [LOCK_KEY]).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() >= deadline:
                raise refusal(_holder_of(con) or {}, wait)
            time.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[key]
    finally:
        con.close()  # closing the session releases the lock


def lock_holder(settings: PgSettings) -> Optional[Dict[str, Any]]:
    """Who holds the advisory lock now, or None."""
    with connect(settings, application=f"{APPLICATION} status") as con:
        return _holder_of(con)
