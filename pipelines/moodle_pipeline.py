"""Run the Moodle source into the warehouse (DuckDB or PostgreSQL): `python -m pipelines.moodle_pipeline` or
`moodle-commcare extract`.

Settings come from dlt's usual places (.dlt/config.toml, .dlt/secrets.toml, SOURCES__MOODLE__* env vars);
keyword arguments override them, which is how the demo and the tests point it at the emulator.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Union

# dlt reports anonymous usage to dlthub unless told not to; a school's sync stays on its own machine unless the
# user turns it on (RUNTIME__DLTHUB_TELEMETRY=true). Set before dlt reads its configuration.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# Profiles (emails, phones) must live in one place, the warehouse: once loaded, dlt deletes the package's
# parquet files and empties the merge staging tables instead of keeping a copy per run.
os.environ.setdefault("LOAD__DELETE_COMPLETED_JOBS", "true")
os.environ.setdefault("LOAD__TRUNCATE_STAGING_DATASET", "true")
# Memory (see the README's Performance): dlt reads the resources one after another rather than a row of each in
# turn, so one fan-out's answers are in memory at a time, not every resource's; and it writes each table's rows to
# its files every 1,000 rows rather than 5,000, in the extract as in the normalise step.
os.environ.setdefault("EXTRACT__NEXT_ITEM_MODE", "fifo")
os.environ.setdefault("DATA_WRITER__BUFFER_MAX_ITEMS", "1000")
# The big tables reach dlt as Arrow tables (pipelines/moodle/arrow.py), which dlt writes to parquet as they are: it
# fills their `_dlt_load_id` only when told to. Not a default a setting may turn off: the raw tables' shape, and
# rows_of_loads' count on PostgreSQL, depend on it. (`_dlt_id` arrow.py makes: dlt's ADD_DLT_ID would declare it
# varchar(64), and rewrite every parquet file to add it.)
os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID"] = "true"

M_ARENA_MAX = -8  # glibc's malloc.h


def _two_malloc_arenas() -> None:
    """At most two glibc malloc arenas in this process (glibc's default: eight per core), so the memory one thread
    frees is there for the others. The extract's threads (fan-outs decoding answers, the rows made into Arrow
    columns, DuckDB's) otherwise each keep their own heap, and the process carried 292 MB out of a district's first
    extract instead of 246 MB, into the transform that peaks with it (the README's 600 MB aim). With two: 235 MB,
    peak 409 MB, the same time. Nothing elsewhere (musl, macOS)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
        except (OSError, AttributeError):
            pass


_two_malloc_arenas()  # before the threads that would make arenas of their own

import dlt  # noqa: E402
from dlt.common.configuration.exceptions import ConfigurationException  # noqa: E402
from dlt.common.pipeline import LoadInfo  # noqa: E402
from dlt.pipeline.exceptions import PipelineStepFailed  # noqa: E402

from moodle_commcare import database, markers, runlog  # noqa: E402
from moodle_commcare.database import MISSING_TABLE  # noqa: E402
from moodle_commcare.warehouse import Warehouse  # noqa: E402
from pipelines.moodle import RequestStats, moodle_source  # noqa: E402
from pipelines.moodle.errors import MoodleConfigError, MoodleError  # noqa: E402

log = logging.getLogger(__name__)

DATASET = "moodle_raw"
PIPELINE_NAME = "moodle"



def duckdb_path(db: Union[Warehouse, Path, str, None] = None) -> Path:
    """The warehouse's file (kept under this name for callers of the pipeline)."""
    return Warehouse.of(db).path


@dataclass
class ExtractReport:
    """What one extract did: rows per table (this run, and in the table), requests, and what Moodle hid."""
    duckdb: Path
    rows_loaded: Dict[str, int]
    table_rows: Dict[str, int]
    stats: RequestStats
    seconds: float
    load_info: Optional[LoadInfo] = field(default=None, repr=False)
    warnings: List[Dict[str, Any]] = field(default_factory=list)  # data Moodle hid this run (access_gaps)
    recovered: int = 0  # load packages of an interrupted earlier run that this run finished first
    where: str = ""  # the warehouse as its setting names it (a file, or a PostgreSQL URL without password)


def make_pipeline(db: Union[Warehouse, Path, str], pipelines_dir: Optional[Path] = None) -> dlt.Pipeline:
    """One pipeline per warehouse; its working state lives beside the warehouse so two warehouses never mix."""
    warehouse = Warehouse.of(db)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=warehouse.dlt_destination(),
        dataset_name=DATASET,
        pipelines_dir=str(pipelines_dir or warehouse.pipelines_dir),
    )


def unwrap(exc: BaseException) -> BaseException:
    """The MoodleError behind dlt's wrappers, so callers see what to fix rather than dlt's traceback."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MoodleError):
            return current
        if "could not set lock" in str(current).lower():
            return database.busy("The DuckDB file")
        seen.add(id(current))
        current = current.__cause__ or current.__context__ or getattr(current, "exception", None)
    return exc


def _without_url_credentials(options: Dict[str, Any]) -> Dict[str, Any]:
    """Basic-auth credentials written into the base URL go to the source as `http_auth`, and the address
    itself is passed clean: dlt records the source's arguments and resolved config in its trace."""
    from pipelines.moodle.config import split_credentials

    raw = options.get("base_url") or os.environ.get("SOURCES__MOODLE__BASE_URL") or dlt.config.get(
        "sources.moodle.base_url")
    if not isinstance(raw, str):
        return options
    clean, auth = split_credentials(raw.strip())
    return {**options, "base_url": clean, **({"http_auth": auth} if auth else {})}


def _forget_trace_if_credentials(pipeline: dlt.Pipeline, options: Dict[str, Any]) -> None:
    """A base URL read from .dlt/config.toml was resolved through dlt, which keeps it in the run's trace:
    with credentials in it, the trace (which nothing here reads) is not kept."""
    if "http_auth" in options:
        (Path(pipeline.working_dir) / "trace.pickle").unlink(missing_ok=True)


def run_extract(
    db: Union[Warehouse, Path, str, None] = None,
    *,
    pipelines_dir: Optional[Path] = None,
    on_progress: Optional[Any] = None,
    **source_options: Any,
) -> ExtractReport:
    """Extract and load into the warehouse (`db`: a Warehouse, or what Warehouse.of reads as one); raises the
    underlying MoodleError (not dlt's wrapper) when Moodle refuses, and RunLocked when another run works on the
    same warehouse (it would share dlt's working folder)."""
    warehouse = Warehouse.of(db)
    warehouse.path.parent.mkdir(parents=True, exist_ok=True)
    with warehouse.run_lock("extract"):
        return _run_extract(warehouse, pipelines_dir, on_progress, source_options)


def _run_extract(warehouse: Warehouse, pipelines_dir: Optional[Path], on_progress: Optional[Any],
                 source_options: Dict[str, Any]) -> ExtractReport:
    stats = RequestStats()
    pipeline = make_pipeline(warehouse, pipelines_dir)
    started = time.monotonic()
    began = runlog.utcnow()
    recovered = 0
    with _ticker(stats, on_progress):
        try:
            if pipeline.config.restore_from_destination:  # as run() does: state from DuckDB if the folder is gone
                pipeline.sync_destination()
            if pipeline.has_pending_data:  # an earlier run stopped mid-way: finish its load before anything else
                recovered = _finish_interrupted(warehouse, pipeline)
            source_options = _without_url_credentials(source_options)
            from pipelines.moodle.config import MoodleSettings, source_arguments

            try:
                source = moodle_source(request_stats=stats, known_enrolments=known_enrolments(warehouse),
                                       **source_arguments(source_options))
            except ConfigurationException as exc:  # dlt refused a setting as it read it: a type, a missing value
                described = MoodleSettings.describe(exc)
                if described is None:
                    raise
                raise MoodleConfigError(described) from None
            pipeline.extract(source, loader_file_format=loader_file_format(warehouse))
            del source  # the run's reads of the site (every enrolment...) are in the package now: not kept for the load
            release_memory()
            normalized = pipeline.normalize()
            info = _load(warehouse, pipeline)
        except PipelineStepFailed as exc:
            error = unwrap(exc)
            _log_failure(warehouse, began, error, stats)
            raise error from None
        except MoodleError as exc:
            _log_failure(warehouse, began, exc, stats)
            raise
        finally:
            _forget_trace_if_credentials(pipeline, source_options)
    seconds = time.monotonic() - started
    rows = dict(normalized.row_counts)
    rows.pop("_dlt_pipeline_state", None)
    if warehouse.engine == "postgres":  # dlt's CSV writer counts cells, not rows (CsvWriter.write_data, dlt 1.31)
        rows = rows_of_loads(pipeline, info.loads_ids, rows)
    report = ExtractReport(duckdb=warehouse.path, rows_loaded=rows, table_rows=table_row_counts(pipeline), stats=stats,
                           seconds=seconds, load_info=info, warnings=run_warnings(pipeline), recovered=recovered,
                           where=str(warehouse))
    release_memory()  # the stages after this one (dbt's own process among them) do not carry the extract's memory
    runlog.record(warehouse, "extract", "ok", began, {"rows_loaded": rows, "requests": stats.total_requests,
                                                      "calls": sum(stats.web_service_calls.values()),
                                                 "retries": stats.retries, "seconds": round(seconds, 1),
                                                 "warnings": [f"{w['what']} ({w['fix']})" for w in report.warnings]})
    return report


def release_memory() -> None:
    """Give back to the system what the extract freed, so the process does not carry it into the next stages.

    dlt logs each configuration it resolves, with the exception of a lookup that found nothing, whose traceback
    holds the frames, and so the source and its reads of the site, until dlt's next step; that log is cleared (as
    dlt clears it at the end of each step). Then the garbage is collected, pyarrow's pool and the C allocator
    (glibc's malloc_trim; nothing elsewhere) hand their free pages back.
    """
    from dlt.common.configuration.utils import get_resolved_traces

    get_resolved_traces().clear()
    gc.collect()
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


def loader_file_format(warehouse: Warehouse) -> Literal["csv", "parquet"]:
    """Parquet into DuckDB, not dlt's default INSERT statements: loading 450k grade rows as SQL text took 9 GB.
    CSV into PostgreSQL: dlt loads it with COPY (its parquet path needs an ADBC driver)."""
    return "csv" if warehouse.engine == "postgres" else "parquet"


def load_state(db: Union[Warehouse, Path, str, None]) -> Optional[str]:
    """'loading' when the last extract stopped inside its load step (killed, out of memory, disk full)."""
    return markers.read_marker(Warehouse.of(db), markers.EXTRACT_LOAD)


def known_enrolments(warehouse: Warehouse) -> Dict[int, Dict[int, bool]]:
    """Who each course had at its last loaded read, course id -> {user id: is_active} (as int_moodle__enrolments
    reads it: the pairs stamped at or after the course's latest snapshot); {} before the first run. The source
    re-reads a course where one of them is missing or no longer active: offset paging can skip a user when
    someone is unenrolled while the run pages (see enrolments.EnrolmentReader._read_courses)."""
    if not warehouse.exists():
        return {}
    con = warehouse.connect(read_only=True)
    try:
        rows = con.execute(
            f'select e.course_id, e.user_id, e.is_active from "{DATASET}".enrolments as e '
            f'join (select course_id, max(extracted_at) as snapshot_at from "{DATASET}".enrolment_snapshots '
            "group by course_id) as s using (course_id) where e.extracted_at >= s.snapshot_at").fetchall()
    except MISSING_TABLE:
        return {}
    finally:
        con.close()
    known: Dict[int, Dict[int, bool]] = {}
    for course_id, user_id, is_active in rows:
        known.setdefault(int(course_id), {})[int(user_id)] = bool(is_active)
    return known


def _load(warehouse: Warehouse, pipeline: dlt.Pipeline) -> LoadInfo:
    """'loading' from the moment the load step starts until it has finished: dlt merges table by table,
    deleting then inserting, so in between the raw tables do not belong to one run."""
    markers.set_marker(warehouse, markers.EXTRACT_LOAD, "loading")
    info = pipeline.load()
    markers.set_marker(warehouse, markers.EXTRACT_LOAD, "complete")
    return info


def _finish_interrupted(warehouse: Warehouse, pipeline: dlt.Pipeline) -> int:
    """Load what an interrupted run had fully extracted (a package is whole once extracted); returns how many
    packages. Only then does this run fetch anything: dlt would otherwise just finish the old one."""
    pipeline.normalize()
    info = _load(warehouse, pipeline)
    log.warning("Finished loading %d package(s) of an earlier extract that was interrupted.", len(info.loads_ids))
    return len(info.loads_ids)


def _log_failure(warehouse: Warehouse, began: Any, error: BaseException, stats: RequestStats) -> None:
    if warehouse.exists():  # a first run that failed leaves no file behind
        runlog.record_failure(warehouse, "extract", "failed", began, {"error": str(error), "requests": stats.total_requests})


def run_warnings(pipeline: dlt.Pipeline) -> List[Dict[str, Any]]:
    """What Moodle hid from the token's user in the run just loaded (rows of access_gaps stamped with it)."""
    with pipeline.sql_client() as sql:
        rows = sql.execute_sql(
            f'select code, what, fix, accepted from "{DATASET}".access_gaps where extracted_at = '
            f'(select max(extracted_at) from "{DATASET}".site_info) order by code') or []
    return [{"code": c, "what": w, "fix": f, "accepted": a} for c, w, f, a in rows]


def rows_of_loads(pipeline: dlt.Pipeline, load_ids: List[str], tables: Dict[str, int]) -> Dict[str, int]:
    """Rows each table holds from these loads: what they loaded (the merge keeps the load id of the rows it wrote)."""
    if not load_ids:
        return {table: 0 for table in tables}
    marks = ", ".join("%s" for _ in load_ids)
    with pipeline.sql_client() as sql:
        return {table: (sql.execute_sql(f'select count(*) from "{DATASET}"."{table}" where _dlt_load_id in ({marks})',
                                        *load_ids) or [[0]])[0][0] for table in tables}


def table_row_counts(pipeline: dlt.Pipeline) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    with pipeline.sql_client() as sql:
        tables = sql.execute_sql(
            "select table_name from information_schema.tables where table_schema = %s and table_name not like '_dlt%%' "
            "order by table_name", DATASET,
        ) or []
        for (table,) in tables:
            counts[table] = (sql.execute_sql(f'select count(*) from "{DATASET}"."{table}"') or [[0]])[0][0]
    return counts


@contextmanager
def _ticker(stats: RequestStats, on_progress: Optional[Any]) -> Iterator[None]:
    """Call on_progress(stats) twice a second while the extract runs, so long runs show they are alive."""
    if on_progress is None:
        yield
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            on_progress(stats)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


if __name__ == "__main__":  # a bare run for schedulers without the CLI: settings from .dlt and the environment
    done = run_extract()
    print(f"Loaded {sum(done.rows_loaded.values()):,} rows into {done.duckdb} with "
          f"{done.stats.total_requests:,} Moodle requests in {done.seconds:.1f}s.")
