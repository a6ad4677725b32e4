"""The one HTTP client every Moodle resource uses: Moodle's REST protocol, not its functions (webservice.py).

Built on dlt's retrying requests client (backoff, Retry-After, per-thread sessions), configured by the HTTP
settings both ends share. What it adds is the Moodle part: POST form bodies with PHP-style arrays (the token never
goes into a URL or a server log), HTTP-200 error bodies turned into typed errors, `warnings` logged, bounded
concurrency for fan-out calls, request counts per function, and the token and password kept out of every message.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Hashable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import parse_qs, urlsplit

import requests
from dlt.sources.helpers.requests import Response
from requests.adapters import HTTPAdapter

try:  # dlt's own dependency (CPython): decodes Moodle's answers several times faster than json
    import orjson
except ImportError:  # pragma: no cover - PyPy
    orjson = None  # type: ignore[assignment]

from .config import CREDENTIALS_PREFIX, MoodleSettings
from .errors import (
    MoodleAccessError,
    MoodleAPIError,
    MoodleError,
    MoodleFunctionNotAvailableError,
    MoodleInvalidParameterError,
    MoodleInvalidResponseError,
    MoodleInvalidTokenError,
    MoodleLoginError,
    MoodleMaintenanceError,
    MoodleRecordNotFoundError,
    MoodleRetryableAPIError,
    MoodleTransportError,
    MoodleUnavailableError,
)
from .params import encode_params
from .webservice import CAPABILITIES, FN_SITE_INFO, check_answer

logger = logging.getLogger("moodle_commcare.moodle")

REST_PATH = "webservice/rest/server.php"
TOKEN_PATH = "login/token.php"
# Per-call settings sent with every request (webservice/lib.php set_web_service_call_settings). Names come back as
# stored: without raw, format_string escapes & and strips tags, which turns a multi-language name into both
# languages run together (filters reach names only when the site sets filterall). readable.py resolves them.
CALL_SETTINGS = (("moodlewssettingraw", "1"),)
# Moodle errorcodes that only a retry can fix.
RETRYABLE_ERRORCODES = frozenset({"ex_unabletolock"})
# Many web-service calls in one HTTP request (3.7+, admin/tool/mobile/classes/external.php call_external_functions):
# used when the token's service lists it (use_batches). A far-away site's latency is then paid once per batch.
BATCH_FUNCTION = "tool_mobile_call_external_functions"

P = TypeVar("P")
R = TypeVar("R")

_ACCESS_CODES = {
    "nopermissions",
    "nopermission",  # mod_assign's require_view_grades
    "accessdenied",  # completion across separate groups
    "nopermissiontoviewgrades",
    "requireloginerror",
    "errorcoursecontextnotvalid",
    "notingroup",
    "wsaccessuserunconfirmed",
    "usernotfullysetup",
}


class RequestStats:
    """Thread-safe counts of HTTP requests (every attempt) and calls (logical) per web-service function; the calls
    sent inside batches are counted apart (`batched`), under their own function, and so are the batches that carried
    each function's calls (`batches`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.batched: Counter[str] = Counter()
        self.batches: Counter[str] = Counter()

    def count_batched(self, function: str) -> None:
        with self._lock:
            self.batched[function] += 1

    def count_batch(self, function: str) -> None:
        with self._lock:
            self.batches[function] += 1

    @property
    def web_service_calls(self) -> Dict[str, int]:
        """Calls per function, each call inside a batch counted under its own function, the batches themselves not."""
        merged = Counter({f: n for f, n in self.calls.items() if f != BATCH_FUNCTION})
        merged.update(self.batched)
        return dict(merged)

    def count_request(self, function: str) -> None:
        with self._lock:
            self.requests[function] += 1

    def count_call(self, function: str) -> None:
        with self._lock:
            self.calls[function] += 1

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def retries(self) -> int:
        return max(0, self.total_requests - sum(self.calls.values()))


class _CountingAdapter(HTTPAdapter):
    """Counts every attempt, including those that end in a connection error and never get a response."""

    def __init__(self, stats: RequestStats, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stats = stats

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        function = parse_qs(urlsplit(request.url).query).get("wsfunction", [TOKEN_PATH])[0]
        self.stats.count_request(function)
        return super().send(request, *args, **kwargs)


def _looks_retryable(response: Optional[Response], exception: Optional[BaseException]) -> bool:
    """Retry a 200 whose body is cut short or carries a transient Moodle lock error.

    Checked on raw bytes so a large good response is not parsed twice.
    """
    if response is None or response.status_code != 200:
        return False
    body = response.content.rstrip()
    if not body:
        return False
    head = body[:400]
    if head.startswith(b"{") and b'"ex_unabletolock"' in head:
        return True
    return head[:1] in (b"{", b"[") and body[-1:] not in (b"}", b"]")


class MoodleClient:
    """Calls Moodle's REST web services for one run: retries with backoff, one bound on concurrency for
    the whole run, Moodle's HTTP-200 error bodies turned into typed errors, tokens kept out of messages."""
    def __init__(self, settings: MoodleSettings, stats: Optional[RequestStats] = None) -> None:
        self.settings = settings
        self.stats = stats or RequestStats()
        self._token: Optional[str] = settings.token
        self._token_lock = threading.Lock()
        # one bound for the whole run: dlt interleaves resources, so several fan-outs can be live at once
        self._in_flight = threading.BoundedSemaphore(settings.max_concurrency)
        pool = max(32, settings.max_concurrency * 4)
        self._http = settings.retrying_client(max_connections=pool, raise_for_status=False,
                                              retry_condition=_looks_retryable)
        # mounted on every per-thread session dlt's client creates (see _session): one place to count attempts
        self._adapter = _CountingAdapter(self.stats, pool_maxsize=pool)
        self._rest_url = f"{settings.base_url}/{REST_PATH}"
        self._batching: Optional[bool] = None

    # ---------------------------------------------------------------- secrets
    def redact(self, text: str) -> str:
        """`text` with the token, the password and the basic-auth password replaced by ***."""
        for secret in (self._token, *self.settings.secrets):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _fail(self, error: MoodleError) -> MoodleError:
        error.args = tuple(self.redact(str(a)) for a in error.args)
        return error

    # ---------------------------------------------------------------- auth
    def token(self) -> str:
        with self._token_lock:
            if not self._token:
                self._token = self._login()
            return self._token

    def _login(self) -> str:
        login = self.settings.login
        if login is None:
            raise MoodleLoginError("No Moodle token and no username/password to obtain one.")
        url = f"{self.settings.base_url}/{TOKEN_PATH}"
        response = self._post(url, TOKEN_PATH,
                              {"username": login.username, "password": login.password, "service": login.service})
        data = self._parse_json(response, TOKEN_PATH)
        if isinstance(data, dict) and data.get("token"):
            return str(data["token"])
        code = data.get("errorcode") if isinstance(data, dict) else None
        hints = {
            "invalidlogin": f"check {CREDENTIALS_PREFIX}USERNAME and {CREDENTIALS_PREFIX}PASSWORD",
            "servicenotavailable": f"check {CREDENTIALS_PREFIX}SERVICE and that the user may use that service",
            "enablewsdescription": "ask the Moodle admin to enable web services",
            "sitemaintenance": "the site is in maintenance; try again later",
        }
        raise self._fail(
            MoodleLoginError(
                f"Moodle refused to issue a token for service {login.service!r} (errorcode {code}): "
                + hints.get(str(code), "check the username, password and service name"),
                errorcode=code,
            )
        )

    # ---------------------------------------------------------------- calls
    def call(self, function: str, params: Optional[Mapping[str, Any]] = None, *, needs: Optional[str] = None) -> Any:
        """Call one web-service function; returns the decoded JSON or raises a typed MoodleError.

        `needs` names what the token's role must hold when Moodle refuses (default: webservice.CAPABILITIES).
        """
        self.stats.count_call(function)
        token = self.token()
        try:
            return self._call_once(function, params, token, needs)
        except MoodleInvalidTokenError as exc:
            return self._renew_and_retry(function, params, token, needs, expired=False, exception=exc.exception)
        except MoodleAccessError as exc:
            if exc.errorcode != "accessexception":
                raise
            return self._after_access_exception(function, params, token, needs, exc)

    def _renew_and_retry(self, function: str, params: Optional[Mapping[str, Any]], token: str, needs: Optional[str],
                         expired: bool, exception: str = "") -> Any:
        if self.settings.login is None:
            why = "it expired: Moodle deletes a token past its valid-until date" if expired else "unknown, expired or revoked"
            raise self._fail(MoodleInvalidTokenError(
                f"Moodle refused {function}: it no longer accepts the token ({why}). Issue a new one and set "
                f"{CREDENTIALS_PREFIX}TOKEN, or give USERNAME and PASSWORD there instead so the connector gets its own.",
                function=function, errorcode="invalidtoken", exception=exception))
        with self._token_lock:  # token revoked or expired: log in again once
            if self._token == token:
                self._token = None
        return self._call_once(function, params, self.token(), needs)

    def _after_access_exception(self, function: str, params: Optional[Mapping[str, Any]], token: str,
                                needs: Optional[str], original: MoodleAccessError) -> Any:
        """`accessexception` means one of: the function is not in the token's service, the token expired (on its
        first use after the date Moodle deletes it), the user is suspended or lacks webservice/rest:use, or an IP or
        time restriction. Moodle names the reason only in debuginfo, sent only with debugging on, so ask again."""
        try:
            info = self._call_once(FN_SITE_INFO, None, token, None)
        except MoodleInvalidTokenError as gone:
            return self._renew_and_retry(function, params, token, needs, expired=True, exception=gone.exception)
        except MoodleAccessError as again:
            if again.errorcode != "accessexception":
                raise
            raise self._fail(MoodleAccessError(
                "Moodle refuses every call with this token (accessexception). Web services may be off (Site "
                "administration > Advanced features > Enable web services), the token's user suspended or "
                "without webservice/rest:use, or the token or its service restricted to other IP addresses: check the "
                "token under Site administration > Server > Web services > Manage tokens.",
                function=function, errorcode="accessexception", exception=original.exception)) from None
        if function not in {f.get("name") for f in info.get("functions") or []}:
            raise self._fail(MoodleFunctionNotAvailableError(
                f"Moodle refused {function}: it is not in the web service the token belongs to. Add it "
                "(Site administration > Server > Web services > External services > Functions).",
                function=function, errorcode="accessexception", exception=original.exception))
        raise self._fail(MoodleAccessError(
            f"Moodle refused {function} (accessexception) though the service lists it: the token is probably "
            "restricted to other IP addresses, or its service to authorised users. Check the token and the service.",
            function=function, errorcode="accessexception", exception=original.exception))

    def _call_once(self, function: str, params: Optional[Mapping[str, Any]], token: str, needs: Optional[str]) -> Any:
        body = [("wstoken", token), ("wsfunction", function), ("moodlewsrestformat", "json"), *CALL_SETTINGS]
        body += encode_params(params or {})
        response = self._post(self._rest_url, function, body, query={"wsfunction": function})
        data = self._parse_json(response, function)
        if isinstance(data, dict) and "exception" in data:
            raise self._fail(self._api_error(function, data, needs))
        check_answer(function, data)
        self._log_warnings(function, data)
        return data

    # ---------------------------------------------------------------- batches
    def use_batches(self, site_info: Mapping[str, Any]) -> bool:
        """Whether per-student calls go out in batches this run: the token's service must list BATCH_FUNCTION and
        call_batch_size be over 1. Decided once, from the site info; a service without it is said once."""
        if self._batching is None:
            listed = BATCH_FUNCTION in {f.get("name") for f in site_info.get("functions") or []}
            self._batching = listed and self.settings.call_batch_size > 1
            if not listed and self.settings.call_batch_size > 1:
                logger.warning(
                    "The web service does not include %s: every per-student call, enrolment page and course outline "
                    "is a request of its own (a first run against a far-away site takes several times longer). Add it "
                    "to the service (Site administration > Server > Web services > External services > Functions) to "
                    "send per-student calls %d to a request.", BATCH_FUNCTION, self.settings.call_batch_size)
        return self._batching

    def call_each(self, function: str, items: Iterable[P], params_of: Callable[[P], Mapping[str, Any]], *,
                  batch_key: Optional[Callable[[P], Hashable]] = None,
                  needs: Union[None, str, Callable[[P], Optional[str]]] = None,
                  per_request: Optional[int] = None,
                  weight: Optional[Callable[[P], int]] = None, budget: int = 0) -> Iterator[Tuple[P, Any]]:
        """(item, answer of `function` with params_of(item)) for every item, as fan_out gives them: in batches when
        use_batches said so, otherwise one request per call. A batch holds the items of one batch_key (a course:
        Moodle's caches then serve it) and one `needs` (the capability a refusal names, or a function of the item),
        at most call_batch_size or `per_request` of them, and, with `weight`, no more than `budget` in all (the
        server's time on heavy calls, which must stay inside the request timeout); a single item may exceed it."""
        needs_of: Callable[[P], Optional[str]] = needs if callable(needs) else (lambda _item: needs)  # type: ignore[assignment,return-value]
        if not self._batching:
            yield from self.fan_out(items, lambda item: self.call(function, params_of(item), needs=needs_of(item)))
            return
        size = min(per_request or self.settings.call_batch_size, self.settings.call_batch_size)
        grouped: Dict[Tuple[Hashable, Optional[str]], List[List[P]]] = {}
        load: Dict[Tuple[Hashable, Optional[str]], int] = {}  # the weight of each group's last batch
        for item in items:
            key = (batch_key(item) if batch_key else None, needs_of(item))
            batches = grouped.setdefault(key, [[]])
            heft = weight(item) if weight else 0
            if len(batches[-1]) >= size or (weight and batches[-1] and load[key] + heft > budget):
                batches.append([])
                load[key] = 0
            batches[-1].append(item)
            load[key] = load.get(key, 0) + heft
        work = lambda batch: self.call_batch(function, [params_of(item) for item in batch],  # noqa: E731
                                             needs=needs_of(batch[0]))
        for batch, answers in self.fan_out([b for group in grouped.values() for b in group if b], work):
            yield from zip(batch, answers, strict=True)

    def call_batch(self, function: str, params: List[Mapping[str, Any]], *, needs: Optional[str] = None) -> List[Any]:
        """The answers of `function` for each of `params`, in order, as `call` gives them, in as few requests as
        Moodle allows.

        Moodle stops a batch at its first failing call and answers nothing for the calls after it
        (call_external_functions). That call is made again on its own, through `call`: its error is then exactly the
        single call's (the capability to add, the record gone), and what only a retry or a new token fixes (a lock,
        an expired token), or a call whose arguments PHP's max_input_vars cut off, succeeds there. The calls after it
        go in the next batch, so none is lost and none fetched twice. A batch answered short lost its tail to
        max_input_vars: the rest goes again in smaller batches.
        """
        answers: List[Any] = []
        size = max(1, len(params))
        while len(answers) < len(params):
            chunk = params[len(answers):len(answers) + size]
            self.stats.count_batch(function)
            reply = self.call(BATCH_FUNCTION, {"requests": [
                {"function": function, "arguments": json.dumps(p), "settingraw": 1} for p in chunk]})
            responses = list((reply or {}).get("responses") or [])[:len(chunk)]
            cut_args = False
            for offset, response in enumerate(responses):
                self.stats.count_batched(function)
                if response.get("error"):
                    refused = _decoded(response.get("exception"), function)
                    code = refused.get("errorcode") if isinstance(refused, dict) else None
                    cut_args = code == "invalidparameter"  # perhaps its arguments were past max_input_vars
                    logger.info("%s refused inside a batch (%s): made again on its own", function, code)
                    answers.append(self.call(function, chunk[offset], needs=needs))
                    break
                data = _decoded(response.get("data"), function)
                check_answer(function, data)
                self._log_warnings(function, data)
                answers.append(data)
            if len(responses) < len(chunk) and (cut_args or not any(r.get("error") for r in responses)):
                # cut short without a word: PHP dropped the input past max_input_vars
                if not responses and size == 1:
                    answers.append(self.call(function, chunk[0], needs=needs))
                size = max(1, (len(responses) or size) // 2)
                logger.warning("Moodle answered only %d of %d calls of a batch (PHP's max_input_vars cut the request): "
                               "sending the rest %d at a time; lower SOURCES__MOODLE__CALL_BATCH_SIZE.",
                               len(responses), len(chunk), size)
        return answers

    def _log_warnings(self, function: str, data: Any) -> None:
        if isinstance(data, dict):
            for warning in data.get("warnings") or []:
                logger.info(
                    self.redact(
                        f"{function}: Moodle warning {warning.get('warningcode')} on {warning.get('item')} "
                        f"{warning.get('itemid')}: {warning.get('message')}"
                    )
                )

    def fan_out(self, items: Iterable[P], work: Callable[[P], R]) -> Iterator[Tuple[P, R]]:
        """Run `work(item)` for every item, at most `max_concurrency` at a time, yielding in input order.

        Only a small window of futures is kept, so a 45,000-call fan-out holds a few responses at once. When
        the caller stops early (an error, Ctrl-C), queued calls are dropped and calls in flight are not waited
        for: a Moodle answering slowly must not hold up the stop.
        """
        width = self.settings.max_concurrency
        window: Deque[Tuple[P, Future]] = deque()
        pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="moodle")
        finished = False
        try:
            for item in items:
                window.append((item, pool.submit(work, item)))
                if len(window) >= width * 2:
                    done_item, future = window.popleft()
                    yield done_item, future.result()
            while window:
                done_item, future = window.popleft()
                yield done_item, future.result()
            finished = True
        finally:
            pool.shutdown(wait=finished, cancel_futures=True)

    # ---------------------------------------------------------------- HTTP
    def _session(self) -> requests.Session:
        """This thread's session of dlt's client (one per thread, with its retries), sending through the counting
        adapter: mounted, with requests' own Session.mount, on each session the client creates."""
        session = self._http.session
        if session.get_adapter(self._rest_url) is not self._adapter:
            for prefix in ("https://", "http://"):
                session.mount(prefix, self._adapter)
        return session

    def _post(self, url: str, function: str, body: Any, query: Optional[dict] = None) -> Response:
        try:
            with self._in_flight:
                return self._session().post(url, params=query, data=body, auth=self.settings.http_auth)
        except requests.Timeout as exc:
            raise self._fail(MoodleUnavailableError(
                f"Moodle did not answer {function} within {self.settings.request_timeout:g}s after "
                f"{self.settings.max_attempts} attempts ({type(exc).__name__}). The site may be overloaded: "
                "try later, or raise SOURCES__MOODLE__REQUEST_TIMEOUT."
            )) from None
        except requests.exceptions.SSLError:
            raise self._fail(MoodleTransportError(
                f"The TLS certificate of {self.settings.base_url} could not be verified. Fix the server's certificate, "
                "or add your organisation's CA to the trust store (REQUESTS_CA_BUNDLE=/path/to/ca.pem); "
                "verification is never switched off."
            )) from None
        except requests.RequestException as exc:
            raise self._fail(MoodleUnavailableError(
                f"Could not reach Moodle at {self.settings.base_url} for {function} after "
                f"{self.settings.max_attempts} attempts ({type(exc).__name__}). Check SOURCES__MOODLE__BASE_URL "
                "and that the site is up."
            )) from None

    def _parse_json(self, response: Response, function: str) -> Any:
        status = response.status_code
        text_head = response.content[:2000].decode("utf-8", "replace")
        is_html = text_head.lstrip()[:1] == "<"
        if status == 503 or (is_html and "maintenance" in text_head.lower()):
            raise self._fail(MoodleMaintenanceError(
                f"Moodle answered {function} with a maintenance page (HTTP {status}). "
                "The site is in maintenance mode: the run will work once it is over."
            ))
        if status == 403 and not response.content.strip():
            raise self._fail(MoodleAccessError(
                f"Moodle refused {function} with HTTP 403 and no body: the REST protocol is probably disabled. "
                "Ask the Moodle admin to enable it (Site administration > Server > Web services > Manage protocols).",
                function=function, errorcode="http403",
            ))
        if status == 404:
            raise self._fail(MoodleTransportError(
                f"{response.url.split('?')[0]} does not exist (HTTP 404): check SOURCES__MOODLE__BASE_URL "
                "points at the Moodle site root."
            ))
        if status != 200:
            raise self._fail(MoodleUnavailableError(
                f"Moodle answered {function} with HTTP {status} after {self.settings.max_attempts} attempts: "
                "the server is failing; try again later."
            ))
        if is_html:
            raise self._fail(MoodleInvalidResponseError(
                f"Moodle answered {function} with an HTML page instead of JSON: check SOURCES__MOODLE__BASE_URL "
                "is the site root and that web services are enabled (a login or error page came back)."
            ))
        try:
            return _loads(response.content)
        except ValueError:
            raise self._fail(MoodleInvalidResponseError(
                f"Moodle's answer to {function} is not valid JSON ({len(response.content)} bytes, possibly cut "
                "off by a proxy or a PHP error). Try again; if it persists, check the Moodle server's error log."
            )) from None

    def _api_error(self, function: str, body: Dict[str, Any], needs: Optional[str] = None) -> MoodleError:
        code = str(body.get("errorcode") or "")
        exception = str(body.get("exception") or "")  # 4.5 sends core\\exception\\..., older versions plain names
        message = str(body.get("message") or "")
        kwargs = dict(function=function, errorcode=code, exception=exception)
        said = f"Moodle refused {function} (errorcode {code}: {message})"
        if code == "invalidtoken":
            return MoodleInvalidTokenError(
                f"{said}. The token is unknown, expired or revoked: issue a new one and set {CREDENTIALS_PREFIX}TOKEN.",
                **kwargs,
            )
        if code == "sitemaintenance":
            return MoodleMaintenanceError(f"{said}. The site is in maintenance mode: try again later.")
        if code == "accessexception":
            return MoodleAccessError(said, **kwargs)  # call() asks again to tell which of its causes it was
        if code in _ACCESS_CODES:
            capability = needs or CAPABILITIES.get(function, "the capabilities listed for this function")
            refused = MoodleAccessError(
                f"{said}. The token's user lacks the capability {capability}: add it to their role (see the README, "
                "\"The Moodle role\"), or leave the course out with SOURCES__MOODLE__COURSE_IDS / CATEGORY_IDS.",
                **kwargs,
            )
            refused.capability = capability
            return refused
        if code == "invalidparameter":
            return MoodleInvalidParameterError(
                f"{said}. A parameter was rejected: check SOURCES__MOODLE__COURSE_IDS / CATEGORY_IDS; if they are "
                "right, this is a bug in the connector or a Moodle version it does not know.",
                **kwargs,
            )
        if code == "invalidrecord" or exception == "dml_missing_record_exception":
            return MoodleRecordNotFoundError(
                f"{said}. The record no longer exists (deleted during the run?).", **kwargs
            )
        if code in RETRYABLE_ERRORCODES:
            return MoodleRetryableAPIError(f"{said}. A transient lock on the server: try again.", **kwargs)
        return MoodleAPIError(
            f"{said}. This is an error inside Moodle (a plugin or the server): check the site's error log; "
            "the run can be retried once it is fixed.", **kwargs)



def _loads(data: Any) -> Any:
    """json.loads, in orjson where it can: a batched answer is decoded twice, the batch and each call's `data` in it
    (the small school: 52 MB of answers, 14 MB of calls' data; 0.7 s of json, 0.45 s of orjson, holding the GIL the
    rows are made under). The values are the same; what orjson refuses (NaN, a lone surrogate, a byte-order mark,
    UTF-16) is read by json, as before, which accepts it or refuses it the same way. (orjson reads an integer
    literal past 64 bits as a float: PHP, whose integers are 64-bit, writes such numbers as floats.)"""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def _decoded(text: Any, function: str) -> Any:
    """A batched call's `data` or `exception`: JSON text inside the JSON answer, so decoded a second time."""
    if not isinstance(text, str):
        return text
    try:
        return _loads(text) if text else None
    except ValueError:
        raise MoodleInvalidResponseError(
            f"Moodle's batched answer to {function} holds text that is not JSON ({len(text)} characters): try again; "
            "if it persists, set SOURCES__MOODLE__CALL_BATCH_SIZE=1 and check the server's error log.") from None
