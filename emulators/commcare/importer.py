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

Parent columns (do_import.py `_CaseImportRow.__init__`, `_get_parent_index`, `validate_parent_column`):
- parent_id (looked up by case_id) is tried before parent_external_id; the first non-blank one decides, and a
  parent not found (or matching twice) is "Invalid Parent ID" reported against that column: no fallback.
- parent_type, parent_relationship_type, parent_identifier are `fields_to_update.pop(column, default)`: the
  defaults (the import's case_type, 'child', None) apply only when the COLUMN is absent. A blank cell is None
  (openpyxl read_only, corehq/util/workbook_reading/adapters/xlsx.py): a blank parent_type matches a parent of
  any type by external_id and none by case_id (util.py `lookup_case`: `case.type == case_type`); a blank
  parent_relationship_type is neither 'child' nor 'extension'.
- the relationship is only checked once the parent is found: 'child' -> identifier parent_identifier or
  'parent'; 'extension' -> identifier parent_identifier, required; anything else -> InvalidParentId.
  Those two raise `InvalidParentId(_("..."))`: CaseRowError's first argument is column_name, so HQ reports the
  sentence as the error's COLUMN and the class message as its description (exceptions.py `CaseRowError`).
- the index is {identifier: (parent type, parent case_id[, "extension"])}: a caseblock index sets or replaces that
  identifier only, so an update naming another identifier keeps the first.
- order of the row's errors: Too Many Matches (the row's own lookup), then a new row not created
  (create_new_cases off) is skipped before any owner or parent check; a create checks the owner, then the
  parent (`get_create_caseblock`: owner_id= is evaluated before **_get_caseblock_kwargs()); an update checks
  the parent, then the owner (`get_update_caseblock`).
"""

from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

from .store import CHILD, EXTENSION, Case, CaseStore, Index, now_iso

HEADER_RE = re.compile(r"^[a-zA-Z][\w_-]*$")
RESERVED = ("type", "closed", "parent_ref")  # corehq/apps/case_importer/util.py RESERVED_FIELDS
CHUNK = 100  # corehq/apps/hqcase/utils.py CASEBLOCK_CHUNKSIZE
MAX_LEN = 255  # STANDARD_CHARFIELD_LENGTH
SPECIAL = {"external_id", "owner_id", "parent_id", "parent_external_id", "parent_type", "parent_identifier",
           "parent_relationship_type", "close"}
# exceptions.py InvalidParentId.message; the emulator's not-found rows keep their shorter description
INVALID_PARENT = "An invalid or unknown parent case was specified for the uploaded case."
PARENT_NOT_FOUND = "Could not find parent case"
EXTENSION_NEEDS_IDENTIFIER = ("'parent_identifier' column must be provided when 'parent_relationship_type' column "
                              "is set to 'extension'")  # do_import.py validate_parent_column
BAD_RELATIONSHIP = "Invalid value for 'parent_relationship_type' column"


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
                    # relies_on_uncreated_case: search_id, parent_id or parent_external_id among the pending
                    # chunk's new external ids (compared as bare ids, whatever their case type)
                    uncreated = {ext for _, ext in pending_new}
                    if any(i and i in uncreated for i in (search, values.get("parent_id"),
                                                           values.get("parent_external_id"))):
                        flush()
                    outcome = self._row(job, sheet, raw, values, search, row_no, fail, pending, pending_new)
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

    def _row(self, job: Job, sheet: Sheet, raw: Dict[str, Any], values: Dict[str, str], search: str, row_no: int,
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
        if self.validate_dictionary:
            for prop, kind in self.dictionary.get(sheet.case_type, {}).items():
                value = values.get(prop, "")
                if kind == "date" and value and not _is_date(value):
                    fail(row_no, "Invalid Date", prop, "Date values must be in the format YYYY-MM-DD")
                    return None
        existing = self.store.find(sheet.case_type, search)
        if len(existing) > 1:  # _CaseImportRow.existing_case, read by is_new_case before anything else
            fail(row_no, "Too Many Matches", None, "More than one case matches")
            return None
        if not existing and not job.create_new:
            return None  # not counted, not an error: silently skipped, before any owner or parent check
        owner = values.get("owner_id", "")

        def owner_ok() -> bool:  # _get_owner_id -> _OwnerAccessor.check_owner_id -> _check_owner
            if owner and owner not in self.owners():
                fail(row_no, "Invalid Owner", "owner_id", "Owner ID was used in the mapping but there were errors")
                return False
            return True

        # get_create_caseblock evaluates owner_id= before _get_caseblock_kwargs() (the index); an update the reverse
        if not existing and not owner_ok():
            return None
        try:
            index = self._parent_index(sheet, raw)
        except InvalidParentId as exc:
            fail(row_no, "Invalid Parent ID", exc.column, exc.description)
            return None
        if existing and not owner_ok():
            return None
        special = SPECIAL | {job.search_column, job.name_column}
        # do_import.py _populate_updated_fields: `update_value.strip() == SCALAR_NEVER_WAS` ('---') -> ''
        props = {k: ("" if v.strip() == "---" else v) for k, v in values.items() if k not in special}
        closing = values.get("close") == "yes"
        if existing:
            case = existing[0]

            def update(case: Case = case) -> None:
                if name:
                    case.name = name
                if owner:
                    case.owner_id = owner
                case.properties.update(props)
                if index:
                    case.set_indices(index)  # CaseBlock: only this identifier is set or replaced
                case.last_modified = now_iso()
                if closing and not case.closed:
                    case.closed, case.date_closed = True, case.last_modified

            pending.append(update)
            return "updated"
        owner_id = owner or "uploading-user"

        def create() -> None:  # create caseblocks ignore close
            self.store.create(sheet.case_type, search, name, owner_id, props, index)

        pending.append(create)
        pending_new.add((sheet.case_type, search))
        return "created"

    def _parent_index(self, sheet: Sheet, raw: Dict[str, Any]) -> Optional[Dict[str, Index]]:
        """do_import.py `_CaseImportRow._get_parent_index` + `validate_parent_column`. A column absent takes the
        pop() default; a blank cell is None (see the module docstring)."""

        def cell(column: str, default: Optional[str]) -> Optional[str]:
            if column not in raw:
                return default
            value = raw[column]
            if value is None:
                return None
            text = str(value)
            return "" if text.strip() == "---" else text  # _populate_updated_fields: SCALAR_NEVER_WAS -> ''

        parent_type = cell("parent_type", sheet.case_type)
        relationship = cell("parent_relationship_type", CHILD)
        identifier = cell("parent_identifier", None)
        for column, value in (("parent_id", cell("parent_id", None)),
                              ("parent_external_id", cell("parent_external_id", None))):
            if not value:
                continue
            if column == "parent_id":  # util.py lookup_case by case_id: that case, if its type is parent_type
                # (CommCareCase.objects.get_case: a soft-deleted case too [infer: get_case does not filter it])
                by_id = self.store.cases.get(value)
                found = [by_id] if by_id is not None and by_id.case_type == parent_type else []
            else:  # get_case_by_external_id(domain, id, case_type=parent_type, raise_multiple=True)
                found = self.store.find(parent_type, value)
            if len(found) == 1:
                parent = found[0]
                if relationship == CHILD:
                    return {identifier or "parent": (parent.case_type, parent.case_id, CHILD)}
                if relationship == EXTENSION:
                    if not identifier:
                        raise InvalidParentId(EXTENSION_NEEDS_IDENTIFIER, INVALID_PARENT)
                    return {identifier: (parent.case_type, parent.case_id, EXTENSION)}
                raise InvalidParentId(BAD_RELATIONSHIP, INVALID_PARENT)
            raise InvalidParentId(column, PARENT_NOT_FOUND)
        return None


class InvalidParentId(Exception):
    """exceptions.py InvalidParentId: title 'Invalid Parent ID'; `column` is CaseRowError.column_name."""

    def __init__(self, column: str, description: str) -> None:
        super().__init__(description)
        self.column = column
        self.description = description


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
