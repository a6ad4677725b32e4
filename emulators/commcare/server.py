"""CommCare HQ emulator: the bulk case import API, its job status, and Case API v2 reads, over real HTTP.

Follows ../shared/specs/commcare-bulk-case-import.md, section R in particular, each behaviour from
dimagi/commcare-hq (cited beside it):
- corehq/apps/case_importer/views.py `bulk_case_upload_api`: synchronous refusals answer HTTP 500
  {"code": 500, "message"}; success only queues a job and answers its status_url.
- the job runs in the background on a pool of workers (importer.py), 100 rows per committed chunk.
- corehq/apps/case_importer/tracking/views.py / urls.py `case_upload_status`: an unknown id answers 404.
- corehq/apps/hqcase/views.py + api/get_list.py, api/get_bulk.py: Case API v2 list and bulk-fetch.
- bad credentials a bare 401, no permission an HTML 403.
- who may call what (what `moodle-commcare check` reads): corehq/apps/domain/decorators.py `api_auth` /
  `_login_or_challenge` (a bad key: bare 401; an API user who is not a member of the project, or a project
  that does not exist: bare 403, alike), users/decorators.py `require_permission` (a missing role permission
  raises PermissionDenied: Django's HTML 403 page), api/resources/auth.py `RequirePermissionAuthentication`
  (the v0.5 APIs: the permission and Access APIs, else an empty 403), locations/middleware.py +
  locations/permissions.py (a view not marked location safe refuses a location-restricted user with the
  403 page "This project has restricted data access rules").
- the v0.5 APIs the check lists owners and case types with (api/urls.py API_LIST (0, 5)): application
  (api/resources/v0_4.py ApplicationResource: Access APIs only; modules carry case_type), user
  (v0_1/v0_5 CommCareUserResource: Edit Mobile Workers), web-user (v0_1 WebUserResource: Edit Web Users),
  group (v0_4 GroupResource: Edit Mobile Workers; case_sharing), location and location_type
  (locations/resources/v0_5.py: Edit Locations; the type says shares_cases), in tastypie's list envelope
  {"meta": {limit, next, offset, previous, total_count}, "objects": [...]}, limit capped at 1000.
- what a mobile worker's phone syncs (`restore_owner_ids`, `phone_cases`): the restore asks
  casexml/apps/phone/models.py `OTARestoreCommCareUser.get_owner_ids` -> corehq/apps/users/models.py
  `CommCareUser.get_owner_ids`: [the user's own id] + the ids of `get_case_sharing_groups()`, which are
  (1) `_get_case_owning_locations`: each ASSIGNED location whose type shares cases, then every descendant (not
  archived, type sharing cases) of an assigned location whose type has "view descendants" (the assigned one
  need not share cases itself); a location's case-sharing group has the location's id
  (locations/models.py `SQLLocation.case_sharing_group_object`: g._id = location_id);
  (2) `Group.by_user_id(user)` where `group.case_sharing` (a reporting-only group gives nothing);
  (3) attendance-tracking event groups, behind a privilege and a toggle: not modelled.
  Not the parent locations of an assigned one, nor groups the user is not a member of. The cases sent for
  those owner ids follow livequery.py (store.py).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import parse_qs, urlencode, urlsplit

from .importer import Importer, ImporterRawError, Job, parse_sheet, read_workbook
from .store import Case, CaseStore

DEMO_DOMAIN = "demo-project"
DEMO_USERNAME = "integration@demo-project.example"
DEMO_API_KEY = "cc-demo-0123456789abcdef"
DEFAULT_CASE_TYPES = {"student", "course_enrolment", "course", "student_course"}  # a project set up for the connector
V2_MAX_LIMIT = 5000  # corehq/apps/hqcase/api/get_list.py MAX_PAGE_SIZE
V2_BULK_MAX = V2_MAX_LIMIT  # corehq/apps/hqcase/api/get_bulk.py: case_ids + external_ids <= MAX_PAGE_SIZE

API_USER_ID = "api-user-0001"  # the API user is a web user of the project
Fault = Tuple[int, Optional[int]]  # (HTTP status, Retry-After seconds)

# The role permissions the emulated API user may hold (corehq/apps/users/models.py HqPermissions names).
ALL_PERMISSIONS = frozenset({"edit_data", "access_api", "edit_commcare_users", "edit_web_users", "edit_locations"})
# What an owner id can be (do_import.py _OwnerAccessor._check_owner): a user who is a member of the project, a
# case-sharing group, or a location whose type shares cases. The *_not_sharing kinds exist, but own no cases.
OWNER_KINDS = ("mobile_worker", "web_user", "group", "group_not_sharing", "location", "location_not_sharing")
VALID_OWNER_KINDS = frozenset({"mobile_worker", "web_user", "group", "location"})
TASTYPIE_MAX_LIMIT = 1000  # tastypie ResourceOptions.max_limit: a larger limit is served as 1000
# locations/permissions.py LOCATION_ACCESS_DENIED, rendered by hqwebapp/views.py no_permissions (403.html)
LOCATION_ACCESS_DENIED = ("This project has restricted data access rules. Please contact your project "
                          "administrator to be assigned access to data in this project.")


class CommCareEmulator:
    """`with CommCareEmulator() as hq:` then upload to `hq.base_url` with `hq.domain`, `hq.username`, `hq.api_key`."""

    def __init__(self, owners: Optional[Set[str]] = None, host: str = "127.0.0.1", port: int = 0,
                 workers: int = 2, case_types: Optional[Set[str]] = None,
                 owner_kinds: Optional[Dict[str, str]] = None, tls: Optional[Tuple[str, str]] = None) -> None:
        self.domain = DEMO_DOMAIN
        self.username = DEMO_USERNAME
        self.api_key = DEMO_API_KEY
        # the ids that exist in the project; an id without an entry in owner_kinds is a mobile worker
        self.owners: Set[str] = set(owners or ())
        self.owner_kinds: Dict[str, str] = dict(owner_kinds or {})
        # who is in which group, who is assigned which locations, and the location tree: none by default
        self.group_members: Dict[str, Set[str]] = {}  # group id -> mobile worker ids
        self.user_locations: Dict[str, List[str]] = {}  # mobile worker id -> assigned location ids, in order
        self.location_parents: Dict[str, str] = {}  # location id -> its parent location id
        # owner kinds ("location" = School, "location_not_sharing" = District) whose location type has "view
        # descendants" ticked (LocationType.view_descendants)
        self.view_descendants: Set[str] = set()
        # case types of the project's applications (app_manager get_case_types_from_apps): what the
        # Application API shows, and with the types of existing cases what views.py accepts as "uses cases"
        self.case_types: Set[str] = set(DEFAULT_CASE_TYPES if case_types is None else case_types)
        # case types only in Data > Data Dictionary: no API shows them; views.py _is_bulk_import counts them
        self.dictionary_case_types: Set[str] = set()
        self.store = CaseStore()
        self.importer = Importer(self.store, self.valid_owners)
        self.workers = workers
        self.jobs: Dict[str, Job] = {}
        self.uploads: List[Dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.lock = threading.RLock()
        # ---- knobs
        self.upload_faults: List[Fault] = []  # answered before the job is queued (no job exists)
        self.after_queue_faults: List[Union[int, str]] = []  # job queued, then HTTP status or "drop" (no answer)
        self.status_faults: List[Fault] = []
        self.fail_next_job: Optional[str] = None  # the next job fails (state 3) ...
        self.fail_after_chunks = 0  # ... after committing this many chunks
        self.next_job_without_result = False  # state 2 with result null
        self.permissions: Set[str] = set(ALL_PERMISSIONS)  # the API user's role (Users > Roles & Permissions)
        self.location_restricted = False  # the role lacks Full Organization Access (access_all_locations)
        self.member = True  # the API user is a member of the project (else a bare 403, as for no such project)
        self.api_privilege = True  # the project's plan includes API access (else the Case API answers 402)
        # what answers instead of HQ: None, "login" (every URL redirects to a login page, which answers 200
        # HTML) or "proxy" (a reverse proxy whose upstream is down: 502 HTML). Not HQ: the network before it.
        self.front: Optional[str] = None
        self.before_queue: Optional[Callable[[], bool]] = None  # False: the request is dropped, no job
        self.after_queue: Optional[Callable[[Job], None]] = None  # runs before the upload is answered
        self.on_status: Optional[Callable[[Job], None]] = None  # runs before a status poll is answered
        self.before_success_status: Optional[Callable[[Job], None]] = None  # ... when that answer is state 2
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.tls = tls is not None
        if tls is not None:  # (certificate file, key file): serve https, as CommCare HQ does
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def forbidden(self) -> bool:
        """The API user's role lacks Edit Data (the knob tests set; the same as removing it from permissions)."""
        return "edit_data" not in self.permissions

    @forbidden.setter
    def forbidden(self, value: bool) -> None:
        if value:
            self.permissions.discard("edit_data")
        else:
            self.permissions.add("edit_data")

    def owner_kind(self, owner_id: str) -> str:
        return self.owner_kinds.get(owner_id, "mobile_worker")

    def valid_owners(self) -> Set[str]:
        """The ids the importer accepts as owner_id (do_import.py _OwnerAccessor._check_owner)."""
        return {o for o in self.owners if self.owner_kind(o) in VALID_OWNER_KINDS}

    # ------------------------------------------------------------------ users, groups, locations; phone sync
    def _require(self, owner_id: str, kinds: Tuple[str, ...]) -> None:
        if owner_id not in self.owners or self.owner_kind(owner_id) not in kinds:
            raise ValueError(f"{owner_id!r} is not a {' or '.join(kinds)} of the project")

    def add_group_member(self, group_id: str, user_id: str) -> None:
        """Users > Groups: the mobile worker joins the group (case-sharing or not)."""
        self._require(group_id, ("group", "group_not_sharing"))
        self._require(user_id, ("mobile_worker",))
        self.group_members.setdefault(group_id, set()).add(user_id)

    def assign_location(self, user_id: str, location_id: str) -> None:
        """The mobile worker is assigned the location (CommCareUser.add_to_assigned_locations)."""
        self._require(user_id, ("mobile_worker",))
        self._require(location_id, ("location", "location_not_sharing"))
        assigned = self.user_locations.setdefault(user_id, [])
        if location_id not in assigned:
            assigned.append(location_id)

    def set_location_parent(self, location_id: str, parent_id: str) -> None:
        self._require(location_id, ("location", "location_not_sharing"))
        self._require(parent_id, ("location", "location_not_sharing"))
        if parent_id == location_id or parent_id in self._location_descendants(location_id):
            raise ValueError(f"{parent_id!r} is {location_id!r} or below it: the location tree has no cycles")
        self.location_parents[location_id] = parent_id

    def _location_descendants(self, location_id: str) -> List[str]:
        out: List[str] = []
        children = sorted(c for c, p in self.location_parents.items() if p == location_id)
        for child in children:
            if child not in out:
                out.append(child)
                out.extend(d for d in self._location_descendants(child) if d not in out)
        return out

    def restore_owner_ids(self, user_id: str) -> List[str]:
        """The owner ids a restore for this mobile worker asks cases for: CommCareUser.get_owner_ids
        (users/models.py), see the module docstring. Raises ValueError for an id that is not a mobile worker."""
        self._require(user_id, ("mobile_worker",))
        ids = [user_id]
        assigned = self.user_locations.get(user_id, [])
        # _get_case_owning_locations: assigned locations whose type shares cases ...
        locations = [loc for loc in assigned if self.owner_kind(loc) == "location"]
        # ... then the descendants (type sharing cases; none is archived here) of those whose type views descendants
        for loc in assigned:
            if self.owner_kind(loc) in self.view_descendants:
                locations += [d for d in self._location_descendants(loc) if self.owner_kind(d) == "location"]
        # Group.by_user_id(user) if group.case_sharing
        groups = [g for g in sorted(self.group_members) if user_id in self.group_members[g]
                  and self.owner_kind(g) == "group"]
        for owner_id in locations + groups:
            if owner_id not in ids:
                ids.append(owner_id)
        return ids

    def phone_cases(self, user_id: str) -> Dict[str, Case]:
        """case_id -> case: what a fresh restore for this mobile worker sends (livequery.py `do_livequery`)."""
        return self.store.phone_cases(self.restore_owner_ids(user_id))

    def __enter__(self) -> "CommCareEmulator":
        self.importer.start(self.workers)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="commcare-emulator").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.importer.stop()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ views and controls for tests
    @property
    def cases(self) -> Dict[str, Case]:
        return self.store.cases

    def by_external_id(self, case_type: str) -> Dict[str, Case]:
        """external_id -> case; fails loudly on duplicates, which no test may tolerate silently."""
        with self.store.lock:
            out: Dict[str, Case] = {}
            for case in self.store.cases.values():
                if case.case_type == case_type:
                    assert case.external_id not in out, f"duplicate {case_type} case {case.external_id}"
                    out[case.external_id] = case
            return out

    def duplicates(self) -> Dict[Tuple[str, str], int]:
        with self.store.lock:
            seen = Counter((c.case_type, c.external_id) for c in self.store.cases.values())
        return {k: n for k, n in seen.items() if n > 1}

    def hold_jobs(self) -> None:
        self.importer.hold()

    def release_jobs(self) -> None:
        self.importer.release()

    def wait_for_jobs(self, timeout: float = 30.0) -> None:
        for job in list(self.jobs.values()):
            assert job.done.wait(timeout), f"job {job.id} did not finish"

    # ------------------------------------------------------------------ import
    def _check_upload(self, fields: Dict[str, Any]) -> Job:
        """views.py bulk_case_upload_api + _bulk_case_upload_api: everything refused before queueing."""
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
        known = self.case_types | self.store.case_types()
        if not known:  # views.py: get_case_types_from_apps and get_case_types_for_domain_es both empty
            raise ImporterRawError("Your project does not use cases yet. Please add cases to your project "
                                   "before attempting to import.")
        sheets = read_workbook(content)
        if all(title in known | self.dictionary_case_types for title, _ in sheets):
            # views.py _is_bulk_import: every sheet titled like a case type -> one import per sheet, and
            # _create_bulk_configs reads create_new_cases == 'True' (not 'on') and search_column without default
            if "search_column" not in fields:
                raise KeyError("search_column")
            parsed = [parse_sheet(title, rows) for title, rows in sheets]
            create_new = fields.get("create_new_cases") == "True"
        else:
            parsed = [parse_sheet(str(case_type), sheets[0][1])]  # single mode: the first worksheet only
            create_new = fields.get("create_new_cases") == "on"
        job = Job(id=uuid.uuid4().hex, sheets=parsed, search_column=fields.get("search_column") or search_field,
                  create_new=create_new, name_column=fields.get("name_column") or "name")
        with self.lock:
            if self.fail_next_job is not None:
                job.fail_after_chunks, job.fail_message = self.fail_after_chunks, self.fail_next_job
                self.fail_next_job, self.fail_after_chunks = None, 0
            job.report_no_result, self.next_job_without_result = self.next_job_without_result, False
        self.uploads.append({"job": job.id, "case_type": case_type, "filename": filename,
                             "rows": job.total_rows, "sheets": [t for t, _ in sheets],
                             "create_new_cases": fields.get("create_new_cases"),
                             "cell_types": {type(v).__name__ for s in parsed for r in s.rows for v in r.values()}})
        return job

    # ------------------------------------------------------------------ Case API v2
    def _v2_list(self, query: Dict[str, List[str]]) -> Tuple[int, Any]:
        """get_list.py: filters case_type, external_id, owner_id, closed; limit <= 5000; unknown params 400."""
        allowed = {"case_type", "external_id", "owner_id", "closed", "limit", "cursor"}
        unknown = [k for k in query if k not in allowed]
        if unknown:
            return 400, {"error": f"'{unknown[0]}' is not a valid parameter."}
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            return 400, {"error": "'limit' must be an integer"}
        if limit > V2_MAX_LIMIT:
            return 400, {"error": f"You cannot request more than {V2_MAX_LIMIT} cases per request."}
        with self.store.lock:
            cases = list(self.store.cases.values())
        for key in ("case_type", "external_id", "owner_id"):
            if key in query:
                cases = [c for c in cases if getattr(c, key) == query[key][0]]
        if "closed" in query:
            want = query["closed"][0].lower() == "true"
            cases = [c for c in cases if c.closed == want]
        start = int(query.get("cursor", ["0"])[0] or 0)
        page = cases[start:start + limit]
        nxt = None
        if start + limit < len(cases):
            nxt = f"{self.base_url}/a/{self.domain}/api/case/v2/?cursor={start + limit}&limit={limit}" + "".join(
                f"&{k}={v[0]}" for k, v in query.items() if k not in ("cursor", "limit"))
        return 200, {"matching_records": len(page), "cases": [c.serialize(self.domain) for c in page], "next": nxt}

    def _v2_bulk_fetch(self, body: bytes) -> Tuple[int, Any]:
        """get_bulk.py: {"case_ids": [...], "external_ids": [...]} -> one entry per id in input order (case ids
        first), "not found" stubs; duplicates of an external_id come back as one case. Not location_safe: a
        location-restricted user gets 403 (test_case_api_bulk_fetch_requires_access_all_locations)."""
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "Payload must be valid JSON"}
        case_ids = list(data.get("case_ids") or [])
        external_ids = list(data.get("external_ids") or [])
        if len(case_ids) + len(external_ids) > V2_BULK_MAX:
            return 400, {"error": f"You cannot request more than {V2_BULK_MAX} cases per request."}
        out: List[Dict[str, Any]] = []
        missing = 0
        for case_id in case_ids:
            case = self.store.cases.get(case_id)
            if case is None:
                missing += 1
                out.append({"case_id": case_id, "error": "not found"})
            else:
                out.append(case.serialize(self.domain))
        for ext in external_ids:
            found = self.store.find(None, ext)
            if not found:
                missing += 1
                out.append({"external_id": ext, "error": "not found"})
            else:
                out.append(found[-1].serialize(self.domain))  # results keyed by external_id: one per id
        return 200, {"matching_records": len(out) - missing, "missing_records": missing, "cases": out}

    # ------------------------------------------------------------------ v0.5 APIs (tastypie)
    def v05_objects(self, resource: str) -> List[Dict[str, Any]]:
        """The objects a v0.5 list serves, from the owners and their kinds (each owner id is its own name)."""
        root = f"/a/{self.domain}/api/v0.5"
        kinds = {o: self.owner_kind(o) for o in sorted(self.owners)}
        if resource == "application":  # v0_4.py ApplicationResource.dehydrate_module: name, case_type, forms
            if not self.case_types:
                return []
            modules = [{"name": {"en": f"{t} list"}, "case_type": t, "case_properties": ["name"],
                        "unique_id": f"module-{t}", "forms": []} for t in sorted(self.case_types)]
            return [{"id": "app-0001", "name": "Course follow-up", "version": 3, "is_released": True,
                     "built_on": None, "build_comment": None, "built_from_app_id": None, "modules": modules,
                     "versions": [], "resource_uri": f"{root}/application/app-0001/"}]
        if resource == "user":  # v0_1.py CommCareUserResource fields
            return [{"id": o, "username": f"{o}@{self.domain}.commcarehq.org", "first_name": o, "last_name": "",
                     "default_phone_number": None, "email": "", "phone_numbers": [],
                     "groups": sorted(g for g, members in self.group_members.items() if o in members),
                     "user_data": {}, "resource_uri": f"{root}/user/{o}/"}
                    for o, kind in kinds.items() if kind == "mobile_worker"]
        if resource == "web-user":  # v0_1.py WebUserResource: the API user is one of them
            users = [(API_USER_ID, self.username)] + [(o, f"{o}@example.org") for o, k in kinds.items()
                                                      if k == "web_user"]
            return [{"id": i, "username": name, "first_name": "", "last_name": "", "default_phone_number": None,
                     "email": name, "phone_numbers": [], "role": "API user", "is_admin": False,
                     "permissions": {p: True for p in sorted(self.permissions)},
                     "resource_uri": f"{root}/web-user/{i}/"} for i, name in users]
        if resource == "group":  # v0_4.py GroupResource: case_sharing says whether it may own cases
            return [{"id": o, "domain": self.domain, "name": o, "users": sorted(self.group_members.get(o, ())),
                     "case_sharing": kind == "group",
                     "reporting": True, "metadata": {}, "resource_uri": f"{root}/group/{o}/"}
                    for o, kind in kinds.items() if kind in ("group", "group_not_sharing")]
        if resource == "location_type":  # locations/resources/v0_5.py LocationTypeResource
            return [{"id": pk, "domain": self.domain, "name": name, "code": name.lower(), "parent_type": None,
                     "administrative": not shares, "shares_cases": shares,
                     "view_descendants": kind in self.view_descendants, "resource_uri": f"{root}/location_type/{pk}/"}
                    for pk, name, shares, kind in ((1, "School", True, "location"),
                                                   (2, "District", False, "location_not_sharing"))]
        if resource == "location":  # LocationResource: location_type is the type's resource URI
            locations = [(o, 1 if kind == "location" else 2) for o, kind in kinds.items()
                         if kind in ("location", "location_not_sharing")]
            return [{"id": n, "name": o, "domain": self.domain, "location_id": o, "site_code": o,
                     "external_id": None, "created_at": "2024-01-01T00:00:00", "last_modified": "2024-01-01T00:00:00",
                     "latitude": None, "longitude": None, "location_data": {},
                     "location_type": f"{root}/location_type/{t}/",
                     "parent": (f"{root}/location/{self.location_parents[o]}/" if o in self.location_parents
                                else None),
                     "resource_uri": f"{root}/location/{o}/"} for n, (o, t) in enumerate(locations, 1)]
        raise KeyError(resource)

    def _v05_list(self, resource: str, path: str, query: Dict[str, List[str]]) -> Dict[str, Any]:
        """tastypie's Paginator: limit (default 20; 0 or above max_limit means max_limit), offset, meta.next."""
        objects = self.v05_objects(resource)
        try:
            limit = int(query.get("limit", ["20"])[0])
            offset = int(query.get("offset", ["0"])[0])
        except ValueError:
            limit, offset = 20, 0
        if limit <= 0 or limit > TASTYPIE_MAX_LIMIT:
            limit = TASTYPIE_MAX_LIMIT
        nxt = f"{path}?{urlencode({'limit': limit, 'offset': offset + limit})}" if offset + limit < len(objects) else None
        prev = f"{path}?{urlencode({'limit': limit, 'offset': max(offset - limit, 0)})}" if offset > 0 else None
        return {"meta": {"limit": limit, "next": nxt, "offset": offset, "previous": prev,
                         "total_count": len(objects)}, "objects": objects[offset:offset + limit]}

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
        v2_list = f"/a/{DEMO_DOMAIN}/api/case/v2/"
        v2_bulk = f"/a/{DEMO_DOMAIN}/api/case/v2/bulk-fetch/"
        v05_prefix = f"/a/{DEMO_DOMAIN}/api/v0.5/"
        # api/resources: RequirePermissionAuthentication(<permission>) per resource (and Access APIs for all)
        v05_permission = {"application": "access_api", "user": "edit_commcare_users", "web-user": "edit_web_users",
                          "group": "edit_commcare_users", "location": "edit_locations",
                          "location_type": "edit_locations"}

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

            def _html(self, status: int, text: str) -> None:
                self._send(status, f"<html><body>{text}</body></html>".encode(), "text/html")

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _fault(self, faults: List[Fault]) -> bool:
                with hq.lock:
                    if not faults:
                        return False
                    status, retry_after = faults.pop(0)
                self._send(status, b"" if status == 429 else b"<html>Server Error</html>", "text/html",
                           {"Retry-After": str(retry_after)} if retry_after is not None else None)
                return True

            def _auth(self, *permissions: str) -> bool:
                """api_auth then require_permission (edit_data unless told): a bad key a bare 401; not a member
                of the project a bare 403 (domain/decorators.py _login_or_challenge); a permission the role
                lacks Django's HTML 403 page (users/decorators.py require_permission_raw: PermissionDenied)."""
                if not hq._authorised(self.headers.get("Authorization")):
                    self._send(401, headers={"WWW-Authenticate": 'ApiKey realm="CommCare HQ"'})
                    return False
                if not hq.member:
                    self._send(403)
                    return False
                if any(p not in hq.permissions for p in permissions or ("edit_data",)):
                    self._html(403, "<h1>403 Forbidden</h1><p>You do not have permission to view this page.</p>")
                    return False
                return True

            def _api_auth(self, permission: str) -> bool:
                """api/resources/auth.py RequirePermissionAuthentication: require_api_permission checks the
                permission and access_api; a refusal is an empty 403 (_auth_test turns PermissionDenied into
                HttpResponseForbidden), a bad key 401, not a member 403 (the login decorator)."""
                if not hq._authorised(self.headers.get("Authorization")):
                    self._send(401, headers={"WWW-Authenticate": 'ApiKey realm="CommCare HQ"'})
                    return False
                if not hq.member or permission not in hq.permissions or "access_api" not in hq.permissions:
                    self._send(403)
                    return False
                return True

            def _front(self, path: str) -> bool:
                """What answers before HQ, when hq.front is set: a login page, or a proxy with no upstream."""
                if hq.front is None or path.startswith("/_admin/"):
                    return False
                hq.requests["front"] += 1
                if hq.front == "proxy":
                    self._html(502, "<h1>502 Bad Gateway</h1><hr><center>nginx</center>")
                elif path == "/accounts/login/":
                    self._html(200, '<title>Log In :: CommCare HQ</title><form method="post">'
                                    '<input name="auth-username"><input name="auth-password" type="password"></form>')
                else:
                    self._send(302, headers={"Location": "/accounts/login/?" + urlencode({"next": path})})
                return True

            def _other_project(self, path: str) -> bool:
                """A URL under /a/<project>/ for a project that does not exist (or the API user is not in): HQ
                authenticates the key (401), then is_member_of fails: a bare 403, the same as not a member."""
                parts = path.split("/")
                if len(parts) < 3 or parts[1] != "a" or parts[2] == hq.domain:
                    return False
                hq.requests["other_project"] += 1
                if not hq._authorised(self.headers.get("Authorization")):
                    self._send(401, headers={"WWW-Authenticate": 'ApiKey realm="CommCare HQ"'})
                else:
                    self._send(403)
                return True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                if self._front(path) or self._other_project(path):
                    return
                if path == "/_admin/faults":  # the emulator's own control, for a benchmark in another process
                    form = parse_qs(body.decode())
                    with hq.lock:
                        hq.after_queue_faults.extend(f if f == "drop" else int(f) for f in form.get("after_queue", []))
                    if form.get("jobs") == ["hold"]:
                        hq.hold_jobs()
                    elif form.get("jobs") == ["release"]:
                        hq.release_jobs()
                    return self._json(200, {"after_queue_faults": hq.after_queue_faults})
                if path == "/_admin/mobile_workers":  # the emulator's own control: workers made after it started
                    added = {w for w in body.decode().split() if w}
                    with hq.lock:
                        hq.owners |= added
                    return self._json(200, {"owners": len(hq.owners)})
                if path == v2_bulk:
                    hq.requests["case_api"] += 1
                    if self._auth("edit_data", "access_api"):
                        if hq.location_restricted:
                            return self._html(403, "Forbidden")
                        self._json(*hq._v2_bulk_fetch(body))
                    return
                # "upload": a POST carrying a form (a workbook); a bare POST (the check's probe) cannot queue a job
                multipart = self.headers.get("Content-Type", "").startswith("multipart/form-data")
                hq.requests["upload" if multipart else "upload_without_file"] += 1
                if path != upload_path:
                    return self._html(404, "Not Found")
                if self._fault(hq.upload_faults) or not self._auth():
                    return
                if hq.location_restricted:
                    # views.py bulk_case_upload_api is not location safe (excel_config & co. are, conditionally),
                    # so locations/middleware.py LocationAccessMiddleware answers location_restricted_response:
                    # hqwebapp no_permissions, the 403 page with LOCATION_ACCESS_DENIED (locations/permissions.py)
                    # [infer: whether the middleware sees an API-key user before the view authenticates it]
                    return self._html(403, LOCATION_ACCESS_DENIED)
                if hq.before_queue is not None and hq.before_queue() is False:
                    return self._drop()
                try:
                    job = hq._check_upload(_multipart(self.headers.get("Content-Type", ""), body))
                except ImporterRawError as exc:
                    return self._json(500, {"code": 500, "message": str(exc)})
                except KeyError:
                    return self._html(500, "Server Error (500)")  # an uncaught exception: Django's page
                with hq.lock:
                    hq.jobs[job.id] = job
                    fault = hq.after_queue_faults.pop(0) if hq.after_queue_faults else None
                if hq.after_queue is not None:
                    hq.after_queue(job)
                hq.importer.submit(job)
                if fault == "drop":
                    return self._drop()
                if isinstance(fault, int):
                    return self._html(fault, "Bad Gateway")
                self._json(200, {"code": 200, "message": "success",
                                 "status_url": f"{hq.base_url}{status_prefix}dl-{job.id}/"})

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                if self._front(split.path) or self._other_project(split.path):
                    return
                if split.path == v2_list:
                    hq.requests["case_api"] += 1
                    # hqcase/views.py case_api: api_auth, require_permission(edit_data), (access_api), then
                    # requires_privilege_with_fallback(API_ACCESS): a plan without it answers 402. location_safe.
                    if self._auth("edit_data", "access_api"):
                        if not hq.api_privilege:
                            return self._html(402, "<h1>Upgrade required</h1><p>API Access is not included in "
                                                   "your project's plan.</p>")
                        self._json(*hq._v2_list(parse_qs(split.query)))
                    return
                if split.path.startswith(v05_prefix):
                    hq.requests["api_v05"] += 1
                    resource = split.path[len(v05_prefix):].strip("/")
                    if resource not in v05_permission:
                        return self._html(404, "Not Found")
                    if self._api_auth(v05_permission[resource]):
                        self._json(200, hq._v05_list(resource, split.path, parse_qs(split.query)))
                    return
                hq.requests["status"] += 1
                if not split.path.startswith(status_prefix):
                    return self._html(404, "Not Found")
                # Edit Data, as every view of tracking/views.py (require_can_edit_data) [infer: the status view itself
                # is not in the stored versions of tracking/views.py; the spec read it, R.4]
                if self._fault(hq.status_faults) or not self._auth():
                    return
                job = hq.jobs.get(split.path[len(status_prefix):].strip("/").removeprefix("dl-"))
                if job is None:  # tracking/views.py: unknown (or not permitted) upload id -> empty 404
                    return self._send(404)
                if hq.on_status is not None:
                    hq.on_status(job)
                state = job.state
                if state == 2 and hq.before_success_status is not None:
                    hq.before_success_status(job)
                if state in (0, 1):
                    return self._json(200, {"state": state, "progress": {"percent": job.progress}, "result": None})
                self._json(200, {"state": state, "progress": {"percent": 0}, "result": job.result})

        return Handler


def _multipart(content_type: str, body: bytes) -> Dict[str, Any]:
    """Form fields; the file as (filename, bytes)."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: Dict[str, Any] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[str(name)] = (filename, data) if filename is not None else data.decode("utf-8")
    return fields
