"""CommCare HQ bulk upload API: upload a workbook, poll its job, read back counts and row errors.

Built on dlt's retrying requests client: 429 and 5xx are retried with backoff honouring Retry-After;
401/403 stop at once. The API key goes in the Authorization header only and appears in no message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests
from dlt.sources.helpers.requests import Client, Response

from .config import CommCareSettings
from .errors import CommCareAuthError, CommCareJobFailed, CommCareUnavailable, CommCareUploadRejected


@dataclass
class JobResult:
    upload_id: str
    state: int
    created: int = 0
    updated: int = 0
    errors: List[Dict[str, Any]] = field(default_factory=list)
    failure: Optional[str] = None

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
    def __init__(self, settings: CommCareSettings) -> None:
        settings.require_upload()
        self.settings = settings
        self.requests = 0
        self._http = Client(
            request_timeout=settings.request_timeout,
            raise_for_status=False,
            request_max_attempts=settings.max_attempts,
            request_backoff_factor=settings.backoff_factor,
            request_max_retry_delay=settings.max_retry_delay,
            respect_retry_after_header=True,
        )
        self._auth = {"Authorization": f"ApiKey {settings.username}:{settings.api_key}"}

    def _send(self, method: str, url: str, **kwargs: Any) -> Response:
        try:
            response = self._http.session.request(method, url, headers=self._auth, **kwargs)
        except requests.RequestException as exc:
            raise CommCareUnavailable(
                f"Could not reach CommCare at {self.settings.root} ({type(exc).__name__}) after "
                f"{self.settings.max_attempts} attempts; the cases stay pending for the next run.") from None
        self.requests += 1
        if response.status_code == 401:
            raise CommCareAuthError(
                "CommCare refused the credentials (HTTP 401): check COMMCARE__USERNAME and COMMCARE__API_KEY.")
        if response.status_code == 403:
            raise CommCareAuthError(
                f"CommCare refused access to project {self.settings.project!r} (HTTP 403): the user needs the "
                "'Edit Data' permission there (and the project name in COMMCARE__PROJECT must be right).")
        return response

    def upload(self, path: Path, case_type: str) -> str:
        """Queue one workbook; returns its status URL."""
        url = f"{self.settings.root}/a/{self.settings.project}/importer/excel/bulk_upload_api/"
        with path.open("rb") as handle:
            content = handle.read()
        response = self._send("POST", url, files={"file": (path.name, content,
                              "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")},
                              data={"case_type": case_type, "search_field": "external_id",
                                    "search_column": "external_id", "create_new_cases": "on", "name_column": "name",
                                    "comment": f"moodle-commcare {path.name}"})
        body = _json(response)
        if response.status_code == 200 and body.get("status_url"):
            return str(body["status_url"])
        if response.status_code == 500 and "message" in body:
            raise CommCareUploadRejected(f"CommCare rejected {path.name}: {body['message']}")
        raise CommCareUnavailable(
            f"CommCare answered the upload of {path.name} with HTTP {response.status_code} after retries; "
            "the cases stay pending for the next run.")

    def wait(self, status_url: str) -> JobResult:
        """Poll until the job succeeds (state 2) or fails (3); backs off from poll_interval up to 30 s."""
        upload_id = status_url.rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + self.settings.poll_timeout
        delay = self.settings.poll_interval
        while True:
            response = self._send("GET", status_url)
            body = _json(response)
            if response.status_code != 200:
                raise CommCareUnavailable(f"CommCare's job status answered HTTP {response.status_code} after retries.")
            state = body.get("state")
            result = body.get("result") or {}
            if state == 2:
                return JobResult(upload_id, 2, created=int(result.get("created_count") or 0),
                                 updated=int(result.get("match_count") or 0), errors=list(result.get("errors") or []))
            if state in (3, -1):
                descriptions = "; ".join(str(e.get("description")) for e in result.get("errors") or []) or "no reason given"
                return JobResult(upload_id, 3, failure=descriptions)
            if time.monotonic() + delay > deadline:
                raise CommCareJobFailed(
                    f"CommCare's import job {upload_id} did not finish within {self.settings.poll_timeout:g}s; "
                    "its cases stay pending and will be re-sent next run (re-sending is safe).")
            time.sleep(delay)
            delay = min(delay * 1.5, 30.0)


def _json(response: Response) -> Dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
