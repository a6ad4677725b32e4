"""`moodle-commcare check`, the CommCare half: before the first export, what the CommCare project and the API
user's role would make the export stop or lose, each with the place in CommCare HQ to fix it.

It changes nothing. One POST reaches the bulk importer with no file: HQ's decorators answer first (a bad key
401, not a member 403, no Edit Data or a location-restricted role a 403 page), and the view itself then refuses
with HTTP 500 {"message": "... Both 'file' and 'case_type' are required"} before it reads or stores anything
(corehq/apps/case_importer/views.py bulk_case_upload_api / _bulk_case_upload_api). The rest are reads: the
status of a job id that cannot exist (tracking/views.py: 404 when allowed), Case API v2 with limit=1
(hqcase/views.py case_api), the Application API for the case types (api/resources/v0_4.py ApplicationResource),
and the v0.5 lists of mobile workers, groups, locations and web users for the owner ids (one call per list
page, not per id; a list the role may not read is a warning naming the permission, not a failure).

On a project set up right that is about eight requests. Retries are cut short (two attempts, a short timeout):
a check should answer in seconds, not wait out an outage. No finding carries the API key: it travels in the
Authorization header only, and every text is scrubbed of it before it is returned.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.parse import urljoin, urlsplit

import requests
from dlt.sources.helpers.requests import Response

from moodle_commcare.findings import Finding, Status
from moodle_commcare.http_settings import is_loopback
from moodle_commcare.warehouse import CASE_TYPES

from .config import CommCareSettings
from .errors import CommCareConfigError

SYSTEM = "CommCare"
CHECK_TIMEOUT = 20.0  # seconds one check request may take, at most (the export's own timeout may be longer)
CHECK_ATTEMPTS = 2
LIST_LIMIT = 1000  # tastypie's max_limit: the v0.5 lists serve at most 1000 objects a page
MAX_LIST_PAGES = 50
NO_FILE = "'file' and 'case_type' are required"  # views.py _bulk_case_upload_api's refusal of an empty POST
LOCATION_DENIED = "restricted data access"  # locations/permissions.py LOCATION_ACCESS_DENIED
ROLE = "Users > Roles & Permissions > the API user's role (see Users > Web Users > {user}) > {permission}"

# Each check: its title, and what is lost while it fails (FAIL) or warns (WARN).
CHECKS: Dict[str, Tuple[str, str]] = {
    "commcare.settings": ("Connector settings", "Nothing is sent to CommCare until the settings are fixed."),
    "commcare.server": ("Server answers as CommCare HQ's API",
                        "Every export stops before sending anything: CommCare gets no update."),
    "commcare.credentials": ("Project, username and API key accepted",
                             "Every export stops before sending anything: CommCare gets no update."),
    "commcare.case_types": ("Case types " + ", ".join(c.name for c in CASE_TYPES) + " in the project",
                            "The cases are created, but no application's case list shows them: mobile workers do "
                            "not see them (reports and exports do)."),
    "commcare.importer": ("Bulk case importer allowed (Edit Data, all locations)",
                          "Every upload is refused: no case reaches CommCare."),
    "commcare.import_status": ("Import job status readable",
                               "The export cannot tell whether a job finished: every upload stays uncertain and the "
                               "export stops at it."),
    "commcare.case_api": ("Cases readable back (Case API v2)",
                          "A job whose answer was lost (a timeout, a gateway error) cannot be settled by looking its "
                          "rows up: the export stops at it until the API can be read."),
    "commcare.owners": ("Case owners exist and may own cases",
                        "Rows owned by them are rejected ('Invalid Owner') and stay pending: those cases never "
                        "reach CommCare."),
    "commcare.student_workers": ("Students' own mobile workers exist",
                                 "The students whose worker is missing get none of their own cases (their rows are "
                                 "rejected 'Invalid Owner' and stay pending); the coach's cases are unaffected."),
}

# The v0.5 lists an owner id is looked up in, in this order, with the permission each needs
# (api/resources: RequirePermissionAuthentication; Access APIs as well, for all of them).
OWNER_LISTS: Tuple[Tuple[str, str, str, str], ...] = (
    ("user", "mobile workers", "edit_commcare_users", "Mobile Workers: Edit & View"),
    ("group", "groups", "edit_commcare_users", "Mobile Workers: Edit & View (the group list needs it)"),
    ("location", "locations", "edit_locations", "Locations: Edit & View"),
    ("web-user", "web users", "edit_web_users", "Web Users: Edit & View"),
)


class CommCareFindings(List[Finding]):
    """The findings, in CHECKS order, and how many HTTP requests the check sent (`requests`)."""

    requests: int = 0


@dataclass
class _Answer:
    """One request's outcome: the response, or why there was none."""

    response: Optional[Response] = None
    problem: str = ""
    tls: bool = False

    @property
    def status(self) -> int:
        return self.response.status_code if self.response is not None else 0

    @property
    def html(self) -> bool:
        if self.response is None:
            return False
        kind = self.response.headers.get("Content-Type", "")
        return "html" in kind or self.response.text.lstrip().startswith("<")

    @property
    def seen(self) -> str:
        """What came back, for a finding: the HTTP status, or why nothing did."""
        return f"HTTP {self.status}" if self.response is not None else self.problem

    @property
    def empty(self) -> bool:
        return self.response is not None and not self.response.content.strip()

    def json(self) -> Any:
        try:
            return self.response.json() if self.response is not None else None
        except ValueError:
            return None


class _Http:
    """The export's own retrying client (settings.retrying_client), cut short for a check: two attempts, a short
    timeout, no retry of a 500 (the importer's answer to the probe), no redirects followed."""

    def __init__(self, settings: CommCareSettings, on_request: Optional[Callable[[], None]]) -> None:
        quick = copy.copy(settings)
        quick.request_timeout = min(float(settings.request_timeout), CHECK_TIMEOUT)
        quick.max_attempts = min(int(settings.max_attempts), CHECK_ATTEMPTS)
        quick.backoff_factor = min(float(settings.backoff_factor), 0.5)
        quick.max_retry_delay = min(float(settings.max_retry_delay), 2.0)
        self._client = quick.retrying_client(raise_for_status=False, status_codes=(429, 502, 503, 504))
        self._headers = {"Authorization": f"ApiKey {settings.username}:{settings.api_key}",
                         "Accept": "application/json"}
        self.root = settings.root
        self.timeout = quick.request_timeout
        self.requests = 0
        self._on_request = on_request

    def _count(self) -> None:
        self.requests += 1
        if self._on_request is not None:
            self._on_request()

    def call(self, method: str, path_or_url: str, **kwargs: Any) -> _Answer:
        """`path_or_url`: a path under the configured root (as the exporter builds its URLs), or a full URL."""
        url = path_or_url if "://" in path_or_url else self.root + path_or_url
        seen = [0]

        def counted(response: Any, *args: Any, **kw: Any) -> Any:
            seen[0] += 1
            self._count()
            return response

        try:
            response = self._client.session.request(method, url, headers=self._headers, allow_redirects=False,
                                                    hooks={"response": [counted]}, **kwargs)
        except requests.exceptions.SSLError as exc:
            if not seen[0]:
                self._count()
            untrusted = "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc)
            return _Answer(problem="its TLS certificate is not trusted by this machine" if untrusted
                           else "the TLS (https) handshake failed", tls=True)
        except requests.exceptions.Timeout:
            if not seen[0]:
                self._count()
            return _Answer(problem=f"no answer within {self.timeout:g} s (a timeout)")
        except requests.RequestException as exc:
            if not seen[0]:
                self._count()
            return _Answer(problem=f"no connection ({type(exc).__name__}: refused, unreachable, or the name does "
                                   "not resolve)")
        return _Answer(response)

    def pages(self, resource: str, project: str, wanted: Set[str], key: Callable[[Dict[str, Any]], str]
              ) -> Tuple[Optional[List[Dict[str, Any]]], _Answer]:
        """A v0.5 list, page by page (meta.next), until every wanted id was seen or the list ends; None and
        the refusing answer when a page is not served."""
        url: Optional[str] = f"/a/{project}/api/v0.5/{resource}/?limit={LIST_LIMIT}"
        objects: List[Dict[str, Any]] = []
        answer = _Answer()
        for _ in range(MAX_LIST_PAGES):
            if url is None:
                break
            answer = self.call("GET", url)
            body = answer.json()
            if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("objects"), list):
                return None, answer
            objects.extend(o for o in body["objects"] if isinstance(o, dict))
            if wanted <= {key(o) for o in objects}:
                break
            nxt = (body.get("meta") or {}).get("next")  # a path from the server's root, as tastypie writes it
            url = urljoin(self.root + "/", str(nxt)) if nxt else None
        return objects, answer


@dataclass
class _Checker:
    settings: CommCareSettings
    http: _Http
    results: Dict[str, Finding] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return str(self.settings.project)

    @property
    def origin(self) -> str:
        """The server as shown: scheme, host and port only (never a password written into the URL)."""
        parts = urlsplit(self.settings.base_url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}"

    def role(self, permission: str) -> str:
        return ROLE.format(user=self.settings.username, permission=permission)

    def set(self, check: str, status: Status, detail: str, fix: str = "", capability: str = "",
            loses: Optional[str] = None) -> None:
        title, default_loss = CHECKS[check]
        lost = (default_loss if loses is None else loses) if status in (Status.WARN, Status.FAIL) else ""
        self.results[check] = Finding(SYSTEM, check, title, status, detail, fix=fix, capability=capability,
                                      loses=lost)

    def skip_rest(self, why: str) -> None:
        for check in CHECKS:
            if check not in self.results:
                self.set(check, Status.SKIPPED, why)

    # ------------------------------------------------------------------ 1-3: server, credentials, importer
    def probe(self) -> bool:
        """POST the bulk importer with no file: who answers, and which decorator stops it. True when the
        project and the credentials were accepted (the later checks can run)."""
        answer = self.http.call("POST", f"/a/{self.project}/importer/excel/bulk_upload_api/")
        server_fix = (f"Set COMMCARE__BASE_URL to the root of your CommCare HQ server (e.g. https://www.commcarehq.org, "
                      f"without /a/{self.project}), and check the network, proxy or firewall between this machine and it.")
        if answer.response is None:
            fix = server_fix
            if answer.tls:
                fix = ("Give the server a certificate from a public authority, or make this machine trust the "
                       "server's authority (REQUESTS_CA_BUNDLE=<its CA file>); never turn verification off.")
            self.set("commcare.server", Status.FAIL, f"{self.origin} could not be reached: {answer.problem}.", fix)
            return False
        status, body = answer.status, answer.json()
        refusal = body.get("message") if isinstance(body, dict) else None
        if 300 <= status < 400:
            where = urlsplit(answer.response.headers.get("Location", "")).path or "another page"
            why = ("a login page: the address is a web page behind a login (a single sign-on gateway or a proxy), "
                   "not CommCare HQ's API" if "login" in where.lower() else "a redirect, which an API never answers")
            self.set("commcare.server", Status.FAIL, f"{self.origin} answered the bulk upload API with HTTP {status} "
                     f"to {where}: {why}.", server_fix + " An http:// address that redirects must be written https://.")
            return False
        if status in (502, 503, 504):
            self.set("commcare.server", Status.FAIL, f"{self.origin} answered HTTP {status} (after "
                     f"{CHECK_ATTEMPTS} attempts): a proxy or load balancer whose CommCare HQ is down, or HQ in "
                     "maintenance.", "Try again later; if it lasts, check the server's status page "
                     "(https://status.commcarehq.org for commcarehq.org) or ask the server's administrator.")
            return False
        if status == 429:
            self.set("commcare.server", Status.WARN, f"{self.origin} asked to slow down (HTTP 429): nothing further "
                     "was checked.", "Run the check again in a minute.", loses="Nothing: the export waits and retries "
                     "when CommCare asks it to slow down.")
            return False
        if status == 404 or (status == 200 and answer.html) or (status == 401 and answer.html):
            what = {404: "has no CommCare HQ bulk case import API at this address (HTTP 404)",
                    401: "asked for its own login (HTTP 401 with a web page): a proxy in front of CommCare"
                    }.get(status, "answered a web page (HTML) where CommCare HQ's API answers JSON: a login page or "
                                  "a proxy")
            self.set("commcare.server", Status.FAIL, f"{self.origin} {what}.", server_fix)
            return False
        hq_like = (status == 500 and refusal is not None) or status in (401, 403)
        if not hq_like:
            self.set("commcare.server", Status.FAIL, f"{self.origin} answered an empty upload with HTTP {status}"
                     + (" and a web page" if answer.html else "") + ", which is not how CommCare HQ's importer "
                     "answers.", server_fix)
            return False
        self._server_ok()
        if status == 401:
            locked = isinstance(body, dict) and "attempts" in str(body.get("error", ""))
            self.set("commcare.credentials", Status.FAIL,
                     "CommCare refused the credentials (HTTP 401)" + (": too many failed attempts locked the account."
                     if locked else f": the API key does not belong to {self.settings.username!r}, or was revoked "
                                    "or has expired."),
                     f"Log in to CommCare HQ as {self.settings.username}, open the account menu > My Account Settings > "
                     "API Keys, create a key (or check its expiry and allowed projects) and set COMMCARE__USERNAME "
                     "and COMMCARE__API_KEY (.dlt/secrets.toml [commcare]).")
            return False
        if status == 403 and answer.empty:
            self.set("commcare.credentials", Status.FAIL,
                     f"CommCare answered HTTP 403 for project {self.project!r}: the project does not exist (check the "
                     f"spelling: the name after /a/ in the project's address), or {self.settings.username!r} is not "
                     "a member of it, or the API key is limited to another project. HQ answers these alike.",
                     f"Set COMMCARE__PROJECT to the project's name as in its address (https://…/a/<project>/); in "
                     f"that project, Users > Web Users > Invite Web User: invite {self.settings.username}; or create "
                     "an API key for this project (My Account Settings > API Keys).")
            return False
        self.set("commcare.credentials", Status.OK, f"Project {self.project!r} exists and accepted "
                 f"{self.settings.username!r} with the API key.")
        if status == 403 and LOCATION_DENIED in answer.response.text:
            self.set("commcare.importer", Status.FAIL, "The bulk importer refused the API user because its role is "
                     "restricted to locations (HTTP 403 'This project has restricted data access rules'): the bulk "
                     "upload API is not location safe, and neither is the Case API's bulk fetch.",
                     self.role("turn on Full Organization Access (access to all locations)"),
                     capability="access_all_locations")
        elif status == 403:
            self.set("commcare.importer", Status.FAIL, "The bulk importer refused the API user (HTTP 403): its role "
                     "lacks Edit Data, which the bulk upload API requires (require_can_edit_data).",
                     self.role("Data: Edit & View (Edit Data)"), capability="edit_data")
        else:
            confirmed = NO_FILE in str(refusal)
            self.set("commcare.importer", Status.OK, "The bulk importer let the API user in and refused the empty "
                     "test upload itself" + (" (\"Both 'file' and 'case_type' are required\")" if confirmed else
                                             f" ({str(refusal)[:120]!r})")
                     + ": Edit Data and all-locations access are granted. Nothing was imported.")
        return True

    def _server_ok(self) -> None:
        if urlsplit(self.settings.base_url).scheme == "http" and not is_loopback(self.settings.base_url):
            self.set("commcare.server", Status.WARN, f"{self.origin} answers as CommCare HQ's API, but over plain "
                     "http://: the API key and every case travel in clear text (COMMCARE__ALLOW_INSECURE_HTTP is set).",
                     "Use an https:// address in COMMCARE__BASE_URL and unset COMMCARE__ALLOW_INSECURE_HTTP; keep "
                     "plain http only for a test server on a network you trust.",
                     loses="Anyone on the network path can read the API key and the students' data.")
        else:
            self.set("commcare.server", Status.OK, f"{self.origin} answers as CommCare HQ's API, over "
                     + ("https." if urlsplit(self.settings.base_url).scheme == "https" else "http on this machine."))

    # ------------------------------------------------------------------ 4: case types
    def case_types(self, any_cases: Optional[bool], students_own: bool = False) -> None:
        """The case types of the project's applications (the Application API, Access APIs only); with no case
        type at all and no case, the importer refuses every upload ("Your project does not use cases yet").
        The students' own case types are wanted only when some student has a mobile worker of their own."""
        wanted = [c.name for c in CASE_TYPES if students_own or not c.students_phones]
        answer = self.http.call("GET", f"/a/{self.project}/api/v0.5/application/")
        body = answer.json()
        look = ("Data > Data Dictionary and Applications > each application's case lists (menus): look for case "
                "types " + " and ".join(repr(w) for w in wanted))
        if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("objects"), list):
            why = "the role lacks Access APIs" if answer.status in (401, 403) else answer.seen
            self.set("commcare.case_types", Status.WARN, f"The project's applications could not be read ({why}), "
                     "and no other API tells which case types a project has: not checked.",
                     self.role("Access APIs") + "; or check by hand: " + look + ".",
                     capability="access_api" if answer.status in (401, 403) else "",
                     loses="Unknown: if a case type is missing, the cases are created but no application shows them; "
                           "if the project has no case type at all, every upload is refused.")
            return
        found: Set[str] = set()
        names: Dict[str, str] = {}
        for app in body["objects"]:
            if not isinstance(app, dict):
                continue
            for module in app.get("modules") or []:
                if isinstance(module, dict) and module.get("case_type"):
                    found.add(str(module["case_type"]))
                    names.setdefault(str(module["case_type"]), str(app.get("name") or app.get("id")))
            if isinstance(app.get("case_types"), dict):
                found.update(str(t) for t in app["case_types"])
        missing = [w for w in wanted if w not in found]
        if not missing:
            self.set("commcare.case_types", Status.OK, "; ".join(f"{w!r} is a case type of application "
                                                                  f"{names.get(w, '?')!r}" for w in wanted) + ".")
            return
        add = ("Applications > your application > Add… > Case List (a menu registering cases), case type {}; save "
               "the application").format(" / ".join(repr(m) for m in missing))
        if not found and any_cases is False:
            self.set("commcare.case_types", Status.FAIL, "The project has no application with a case list and no "
                     "case: the importer refuses every upload (\"Your project does not use cases yet\", HTTP 500).",
                     add + ".", loses="Every upload is refused: no case reaches CommCare.")
            return
        known = f"its applications use {', '.join(sorted(found))}" if found else "no application has a case list"
        self.set("commcare.case_types", Status.WARN, f"{', '.join(repr(m) for m in missing)} "
                 f"{'is' if len(missing) == 1 else 'are'} not a case type of any application ({known}): the first "
                 "import creates the type, but no case list shows these cases."
                 + ("" if found or any_cases else " Whether the project holds any case could not be read: if it "
                    "holds none, every upload is refused (\"Your project does not use cases yet\")."),
                 add + " (Data > Data Dictionary documents a type, but only an application shows its cases on phones).")

    # ------------------------------------------------------------------ 5: reading back
    def import_status(self) -> None:
        upload_id = uuid.uuid4().hex  # an id no job can have: the view answers 404 when the user may read statuses
        answer = self.http.call("GET", f"/a/{self.project}/importer/case_importer/status/dl-{upload_id}/")
        if answer.status == 404 and not answer.html:
            self.set("commcare.import_status", Status.OK, "The import status view answered an unknown job with 404, as "
                     "it does for a user allowed to read job statuses.")
        elif answer.status in (401, 403):
            self.set("commcare.import_status", Status.FAIL, f"The import status view refused the API user (HTTP "
                     f"{answer.status}).", self.role("Data: Edit & View (Edit Data)"), capability="edit_data")
        else:
            seen = (f"HTTP {answer.status}" + (" with a web page" if answer.html else "")
                    if answer.response is not None else answer.problem)
            self.set("commcare.import_status", Status.WARN, f"The import status view answered {seen} to an unknown "
                     "job id, not the empty 404 HQ answers: not confirmed. The export polls the status address each "
                     "upload returns, so this matters only if that address is blocked.",
                     "If the first export reports a job's status as gone or refused, ask the server's administrator "
                     "to let /a/<project>/importer/case_importer/status/ through the proxy.",
                     loses="Possibly every upload's outcome: the export would stop at the first job it cannot read.")

    def case_api(self) -> Optional[bool]:
        """Case API v2, limit=1: readable (with Edit Data and Access APIs). Returns whether the project holds any
        case (None when unreadable)."""
        answer = self.http.call("GET", f"/a/{self.project}/api/case/v2/?limit=1")
        body = answer.json()
        if answer.status == 200 and isinstance(body, dict) and isinstance(body.get("cases"), list):
            self.set("commcare.case_api", Status.OK, "Case API v2 answered"
                     + (" (the project holds cases)." if body["cases"] else " (the project holds no case yet)."))
            return bool(body["cases"])
        if answer.status in (401, 403):
            self.set("commcare.case_api", Status.FAIL, f"Case API v2 refused the API user (HTTP {answer.status}): it "
                     "requires Access APIs as well as Edit Data.", self.role("Access APIs"), capability="access_api")
        elif answer.status == 402:
            self.set("commcare.case_api", Status.FAIL, "Case API v2 answered HTTP 402: the project's subscription "
                     "does not include API access.", "Project Settings > Subscription (the project's billing admin): "
                     "a plan that includes API access.")
        elif answer.status == 404:
            self.set("commcare.case_api", Status.FAIL, "Case API v2 is not served at /a/<project>/api/case/v2/ "
                     "(HTTP 404): the server predates it, or the feature is off for the project.",
                     "Ask the server's administrator to enable Case API v2 for the project (on older servers the "
                     "CASE_API_V0_6 feature flag).")
        else:
            self.set("commcare.case_api", Status.FAIL, f"Case API v2 answered {answer.seen}.",
                     "Run the check again; if it lasts, ask the server's administrator.")
        return None

    # ------------------------------------------------------------------ 6: owners
    def owners(self, owner_ids: Sequence[str]) -> None:
        wanted = {o for o in owner_ids if o}
        if not wanted:
            self.set("commcare.owners", Status.SKIPPED, "No owner id was given (build the case tables first: "
                     "the owner map and commcare_default_owner_id give them).")
            return
        remaining = set(wanted)
        valid: Dict[str, str] = {}
        invalid: Dict[str, str] = {}  # id -> why it cannot own cases, with the place to fix it
        refused: List[Tuple[str, str, str]] = []  # (what, permission, its place in the role)
        for (resource, what, permission, label), key, objects, answer in self._owner_lists(remaining):
            if objects is None:
                refused.append((what, permission, label) if answer.status in (401, 403) else (what, "", answer.seen))
                continue
            hits = {key(o): o for o in objects if key(o) in remaining}
            if resource == "group":
                for gid, group in hits.items():
                    if group.get("case_sharing"):
                        valid[gid] = "a case-sharing group"
                    else:
                        invalid[gid] = (f"group {group.get('name') or gid!r} does not share cases (Users > Groups > "
                                        f"{group.get('name') or gid} > Case Sharing: on)")
            elif resource == "location" and hits:
                types, _ = self.http.pages("location_type", self.project, set(), _id_key)
                shares = {str(t.get("resource_uri") or ""): t for t in types or []}
                for lid, location in hits.items():
                    kind = shares.get(str(location.get("location_type") or ""))
                    if kind is None:
                        valid[lid] = "a location (its type's case sharing could not be read)"
                    elif kind.get("shares_cases"):
                        valid[lid] = f"a location of type {kind.get('name')!r}, which owns cases"
                    else:
                        invalid[lid] = (f"location {location.get('name') or lid!r} is of type {kind.get('name')!r}, "
                                        f"which does not own cases (Users > Organization Structure > Location Types > "
                                        f"{kind.get('name')}: tick Owns Cases)")
            else:
                for oid in hits:
                    valid[oid] = "a mobile worker" if resource == "user" else "a web user"
            remaining -= set(hits)
        self._owner_finding(wanted, valid, invalid, remaining, refused)

    def _owner_lists(self, remaining: Set[str]) -> Iterator[Tuple[Tuple[str, str, str, str],
                                                               Callable[[Dict[str, Any]], str],
                                                               Optional[List[Dict[str, Any]]], _Answer]]:
        """Each v0.5 list an owner id may be in (OWNER_LISTS order) with its key, read as far as the ids still in
        `remaining` need; the caller removes the ids it found, and the walk ends when none remain."""
        for entry in OWNER_LISTS:
            if not remaining:
                return
            key = _location_key if entry[0] == "location" else _id_key
            objects, answer = self.http.pages(entry[0], self.project, remaining, key)
            yield entry, key, objects, answer

    def student_workers(self, worker_ids: Sequence[str]) -> None:
        """A student's own cases must be owned by a mobile worker: a case-sharing group or a location would put one
        student's grades on every phone of its members (casexml livequery syncs all cases of a user's owner ids).
        A worker that is missing fails only its own student's rows, so that is a warning, not a stop."""
        wanted = {w for w in worker_ids if w}
        if not wanted:
            self.set("commcare.student_workers", Status.SKIPPED, "No student is mapped to a mobile worker of their "
                     "own (seeds/commcare_student_workers.csv, var commcare_student_worker_field): students' own "
                     "phones are not in use.")
            return
        remaining = set(wanted)
        kinds: Dict[str, str] = {}
        refused = ""
        for (resource, what, _, label), key, objects, answer in self._owner_lists(remaining):
            if objects is None:
                if resource == "user":
                    refused = (self.role(label) if answer.status in (401, 403) else
                               f"the {what} list answered {answer.seen}")
                    break
                continue
            for o in objects:
                if key(o) in remaining:
                    kinds[key(o)] = what
            remaining -= set(kinds)
        workers = {w for w, k in kinds.items() if k in ("mobile workers", "web users")}
        wrong = {w: k for w, k in kinds.items() if w not in workers}
        if wrong:
            self.set("commcare.student_workers", Status.FAIL, "These ids given to students are not users, and every "
                     "member would see the student's grades: " + "; ".join(
                         f"{w} (one of the {k})" for w, k in sorted(wrong.items())[:10]) + ".",
                     "Give each student their own mobile worker's user id in dbt_project/seeds/"
                     "commcare_student_workers.csv (or the Moodle profile field) and run the transform again.",
                     loses="Nothing is sent until it is fixed: a shared owner would show students each other's "
                           "grades.")
        elif refused:
            self.set("commcare.student_workers", Status.WARN, f"The mobile workers could not be listed; "
                     f"{len(wanted):,} students' workers were not checked.", refused + ".",
                     capability="edit_commcare_users")
        elif remaining:
            self.set("commcare.student_workers", Status.WARN, f"{len(workers):,} of {len(wanted):,} students' mobile "
                     f"workers exist; not found in {self.project!r}: {_ids(remaining)}.",
                     "Create the mobile workers (Users > Mobile Workers), or correct the user ids in dbt_project/"
                     "seeds/commcare_student_workers.csv or the Moodle profile field, and run the transform again.")
        else:
            self.set("commcare.student_workers", Status.OK, f"All {len(wanted):,} students' own mobile workers "
                     "exist.")

    def _owner_finding(self, wanted: Set[str], valid: Dict[str, str], invalid: Dict[str, str], remaining: Set[str],
                       refused: List[Tuple[str, str, str]]) -> None:
        parts: List[str] = []
        fixes: List[str] = []
        if invalid:
            parts.append("These cannot own cases: " + "; ".join(f"{o}: {why}" for o, why in sorted(invalid.items()))
                         + ".")
            fixes.append("Turn on case sharing as said for each")
        unchecked = [r for r in refused if r[1]]
        if remaining and not refused:
            parts.append(f"Not found in CommCare (not a mobile worker, group, location or web user of "
                         f"{self.project!r}): {_ids(remaining)}.")
            fixes.append("create the owner (Users > Mobile Workers; Users > Groups with Case Sharing on; Users > "
                         "Organization Structure, a location whose type owns cases), or correct the id in "
                         "dbt_project/seeds/commcare_owner_map.csv or the dbt var commcare_default_owner_id and run "
                         "the transform again")
        elif remaining:
            lists = ", ".join(what for what, _, _ in refused)
            parts.append(f"Not found in the lists that could be read; not checked in {lists}: {_ids(remaining)}.")
            fixes.extend(self.role(label) if permission else f"the {what} list answered {label}: run the check again"
                         for what, permission, label in refused)
        status = Status.FAIL if invalid or (remaining and not refused) else Status.WARN if remaining else Status.OK
        if status == Status.OK:
            self.set("commcare.owners", Status.OK, f"All {len(wanted)} owner id(s) may own cases: "
                     + "; ".join(f"{o} ({why})" for o, why in sorted(valid.items())) + ".")
            return
        loses = None if status == Status.FAIL else ("Nothing yet: an owner id that does not exist makes its rows fail "
                                                    "'Invalid Owner' at the first export, listed in its report.")
        capability = ", ".join(sorted({p for _, p, _ in unchecked})) if status == Status.WARN else ""
        self.set("commcare.owners", status, " ".join(parts), "; ".join(fixes) + ".", capability=capability,
                 loses=loses)


def check_commcare(settings: CommCareSettings, owner_ids: Iterable[str] = (),
                   on_request: Optional[Callable[[], None]] = None,
                   student_workers: Iterable[str] = ()) -> List[Finding]:
    """Every CommCare check against the project these settings name, as Findings in CHECKS order (a
    CommCareFindings, whose `requests` says how many requests were sent); `on_request` is called once per
    request sent. `student_workers` are the owners of students' own cases, checked apart from the coaches'.
    Changes nothing in CommCare."""
    student_workers = sorted({str(w) for w in student_workers})
    http = _Http(settings, on_request)
    checker = _Checker(settings, http)
    problem = _settings_problem(settings)
    if problem is not None:
        checker.set("commcare.settings", Status.FAIL, problem, _setting_fix(problem))
        checker.skip_rest("Not checked: the settings are incomplete (see commcare.settings); nothing was sent.")
    else:
        checker.set("commcare.settings", Status.OK, f"Settings read: {checker.origin}, project "
                    f"{settings.project!r}, user {settings.username!r}, an API key.")
        if checker.probe():
            importer = checker.results["commcare.importer"]
            edit_data = importer.status == Status.OK or importer.capability == "access_all_locations"
            any_cases: Optional[bool] = None
            if edit_data:
                checker.import_status()
                any_cases = checker.case_api()
            else:
                why = "Not checked: it needs Edit Data, which the API user's role lacks (see commcare.importer)."
                checker.set("commcare.import_status", Status.SKIPPED, why)
                checker.set("commcare.case_api", Status.SKIPPED, why)
            checker.case_types(any_cases, students_own=bool(student_workers))
            checker.owners(sorted({str(o) for o in owner_ids}))
            checker.student_workers(student_workers)
        failed = "commcare.credentials" if "commcare.credentials" in checker.results else "commcare.server"
        checker.skip_rest(f"Not checked: CommCare did not accept the connection (see {failed}).")
    findings = CommCareFindings(_scrub(checker.results[c], settings) for c in CHECKS)
    findings.requests = http.requests
    return findings


def _settings_problem(settings: CommCareSettings) -> Optional[str]:
    """What is missing or unsafe, naming every missing setting at once (require_upload names the first)."""
    missing = [settings.env_name(n) for n in ("project", "username", "api_key")
               if not str(getattr(settings, n) or "").strip()]
    if len(missing) > 1:
        return (f"{', '.join(missing)} are not set: uploading to CommCare needs them (.dlt/secrets.toml [commcare] "
                "or the environment).")
    try:
        settings.require_upload()
    except CommCareConfigError as exc:
        return str(exc)
    return None


def _setting_fix(message: str) -> str:
    if "ALLOW_INSECURE_HTTP" in message:
        return "Use an https:// address in COMMCARE__BASE_URL (or, for a test server you trust only, set " \
               "COMMCARE__ALLOW_INSECURE_HTTP=true)."
    return ("Set it in .dlt/secrets.toml under [commcare] (api_key, username) or .dlt/config.toml (base_url, "
            "project), or as the COMMCARE__* environment variable named.")


def _id_key(obj: Dict[str, Any]) -> str:
    return str(obj.get("id") or "")


def _location_key(obj: Dict[str, Any]) -> str:
    """An owner id names a location by its location_id (a uuid), not the list's numeric id."""
    return str(obj.get("location_id") or "")


def _ids(ids: Iterable[str], most: int = 10) -> str:
    shown = sorted(ids)
    return ", ".join(shown[:most]) + (f" and {len(shown) - most} more" if len(shown) > most else "")


def _scrub(finding: Finding, settings: CommCareSettings) -> Finding:
    """No finding may carry the API key, whatever a server echoed back."""
    key = str(settings.api_key or "")
    if len(key) < 4:
        return finding
    texts = {name: getattr(finding, name) for name in ("title", "detail", "fix", "capability", "loses")}
    if not any(key in text for text in texts.values()):
        return finding
    return replace(finding, **{name: text.replace(key, "***") for name, text in texts.items()})
