"""The few SQL phrases the connector's own statements (ledger, job journal, run log) say differently on DuckDB and
PostgreSQL. Everything else they write is the SQL both engines read alike; the dbt models have their own
dispatch macros (dbt_project/macros). A connection says which engine it is (postgres.PgConnection.dialect)."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

DUCKDB, POSTGRES = "duckdb", "postgres"


def of(con: Any) -> str:
    return getattr(con, "dialect", DUCKDB)


def is_postgres(con: Any) -> bool:
    return of(con) == POSTGRES


def replace_table(con: Any, name: str, select: str, params: Optional[Sequence[Any]] = None,
                  temp: bool = False) -> None:
    """`create or replace [temp] table name as select`: DuckDB's one statement, PostgreSQL's drop and create."""
    kind = "temp table" if temp else "table"
    if is_postgres(con):
        con.execute(f"drop table if exists {name}")
        con.execute(f"create {kind} {name} as {select}", params)
    else:
        con.execute(f"create or replace {kind} {name} as {select}", params)


def columns(con: Any, relation: str) -> List[Tuple[str, str]]:
    """(column, upper-case type) of a table or view in order, on either engine (information_schema)."""
    schema, _, table = relation.rpartition(".")
    rows = con.execute("select column_name, upper(data_type) from information_schema.columns "
                       "where table_schema = ? and table_name = ? order by ordinal_position",
                       [schema.strip('"'), table.strip('"')]).fetchall()
    return [(str(n), str(t)) for n, t in rows]


def json_type(con: Any) -> str:
    """The column type of a JSON object read by key: PostgreSQL's binary jsonb, whose ->> does not parse the text."""
    return "jsonb" if is_postgres(con) else "json"


def json_object(con: Any, pairs: Sequence[Tuple[str, str]]) -> str:
    """A JSON object of ('key', SQL expression) pairs, of json_type."""
    fn = "jsonb_build_object" if is_postgres(con) else "json_object"
    return f"{fn}(" + ", ".join(f"'{k}', {v}" for k, v in pairs) + ")"


def int_div(con: Any, numerator: str, denominator: int) -> str:
    """Whole-number division (DuckDB's `/` answers a double)."""
    return f"({numerator}) {'/' if is_postgres(con) else '//'} {int(denominator)}"


def six_decimals(con: Any, value: str) -> str:
    """A number's text with six decimals, before the caller trims trailing zeros. PostgreSQL casts a double to numeric
    with 15 significant digits (100000000000.0625 -> ...062); through its text, the shortest that reads back as the
    same double, every digit is kept. DuckDB prints the double's exact binary value instead. The two agree for every
    value with at most six decimals below a billion (tests/test_properties.py), which is what the marts hold (grades
    and percents rounded to two decimals, counts); beyond that they may differ in the sixth decimal, and a case
    moved from one engine to the other would be sent once more."""
    if is_postgres(con):
        return f"cast(round(cast(cast({value} as varchar) as numeric), 6) as varchar)"
    return f"format('{{:.6f}}', cast({value} as double))"


def date_text(con: Any, value: str) -> str:
    """YYYY-MM-DD."""
    return f"to_char({value}, 'YYYY-MM-DD')" if is_postgres(con) else f"strftime({value}, '%Y-%m-%d')"


def iso_utc(con: Any, value: str, zoned: bool) -> str:
    """YYYY-MM-DDTHH:MM:SSZ of a UTC timestamp (a zoned one converted to UTC first)."""
    utc = f"timezone('UTC', {value})" if zoned else value
    if is_postgres(con):
        return f"""to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
    return f"strftime({utc}, '%Y-%m-%dT%H:%M:%SZ')"
