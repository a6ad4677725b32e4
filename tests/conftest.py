"""Fixtures: a Moodle emulator on 127.0.0.1 and an extract into a throw-away DuckDB file; a fresh PostgreSQL database."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlsplit

import duckdb
import pytest

from emulators.moodle import MoodleEmulator, SchoolSpec
from pipelines.moodle_pipeline import ExtractReport, run_extract

SMALL = SchoolSpec(seed=7, categories=3, courses=10, students=80, enrolments_per_student=2.5, grade_items=3,
                   activities=5, assignments=2, sections=3)


@pytest.fixture(autouse=True)
def _isolated_dlt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep dlt away from the developer's ~/.dlt and the repo's .dlt during tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_data"))
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "WARNING")
    for name in ("BASE_URL", "CREDENTIALS", "CREDENTIALS__TOKEN", "CREDENTIALS__USERNAME", "CREDENTIALS__PASSWORD",
                 "CREDENTIALS__SERVICE"):
        monkeypatch.delenv(f"SOURCES__MOODLE__{name}", raising=False)


@pytest.fixture
def moodle() -> Iterator[MoodleEmulator]:
    with MoodleEmulator(spec=SMALL) as emulator:
        yield emulator


class Warehouse:
    """Runs extracts from one emulator into one DuckDB file and reads the tables back."""

    def __init__(self, moodle: MoodleEmulator, path: Path) -> None:
        self.moodle = moodle
        self.path = path

    def extract(self, **options: Any) -> ExtractReport:
        settings: Dict[str, Any] = dict(base_url=self.moodle.base_url, token=self.moodle.token,
                                        allow_insecure_http=True, backoff_factor=0.01, max_attempts=3,
                                        max_retry_delay=2.0)
        settings.update(options)
        return run_extract(self.path, **settings)

    def rows(self, sql: str, *params: Any) -> List[Tuple[Any, ...]]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            con.execute("set search_path = 'moodle_raw'")
            return con.execute(sql, list(params)).fetchall()

    def tables(self) -> List[str]:
        if not self.path.exists():
            return []
        with duckdb.connect(str(self.path), read_only=True) as con:
            return [r[0] for r in con.execute(
                "select table_name from information_schema.tables where table_schema='moodle_raw' "
                "and table_name not like '_dlt%' order by 1").fetchall()]


@pytest.fixture
def warehouse(moodle: MoodleEmulator, tmp_path: Path) -> Warehouse:
    return Warehouse(moodle, tmp_path / "moodle.duckdb")


@contextmanager
def module_warehouse(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Warehouse]:
    """For module-scoped fixtures: an emulator and a warehouse in their own directory, dlt kept inside it."""
    tmp = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("DLT_DATA_DIR", str(tmp / "dlt_data"))
        with MoodleEmulator(spec=SMALL) as moodle:
            yield Warehouse(moodle, tmp / "moodle.duckdb")


@pytest.fixture(scope="module")
def export_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse extracted and transformed once; each test works on its own copy."""
    from moodle_commcare.transform import run_transform

    from .oracle import VARS

    with module_warehouse(tmp_path_factory, "template") as wh:
        wh.extract()
        run_transform(wh.path, VARS)
    return wh.path


@pytest.fixture
def db(export_template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "moodle.duckdb"
    shutil.copy(export_template, copy)
    return copy


@pytest.fixture
def hq() -> Iterator[Any]:
    from emulators.commcare import CommCareEmulator

    from .export_support import OWNERS

    with CommCareEmulator(owners=set(OWNERS)) as emulator:
        yield emulator


def network_address() -> str:
    """This machine's address on its network (not loopback), or a skip: no packet is sent to find it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
        except OSError:
            pytest.skip("no network interface besides loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no network interface besides loopback")
    return address


POSTGRES_ENV = "MOODLE_COMMCARE_TEST_POSTGRES"
REQUIRE_POSTGRES_ENV = "MOODLE_COMMCARE_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The admin URL of the PostgreSQL server for tests (./run test starts one with scripts/postgres-server), or a skip:
    a failure instead when MOODLE_COMMCARE_REQUIRE_POSTGRES=1 (CI)."""
    url = os.environ.get(POSTGRES_ENV, "")
    required = os.environ.get(REQUIRE_POSTGRES_ENV) == "1"
    if not url:
        reason = (f"no PostgreSQL server for tests: {POSTGRES_ENV} is not set (./run test sets it, starting "
                  "scripts/postgres-server; or give it postgresql://USER@HOST:PORT/postgres)")
        if required:
            pytest.fail(f"{reason}, and {REQUIRE_POSTGRES_ENV}=1 says the PostgreSQL tests must run", pytrace=False)
        pytest.skip(reason)
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=10).close()
    except psycopg2.Error as e:
        pytest.fail(f"{POSTGRES_ENV}={url} does not answer: {str(e).strip()}", pytrace=False)
    return url


def database_url(admin_url: str, name: str) -> str:
    """The admin URL with another database: same user, host, port and options."""
    return urlsplit(admin_url)._replace(path=f"/{name}").geturl()


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server (named mc_<xdist worker>_<8 hex>); its URL, and it is dropped afterwards,
    whatever connections to it are left open. scripts/postgres-server start drops any mc_* a killed run left."""
    import psycopg2
    from psycopg2 import sql

    name = f"mc_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True  # CREATE and DROP DATABASE run outside a transaction
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        yield database_url(admin_url, name)
    finally:
        with admin.cursor() as cur:
            cur.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,))
            force = sql.SQL(" with (force)") if admin.server_version >= 130000 else sql.SQL("")
            cur.execute(sql.SQL("drop database if exists {}{}").format(sql.Identifier(name), force))
        admin.close()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test: its URL (postgresql://postgres@127.0.0.1:PORT/mc_gw0_1a2b3c4d
    from ./run test's server); dropped after the test."""
    with fresh_postgres_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["duckdb", "postgres"])
def engine_target(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The warehouse under test (moodle_commcare's Warehouse): a DuckDB file, or a fresh PostgreSQL database."""
    from moodle_commcare.warehouse import Warehouse as Target

    if request.param == "duckdb":
        return Target.of(tmp_path / "moodle.duckdb")
    return Target.of(request.getfixturevalue("postgres_database"))


@pytest.fixture
def engine_school(engine_target: Any) -> Iterator[Warehouse]:
    """The small school's emulator, extracted into `engine_target` (tests/test_warehouses*.py)."""
    with MoodleEmulator(spec=SMALL) as moodle:
        yield Warehouse(moodle, engine_target)  # run_extract takes any warehouse
