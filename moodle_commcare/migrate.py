"""Moving to another warehouse (a DuckDB file to a PostgreSQL server, or back) without CommCare noticing.

What Moodle holds is read again by a full extract into the new warehouse. What only the warehouse knows is
copied: the pinned site key inside every external id (ops.site_identity), the export's ledger of what CommCare
accepted with the episodes of reopened cases, and its job journal (commcare_export), and the run log. Without
them the new warehouse would send every case again, and a site that moved address would get new ids for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from exports.commcare import journal, ledger

from . import dialect, runlog, site_identity
from .database import scalar, table_exists
from .warehouse import OPS_SCHEMA, Warehouse

BATCH_ROWS = 5000
# (table, what creates it as this version does), in an order that never leaves a journal without its ledger
STATE_TABLES: Tuple[Tuple[str, Callable[[Any], None]], ...] = (
    (site_identity.TABLE, site_identity.ensure_table),
    (f"{OPS_SCHEMA}.run_log", runlog.ensure_table),
    (f"{ledger.SCHEMA}.case_ledger", ledger.ensure_tables),
    (ledger.META, ledger.ensure_tables),
    (journal.JOBS, journal.ensure_tables),
    (journal.JOB_ROWS, journal.ensure_tables),
)


class MigrationRefused(Exception):
    """The move would lose or mix up the export's state; the message says what to do first."""


@dataclass
class MigrationReport:
    copied: Dict[str, int] = field(default_factory=dict)  # table -> rows
    skipped: List[str] = field(default_factory=list)  # tables the old warehouse does not have (yet)


def _refusal(source: Any, target: Any, old: Warehouse, new: Warehouse) -> Optional[str]:
    ledger_table = f"{ledger.SCHEMA}.case_ledger"
    if table_exists(source, journal.JOBS):
        open_jobs = scalar(source, f"select count(*) from {journal.JOBS} where state in {journal.UNSETTLED}")
        if open_jobs:
            return (f"{old} has {open_jobs} CommCare import job(s) not settled yet: their cases could be sent twice. "
                    f"Run `moodle-commcare export --upload --warehouse {old}` until `status` shows none open, then "
                    "migrate.")
    if table_exists(source, ledger.META) and ledger.hash_scheme(source) != ledger.HASH_SCHEME:
        return (f"{old}'s ledger still holds digests of an older version: run `moodle-commcare export --warehouse "
                f"{old}` once with this version (it rewrites them), then migrate.")
    if table_exists(target, ledger_table) and scalar(target, f"select count(*) from {ledger_table}"):
        return (f"{new} already has an export ledger: it is another warehouse's, or a migration was done. Migrate into "
                "an empty database (or drop its commcare_export and ops schemas if that is what you mean).")
    return None


def migrate(old: Warehouse, new: Warehouse, on_progress: Optional[Callable[[str], None]] = None) -> MigrationReport:
    """Copy the connector's own state from `old` to `new`, all of it or none (one transaction in `new`), under both
    warehouses' run locks. Raises MigrationRefused, naming what to do, when that would lose or mix state."""
    say = on_progress or (lambda _: None)
    if str(old) == str(new):
        raise MigrationRefused(f"{old} is both the old and the new warehouse: name the new one with --to.")
    if not old.exists():
        raise MigrationRefused(f"{old} does not exist: there is nothing to move. Name the old warehouse with "
                               "--warehouse (or MOODLE_COMMCARE_WAREHOUSE).")
    report = MigrationReport()
    with old.run_lock("migrate"), new.run_lock("migrate"), old.connect(read_only=True) as source, \
            new.connect() as target:
        refused = _refusal(source, target, old, new)
        if refused:
            raise MigrationRefused(refused)
        target.execute("begin transaction")
        try:
            for relation, ensure in STATE_TABLES:
                if not table_exists(source, relation):
                    report.skipped.append(relation)
                    continue
                ensure(target)
                wanted = {name for name, _ in dialect.columns(target, relation)}
                names = [name for name, _ in dialect.columns(source, relation) if name in wanted]
                quoted = ", ".join(f'"{n}"' for n in names)
                target.execute(f"delete from {relation}")  # e.g. ledger_meta's default row: the old one's wins
                rows = source.execute(f"select {quoted} from {relation}")
                insert = f"insert into {relation} ({quoted}) values ({', '.join('?' for _ in names)})"
                copied = 0
                while True:
                    part = rows.fetchmany(BATCH_ROWS)
                    if not part:
                        break
                    target.executemany(insert, part)
                    copied += len(part)
                    say(f"{relation}: {copied:,} rows")
                report.copied[relation] = copied
            target.execute("commit")
        except BaseException:
            target.execute("rollback")
            raise
    return report
