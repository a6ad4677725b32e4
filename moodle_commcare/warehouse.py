"""The warehouse every stage reads and writes, as one object: where it is, how to open it (memory cap, busy
file), its run lock, run log and stage markers, the case-type registry and the names of the marts.

Built from the destination setting (`--warehouse`, else MOODLE_COMMCARE_WAREHOUSE, else the older
MOODLE_COMMCARE_DUCKDB, else `destination` under `[warehouse]` in .dlt/config.toml, else ./moodle.duckdb). Two
engines stand behind the same methods:
- a DuckDB file (the default), given as a path or `duckdb:///path/file.duckdb` (MotherDuck is DuckDB too, but
  this version opens local files only: README "A server warehouse");
- a PostgreSQL database, given as `postgresql://user@host:port/dbname`, its password in the URL, in
  MOODLE_COMMCARE_WAREHOUSE_PASSWORD, in `password` under `[warehouse]` in .dlt/secrets.toml, or libpq's own
  PGPASSWORD / ~/.pgpass.
The stages ask the warehouse for a connection, dlt's destination or dbt's environment and never build them
themselves. The top of the core: imports the run log, lock and markers, which import database.py.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from . import database, markers, postgres, runlock, runlog
from .database import UTC_NOW_SQL, WarehouseBusy, WarehouseConfigError, one, scalar
from .postgres import PASSWORD_ENV, SCHEMES, PgSettings

__all__ = ["Warehouse", "WarehouseConfigError", "WarehouseBusy", "CaseType", "CASE_TYPES", "UNOWNED_TABLE",
           "UNMAPPED_TABLE", "resolve", "one",
           "scalar", "UTC_NOW_SQL"]

DEFAULT_FILE = "moodle.duckdb"
DESTINATION_ENV = "MOODLE_COMMCARE_WAREHOUSE"
STATE_DIR_ENV = "MOODLE_COMMCARE_STATE_DIR"  # a server warehouse's local working folders (dlt, dbt, logs): else .
LEGACY_ENV = "MOODLE_COMMCARE_DUCKDB"  # the setting's name before it named the warehouse rather than the engine

RAW_SCHEMA = "moodle_raw"  # what the dlt source loads
MARTS_SCHEMA = "commcare"  # what dbt builds for the export (the connector's own dbt target, see generate_schema_name)
OPS_SCHEMA = "ops"  # run log, markers, the pinned site key


@dataclass(frozen=True)
class CaseType:
    """A CommCare case type and the mart that holds its cases."""
    name: str
    table: str
    parent: bool  # its cases are children of another case (the mart's parent_type names its type)
    students_phones: bool = False  # sent only for students mapped to a mobile worker of their own (README)
    student_owned: bool = False  # owned by that worker, not by the owner map

    @property
    def relation(self) -> str:
        return f"{MARTS_SCHEMA}.{self.table}"


# In the order the export sends them: parents before their children.
CASE_TYPES: Tuple[CaseType, ...] = (
    CaseType("student", "commcare_student_cases", parent=False),
    CaseType("course_enrolment", "commcare_enrolment_cases", parent=True),
    CaseType("course", "commcare_course_cases", parent=False, students_phones=True),
    CaseType("student_course", "commcare_student_course_cases", parent=True, students_phones=True,
             student_owned=True),  # child of its course case
)
UNOWNED_TABLE = "commcare_unowned_cases"  # cases no CommCare owner maps to: reported, never exported
UNMAPPED_TABLE = "commcare_unmapped_students"  # students without a mobile worker of their own: coach-only


@dataclass(frozen=True)
class Warehouse:
    """One warehouse: a DuckDB file, or a PostgreSQL database (`postgres` set). Stages take one, or anything
    `Warehouse.of` reads as one.

    `path` is the DuckDB file; for PostgreSQL it names the local folder's entry for the database (never a file
    itself): dlt's working folder, dbt's artifacts, the sync log and the webhook events live beside it."""

    path: Path
    memory_limit: str = field(default_factory=database.default_memory_limit)
    postgres: Optional[PgSettings] = None

    @property
    def engine(self) -> str:
        return "postgres" if self.postgres else "duckdb"

    # ------------------------------------------------------------------ building one
    @classmethod
    def of(cls, where: Union["Warehouse", Path, str, None] = None) -> "Warehouse":
        """The warehouse itself, or one built from a destination (a path or duckdb:/// URL); None: the setting."""
        if isinstance(where, Warehouse):
            return where
        if where is None or (isinstance(where, str) and not where.strip()):
            return cls.from_setting()
        return cls.from_destination(where)

    @classmethod
    def from_setting(cls) -> "Warehouse":
        """From MOODLE_COMMCARE_WAREHOUSE, else MOODLE_COMMCARE_DUCKDB, else [warehouse] destination in dlt's
        config (.dlt/config.toml, or WAREHOUSE__DESTINATION), else ./moodle.duckdb."""
        for name in (DESTINATION_ENV, LEGACY_ENV):
            value = os.environ.get(name, "").strip()
            if value:
                return cls.from_destination(value, setting=name)
        configured = _dlt_setting("warehouse.destination", secret=False)
        if configured:
            return cls.from_destination(configured, setting="[warehouse] destination in .dlt/config.toml")
        return cls(Path(DEFAULT_FILE).resolve())

    @classmethod
    def from_destination(cls, destination: Union[Path, str], setting: str = "--warehouse") -> "Warehouse":
        """`duckdb:///abs/file.duckdb`, `duckdb:///rel/file.duckdb` or a plain path. Any other scheme is refused
        naming the setting, and without the rest of the URL: a database URL may carry a password."""
        text = str(destination).strip()
        scheme, sep, rest = text.partition("://")
        if sep and scheme.lower() in SCHEMES:
            return cls.for_postgres(PgSettings.from_url(text, setting, password=_password()))
        if sep and scheme.lower() == "duckdb":
            text = rest[1:] if rest.startswith("/") else rest  # duckdb:///x: relative x; duckdb:////x: absolute /x
        elif sep:
            raise WarehouseConfigError(
                f"{setting} names a {scheme}:// destination: this version keeps the warehouse in a DuckDB file or a "
                "PostgreSQL database. Give a file path (e.g. /srv/moodle-commcare/moodle.duckdb), "
                "duckdb:///path/to/moodle.duckdb, or postgresql://USER@HOST:PORT/DATABASE.")
        if not text:
            raise WarehouseConfigError(f"{setting} is empty: give the warehouse's file, e.g. moodle.duckdb.")
        path = Path(text).expanduser().resolve()
        if path.is_dir():
            raise WarehouseConfigError(f"{setting}={str(destination)!r} is a folder: give the warehouse's file inside "
                                       f"it, e.g. {path / DEFAULT_FILE}.")
        return cls(path)

    @classmethod
    def for_postgres(cls, settings: PgSettings) -> "Warehouse":
        """A PostgreSQL warehouse, its local folders under MOODLE_COMMCARE_STATE_DIR (else the current folder)."""
        state = Path(os.environ.get(STATE_DIR_ENV, "").strip() or ".").expanduser().resolve()
        name = "-".join(part for part in (settings.host, str(settings.port), settings.dbname))
        return cls(state / ("postgres-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)),
                   postgres=settings)

    def __str__(self) -> str:
        return str(self.postgres) if self.postgres else str(self.path)

    # ------------------------------------------------------------------ the engine
    def exists(self) -> bool:
        """False before the first extract created the file (on PostgreSQL: the raw or ops schema)."""
        if self.postgres is None:
            return self.path.exists()
        with self.connect() as con:
            return bool(scalar(con, "select count(*) from information_schema.schemata "
                                    "where schema_name in (?, ?)", [RAW_SCHEMA, OPS_SCHEMA]))

    def connect(self, read_only: bool = False) -> Any:
        """A connection: DuckDB's with the warehouse's memory cap (WarehouseBusy when another program holds the
        file), or a PostgreSQL one that answers the same calls (postgres.PgConnection)."""
        if self.postgres is not None:
            return postgres.connect(self.postgres)
        return database.connect(self.path, read_only=read_only, memory_limit=self.memory_limit)

    def busy(self) -> WarehouseBusy:
        return database.busy(self.path)

    def dlt_destination(self) -> Any:
        """dlt's destination for this warehouse, with the same memory cap as every other connection."""
        import dlt

        if self.postgres is not None:
            from .postgres_dlt import dlt_credentials

            # No unique constraints (create_indexes): a load job killed after its COPY committed but before dlt
            # noted it is run again by the next extract, and a unique _dlt_id in the staging table would refuse
            # that COPY on every run after (tests/test_warehouses.py, killed mid-load). The merge de-duplicates the
            # staging rows on the primary key, as it does on DuckDB, which has no such constraint either.
            return dlt.destinations.postgres(credentials=dlt_credentials(self.postgres), create_indexes=False)
        from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

        credentials = DuckDbCredentials(str(self.path))
        credentials.global_config = {"memory_limit": self.memory_limit}
        return dlt.destinations.duckdb(credentials)

    @property
    def pipelines_dir(self) -> Path:
        """dlt's working folder for this warehouse: beside the file, so two warehouses never share state."""
        return self.path.parent / ".dlt_pipelines" / self.path.stem

    def dbt_env(self) -> Dict[str, str]:
        """What dbt's profile (dbt_project/profiles.yml) reads to open this warehouse."""
        if self.postgres is not None:
            return self.postgres.dbt_env()
        return {"MOODLE_COMMCARE_DBT_TARGET": "local", LEGACY_ENV: str(self.path),
                "MOODLE_COMMCARE_DUCKDB_MEMORY_LIMIT": self.memory_limit}

    @property
    def dbt_artifacts_dir(self) -> Path:
        """dbt's target (manifest, run results, partial-parse cache) and logs: beside the file, never inside the
        installed or checked-out project."""
        return self.path.parent / ".dbt" / self.path.stem

    # ------------------------------------------------------------------ names
    @staticmethod
    def mart(table: str) -> str:
        """A mart's relation, e.g. commcare.commcare_student_cases."""
        return f"{MARTS_SCHEMA}.{table}"

    @staticmethod
    def raw(table: str) -> str:
        """A raw table's relation, e.g. moodle_raw.users."""
        return f'"{RAW_SCHEMA}"."{table}"'

    # ------------------------------------------------------------------ lock, run log, markers
    def run_lock(self, stage: str, wait: float = 0.0) -> AbstractContextManager[None]:
        """One run at a time on this warehouse (runlock.py): RunLocked when another process has it still after
        `wait` seconds (0: at once). On PostgreSQL an advisory lock, so runs on different machines exclude
        each other too."""
        if self.postgres is not None:
            return postgres.advisory_lock(self.postgres, stage, wait, lambda note, waited: runlock.RunLocked(
                runlock.refusal(self, note, waited)))
        return runlock.run_lock(self.path, stage, wait)

    @property
    def analysts_copy(self) -> Path:
        """The read-only copy `sync` publishes for analysts: moodle.duckdb -> moodle.analysts.duckdb."""
        return self.path.with_name(f"{self.path.stem}.analysts{self.path.suffix or '.duckdb'}")

    def publish_analysts_copy(self) -> Optional[Path]:
        """Copy the warehouse, whole and consistent, to `analysts_copy`, swapping it in at once (os.replace).

        DuckDB lets one process write a file, and a reader's lock (even read_only) keeps the writer out: an analyst
        left connected at night would stop the run. So analysts open this copy instead. A connection already open on
        the old copy keeps reading it (the replaced file lives on until that connection closes), new connections get
        the new one, and the next publish never waits for either. Call it under the run lock, no connection open.
        None on PostgreSQL: analysts read the server, which lets readers and the run work side by side."""
        if self.postgres is not None:
            return None
        con = self.connect()
        try:
            con.execute("checkpoint")  # everything in the file itself, nothing left in the write-ahead log
        finally:
            con.close()
        target = self.analysts_copy
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            shutil.copyfile(self.path, partial)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def lock_holder(self) -> Optional[Dict[str, Any]]:
        if self.postgres is not None:
            return postgres.lock_holder(self.postgres)
        return runlock.holder(self.path)

    def record(self, stage: str, status: str, started_at: datetime, summary: Dict[str, Any],
               con: Optional[Any] = None) -> None:
        runlog.record(self, stage, status, started_at, summary, con=con)

    def record_failure(self, stage: str, status: str, started_at: datetime, summary: Dict[str, Any],
                       con: Optional[Any] = None) -> None:
        runlog.record_failure(self, stage, status, started_at, summary, con=con)

    def last_runs(self) -> List[Dict[str, Any]]:
        return runlog.latest(self)

    def recent_runs(self, stage: str, limit: int = 10) -> List[Dict[str, Any]]:
        return runlog.recent(self, stage, limit)

    def marker(self, table: str) -> Optional[str]:
        return markers.read_marker(self, table)

    def set_marker(self, table: str, state: str) -> None:
        markers.set_marker(self, table, state)


def _dlt_setting(key: str, secret: bool) -> Optional[str]:
    """A value from dlt's config or secrets (.dlt/*.toml, or the environment in dlt's spelling), or None."""
    try:
        import dlt

        value: Any = (dlt.secrets if secret else dlt.config).get(key)
    except Exception:  # noqa: BLE001 - an unreadable config file is reported by the stage that needs it
        return None
    return str(value).strip() or None if value is not None else None


def _password() -> Optional[str]:
    """The PostgreSQL warehouse's password: MOODLE_COMMCARE_WAREHOUSE_PASSWORD, else [warehouse] password in
    .dlt/secrets.toml; None leaves it to libpq (PGPASSWORD, ~/.pgpass)."""
    return os.environ.get(PASSWORD_ENV) or _dlt_setting("warehouse.password", secret=True)


def resolve(path: Optional[Path | str] = None) -> Path:
    """The warehouse file a path or the setting names (for callers that only need the file)."""
    return Warehouse.of(path).path
