"""What CommCare has accepted, per case, and which cases must be sent now.

The ledger keeps, per case type and external id, a hash of every exported property as CommCare accepted
it. A case goes out when a property's value differs from the accepted one (a property no longer exported
is not compared, so dropping a column resends nothing) or when it was never accepted. Everything is done
in the warehouse (DuckDB or PostgreSQL, moodle_commcare/dialect.py) so 100,000 cases never become Python objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from moodle_commcare import dialect
from moodle_commcare.database import Connection, table_exists
from moodle_commcare.warehouse import CASE_TYPES, scalar

from .errors import CommCareConfigError

SCHEMA = "commcare_export"
HEADER_RE = re.compile(r"^[a-zA-Z][\w_-]*$")
RESERVED = {"type", "closed", "parent_ref", "case_id", "case_type"}


@dataclass(frozen=True)
class CaseTable:
    case_type: str
    relation: str
    parent: bool


# the case-type registry and the marts' names belong to the warehouse (moodle_commcare/warehouse.py)
CASE_TABLES = tuple(CaseTable(t.name, t.relation, parent=t.parent) for t in CASE_TYPES)
LEADING = ("external_id", "name", "owner_id", "parent_external_id", "parent_type")
NOT_EXPORTED = {"case_type"}  # the upload's case_type parameter, not a column


def ensure_tables(con: Connection) -> None:
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(f"""
        create table if not exists {SCHEMA}.case_ledger (
            case_type varchar not null,
            external_id varchar not null,  -- the mart's id; CommCare's is this plus '-r<episode>' after a reopen
            hashes {dialect.json_type(con)},  -- property -> digest of the text CommCare accepted (HASH_SCHEME);
                                        -- NULL if never accepted
            closed boolean not null default false,  -- a close of the current episode's case was confirmed
            accepted_at timestamp,
            upload_id varchar,
            last_error varchar,         -- why CommCare rejected the latest attempt; cleared on acceptance
            last_error_at timestamp,
            primary key (case_type, external_id)
        )""")
    # since issue 10: does CommCare hold the current episode's case ('yes' / 'no' / 'maybe': a job that may
    # have created it ended without saying so), and which episode is current
    con.execute(f"alter table {SCHEMA}.case_ledger add column if not exists in_commcare varchar")
    con.execute(f"alter table {SCHEMA}.case_ledger add column if not exists episode integer")
    con.execute(f"""update {SCHEMA}.case_ledger
                    set in_commcare = case when hashes is not null then 'yes' else 'maybe' end, episode = 0
                    where in_commcare is null""")
    # since issue 12: which digest the hashes are (a ledger without the row was written with DuckDB's hash())
    con.execute(f"create table if not exists {META} (key varchar primary key, value varchar not null)")
    con.execute(f"""insert into {META} select 'hash_scheme', case when exists (select 1 from {SCHEMA}.case_ledger
                    where hashes is not null) then '{LEGACY_SCHEME}' else '{HASH_SCHEME}' end
                    where not exists (select 1 from {META} where key = 'hash_scheme')""")


# The digest of a property's text. md5's first 64 bits are the same in every DuckDB version; DuckDB's hash(),
# used before, may change with a DuckDB upgrade, and every case would then read as changed and be re-sent.
HASH_SCHEME = "md5-64"
LEGACY_SCHEME = "duckdb-hash"
META = f"{SCHEMA}.ledger_meta"


def hash_scheme(con: Connection) -> str:
    row = con.execute(f"select value from {META} where key = 'hash_scheme'").fetchone()
    return str(row[0]) if row else HASH_SCHEME


def _digest(expr: str, scheme: str) -> str:
    if scheme == LEGACY_SCHEME:
        return f"cast(hash({expr}) as varchar)"
    return f"substr(md5({expr}), 1, 16)"


def migrate_hashes(con: Connection, chunk_rows: int) -> int:
    """Rewrite a ledger of DuckDB hash() values as md5 digests, once, without re-sending anything: a case whose
    values still match what CommCare accepted gets the new digests of those values; any other keeps its old
    ones, which match nothing, so it goes out as it would have anyway. Must run with the DuckDB that wrote the
    old values (this version's first export does). Returns how many cases were rewritten."""
    if hash_scheme(con) == HASH_SCHEME:
        return 0
    rewritten = 0
    con.execute("begin transaction")
    try:
        for table in CASE_TABLES:
            plan(con, table, chunk_rows, scheme=LEGACY_SCHEME)
            dialect.replace_table(con, f"{SCHEMA}._unchanged",
                                  f"select external_id from {plan_table(table)} where _action = 'unchanged'")
            plan(con, table, chunk_rows, scheme=HASH_SCHEME)
            rewritten += len(con.execute(f"""
                update {SCHEMA}.case_ledger as l set hashes = p._hashes
                from {plan_table(table)} as p join {SCHEMA}._unchanged as u using (external_id)
                where l.case_type = '{table.case_type}' and l.external_id = p.external_id and l.hashes is not null
                returning l.external_id""").fetchall())
            drop_plan(con, table)
        con.execute(f"drop table if exists {SCHEMA}._unchanged")
        con.execute(f"update {META} set value = '{HASH_SCHEME}' where key = 'hash_scheme'")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return rewritten


def missing_case_tables(con: Connection) -> List[str]:
    """The case tables (dbt's marts) the warehouse does not have yet: no transform has built them."""
    return [t.relation for t in CASE_TABLES if not table_exists(con, t.relation)]


def sent_id(base: str, episode: str) -> str:
    """SQL: the external id CommCare knows for an episode: the mart's id, then -r1, -r2 ... after reopens."""
    return f"case when coalesce({episode}, 0) > 0 then {base} || '-r' || cast({episode} as varchar) else {base} end"


def text_expr(con: Any, column: str, sql_type: str, alias: str = "m") -> str:
    """SQL turning a mart value into the exact text the xlsx cell gets (NULL stays NULL: a blank cell), the same
    text on either engine."""
    q = f'{alias}."{column}"'
    t = sql_type.upper()
    if t.startswith(("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER")):
        return f"cast({q} as varchar)"
    if t.startswith(("DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC")):
        # six decimals at most, trailing zeros trimmed: 33.333333, 12.5, 7 (round() in binary gave 152.49994)
        return (f"case when {q} is null then null when abs({q}) < 5e-7 then '0' "
                f"when {q} = trunc({q}) and abs({q}) < 1e15 then cast(cast({q} as bigint) as varchar) "
                f"else rtrim(rtrim({dialect.six_decimals(con, q)}, '0'), '.') end")
    if t == "BOOLEAN":
        return f"case when {q} then 'yes' when not {q} then 'no' end"
    if t == "DATE":
        return dialect.date_text(con, q)
    # ISO 8601 in UTC: what CommCare's data dictionary and apps parse (the marts' timestamps are UTC)
    if t.startswith("TIMESTAMP"):
        return dialect.iso_utc(con, q, zoned=t.startswith("TIMESTAMP WITH TIME ZONE"))
    return f"cast({q} as varchar)"


def export_columns(con: Connection, table: CaseTable) -> List[Tuple[str, str]]:
    """(column, type) in file order: external_id, name, owner_id, parent columns, properties, close."""
    described = dialect.columns(con, table.relation)
    names = [n for n, _ in described]
    parent_columns = ("parent_external_id", "parent_type") if table.parent else ()
    for required in ("external_id", "name", "owner_id", "close") + parent_columns:
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


UPSERT, CLOSE = "upsert", "close"  # the two kinds of upload: create_new_cases on, and update-only


def plan(con: Connection, table: CaseTable, chunk_rows: int, full: bool = False,
         scheme: Optional[str] = None) -> List[str]:
    """Build the table _plan_<type>: every case with its text values, hashes and action.

    Actions, from what the ledger knows of the case in CommCare:
    - create: never created. skip_closed: never created and already to close (nothing to do: a create
      row ignores close, so sending it would create an open case).
    - update: a value changed (or --full). resend: a job that may have created or changed it ended
      unconfirmed ('maybe', or values unknown): all its values again. Both are sent with create_new_cases
      on, an upsert, safe whether or not the case exists.
    - close: open (or maybe existing) and now to close: sent in an update-only upload, so a case that
      does not exist is not created, and "not found" means done.
    - reopen: closed in CommCare and open again in Moodle. CommCare cannot reopen a case, so a new case
      is created under the next episode's id (<id>-r<n>); the old one stays closed, its history intact.
    - withheld: in a job that has not been settled yet (see journal.py), or its parent is: never sent twice
      at once, and never before its parent.
    - unchanged.
    Enrolments name their parent by the student's current episode id. Returns the file's columns.
    """
    columns = export_columns(con, table)
    names = [n for n, _ in columns]
    ledger = f"{SCHEMA}.case_ledger"
    # the cases of unsettled jobs (journal.withhold_unsettled fills it); none unless it did
    con.execute("create temp table if not exists _withheld (case_type varchar, external_id varchar)")
    texts = []
    for n, t in columns:
        if n == "parent_external_id":
            texts.append(f'{sent_id("m.parent_external_id", "pl.episode")} as "parent_external_id"')
        else:
            texts.append(f'{text_expr(con, n, t)} as "{n}"')
    parent_join = (f"left join {ledger} as pl on pl.case_type = m.parent_type "
                   "and pl.external_id = m.parent_external_id") if table.parent else ""
    # a child waits while its parent's job is unsettled: sent now it would fail, or race the parent's create
    parent_withheld = ("left join _withheld as pw on pw.case_type = cur.parent_type and pw.external_id = "
                       "cur._parent_base" if table.parent else "")
    withheld = "w.external_id is not null" + (" or pw.external_id is not null" if table.parent else "")
    hashed = [n for n in names if n != "external_id"]
    # 64-bit hashes keep the ledger small; json_extract on the parsed ledger JSON reads each property once

    scheme = scheme or hash_scheme(con)

    def digest(column: str) -> str:  # NULL stays NULL: an empty value matches a property never sent
        value = f'cur."{column}"'
        return f"case when {value} is not null then {_digest(value, scheme)} end"

    # each digest computed once (the dig step), then read twice: into _hashes and for the comparison
    digests = ", ".join(f'{digest(n)} as "_d{i}"' for i, n in enumerate(hashed))
    hashes = dialect.json_object(con, [(n, f'cur."_d{i}"') for i, n in enumerate(hashed)])
    # PostgreSQL inlines a CTE into each place that reads it: the action (every digest compared) would be worked
    # out three times over (for _action, _mode and the window's sort), so its steps are computed once each
    once = "materialized " if dialect.is_postgres(con) else ""
    if dialect.is_postgres(con):  # each accepted digest read by name from the ledger's jsonb
        old_values = "hashes"
        changed = " or ".join(f"((l.hashes ->> '{n}') is distinct from cur.\"_d{i}\")" for i, n in enumerate(hashed))
    else:  # DuckDB reads them all in one pass over the parsed JSON, as a list
        paths = "[" + ", ".join(f"'$.\"{n}\"'" for n in hashed) + "]"
        old_values = f"hashes, json_extract_string(hashes, {paths}) as _old"
        changed = " or ".join(f'(l._old[{i + 1}] is distinct from cur."_d{i}")' for i in range(len(hashed)))
    kept = ", ".join(f'"{n}"' for n in names) + (", _parent_base" if table.parent else "")
    name = plan_table(table)
    dialect.replace_table(con, name, f"""
        with cur as (
            select
            {(","+chr(10)+"            ").join(texts)}{", m.parent_external_id as _parent_base" if table.parent else ""}
            from {table.relation} as m
            {parent_join}
        ),
        dig as {once}(
            select cur.*, {digests} from cur
        ),
        classified as {once}(
            select
                cur.*,
                {hashes} as _hashes,
                coalesce(l.episode, 0) as _old_episode,
                case
                    when {withheld} then 'withheld'
                    when coalesce(l.in_commcare, 'no') = 'no' and cur.close = 'yes' then 'skip_closed'
                    when coalesce(l.in_commcare, 'no') = 'no' then 'create'
                    when l.closed and cur.close = 'yes' then 'unchanged'
                    when l.closed then 'reopen'
                    when cur.close = 'yes' then 'close'
                    when l.in_commcare = 'maybe' or l.hashes is null then 'resend'
                    when not ({changed}) and not {str(bool(full)).lower()} then 'unchanged'
                    else 'update'
                end as _action
            from dig as cur
            left join (
                select external_id, closed, in_commcare, episode, {old_values}
                from {ledger} where case_type = '{table.case_type}'
            ) as l on l.external_id = cur.external_id
            left join _withheld as w on w.case_type = '{table.case_type}' and w.external_id = cur.external_id
            {parent_withheld}
        ),
        moded as (
            select *,
                   _old_episode + case when _action = 'reopen' then 1 else 0 end as _episode,
                   case when _action in ('create', 'update', 'resend', 'reopen') then '{UPSERT}'
                        when _action = 'close' then '{CLOSE}' end as _mode
            from classified
        )
        select
            {kept}, _hashes, _old_episode, _action, _episode, _mode,
            {sent_id("external_id", "_episode")} as _sent_id,
            case when _mode is not null then row_number() over (partition by _mode order by external_id) - 1 end as _seq
        from moded
    """)
    con.execute(f"alter table {name} add column _chunk bigint")
    con.execute(f"alter table {name} add column _sheet_row bigint")
    con.execute(f"update {name} set _chunk = {dialect.int_div(con, '_seq', chunk_rows)}, "
                f"_sheet_row = _seq % {int(chunk_rows)} + 2 where _seq is not null")
    return names


def plan_table(table: CaseTable) -> str:
    """A scratch table on disk (not a temp table: those live in memory), replaced on every run."""
    return f"{SCHEMA}._plan_{table.case_type}"


def drop_plan(con: Connection, table: CaseTable) -> None:
    con.execute(f"drop table if exists {plan_table(table)}")


def examples(con: Connection, table: CaseTable, shown: Sequence[str],
             limit: int = 3) -> List[Dict[str, Any]]:
    """A few planned rows (action, the id sent, the columns shown) for a dry run to print; upserts first."""
    cols = "".join(f', "{c}"' for c in shown)
    rows = con.execute(f"select _action, _sent_id{cols} from {plan_table(table)} "
                       f"where _seq is not null order by _mode desc, _seq limit {int(limit)}").fetchall()
    return [dict(zip(["action", "external_id", *shown], r, strict=True)) for r in rows]


def counts(con: Connection, table: CaseTable) -> Dict[str, int]:
    return dict(con.execute(f"select _action, count(*) from {plan_table(table)} group by 1").fetchall())


def chunks(con: Connection, table: CaseTable, mode: str) -> List[int]:
    return [r[0] for r in con.execute(
        f"select distinct _chunk from {plan_table(table)} where _mode = ? order by 1", [mode]).fetchall()]


def rows_of_chunk(con: Connection, table: CaseTable, columns: Sequence[str], mode: str, chunk: int,
                  batch: int = 2000) -> Iterable[Tuple]:
    """Stream a chunk's rows in sheet order, `batch` at a time, with CommCare's id for the episode."""
    cols = ", ".join("_sent_id" if c == "external_id" else f'"{c}"' for c in columns)
    cur = con.execute(f"select {cols} from {plan_table(table)} where _mode = ? and _chunk = ? order by _sheet_row",
                      [mode, chunk])
    while True:
        part = cur.fetchmany(batch)
        if not part:
            return
        yield from part


def open_in_commcare(con: Connection, table: CaseTable) -> int:
    """Cases of this type that CommCare holds open (or may), as far as the ledger knows."""
    return int(scalar(con, f"""select count(*) from {SCHEMA}.case_ledger where case_type = ?
                               and in_commcare in ('yes', 'maybe') and not closed""", [table.case_type]))
