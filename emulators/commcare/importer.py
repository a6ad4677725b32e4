"""The bulk case importer's background job, chunk by chunk, as CommCare HQ runs it.

Sources (dimagi/commcare-hq, corehq/apps/case_importer/):
- tasks.py `bulk_import_async` (queue case_import_queue, no retries, no time limit): the upload view only
  queues this Celery task; an exception ends it as failed (state 3) with the message as the only error.
  The task reads the uploaded file from a cache kept 1 hour: a job still queued after that fails.
- do_import.py `_TimedAndThrottledImporter` / `SubmitCaseBlockHandler`: each row is looked up when it is read;
  caseblocks are collected and submitted as one form per CASEBLOCK_CHUNKSIZE (100) rows. Every submitted
  chunk is committed on its own: nothing rolls back earlier chunks when a later one fails.
- Nothing serialises two imports of one project: two workers run two jobs at once, each looking rows up
  before its own chunk is committed. Both see a new external_id as new, both create it.
- A row naming an external_id (or parent) created earlier in the still-pending chunk flushes the chunk
  first (`relies_on_uncreated_case`), so a later row updates the case the earlier one created.
"""

from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

from .store import Case, CaseStore, now_iso

HEADER_RE = re.compile(r"^[a-zA-Z][\w_-]*$")
RESERVED = ("type", "closed", "parent_ref")  # corehq/apps/case_importer/util.py RESERVED_FIELDS
CHUNK = 100  # corehq/apps/hqcase/utils.py CASEBLOCK_CHUNKSIZE
MAX_LEN = 255  # STANDARD_CHARFIELD_LENGTH
SPECIAL = {"external_id", "owner_id", "parent_external_id", "parent_type", "parent_identifier",
           "parent_relationship_type", "close"}


class ImporterRawError(Exception):
    """Refused before queueing: the view answers HTTP 500 {"code": 500, "message": ...}."""


@dataclass
class Sheet:
    case_type: str
    headers: List[str]
    rows: List[Dict[str, Any]]


@dataclass
class Job:
    id: str
    sheets: List[Sheet]
    search_column: str
    create_new: bool
    name_column: str
    state: int = 0  # soil: 0 not started, 1 started, 2 success, 3 failed
    progress: int = 0
    result: Optional[Dict[str, Any]] = None
    fail_after_chunks: Optional[int] = None
    fail_message: str = ""
    report_no_result: bool = False
    queued_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def case_type(self) -> str:
        return self.sheets[0].case_type

    @property
    def total_rows(self) -> int:
        return sum(len(s.rows) for s in self.sheets)


def read_workbook(content: bytes) -> List[Tuple[str, List[Tuple]]]:
    """(sheet title, rows) as HQ's xlsx adapter reads them: openpyxl read_only, data_only
    (corehq/util/workbook_reading/adapters/xlsx.py)."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable workbook
        raise ImporterRawError(f"The file uploaded has the following error: {exc}") from None
    return [(ws.title, list(ws.iter_rows(values_only=True))) for ws in book.worksheets]


def parse_sheet(case_type: str, rows: List[Tuple]) -> Sheet:
    if not rows:
        raise ImporterRawError("Your spreadsheet is empty. Please try again with a different spreadsheet.")
    header_cells = rows[0]
    index = [(i, h) for i, h in enumerate(header_cells) if h is not None and h != ""]
    bad = [str(h) for _, h in index if not isinstance(h, str) or not HEADER_RE.match(h)]
    if bad:  # views.py _process_spreadsheet_columns -> validate_property
        raise ImporterRawError(
            "Column names must start with a letter, and can only contain letters, numbers and underscores. "
            f"Please update the following: {', '.join(bad)}")
    records = [{h: (row[i] if i < len(row) else None) for i, h in index} for row in rows[1:]]
    return Sheet(case_type, [h for _, h in index], records)


class Importer:
    """Runs queued jobs on `workers` threads against one CaseStore."""

    def __init__(self, store: CaseStore, owners: Callable[[], set]) -> None:
        self.store = store
        self.owners = owners
        self.chunk_seconds = 0.0  # time between a chunk's lookups and its commit (a slow HQ widens the race)
        self.dictionary: Dict[str, Dict[str, str]] = {}  # case_type -> property -> data-dictionary type
        self.validate_dictionary = False  # the CASE_IMPORT_DATA_DICTIONARY_VALIDATION toggle
        self.file_cache_seconds = 3600.0  # the upload's file lives in the cache 1 hour (tasks.py, util.py)
        self._queue: List[Job] = []
        self._cv = threading.Condition()
        self._held = False
        self._stopping = False
        self._threads: List[threading.Thread] = []

    # ------------------------------------------------------------------ queue
    def start(self, workers: int) -> None:
        for n in range(workers):
            thread = threading.Thread(target=self._work, daemon=True, name=f"commcare-import-{n}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    def submit(self, job: Job) -> None:
        with self._cv:
            self._queue.append(job)
            self._cv.notify()

    def hold(self) -> None:
        """Queued jobs stay queued (state 0) until release(): a backed-up case_import_queue."""
        with self._cv:
            self._held = True

    def release(self) -> None:
        with self._cv:
            self._held = False
            self._cv.notify_all()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (self._held or not self._queue):
                    self._cv.wait()
                if self._stopping:
                    return
                job = self._queue.pop(0)
            try:
                self.run(job)
            except Exception as exc:  # noqa: BLE001 - tasks.py: any exception fails the task
                job.state, job.result = 3, failed_result(f"Error: {exc}")
            finally:
                job.done.set()

    # ------------------------------------------------------------------ one job
    def run(self, job: Job) -> None:
        job.state = 1
        if time.monotonic() - job.queued_at > self.file_cache_seconds:
            job.state, job.result = 3, failed_result("Error: Sorry, your session has expired. Please start over "
                                                     "and try again.")  # the file left the cache [infer: text]
            return
        for sheet in job.sheets:
            for reserved in RESERVED:  # do_import.py _populate_updated_fields -> InvalidCustomFieldNameException
                if reserved in sheet.headers and len(job.sheets) == 1:
                    text = ("deprecated, use parent_identifier" if reserved == "parent_ref"
                            else f'Error: Field name "{reserved}" is reserved')
                    job.state, job.result = 3, failed_result(text)
                    return
        created = matched = 0
        errors: Dict[Tuple[str, Optional[str]], Dict[str, Any]] = {}
        chunks = 0
        done_rows = 0

        def fail(row: int, title: str, column: Optional[str], description: str) -> None:
            entry = errors.setdefault((title, column), {"title": title, "description": description,
                                                        "column": column, "rows": []})
            entry["rows"].append(row)

        pending: List[Callable[[], None]] = []
        pending_new: set = set()

        def flush() -> None:
            nonlocal chunks
            if not pending:
                return
            if job.fail_after_chunks is not None and chunks >= job.fail_after_chunks:
                raise JobAborted(job.fail_message or "Error: the import was interrupted")
            if self.chunk_seconds:
                time.sleep(self.chunk_seconds)  # lookups done, commit not yet: another job may commit meanwhile
            with self.store.lock:
                for apply in pending:
                    apply()
            pending.clear()
            pending_new.clear()
            chunks += 1

        try:
            for sheet in job.sheets:
                for offset, raw in enumerate(sheet.rows):
                    row_no = offset + 2
                    done_rows += 1
                    job.progress = int(100 * done_rows / max(job.total_rows, 1))
                    if not any(v not in (None, "") for v in raw.values()):
                        continue  # testBlankRows: skipped silently
                    values = {k: ("" if v is None else str(v)) for k, v in raw.items()}
                    search = _search_id(values.get(job.search_column, ""))
                    parent = (values.get("parent_type") or sheet.case_type, values.get("parent_external_id", ""))
                    if (sheet.case_type, search) in pending_new or parent in pending_new:
                        flush()
                    outcome = self._row(job, sheet, values, search, row_no, fail, pending, pending_new)
                    if outcome == "created":
                        created += 1
                    elif outcome == "updated":
                        matched += 1
                    if len(pending) >= CHUNK:
                        flush()
            flush()
        except JobAborted as exc:
            job.state, job.result = 3, failed_result(str(exc))
            return
        job.state = 2
        job.result = None if job.report_no_result else {
            "match_count": matched, "created_count": created, "num_chunks": chunks, "errors": list(errors.values())}

    def _row(self, job: Job, sheet: Sheet, values: Dict[str, str], search: str, row_no: int,
             fail: Callable[..., None], pending: List[Callable[[], None]], pending_new: set) -> Optional[str]:
        if not search:
            fail(row_no, "Blank External ID", None, "A row has a blank external id")
            return None
        if len(search) > MAX_LEN:
            fail(row_no, "External ID Too Long", "external_id", "External ID is too long")
            return None
        name = values.get(job.name_column, "")
        if len(name) > MAX_LEN:
            fail(row_no, "Name Too Long", "name", "Name is too long")
            return None
        owner = values.get("owner_id", "")
        if owner and owner not in self.owners():
            fail(row_no, "Invalid Owner", "owner_id", "Owner ID was used in the mapping but there were errors")
            return None
        if self.validate_dictionary:
            for prop, kind in self.dictionary.get(sheet.case_type, {}).items():
                value = values.get(prop, "")
                if kind == "date" and value and not _is_date(value):
                    fail(row_no, "Invalid Date", prop, "Date values must be in the format YYYY-MM-DD")
                    return None
        parent = None
        parent_ext = values.get("parent_external_id", "")
        if parent_ext:
            parent_type = values.get("parent_type") or sheet.case_type
            match = self.store.find(parent_type, parent_ext)
            if len(match) != 1:
                fail(row_no, "Invalid Parent ID", "parent_external_id", "Could not find parent case")
                return None
            parent = (values.get("parent_identifier") or "parent", match[0].case_id)
        special = SPECIAL | {job.search_column, job.name_column}
        # do_import.py _populate_updated_fields: `update_value.strip() == SCALAR_NEVER_WAS` ('---') -> ''
        props = {k: ("" if v.strip() == "---" else v) for k, v in values.items() if k not in special}
        existing = self.store.find(sheet.case_type, search)
        if len(existing) > 1:
            fail(row_no, "Too Many Matches", None, "More than one case matches")
            return None
        closing = values.get("close") == "yes"
        if existing:
            case = existing[0]

            def update(case: Case = case) -> None:
                if name:
                    case.name = name
                if owner:
                    case.owner_id = owner
                case.properties.update(props)
                if parent:
                    case.parent = parent
                case.last_modified = now_iso()
                if closing and not case.closed:
                    case.closed, case.date_closed = True, case.last_modified

            pending.append(update)
            return "updated"
        if not job.create_new:
            return None  # not counted, not an error: silently skipped
        owner_id = owner or "uploading-user"

        def create() -> None:  # create caseblocks ignore close
            self.store.create(sheet.case_type, search, name, owner_id, props, parent)

        pending.append(create)
        pending_new.add((sheet.case_type, search))
        return "created"


class JobAborted(Exception):
    pass


def failed_result(message: str) -> Dict[str, Any]:
    """tasks.py: a failed task's result is one error carrying the message, counts null."""
    return {"match_count": None, "created_count": None, "num_chunks": None,
            "errors": [{"title": None, "description": message, "column": None, "rows": []}]}


def _is_date(value: str) -> bool:
    """corehq/apps/data_dictionary/models.py CaseProperty.check_validity: strptime(value, '%Y-%m-%d')."""
    try:
        datetime.strptime(value, "%Y-%m-%d")
        return True
    except ValueError:
        return False


def _search_id(value: str) -> str:
    """do_import.py _parse_search_id: int(float(x)) whenever that works, so '0042' -> '42'."""
    try:
        return str(int(float(value)))
    except (ValueError, OverflowError):
        return value
