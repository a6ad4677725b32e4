"""What CommCare has accepted, per case, and which cases must be sent now.

The ledger keeps, per case type and external id, a hash of every exported property as CommCare accepted
it. A case goes out when a property's value differs from the accepted one (a property no longer exported
is not compared, so dropping a column resends nothing) or when it was never accepted. Everything is done
in DuckDB so 100,000 cases never become Python objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import duckdb

from .errors import CommCareConfigError

SCHEMA = "commcare_export"
HEADER_RE = re.compile(r"^[a-zA-Z][\w_-]*$")
RESERVED = {"type", "closed", "parent_ref", "case_id", "case_type"}


@dataclass(frozen=True)
class CaseTable:
    case_type: str
    relation: str
    parent: bool


CASE_TABLES = (
    CaseTable("student", "commcare.commcare_student_cases", parent=False),
    CaseTable("course_enrolment", "commcare.commcare_enrolment_cases", parent=True),
)
LEADING = ("external_id", "name", "owner_id", "parent_external_id", "parent_type")
NOT_EXPORTED = {"case_type"}  # the upload's case_type parameter, not a column


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(f"""
        create table if not exists {SCHEMA}.case_ledger (
            case_type varchar not null,
            external_id varchar not null,
            hashes json,                -- property -> 64-bit hash of the value CommCare accepted; NULL if never
                                        -- accepted (a DuckDB upgrade that changes hash() resends all, once)
            closed boolean not null default false,
            accepted_at timestamp,
            upload_id varchar,
            last_error varchar,         -- why CommCare rejected the latest attempt; cleared on acceptance
            last_error_at timestamp,
            primary key (case_type, external_id)
        )""")


def text_expr(column: str, duck_type: str) -> str:
    """SQL turning a mart value into the exact text the xlsx cell gets (NULL stays NULL: a blank cell)."""
    q = f'"{column}"'
    t = duck_type.upper()
    if t.startswith(("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER")):
        return f"cast({q} as varchar)"
    if t.startswith(("DOUBLE", "FLOAT", "REAL", "DECIMAL")):
        # six decimals at most, trailing zeros trimmed: 33.333333, 12.5, 7 (round() in binary gave 152.49994)
        return (f"case when {q} is null then null when abs({q}) < 5e-7 then '0' "
                f"when {q} = trunc({q}) and abs({q}) < 1e15 then cast(cast({q} as bigint) as varchar) "
                f"else rtrim(rtrim(format('{{:.6f}}', cast({q} as double)), '0'), '.') end")
    if t == "BOOLEAN":
        return f"case when {q} then 'yes' when not {q} then 'no' end"
    if t == "DATE":
        return f"strftime({q}, '%Y-%m-%d')"
    if t.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"strftime(timezone('UTC', {q}), '%Y-%m-%d %H:%M:%S')"
    if t.startswith("TIMESTAMP"):
        return f"strftime({q}, '%Y-%m-%d %H:%M:%S')"
    return f"cast({q} as varchar)"


def export_columns(con: duckdb.DuckDBPyConnection, table: CaseTable) -> List[Tuple[str, str]]:
    """(column, type) in file order: external_id, name, owner_id, parent columns, properties, close."""
    described = [(r[0], r[1]) for r in con.execute(f"describe {table.relation}").fetchall()]
    names = [n for n, _ in described]
    for required in ("external_id", "name", "owner_id", "close") + (("parent_external_id", "parent_type") if table.parent else ()):
        if required not in names:
            raise CommCareConfigError(f"{table.relation} has no column {required!r}: the bulk import needs it.")
    for name in names:
        if name in NOT_EXPORTED:
            continue
        if not HEADER_RE.match(name) or name in RESERVED:
            raise CommCareConfigError(
                f"{table.relation}.{name} cannot be a CommCare column: headers must match ^[a-zA-Z][\\w_-]*$ "
                "and not be type, closed, parent_ref, case_id or case_type. Rename it in the dbt model.")
    types = dict(described)
    lead = [n for n in LEADING if n in types]
    rest = [n for n in names if n not in lead and n not in NOT_EXPORTED and n != "close"]
    return [(n, types[n]) for n in lead + rest + ["close"]]


def plan(con: duckdb.DuckDBPyConnection, table: CaseTable, chunk_rows: int, full: bool = False) -> List[str]:
    """Build temp table export_plan_<type>: every case with its text values, hashes and action.

    Actions: create (never accepted), update / close (a value changed, or --full), unchanged, and
    skip_closed (never created and already to close: CommCare ignores close on create, so nothing to do).
    Returns the file's columns.
    """
    columns = export_columns(con, table)
    names = [n for n, _ in columns]
    texts = ",\n            ".join(f'{text_expr(n, t)} as "{n}"' for n, t in columns)
    hashed = [n for n in names if n != "external_id"]
    # 64-bit hashes keep the ledger small; json_extract on the parsed ledger JSON reads each property once
    def digest(column: str) -> str:  # NULL stays NULL: an empty value matches a property never sent
        return f'case when cur."{column}" is not null then cast(hash(cur."{column}") as varchar) end'

    hashes = "json_object(" + ", ".join(f"'{n}', {digest(n)}" for n in hashed) + ")"
    paths = "[" + ", ".join(f"'$.\"{n}\"'" for n in hashed) + "]"
    changed = " or ".join(f"(l._old[{i + 1}] is distinct from {digest(n)})" for i, n in enumerate(hashed))
    name = plan_table(table)
    con.execute(f"""
        create or replace table {name} as
        with cur as (
            select
            {texts}
            from {table.relation}
        ),
        classified as (
            select
                cur.*,
                {hashes} as _hashes,
                case
                    when l.hashes is null and cur.close = 'yes' then 'skip_closed'
                    when l.hashes is null then 'create'
                    when not ({changed}) and not {str(bool(full)).lower()} then 'unchanged'
                    when cur.close = 'yes' and not l.closed then 'close'
                    else 'update'
                end as _action
            from cur
            left join (
                select external_id, hashes, closed, json_extract_string(hashes, {paths}) as _old
                from {SCHEMA}.case_ledger where case_type = '{table.case_type}'
            ) as l on l.external_id = cur.external_id
        )
        select
            *,
            case when _action in ('create', 'update', 'close')
                 then row_number() over (partition by _action in ('create', 'update', 'close') order by external_id) - 1
            end as _seq
        from classified
    """)
    con.execute(f"alter table {name} add column _chunk bigint")
    con.execute(f"alter table {name} add column _sheet_row bigint")
    con.execute(f"update {name} set _chunk = _seq // {int(chunk_rows)}, _sheet_row = _seq % {int(chunk_rows)} + 2 "
                "where _seq is not null")
    return names


def plan_table(table: CaseTable) -> str:
    """A scratch table on disk (not a temp table: those live in memory), replaced on every run."""
    return f"{SCHEMA}._plan_{table.case_type}"


def drop_plan(con: duckdb.DuckDBPyConnection, table: CaseTable) -> None:
    con.execute(f"drop table if exists {plan_table(table)}")


def counts(con: duckdb.DuckDBPyConnection, table: CaseTable) -> Dict[str, int]:
    return dict(con.execute(f"select _action, count(*) from {plan_table(table)} group by 1").fetchall())


def chunks(con: duckdb.DuckDBPyConnection, table: CaseTable) -> List[int]:
    return [r[0] for r in con.execute(
        f"select distinct _chunk from {plan_table(table)} where _chunk is not null order by 1").fetchall()]


def accept(con: duckdb.DuckDBPyConnection, table: CaseTable, chunk: int, failed_rows: Iterable[int],
           upload_id: str) -> int:
    """Record the chunk's rows CommCare accepted (all but failed_rows); returns how many."""
    failed = sorted(set(int(r) for r in failed_rows)) or [-1]
    name = plan_table(table)
    con.execute(f"""
        insert or replace into {SCHEMA}.case_ledger
            (case_type, external_id, hashes, closed, accepted_at, upload_id, last_error, last_error_at)
        select '{table.case_type}', p.external_id, p._hashes,
               coalesce(l.closed, false) or coalesce(p.close = 'yes' and p._action <> 'create', false),
               cast(timezone('UTC', current_timestamp) as timestamp), ?, null, null
        from {name} as p
        left join {SCHEMA}.case_ledger as l on l.case_type = '{table.case_type}' and l.external_id = p.external_id
        where p._chunk = ? and p._sheet_row not in (select unnest(?::bigint[]))
    """, [upload_id, chunk, failed])
    return int(con.execute(
        f"select count(*) from {name} where _chunk = ? and _sheet_row not in (select unnest(?::bigint[]))",
        [chunk, failed]).fetchone()[0])


def reject(con: duckdb.DuckDBPyConnection, table: CaseTable, chunk: int, errors: Dict[int, str]) -> Dict[str, str]:
    """Keep rejected rows pending with their error; returns external id -> error."""
    if not errors:
        return {}
    name = plan_table(table)
    rows = con.execute(
        f"select _sheet_row, external_id from {name} where _chunk = ? and _sheet_row in (select unnest(?::bigint[]))",
        [chunk, sorted(errors)]).fetchall()
    con.executemany(f"""
        insert into {SCHEMA}.case_ledger (case_type, external_id, last_error, last_error_at)
        values ('{table.case_type}', ?, ?, cast(timezone('UTC', current_timestamp) as timestamp))
        on conflict (case_type, external_id) do update
            set last_error = excluded.last_error, last_error_at = excluded.last_error_at
    """, [(ext, errors[row]) for row, ext in rows])
    return {ext: errors[row] for row, ext in rows}


def rows_of_chunk(con: duckdb.DuckDBPyConnection, table: CaseTable, columns: Sequence[str], chunk: int,
                  batch: int = 2000) -> Iterable[Tuple]:
    """Stream a chunk's rows in sheet order, `batch` at a time."""
    cols = ", ".join(f'"{c}"' for c in columns)
    cur = con.execute(f"select {cols} from {plan_table(table)} where _chunk = ? order by _sheet_row", [chunk])
    while True:
        part = cur.fetchmany(batch)
        if not part:
            return
        yield from part
