"""HTTP front of the Moodle emulator: webservice/rest/server.php and login/token.php on 127.0.0.1.

It speaks the wire contract, not our client's expectations: errors come back with HTTP 200, PHP's
max_input_vars silently cuts long requests, GET and POST are both accepted, token.php has its own error
shape, and CLI maintenance is an HTML page with 503. Knobs add latency and inject faults.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit

from .access import token_user
from .api import BATCH_FUNCTION, MoodleAPI, WSError
from .batch import call_external_functions
from .school import School, SchoolSpec
from .site import CallSettings, SiteConfig
from .webhooks import WebhookSender, WebhookService

MAX_INPUT_VARS = 1000  # php.ini max_input_vars, PHP's default
DEMO_TOKEN = "demo-0123456789abcdef0123456789abcdef"
DEMO_USERNAME = "wsuser"
DEMO_PASSWORD = "Demo-Passw0rd!"
DEMO_SERVICE = "commcare_sync"


def parse_php_params(pairs: List[Tuple[str, str]]) -> Dict[str, Any]:
    """Rebuild nested arrays from `a[0][b]=c` pairs the way PHP does, lists where keys are 0..n-1."""
    root: Dict[str, Any] = {}
    for name, value in pairs:
        match = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", name)
        if not match:
            continue
        keys = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        node = root
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[keys[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items) and sorted(int(k) for k in items) == list(range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items


@dataclass
class Fault:
    """One injected failure. `function=None` matches any call; `times` is how many requests it hits.

    kinds: http500, http502, http429, maintenance_html (503 + Retry-After), html200 (a login page),
    reset (connection closed without an answer), truncate (half the JSON), invalid_json, timeout (answers
    after `seconds`), null (a JSON null with HTTP 200), or an errorcode (e.g. "invalidrecord", "nopermissions",
    "ex_unabletolock") sent as Moodle's exception body. `course_id` narrows it to calls about one course, `user_id`
    to calls about one user (a call in the middle of a batch).
    """

    kind: str
    function: Optional[str] = None
    times: int = 1
    course_id: Optional[int] = None
    user_id: Optional[int] = None
    seconds: float = 5.0
    retry_after: Optional[int] = None


@dataclass
class Token:
    """A row of external_tokens: whose it is, for which service, until when (0 = no end)."""

    profile: str
    service: str
    validuntil: int = 0


_ERRORCODE_EXCEPTIONS = {
    "invalidtoken": ("moodle_exception", "Invalid token - token not found"),
    "accessexception": ("webservice_access_exception", "Access control exception"),
    "nopermissions": ("required_capability_exception",
                      "Sorry, but you do not currently have permissions to do that (View all grades)."),
    "invalidrecord": ("dml_missing_record_exception", "Can't find data record in database table course."),
    "invalidparameter": ("invalid_parameter_exception", "Invalid parameter value detected"),
    "ex_unabletolock": ("moodle_exception", "Unable to obtain lock"),
    "sitemaintenance": ("moodle_exception", "The site is undergoing maintenance and is currently not available"),
    "codingerror": ("coding_exception", "Coding error detected, it must be fixed by a programmer"),
}


class _HTTPFault(Exception):
    """An injected HTTP-level fault hit a batched sub-call: the whole request answers with it."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.kind)
        self.fault = fault


_HTTP_FAULTS = frozenset({"http500", "http502", "http429", "maintenance_html", "html200", "reset", "truncate",
                          "invalid_json", "null"})


class MoodleEmulator:
    """Start with `with MoodleEmulator() as moodle:`; `moodle.base_url` and `moodle.token` are what a client needs."""

    def __init__(self, school: Optional[School] = None, spec: Optional[SchoolSpec] = None, latency: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0, control: bool = False, ssl_context: Any = None,
                 profile: str = "integration", site: Optional[SiteConfig] = None, batch_function: bool = False,
                 max_input_vars: int = MAX_INPUT_VARS) -> None:
        """`profile` is who the demo token acts as (access.PROFILES); `site` the Moodle settings and version
        (default: a 4.5 site set up as the README asks). `batch_function`: the admin added
        tool_mobile_call_external_functions to the token's service (batch.py; no site has it there by default).
        `max_input_vars`: php.ini's, applied to every request's query string and body (see _handle)."""
        self.school = school or School(spec)
        self.control = control
        self.site = site or SiteConfig.recommended()
        self.api = MoodleAPI(self.school, self.site)
        if batch_function:
            self.add_function(BATCH_FUNCTION)
        self.max_input_vars = max_input_vars
        self.latency = latency
        token_user(profile, 0)  # reject an unknown profile now, not on the first request
        self.tokens: Dict[str, Token] = {DEMO_TOKEN: Token(profile, DEMO_SERVICE)}
        # username -> (password, token profile); a student may log in but may not create tokens
        self.logins: Dict[str, Tuple[str, Optional[str]]] = {DEMO_USERNAME: (DEMO_PASSWORD, profile),
                                                             "student1": (DEMO_PASSWORD, None)}
        self.prohibited: set = set()
        self.services = {DEMO_SERVICE, "moodle_mobile_app"}
        self.maintenance: Optional[str] = None  # None, "json" (sitemaintenance body) or "html" (503 page)
        # Site administration > Advanced features > Enable web services ($CFG->enablewebservices), and Server > Web
        # services > Manage protocols > REST ($CFG->webserviceprotocols): webservice_protocol_is_enabled('rest')
        # (webservice/lib.php) needs both
        self.web_services_enabled = True
        self.rest_protocol_enabled = True
        self.faults: List[Fault] = []
        self.requests: Counter[str] = Counter()  # HTTP requests to server.php by wsfunction (a batch counts once)
        # sub-calls a tool_mobile_call_external_functions request processed, by function (those after a failing one
        # are not processed, so not counted); `calls` adds the single calls
        self.batched: Counter[str] = Counter()
        self.request_log: List[Dict[str, Any]] = []
        self.keep_log = False
        self.hooks: List[Callable[[str, Dict[str, Any]], None]] = []  # after_request
        # a web server in front of Moodle asking for HTTP basic auth (Apache/nginx auth_basic): 401 without it
        self.basic_auth: Optional[Tuple[str, str]] = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._scheme = "http"
        if ssl_context is not None:  # serve HTTPS with the caller's certificate
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread: Optional[threading.Thread] = None
        self.webhooks: Optional[WebhookSender] = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        return f"{self._scheme}://{host}:{port}"

    @property
    def token(self) -> str:
        return DEMO_TOKEN

    def start(self) -> "MoodleEmulator":
        self._thread = threading.Thread(target=self._server.serve_forever, name="moodle-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "MoodleEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ knobs
    def inject(self, kind: str, function: Optional[str] = None, times: int = 1, **kw: Any) -> Fault:
        fault = Fault(kind=kind, function=function, times=times, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def after_request(self, callback: Callable[[str, Dict[str, Any]], None]) -> None:
        """Call `callback(function, params)` once each web-service call has been answered: someone (a teacher, an
        admin) acting on the school while the connector pages through it. The callback runs in the request's thread
        under no emulator or school lock, so it may change `school` (which takes its own lock); the answer, already
        computed, is written once it returns, so the caller's next request sees the change. `params` is the call's
        parameters as PHP parsed them (`options` a list of {name, value})."""
        self.hooks.append(callback)

    def add_webhook(self, service: WebhookService) -> WebhookSender:
        """Install the local_webhooks plugin's service: from now on every event a change to `school` triggers
        (School.set_grade, enrol, unenrol, ...) that the service selected is POSTed to it (webhooks.py). The sender's
        `flush(timeout)` waits until all were tried; `deliveries` records each POST's status or error."""
        if self.webhooks is None:
            # lib.php local_webhooks_send_request(): $event["host"] = parse_url($CFG->wwwroot)["host"]
            self.webhooks = WebhookSender(host=urlsplit(self.api.base_url).hostname or "")
            self.school.listeners.append(self.webhooks.notify)
        self.webhooks.add(service)
        return self.webhooks

    def revoke_token(self, token: str = DEMO_TOKEN) -> None:
        self.tokens.pop(token, None)

    def prohibit(self, *capabilities: str) -> None:
        """Take capabilities from every token user (a Prohibit override at system level), e.g. to emulate a role
        made without moodle/site:accessallgroups."""
        self.prohibited |= set(capabilities)

    def expire_token(self, token: str = DEMO_TOKEN) -> None:
        """The token's validuntil passes: its next use deletes it (webservice/lib.php authenticate_by_token)."""
        self.tokens[token].validuntil = int(time.time()) - 1

    def issue_token(self, profile: str, service: str = DEMO_SERVICE) -> str:
        """A further token, acting as another profile's user (access.PROFILES)."""
        token_user(profile, 0)
        token = f"tok{len(self.tokens):04d}{profile[:4]}".ljust(32, "e")
        self.tokens[token] = Token(profile, service)
        return token

    def add_report(self, columns: Sequence[Any], name: str = "Participants", sort: Iterable[Any] = (),
                   uniquerows: bool = False, audience: Iterable[int] = (), headings: Optional[Dict[str, str]] = None,
                   conditions: Optional[Dict[str, Any]] = None) -> int:
        """An admin builds a custom report on the "Course participants" source (reports.py) and returns its id, for
        core_reportbuilder_retrieve_report. `columns`: unique identifiers (reports.COLUMNS), each optionally as
        (identifier, custom heading); `headings`: custom headings by identifier (shown as typed); `sort`: identifiers,
        or (identifier, 'asc'|'desc'), in sort order; `uniquerows`: the report's "Remove any duplicate rows";
        `audience`: the user ids a "Manually added users" audience lists (site admins and the report's creator, the
        admin, see it anyway; the token's user is `school.service_users[profile]`); `conditions`: None for the default
        setup of the site's version, else {identifier: value or None} over reports.CONDITIONS (e.g. {} for none)."""
        report = self.api.reports.add(self.site, self.school.clock, name, columns, sort=sort, uniquerows=uniquerows,
                                      audience=audience, conditions=conditions, headings=headings)
        return report.id

    def configure(self, **changes: Any) -> SiteConfig:
        """Change site settings (SiteConfig fields: lang, timezone, forcetimezone, enablecustomreports, ...) from the next
        call on. A user's own language or timezone is `school.update_user(user_id, lang=..., timezone=...)`."""
        self.site = replace(self.site, **changes)
        self.api.site = self.site
        return self.site

    def remove_function(self, name: str) -> None:
        self.api.service_functions.discard(name)

    def add_function(self, name: str) -> None:
        """The admin adds an existing function to the token's service (Site administration > Server > Web services >
        External services > Functions), e.g. tool_mobile_call_external_functions."""
        if name not in self.api.functions:
            raise ValueError(f"the emulator has no function {name!r}")
        self.api.service_functions.add(name)

    @property
    def calls(self) -> Counter[str]:
        """Function runs, single or batched: `requests` without the batch requests themselves, plus `batched`."""
        with self._lock:
            out = Counter({f: n for f, n in self.requests.items() if f != BATCH_FUNCTION})
            out.update(self.batched)
            return out

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.batched.clear()
            self.request_log.clear()

    def error_body(self, errorcode: str) -> Dict[str, Any]:
        exception, message = _ERRORCODE_EXCEPTIONS.get(errorcode, ("moodle_exception", errorcode))
        return WSError(exception, errorcode, message).body(self.site)

    def _take_fault(self, function: str, params: Dict[str, Any], explicit: bool = False) -> Optional[Fault]:
        """The first live fault for this call; `explicit` (a batched sub-call) takes only one naming the function."""
        with self._lock:
            for fault in self.faults:
                if fault.times <= 0 or (fault.function and fault.function != function):
                    continue
                if explicit and fault.function is None:
                    continue
                if fault.course_id is not None and str(params.get("courseid")) != str(fault.course_id):
                    continue
                if fault.user_id is not None and str(params.get("userid")) != str(fault.user_id):
                    continue
                fault.times -= 1
                return fault
        return None

    # ------------------------------------------------------------------ HTTP
    def _handler_class(self) -> type:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: Any) -> None:  # quiet: tests read counters instead
                pass

            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._handle(self.rfile.read(length) if length else b"")

            def _send(self, status: int, body: bytes, ctype: str = "application/json; charset=utf-8",
                      headers: Optional[Dict[str, str]] = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, data: Any) -> None:
                self._send(200, json.dumps(data, ensure_ascii=False).encode("utf-8"))

            def _handle(self, body: bytes) -> None:
                url = urlsplit(self.path)
                query = parse_qsl(url.query, keep_blank_values=True)
                posted = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
                # PHP parses $_GET and $_POST separately, each with its own count, and drops the rest with an E_WARNING
                # in its log, nothing to the client (main/php_variables.c). The query string keeps max_input_vars
                # (php_default_treat_data checks `++count > max_input_vars` before registering); the body keeps one
                # more (PHP >= 5.6 add_post_vars registers a variable, then checks `++vars->cnt > max_vars`).
                # webservice/rest/locallib.php merges them, $_POST winning: array_merge($_GET, $_POST)
                limit = emulator.max_input_vars
                pairs = query[:limit] + posted[:limit + 1]
                flat = dict(pairs)
                if emulator.latency:
                    time.sleep(emulator.latency)
                if emulator.basic_auth is not None:
                    expected = "Basic " + base64.b64encode(":".join(emulator.basic_auth).encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self._send(401, b"<html><body><h1>401 Unauthorized</h1></body></html>", "text/html",
                                          {"WWW-Authenticate": 'Basic realm="Moodle"'})
                if url.path.startswith("/_admin/") and emulator.control:
                    return self._admin(url.path, flat)
                # Moodle's scripts sit at fixed places under the site root ($CFG->wwwroot, here the server's root): the
                # web server answers 404 for anything else, e.g. a base URL missing the /moodle a site lives under
                if url.path == "/login/token.php":
                    return self._token(flat)
                if url.path != "/webservice/rest/server.php":
                    return self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
                if not (emulator.web_services_enabled and emulator.rest_protocol_enabled):
                    # webservice/rest/server.php: `if (!webservice_protocol_is_enabled('rest'))` sends HTTP 403 and dies
                    # with no body (older releases died with 200 and no body; ../shared/specs/moodle-web-services.md B)
                    return self._send(403, b"", "text/html")
                function = flat.get("wsfunction", "")
                params = parse_php_params([(k, v) for k, v in pairs if not k.startswith(("wstoken", "wsfunction", "moodlews"))])
                with emulator._lock:
                    emulator.requests[function] += 1
                    if emulator.keep_log:
                        emulator.request_log.append({"function": function, "at": time.monotonic(),
                                                     "vars": len(query) + len(posted), "kept": len(pairs),
                                                     "params": params,
                                                     "method": self.command, "query": url.query,
                                                     "settings": {k: v for k, v in flat.items()
                                                                  if k.startswith("moodlewssetting")}})
                if emulator.maintenance == "html":
                    return self._maintenance_page()
                fault = emulator._take_fault(function, params)
                if fault and self._apply_fault(fault):
                    return
                if flat.get("moodlewsrestformat", "xml") != "json":
                    return self._send(200, b'<?xml version="1.0" encoding="UTF-8" ?>\n<EXCEPTION class="moodle_exception">'
                                      b"<ERRORCODE>jsononly</ERRORCODE>"
                                      b"<MESSAGE>This emulator speaks JSON only</MESSAGE></EXCEPTION>",
                                      "application/xml")
                token = emulator.tokens.get(flat.get("wstoken", ""))
                if token is None:
                    return self._json(emulator.error_body("invalidtoken"))
                if token.validuntil and token.validuntil < time.time():
                    emulator.tokens.pop(flat.get("wstoken", ""), None)  # deleted, so the next use is invalidtoken
                    return self._json(WSError("webservice_access_exception", "accessexception", "Access control exception",
                                              "Invalid token - token expired - check validuntil time for the token")
                                      .body(emulator.site))
                if emulator.maintenance == "json":
                    return self._json(emulator.error_body("sitemaintenance"))
                caller = token_user(token.profile, emulator.school.service_users[token.profile])
                caller.prohibited = frozenset(emulator.prohibited)
                settings = CallSettings.from_request(flat, emulator.site)
                answered: List[Tuple[str, Dict[str, Any]]] = []  # batched sub-calls, for the hooks
                try:
                    if function == BATCH_FUNCTION and function in emulator.api.service_functions:
                        answer = self._batch(params, caller, settings, answered)
                    else:
                        answer = emulator.api.call(function, params, caller, settings)
                except WSError as err:
                    answer = err.body(emulator.site)
                except _HTTPFault as hit:
                    self._apply_fault(hit.fault)
                    return
                # after Moodle answered, before the caller reads it (after_request): each batched sub-call, then the call
                for hook in list(emulator.hooks):
                    for sub_function, sub_args in answered:
                        hook(sub_function, sub_args)
                    hook(function, params)
                self._json(answer)

            def _batch(self, params: Dict[str, Any], caller: Any, settings: CallSettings,
                       answered: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
                """tool_mobile_call_external_functions (batch.py): each sub-call runs the function as a single call
                would (api.run: the caller's capabilities, the same answers and errors), after the service check
                the batch makes itself. An injected fault naming a sub-call's function hits that sub-call: an
                errorcode becomes its exception, an HTTP fault is the whole request's answer (PHP died mid-batch)."""
                def subcall(function: str, args: Dict[str, Any], sub_settings: CallSettings) -> Any:
                    fault = emulator._take_fault(function, args, explicit=True)
                    if fault is not None:
                        if fault.kind == "timeout":
                            time.sleep(fault.seconds)
                        elif fault.kind in _HTTP_FAULTS:
                            raise _HTTPFault(fault)
                        else:
                            exception, message = _ERRORCODE_EXCEPTIONS.get(fault.kind, ("moodle_exception", fault.kind))
                            raise WSError(exception, fault.kind, message)
                    # moodlewssettingtimezone set $USER->timezone for the whole request (webservice_base_server::run):
                    # the sub-calls see it too; the batch's requests have no timezone setting of their own
                    sub_settings = replace(sub_settings, timezone=settings.timezone)
                    if function == BATCH_FUNCTION:  # a batch inside a batch runs like any function in the service
                        return self._batch(args, caller, sub_settings, answered)
                    return emulator.api.run(function, args, caller, sub_settings)

                def done(function: str, args: Dict[str, Any]) -> None:
                    with emulator._lock:
                        emulator.batched[function] += 1
                    answered.append((function, args))

                return call_external_functions(params, emulator.site, settings, set(emulator.api.service_functions),
                                               subcall, emulator.api.base_url,
                                               emulator.school.users[caller.user_id].lang, done)

            def _token(self, flat: Dict[str, str]) -> None:
                if not emulator.web_services_enabled:  # login/token.php: moodle_exception('enablewsdescription')
                    return self._json({"error": "Web services must be enabled in Advanced features.",
                                       "errorcode": "enablewsdescription", "stacktrace": None, "debuginfo": None,
                                       "reproductionlink": None})
                if emulator.maintenance:
                    return self._json({"error": "Site is in maintenance", "errorcode": "sitemaintenance",
                                       "stacktrace": None, "debuginfo": None, "reproductionlink": None})
                service = flat.get("service", "")
                login = emulator.logins.get(flat.get("username", ""))
                if login is None or login[0] != flat.get("password"):
                    return self._json({"error": "Invalid login, please try again", "errorcode": "invalidlogin",
                                       "stacktrace": None, "debuginfo": None, "reproductionlink": None})
                if service not in emulator.services:
                    return self._json({"error": "Web service is not available (it doesn't exist or might be disabled)",
                                       "errorcode": "servicenotavailable", "stacktrace": None, "debuginfo": None,
                                       "reproductionlink": None})
                if login[1] is None:  # login/token.php: no moodle/webservice:createtoken (a student, say)
                    return self._json({"error": f"No permission to create web service token for the service {service}.",
                                       "errorcode": "cannotcreatetoken", "stacktrace": None, "debuginfo": None,
                                       "reproductionlink": None})
                token = next((t for t, row in emulator.tokens.items()
                              if row.service == service and row.profile == login[1]), None)
                if token is None:
                    token = f"tok{len(emulator.tokens):04d}" + "f" * 28
                    emulator.tokens[token] = Token(login[1], service)
                self._json({"token": token, "privatetoken": None})

            def _admin(self, path: str, params: Dict[str, str]) -> None:
                """Benchmark control when the emulator runs in its own process (never in a real Moodle)."""
                if path == "/_admin/requests":
                    return self._json(dict(emulator.requests))
                if path == "/_admin/batched":  # sub-calls inside tool_mobile_call_external_functions, by function
                    return self._json(dict(emulator.batched))
                if path == "/_admin/reset":
                    emulator.reset_counts()
                    return self._json({"ok": True})
                if path == "/_admin/mutate":
                    return self._json(emulator.school.mutate(int(params.get("grades", 0)), int(params.get("profiles", 0)),
                                                             seed=int(params.get("seed", 1))))
                self._send(404, b"{}")

            def _maintenance_page(self) -> None:
                page = (b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>"
                        b"<h1>This site is under maintenance</h1><p>Please try again later.</p></body></html>")
                self._send(503, page, "text/html; charset=utf-8", {"Retry-After": "300"})

            def _apply_fault(self, fault: Fault) -> bool:
                kind = fault.kind
                if kind in ("http500", "http502"):
                    self._send(int(kind[4:]), b"<html><body>Internal Server Error</body></html>", "text/html")
                elif kind == "http429":
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    self._send(429, b"Too Many Requests", "text/plain", headers)
                elif kind == "maintenance_html":
                    self._maintenance_page()
                elif kind == "html200":
                    self._send(200, b"<!DOCTYPE html><html><body><form id=\"login\">Log in to the site</form></body></html>",
                               "text/html; charset=utf-8")
                elif kind == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                elif kind == "truncate":
                    body = json.dumps(emulator.error_body("invalidrecord") | {"padding": "x" * 200}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                elif kind == "invalid_json":
                    self._send(200, b"{\"courses\": [1, 2,, }")
                elif kind == "null":  # never from Moodle itself (external_api::clean_returnvalue); from a proxy or patch
                    self._send(200, b"null")
                elif kind == "timeout":
                    time.sleep(fault.seconds)
                    return False
                else:
                    self._json(emulator.error_body(kind))
                return True

        return Handler



