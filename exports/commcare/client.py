"""CommCare HQ's bulk upload API, job status and Case API v2 lookups.

An upload POST is never retried once it may have reached CommCare: the importer queues a job for every
POST it receives and nothing de-duplicates them (views.py bulk_case_upload_api), so a retried POST after
a timeout or a gateway error can create every new case twice. Only answers that prove no job was queued
are safe to retry: a refused connection, and 429. Status polls and lookups are reads and are retried by
dlt's requests client (5xx and 429 with backoff, Retry-After honoured). The API key goes in the
Authorization header only and appears in no message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import requests
from dlt.sources.helpers.requests import Response

from .config import CommCareSettings
from .errors import CommCareAuthError, CommCareUnavailable, CommCareUploadRejected, CommCareUploadUncertain

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
LOOKUP_BATCH = 1000  # bulk-fetch takes up to 5000 ids (corehq/apps/hqcase/api/get_bulk.py)


@dataclass
class JobResult:
    """A job's end: state 2 (success, with its result) or 3 (failed); `gone` when the status answered 404."""

    upload_id: str
    state: Optional[int]
    created: int = 0
    updated: int = 0
    errors: List[Dict[str, Any]] = field(default_factory=list)
    failure: Optional[str] = None
    gone: bool = False

    @property
    def succeeded(self) -> bool:
        return self.state == 2 and self.failure is None

    def row_errors(self) -> Dict[int, str]:
        """Sheet row (header = 1) -> what CommCare said about it."""
        out: Dict[int, str] = {}
        for error in self.errors:
            text = error.get("title") or "Error"
            if error.get("column"):
                text += f" ({error['column']})"
            if error.get("description"):
                text += f": {error['description']}"
            for row in error.get("rows") or []:
                out[int(row)] = text
        return out


class CommCareClient:
    """CommCare HQ's bulk case import and Case API for one export: never re-POSTs an upload whose answer
    was lost (the journal settles it instead), polls the job, and reads cases back by external id."""
    def __init__(self, settings: CommCareSettings) -> None:
        settings.require_upload()
        self.settings = settings
        self.requests = 0
        self._http = settings.retrying_client(raise_for_status=False)  # the retries both ends declare once
        self._plain = requests.Session()  # no retries: for the upload POST
        self._auth = {"Authorization": f"ApiKey {settings.username}:{settings.api_key}"}

    # ------------------------------------------------------------------ plumbing
    def _check_auth(self, response: Response) -> Response:
        self.requests += 1
        if response.status_code == 401:
            raise CommCareAuthError(
                "CommCare refused the credentials (HTTP 401): check COMMCARE__USERNAME and COMMCARE__API_KEY.")
        if response.status_code == 403:
            raise CommCareAuthError(
                f"CommCare refused access to project {self.settings.project!r} (HTTP 403). The API user needs a "
                "role with 'Edit Data' and 'Access APIs', access to all locations (a location-restricted user "
                "may not use the bulk importer or bulk case reads), and COMMCARE__PROJECT must be right.")
        return response

    def _read(self, method: str, url: str, **kwargs: Any) -> Response:
        try:
            response = self._http.session.request(method, url, headers=self._auth, **kwargs)
        except requests.RequestException as exc:
            raise CommCareUnavailable(
                f"Could not reach CommCare at {self.settings.root} ({type(exc).__name__}) after "
                f"{self.settings.max_attempts} attempts; nothing is lost, the next run carries on.") from None
        return self._check_auth(response)

    # ------------------------------------------------------------------ upload
    def upload(self, path: Path, case_type: str, create_new_cases: bool = True) -> str:
        """Queue one workbook; returns its status URL.

        Raises CommCareUploadRejected / CommCareAuthError / CommCareUnavailable when no job can exist, and
        CommCareUploadUncertain when one may (the caller must not send these rows again blindly).
        """
        url = f"{self.settings.root}/a/{self.settings.project}/importer/excel/bulk_upload_api/"
        content = path.read_bytes()
        data = {"case_type": case_type, "search_field": "external_id", "search_column": "external_id",
                "name_column": "name", "comment": f"moodle-commcare {path.name}"}
        if create_new_cases:
            data["create_new_cases"] = "on"
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                response = self._plain.post(url, headers=self._auth, data=data,
                                            files={"file": (path.name, content, XLSX)},
                                            timeout=self.settings.request_timeout)
            except (requests.ConnectTimeout, requests.ConnectionError) as exc:
                if _never_connected(exc) and attempt < self.settings.max_attempts:
                    time.sleep(self._delay(attempt, None))
                    continue
                if _never_connected(exc):
                    raise CommCareUnavailable(
                        f"Could not reach CommCare at {self.settings.root} after {attempt} attempts; the cases "
                        "stay pending for the next run.") from None
                raise CommCareUploadUncertain(
                    f"The connection broke while CommCare received {path.name} ({type(exc).__name__}).") from None
            except requests.RequestException as exc:  # a read timeout: the request reached CommCare
                raise CommCareUploadUncertain(
                    f"CommCare did not answer the upload of {path.name} in time ({type(exc).__name__}).") from None
            self._check_auth(response)
            if response.status_code == 429 and attempt < self.settings.max_attempts:
                time.sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            body = _json(response)
            if response.status_code == 200 and body.get("status_url"):
                return str(body["status_url"])
            if response.status_code == 500 and "message" in body:  # the view's own refusal: nothing queued
                raise CommCareUploadRejected(f"CommCare refused {path.name} before importing it: {body['message']}")
            if response.status_code == 429:
                raise CommCareUnavailable(f"CommCare kept answering 429 to the upload of {path.name}; the cases "
                                          "stay pending for the next run.")
            raise CommCareUploadUncertain(f"CommCare answered the upload of {path.name} with HTTP "
                                          f"{response.status_code} and no status URL.")
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: Optional[str]) -> float:
        try:
            wait = float(retry_after) if retry_after is not None else 0.0
        except ValueError:
            wait = 0.0
        return min(max(wait, self.settings.backoff_factor * 2 ** (attempt - 1)), self.settings.max_retry_delay)

    # ------------------------------------------------------------------ status
    def wait(self, status_url: str, timeout: Optional[float] = None) -> Optional[JobResult]:
        """Poll until the job ends; None if it is still queued or running after `timeout` seconds."""
        upload_id = status_url.rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + (self.settings.poll_timeout if timeout is None else timeout)
        delay = self.settings.poll_interval
        while True:
            response = self._read("GET", status_url)
            if response.status_code == 404:  # unknown or expired id (tracking/views.py case_upload_status)
                return JobResult(upload_id, None, gone=True, failure="the job's status is gone (HTTP 404)")
            if response.status_code != 200:
                raise CommCareUnavailable(f"CommCare's job status answered HTTP {response.status_code} after retries; "
                                          "the job is settled next run.")
            body = _json(response)
            state = body.get("state")
            result = body.get("result")
            if state == 2:
                if not isinstance(result, dict):  # finished, but what it did is unknown: not a success
                    return JobResult(upload_id, 2, failure="the job finished without a result")
                return JobResult(upload_id, 2, created=int(result.get("created_count") or 0),
                                 updated=int(result.get("match_count") or 0), errors=list(result.get("errors") or []))
            if state in (3, -1):
                errors = (result or {}).get("errors") or []
                descriptions = "; ".join(str(e.get("description")) for e in errors) or "no reason given"
                return JobResult(upload_id, 3, failure=descriptions)
            if time.monotonic() + delay > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, 30.0)

    # ------------------------------------------------------------------ Case API v2
    def find_external_ids(self, external_ids: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        """external_id -> one case CommCare holds with it (bulk-fetch returns one per id); absent if none."""
        url = f"{self.settings.root}/a/{self.settings.project}/api/case/v2/bulk-fetch/"
        ids = list(external_ids)
        found: Dict[str, Dict[str, Any]] = {}
        for start in range(0, len(ids), LOOKUP_BATCH):
            response = self._read("POST", url, json={"external_ids": ids[start:start + LOOKUP_BATCH]})
            if response.status_code != 200:
                raise CommCareUnavailable(f"CommCare's Case API answered HTTP {response.status_code} to a lookup by "
                                          "external id; the uncertain job is resolved next run.")
            for case in _json(response).get("cases") or []:
                if isinstance(case, dict) and "error" not in case and case.get("external_id"):
                    found[str(case["external_id"])] = case
        return found


def _never_connected(exc: Exception) -> bool:
    """True when the request provably never reached the server (refused, or no TCP connection in time)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _json(response: Response) -> Dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
