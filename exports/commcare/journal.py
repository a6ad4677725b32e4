"""The job journal: every upload is written down before it is sent, so no run ever sends a row twice at once.

CommCare's importer runs each upload as a background job, commits it 100 rows at a time, lets jobs run
side by side and does not keep external_id unique (../shared/specs/commcare-bulk-case-import.md, section R).
A row sent again while an earlier job with it may still be queued or running can become two cases, for good.
So each upload's rows are recorded here first (state `prepared`), the job is marked `sending` just before the
POST and `queued` with its status URL once CommCare answers. The next export settles every job that is not
finished before it plans anything:
- `prepared`: never sent (the POST comes after `sending` is written): discarded.
- `queued`: polled to its end, then its result is applied to the ledger.
- `sending` (no status URL: the process died mid-POST, or the answer was lost): the job may exist. Its rows
  are withheld for `unknown_job_grace` seconds, then looked up by external id through Case API v2. The
  grace exceeds the hour CommCare keeps an uploaded file for its job (a job not started by then fails).
A job that ended without confirming its rows (state 3, state 2 without a result, a status gone) leaves them
'maybe' in the ledger: re-sent as upserts (safe once the job is over) or closed by an update-only upload.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional, Tuple

from moodle_commcare import dialect
from moodle_commcare.database import Connection
from moodle_commcare.warehouse import UTC_NOW_SQL as NOW
from moodle_commcare.warehouse import one, scalar

from .ledger import SCHEMA, CaseTable, plan_table

JOBS = f"{SCHEMA}.jobs"
JOB_ROWS = f"{SCHEMA}.job_rows"
LEDGER = f"{SCHEMA}.case_ledger"
UNSETTLED = ("prepared", "sending", "queued")


@dataclass
class OpenJob:
    job_id: str
    case_type: str
    mode: str
    file: str
    rows: int
    state: str
    status_url: Optional[str]
    sent_at: Optional[datetime]


@contextmanager
def _transaction(con: Connection) -> Iterator[None]:
    """All of the block's writes, or none: a crash between two of them must not leave a job half applied."""
    con.execute("begin")
    try:
        yield
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def ensure_tables(con: Connection) -> None:
    con.execute(f"""
        create table if not exists {JOBS} (
            job_id varchar primary key,
            case_type varchar not null,
            mode varchar not null,          -- upsert (create_new_cases on) | close (update-only)
            file varchar,
            rows integer,
            state varchar not null,         -- prepared | sending | queued | succeeded | ended_unconfirmed
                                            -- | not_sent | resolved
            status_url varchar,
            created_at timestamp,
            sent_at timestamp,
            settled_at timestamp,
            outcome varchar                 -- what CommCare said, in words
        )""")
    con.execute(f"""
        create table if not exists {JOB_ROWS} (
            job_id varchar not null,
            sheet_row integer not null,
            case_type varchar not null,
            external_id varchar not null,   -- the mart's id
            sent_external_id varchar not null,
            episode integer not null,
            action varchar not null,
            hashes {dialect.json_type(con)},
            closing boolean not null
        )""")


def prune(con: Connection, keep_days: int = 30) -> None:
    """Drop the row lists of jobs settled more than `keep_days` ago; the jobs themselves stay as history."""
    con.execute(f"""delete from {JOB_ROWS} where job_id in (
                        select job_id from {JOBS} where state not in {UNSETTLED}
                        and settled_at < {NOW} - interval '{int(keep_days)} days')""")


def record(con: Connection, table: CaseTable, mode: str, chunk: int, file: str) -> str:
    """Write the job and its rows (state prepared) in one transaction; returns its id."""
    job_id = uuid.uuid4().hex
    with _transaction(con):
        con.execute(f"""
            insert into {JOB_ROWS}
            select ?, _sheet_row, '{table.case_type}', external_id, _sent_id, _episode, _action, _hashes,
                   coalesce(close = 'yes', false)
            from {plan_table(table)} where _mode = ? and _chunk = ?""", [job_id, mode, chunk])
        rows = scalar(con, f"select count(*) from {JOB_ROWS} where job_id = ?", [job_id])
        con.execute(f"insert into {JOBS} (job_id, case_type, mode, file, rows, state, created_at) "
                    f"values (?, ?, ?, ?, ?, 'prepared', {NOW})", [job_id, table.case_type, mode, file, rows])
    return job_id


def mark_sending(con: Connection, job_id: str) -> None:
    con.execute(f"update {JOBS} set state = 'sending', sent_at = {NOW} where job_id = ?", [job_id])


def mark_queued(con: Connection, job_id: str, status_url: str) -> None:
    con.execute(f"update {JOBS} set state = 'queued', status_url = ? where job_id = ?", [status_url, job_id])


def open_jobs(con: Connection) -> List[OpenJob]:
    rows = con.execute(f"""select job_id, case_type, mode, file, rows, state, status_url, sent_at from {JOBS}
                           where state in {UNSETTLED} order by created_at""").fetchall()
    return [OpenJob(*r) for r in rows]


def rows_of(con: Connection, job_id: str) -> Dict[int, Tuple[str, bool]]:
    """A job's rows: sheet row -> (the external id sent, whether the row closes its case)."""
    return {r: (ext, closing) for r, ext, closing in con.execute(
        f"select sheet_row, sent_external_id, closing from {JOB_ROWS} where job_id = ? order by sheet_row",
        [job_id]).fetchall()}


def sent_ids(con: Connection, job_id: str) -> List[str]:
    return [r[0] for r in con.execute(
        f"select sent_external_id from {JOB_ROWS} where job_id = ? order by sheet_row", [job_id]).fetchall()]


def withhold_unsettled(con: Connection) -> int:
    """(Re)build temp table _withheld: every case in a job that is not settled. Returns how many."""
    dialect.replace_table(con, "_withheld", f"""
        select distinct r.case_type, r.external_id from {JOB_ROWS} as r join {JOBS} as j using (job_id)
        where j.state in ('sending', 'queued')""", temp=True)
    return int(scalar(con, "select count(*) from _withheld"))


def _settle(con: Connection, job_id: str, state: str, outcome: str) -> None:
    con.execute(f"update {JOBS} set state = ?, outcome = ?, settled_at = {NOW} where job_id = ?",
                [state, outcome[:2000], job_id])


def _note_errors(con: Connection, job_id: str, errors: Dict[int, str]) -> None:
    if not errors:
        return
    con.execute("drop table if exists _row_errors")
    con.execute("create temp table _row_errors (sheet_row integer, error varchar)")
    con.executemany("insert into _row_errors values (?, ?)", list(errors.items()))
    con.execute(f"""
        insert into {LEDGER} (case_type, external_id, in_commcare, episode, last_error, last_error_at)
        select r.case_type, r.external_id, 'no', 0, e.error, {NOW}
        from {JOB_ROWS} as r join _row_errors as e using (sheet_row) where r.job_id = ?
        on conflict (case_type, external_id) do update
            set last_error = excluded.last_error, last_error_at = excluded.last_error_at""", [job_id])


def apply_success(con: Connection, job_id: str, row_errors: Dict[int, str], upload_id: str) -> None:
    """CommCare finished the job and listed its failed rows: every other row is as sent."""
    failed = sorted(row_errors) or [-1]
    with _transaction(con):
        con.execute(f"""
            insert into {LEDGER} (case_type, external_id, hashes, closed, accepted_at, upload_id,
                                  last_error, last_error_at, in_commcare, episode)
            select r.case_type, r.external_id, r.hashes, r.closing, {NOW}, ?, null, null,
                   -- an update-only close of a case that may never have existed closes it or finds nothing
                   case when r.closing then coalesce(l.in_commcare, 'maybe') else 'yes' end,
                   r.episode
            from {JOB_ROWS} as r
            left join {LEDGER} as l using (case_type, external_id)
            where r.job_id = ? and r.sheet_row not in (select unnest(cast(? as integer[])))
            on conflict (case_type, external_id) do update set hashes = excluded.hashes, closed = excluded.closed,
                accepted_at = excluded.accepted_at, upload_id = excluded.upload_id, last_error = excluded.last_error,
                last_error_at = excluded.last_error_at, in_commcare = excluded.in_commcare,
                episode = excluded.episode""",
                    [upload_id, job_id, failed])
        _note_errors(con, job_id, row_errors)
        _settle(con, job_id, "succeeded", f"{len(row_errors)} row errors" if row_errors else "all rows accepted")


def apply_unconfirmed(con: Connection, job_id: str, reason: str) -> None:
    """The job ended without saying which rows it applied (state 3, no result, status gone).

    Earlier chunks may be in CommCare (no rollback): a create or reopen leaves its case 'maybe', so the
    next run upserts it or closes it update-only. Updates keep their old hashes and are re-sent.
    """
    with _transaction(con):
        con.execute(f"""
            insert into {LEDGER} (case_type, external_id, hashes, closed, accepted_at, upload_id,
                                  last_error, last_error_at, in_commcare, episode)
            select r.case_type, r.external_id,
                   case when l.episode = r.episode then l.hashes end,
                   case when l.episode = r.episode then l.closed else false end,
                   l.accepted_at, l.upload_id, ?, {NOW},
                   case when l.in_commcare = 'yes' and l.episode = r.episode then 'yes' else 'maybe' end,
                   r.episode
            from {JOB_ROWS} as r
            left join {LEDGER} as l using (case_type, external_id)
            where r.job_id = ? and not r.closing
            on conflict (case_type, external_id) do update set hashes = excluded.hashes, closed = excluded.closed,
                accepted_at = excluded.accepted_at, upload_id = excluded.upload_id, last_error = excluded.last_error,
                last_error_at = excluded.last_error_at, in_commcare = excluded.in_commcare,
                episode = excluded.episode""", [reason[:500], job_id])
        con.execute(f"""
            update {LEDGER} as l set last_error = ?, last_error_at = {NOW}
            from {JOB_ROWS} as r
            where r.job_id = ? and r.closing and l.case_type = r.case_type and l.external_id = r.external_id""",
                    [reason[:500], job_id])
        _settle(con, job_id, "ended_unconfirmed", reason)


def apply_not_sent(con: Connection, job_id: str, reason: str) -> None:
    """No job can exist (never sent, or refused before queueing): the rows are simply still pending."""
    con.execute(f"""
        update {LEDGER} as l set last_error = ?, last_error_at = {NOW}
        from {JOB_ROWS} as r
        where r.job_id = ? and l.case_type = r.case_type and l.external_id = r.external_id""", [reason[:500], job_id])
    _settle(con, job_id, "not_sent", reason)


def apply_lookup(con: Connection, job_id: str, found: Dict[str, Dict[str, Any]]) -> Dict[str, int]:
    """Settle a job whose answer was lost by what CommCare holds now (Case API v2, by external id)."""
    con.execute("drop table if exists _found")
    con.execute("create temp table _found (sent_external_id varchar, closed boolean)")
    if found:
        con.executemany("insert into _found values (?, ?)", [(k, bool(v.get("closed"))) for k, v in found.items()])
    with _transaction(con):
        # a created (or reopened) case exists: its values are unknown, so they are sent again as an update
        con.execute(f"""
            insert into {LEDGER} (case_type, external_id, hashes, closed, accepted_at, upload_id,
                                  last_error, last_error_at, in_commcare, episode)
            select r.case_type, r.external_id, case when l.episode = r.episode then l.hashes end, f.closed,
                   l.accepted_at, l.upload_id, null, null, 'yes', r.episode
            from {JOB_ROWS} as r join _found as f using (sent_external_id)
            left join {LEDGER} as l using (case_type, external_id)
            where r.job_id = ? and not r.closing
            on conflict (case_type, external_id) do update set hashes = excluded.hashes, closed = excluded.closed,
                accepted_at = excluded.accepted_at, upload_id = excluded.upload_id, last_error = excluded.last_error,
                last_error_at = excluded.last_error_at, in_commcare = excluded.in_commcare,
                episode = excluded.episode""", [job_id])
        # a close: done if CommCare shows the case closed, or holds no such case
        con.execute(f"""
            update {LEDGER} as l set closed = true
            from {JOB_ROWS} as r left join _found as f using (sent_external_id)
            where r.job_id = ? and r.closing and coalesce(f.closed, true)
              and l.case_type = r.case_type and l.external_id = r.external_id""", [job_id])
        n = one(con, f"""select count(*) filter (where f.sent_external_id is not null), count(*)
                         from {JOB_ROWS} as r left join _found as f using (sent_external_id)
                         where r.job_id = ?""", [job_id])
        _settle(con, job_id, "resolved", f"looked up by external id: {n[0]} of {n[1]} rows found in CommCare")
    return {"found": int(n[0]), "rows": int(n[1])}
