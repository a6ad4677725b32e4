"""The PostgreSQL fixtures: a real server (scripts/postgres-server, started by ./run test), a fresh database per test."""

from __future__ import annotations

from typing import Any, List, Set
from urllib.parse import urlsplit

import psycopg2
import pytest

from .conftest import fresh_postgres_database


def query(url: str, sql: str, *params: Any) -> List[Any]:
    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute(sql, params or None)
        rows = cur.fetchall()
    con.close()
    return rows


def databases(admin_url: str) -> Set[str]:
    return {name for (name,) in query(admin_url, "select datname from pg_database")}


def test_a_test_gets_a_real_empty_writable_database(postgres_database: str) -> None:
    name = urlsplit(postgres_database).path.lstrip("/")
    assert name.startswith("mc_")
    assert query(postgres_database, "select current_database()") == [(name,)]
    assert query(postgres_database, "select table_schema, table_name from information_schema.tables "
                                    "where table_schema not in ('pg_catalog', 'information_schema')") == []
    assert query(postgres_database, "select nspname from pg_namespace where nspname not like 'pg\\_%' "
                                    "and nspname <> 'information_schema' order by 1") == [("public",)]
    with psycopg2.connect(postgres_database) as con, con.cursor() as cur:
        cur.execute("create schema moodle_raw")
        cur.execute("create table moodle_raw.users (id bigint primary key, name text, seen timestamptz)")
        cur.execute("insert into moodle_raw.users values (1, %s, '2024-03-01 12:00:00+00')", ("Zoë Ñandú 🎓",))
    con.close()
    assert query(postgres_database, "select name, to_char(seen, 'YYYY-MM-DD HH24:MI TZ') from moodle_raw.users") \
        == [("Zoë Ñandú 🎓", "2024-03-01 12:00 UTC")]


def test_the_server_speaks_utf8_in_utc(postgres_database: str) -> None:
    """What the project's data assumes: UTF-8 text, and times shown in UTC (it writes every time as UTC)."""
    assert query(postgres_database, "select pg_encoding_to_char(encoding) from pg_database "
                                    "where datname = current_database()") == [("UTF8",)]
    assert query(postgres_database, "show server_encoding") == [("UTF8",)]
    assert query(postgres_database, "show timezone") == [("UTC",)]
    assert query(postgres_database, "select length('ñ'), octet_length('ñ')") == [(1, 2)]


SEEN: List[str] = []


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_its_own_database_dropped_after_it(postgres_database: str, postgres_url: str,
                                                          turn: int) -> None:
    name = urlsplit(postgres_database).path.lstrip("/")
    existing = databases(postgres_url)
    assert name in existing
    assert name not in SEEN
    assert not existing & set(SEEN), "an earlier test's database is still there"
    SEEN.append(name)


def test_a_fresh_database_is_dropped_even_with_connections_left_open(postgres_url: str) -> None:
    with fresh_postgres_database(postgres_url) as first, fresh_postgres_database(postgres_url) as second:
        assert first != second
        names = {urlsplit(url).path.lstrip("/") for url in (first, second)}
        assert names <= databases(postgres_url)
        left_open = psycopg2.connect(first)
        left_open.cursor().execute("create table t (x int)")  # a transaction left open, too
    assert not names & databases(postgres_url)
    with pytest.raises(psycopg2.Error):
        left_open.cursor().execute("select 1")
    left_open.close()


def test_the_database_url_keeps_the_servers_user_host_and_port(postgres_database: str, postgres_url: str) -> None:
    admin, db = urlsplit(postgres_url), urlsplit(postgres_database)
    assert (db.scheme, db.username, db.hostname, db.port) == (admin.scheme, admin.username, admin.hostname, admin.port)
    assert db.path != admin.path
