"""CommCare HQ bulk case import emulator: upload API, status polling and an in-memory case store.

Follows ../shared/specs/commcare-bulk-case-import.md: synchronous checks answer HTTP 500 JSON, bad auth a
bare 401, the import runs as a job in chunks of 100 rows (no rollback of earlier chunks), row errors are
grouped by (title, column) with 1-based sheet rows (header = row 1), every value is stored as a string,
blank cells clear properties, and only `close` = `yes` on an update closes a case.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

DEMO_DOMAIN = "demo-project"
DEMO_USERNAME = "integration@demo-project.example"
DEMO_API_KEY = "cc-demo-0123456789abcdef"
HEADER_RE = re.compile(r"^[a-zA-Z][\w_-]*$")
RESERVED = ("type", "closed", "parent_ref")
CHUNK = 100
MAX_LEN = 255


@dataclass
class Case:
    case_id: str
    case_type: str
    external_id: str
    name: str
    owner_id: str
    properties: Dict[str, str] = field(default_factory=dict)
    parent: Optional[Tuple[str, str]] = None  # (identifier, parent case_id)
    closed: bool = False


@dataclass
class Job:
    id: str
    case_type: str
    rows: List[Dict[str, Any]]
    headers: List[str]
    search_column: str
    create_new: bool
    name_column: str
    polls_left: int = 0
    state: int = 0
    result: Optional[Dict[str, Any]] = None


class CommCareEmulator:
    """`with CommCareEmulator() as hq:` then upload to `hq.base_url` with `hq.domain`, `hq.username`, `hq.api_key`."""

    def __init__(self, owners: Optional[Set[str]] = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.domain = DEMO_DOMAIN
        self.username = DEMO_USERNAME
        self.api_key = DEMO_API_KEY
        self.owners: Set[str] = set(owners or ())
        self.cases: Dict[str, Case] = {}
        self.jobs: Dict[str, Job] = {}
        self.uploads: List[Dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        # knobs
        self.upload_faults: List[Tuple[int, Optional[int]]] = []  # (status, retry_after) answered before any check
        self.status_faults: List[Tuple[int, Optional[int]]] = []
        self.job_polls = 1  # polls answered "started" before a job runs
        self.fail_next_job: Optional[str] = None
        self.before_success_status: Optional[Callable[[Job], None]] = None
        self.forbidden = False
        self.lock = threading.RLock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "CommCareEmulator":
        threading.Thread(target=self._server.serve_forever, daemon=True, name="commcare-emulator").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ views for tests
    def by_external_id(self, case_type: str) -> Dict[str, Case]:
        with self.lock:
            return {c.external_id: c for c in self.cases.values() if c.case_type == case_type}

    # ------------------------------------------------------------------ import
    def _check_upload(self, fields: Dict[str, Any]) -> Job:
        upload = fields.get("file")
        case_type = fields.get("case_type")
        if not upload or not case_type:
            raise ImporterRawError("Error: Invalid POST request. Both 'file' and 'case_type' are required")
        search_field = fields.get("search_field", "case_id")
        if search_field not in ("case_id", "external_id"):
            raise ImporterRawError(f"Illegal value for search_field: {search_field}")
        filename, content = upload
        if not filename.endswith((".xlsx", ".xls", ".csv")):
            raise ImporterRawError("Please upload file with one of the following extensions: .csv, .xls, .xlsx")
        if not filename.endswith(".xlsx"):
            raise ImporterRawError("The file uploaded has the following error: this emulator reads .xlsx only")
        from openpyxl import load_workbook

        try:
            book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable workbook
            raise ImporterRawError(f"The file uploaded has the following error: {exc}") from None
        sheet = book.worksheets[0]
        rows = list(sheet.iter_rows(values_only=True))
        if not rows:
            raise ImporterRawError("Your spreadsheet is empty. Please try again with a different spreadsheet.")
        header_cells = rows[0]
        headers = [h for h in header_cells if h is not None and h != ""]
        bad = [str(h) for h in headers if not isinstance(h, str) or not HEADER_RE.match(h)]
        if bad:
            raise ImporterRawError(
                "Column names must start with a letter, and can only contain letters, numbers and underscores. "
                f"Please update the following: {', '.join(bad)}")
        index = [(i, h) for i, h in enumerate(header_cells) if h is not None and h != ""]
        records = []
        for row in rows[1:]:
            records.append({h: (row[i] if i < len(row) else None) for i, h in index})
        job = Job(id=uuid.uuid4().hex, case_type=str(case_type), rows=records, headers=[h for _, h in index],
                  search_column=fields.get("search_column") or search_field,
                  create_new=fields.get("create_new_cases") == "on", name_column=fields.get("name_column") or "name",
                  polls_left=self.job_polls)
        self.uploads.append({"job": job.id, "case_type": case_type, "filename": filename, "rows": len(records),
                             "sheet": sheet.title, "cell_types": {type(v).__name__ for r in rows[1:] for v in r}})
        return job

    def _run_job(self, job: Job) -> None:
        if self.fail_next_job:
            message, self.fail_next_job = self.fail_next_job, None
            job.state, job.result = 3, _failed(message)
            return
        for reserved in RESERVED:
            if reserved in job.headers:
                text = ("deprecated, use parent_identifier" if reserved == "parent_ref"
                        else f'Error: Field name "{reserved}" is reserved')
                job.state, job.result = 3, _failed(text)
                return
        created = matched = 0
        errors: Dict[Tuple[str, Optional[str]], Dict[str, Any]] = {}

        def fail(row: int, title: str, column: Optional[str], description: str) -> None:
            entry = errors.setdefault((title, column), {"title": title, "description": description,
                                                        "column": column, "rows": []})
            entry["rows"].append(row)

        chunks = 0
        for start in range(0, len(job.rows), CHUNK):
            chunks += 1
            for offset, raw in enumerate(job.rows[start: start + CHUNK]):
                row_no = start + offset + 2
                if not any(v not in (None, "") for v in raw.values()):
                    continue  # blank rows are skipped silently
                outcome = self._apply_row(job, raw, row_no, fail)
                if outcome == "created":
                    created += 1
                elif outcome == "updated":
                    matched += 1
        job.state = 2
        job.result = {"match_count": matched, "created_count": created, "num_chunks": chunks,
                      "errors": list(errors.values())}

    def _apply_row(self, job: Job, raw: Dict[str, Any], row_no: int, fail: Callable[..., None]) -> Optional[str]:
        values = {k: ("" if v is None else str(v)) for k, v in raw.items()}
        search = values.get(job.search_column, "")
        try:
            search = str(int(float(search)))  # the importer's own normalisation: '0042' -> '42'
        except ValueError:
            pass
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
        if owner and owner not in self.owners:
            fail(row_no, "Invalid Owner", "owner_id", "Owner ID was used in the mapping but there were errors")
            return None
        parent = None
        parent_ext = values.get("parent_external_id", "")
        if parent_ext:
            parent_type = values.get("parent_type") or job.case_type
            match = [c for c in self.cases.values() if c.external_id == parent_ext and c.case_type == parent_type]
            if not match:
                fail(row_no, "Invalid Parent ID", "parent_external_id", "Could not find parent case")
                return None
            parent = (values.get("parent_identifier") or "parent", match[0].case_id)
        special = {job.search_column, job.name_column, "external_id", "owner_id", "parent_external_id",
                   "parent_type", "parent_identifier", "parent_relationship_type", "close"}
        props = {k: ("" if v == "---" else v) for k, v in values.items() if k not in special}
        with self.lock:
            existing = [c for c in self.cases.values() if c.case_type == job.case_type and c.external_id == search]
            if len(existing) > 1:
                fail(row_no, "Too Many Matches", None, "More than one case matches")
                return None
            if existing:
                case = existing[0]
                if name:
                    case.name = name
                if owner:
                    case.owner_id = owner
                case.properties.update(props)
                if parent:
                    case.parent = parent
                if values.get("close") == "yes":
                    case.closed = True
                return "updated"
            if not job.create_new:
                return None
            case = Case(case_id=uuid.uuid4().hex, case_type=job.case_type, external_id=search, name=name,
                        owner_id=owner or "uploading-user", properties=props, parent=parent)
            self.cases[case.case_id] = case  # create caseblocks ignore close
            return "created"

    # ------------------------------------------------------------------ HTTP
    def _authorised(self, header: Optional[str]) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "apikey":
            return value.strip() == f"{self.username}:{self.api_key}"
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value).decode() == f"{self.username}:{self.api_key}"
            except ValueError:
                return False
        return False

    def _handler(self) -> type:
        hq = self
        upload_path = f"/a/{DEMO_DOMAIN}/importer/excel/bulk_upload_api/"
        status_prefix = f"/a/{DEMO_DOMAIN}/importer/case_importer/status/"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
                      headers: Optional[Dict[str, str]] = None) -> None:
                self.send_response(status)
                if body:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, data: Any) -> None:
                self._send(status, json.dumps(data).encode())

            def _fault(self, faults: List[Tuple[int, Optional[int]]]) -> bool:
                with hq.lock:
                    if not faults:
                        return False
                    status, retry_after = faults.pop(0)
                self._send(status, b"" if status == 429 else b"<html>Server Error</html>", "text/html",
                           {"Retry-After": str(retry_after)} if retry_after is not None else None)
                return True

            def _auth(self) -> bool:
                if not hq._authorised(self.headers.get("Authorization")):
                    self._send(401, headers={"WWW-Authenticate": 'ApiKey realm="CommCare HQ"'})
                    return False
                if hq.forbidden:
                    self._send(403, b"<html><body>Forbidden</body></html>", "text/html")
                    return False
                return True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hq.requests["upload"] += 1
                if urlsplit(self.path).path != upload_path:
                    return self._send(404, b"<html>Not Found</html>", "text/html")
                if self._fault(hq.upload_faults) or not self._auth():
                    return
                try:
                    job = hq._check_upload(_multipart(self.headers.get("Content-Type", ""), body))
                except ImporterRawError as exc:
                    return self._json(500, {"code": 500, "message": str(exc)})
                with hq.lock:
                    hq.jobs[job.id] = job
                host, port = hq._server.server_address[:2]
                self._json(200, {"code": 200, "message": "success",
                                 "status_url": f"http://{host}:{port}{status_prefix}dl-{job.id}/"})

            def do_GET(self) -> None:
                hq.requests["status"] += 1
                path = urlsplit(self.path).path
                if not path.startswith(status_prefix):
                    return self._send(404, b"<html>Not Found</html>", "text/html")
                if self._fault(hq.status_faults) or not self._auth():
                    return
                job = hq.jobs.get(path[len(status_prefix):].strip("/").removeprefix("dl-"))
                if job is None:
                    return self._json(200, {"state": -1, "progress": {"percent": 0}, "result": None})
                with hq.lock:
                    if job.state in (0, 1) and job.polls_left > 0:
                        job.polls_left -= 1
                        job.state = 1
                        return self._json(200, {"state": 1, "progress": {"percent": 50}, "result": None})
                    if job.state in (0, 1):
                        hq._run_job(job)
                if job.state == 2 and hq.before_success_status is not None:
                    hq.before_success_status(job)
                self._json(200, {"state": job.state, "progress": {"percent": 0}, "result": job.result})

        return Handler


class ImporterRawError(Exception):
    pass


def _failed(message: str) -> Dict[str, Any]:
    return {"match_count": None, "created_count": None, "num_chunks": None,
            "errors": [{"title": None, "description": message, "column": None, "rows": []}]}


def _multipart(content_type: str, body: bytes) -> Dict[str, Any]:
    """Form fields; the file as (filename, bytes)."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: Dict[str, Any] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        fields[name] = (filename, payload) if filename is not None else payload.decode("utf-8")
    return fields
