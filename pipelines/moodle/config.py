"""The Moodle source's settings, the dlt way: configspecs dlt fills from .dlt/config.toml, .dlt/secrets.toml and
SOURCES__MOODLE__* variables (keyword arguments win), with the credentials a union: a token, or a username and
password exchanged for one at login/token.php.

Every value is checked in one place, `on_resolved`, which dlt calls once it has read them all (and `build`, for
values given in code): each message names the variable a user sets, e.g. SOURCES__MOODLE__PAGE_SIZE. The HTTP
settings (timeout, retries, plain http://) are declared once for both ends, in moodle_commcare/http_settings.py.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, Union
from urllib.parse import unquote, urlsplit

import dlt
import phonenumbers
from dlt.common.configuration import configspec
from dlt.common.configuration.exceptions import ConfigFieldMissingException, ConfigurationException
from dlt.common.configuration.specs import CredentialsConfiguration
from dlt.common.configuration.specs.base_configuration import NotResolved
from dlt.common.typing import Annotated, TSecretStrValue

from moodle_commcare.http_settings import HttpSettings

from .errors import MoodleConfigError
from .gaps import ACCEPTABLE_GAPS

log = logging.getLogger(__name__)

ENV_PREFIX = "SOURCES__MOODLE__"
CREDENTIALS_PREFIX = f"{ENV_PREFIX}CREDENTIALS__"

DEFAULT_SERVICE = "moodle_mobile_app"
DEFAULT_STUDENT_ROLES = ("student",)
DEFAULT_CONCURRENCY = 4  # Moodle has no rate limiter; 2-4 parallel requests is polite
DEFAULT_PAGE_SIZE = 500  # users per core_enrol_get_enrolled_users page
DEFAULT_USER_BATCH_SIZE = 200  # ids per core_user_get_users_by_field POST, far below max_input_vars=1000
MAX_USER_BATCH_SIZE = 400  # PHP's max_input_vars (1000 by default) cuts a larger request short
# Web-service calls per tool_mobile_call_external_functions request (client.py): three input variables each
# (function, arguments, settingraw), so 100 stay far below max_input_vars; 1 turns batching off.
DEFAULT_CALL_BATCH_SIZE = 100
MAX_CALL_BATCH_SIZE = 300
# Heavier calls go fewer to a batch, so the server's time on one request stays well inside the request timeout
# (a real Moodle 4.5 spent about 4 ms per user on core_enrol_get_enrolled_users and 66 ms on a 50-activity course's
# contents: ../shared/specs/moodle-web-services.md section M). Grade reports (20 ms per user) go one to a request.
ENROLLED_USERS_PER_REQUEST = 2500  # users of enrolment-list pages in one batch: about 10 s of server time
CONTENTS_PER_REQUEST = 10  # course outlines in one batch
# Rows per core_reportbuilder_retrieve_report page (report.py): Moodle sets no maximum, and computes each row's
# progress while it answers, so a page stays well inside the request timeout.
DEFAULT_REPORT_PAGE_SIZE = 1000


def env_name(name: str) -> str:
    """The environment variable of a source setting, e.g. SOURCES__MOODLE__COURSE_IDS."""
    return f"{ENV_PREFIX}{name.upper()}"


@configspec
class MoodleTokenCredentials(CredentialsConfiguration):
    """A web-service token ([sources.moodle.credentials] token, or SOURCES__MOODLE__CREDENTIALS__TOKEN; the token
    alone also as SOURCES__MOODLE__CREDENTIALS)."""

    token: TSecretStrValue = dlt.secrets.value

    def parse_native_representation(self, native_value: Any) -> None:
        if not isinstance(native_value, str):
            raise ValueError("a Moodle token is text")
        self.token = native_value

    def on_resolved(self) -> None:
        self.token = str(self.token).strip()
        if not self.token:
            raise MoodleConfigError(f"{CREDENTIALS_PREFIX}TOKEN is empty: set the web-service token, or remove it "
                                    f"and set {CREDENTIALS_PREFIX}USERNAME and {CREDENTIALS_PREFIX}PASSWORD.")


@configspec
class MoodleLoginCredentials(CredentialsConfiguration):
    """A user's name and password, exchanged for a token of `service` at login/token.php (again when Moodle
    revokes it or it expires)."""

    username: str = dlt.config.value
    password: TSecretStrValue = dlt.secrets.value
    service: str = DEFAULT_SERVICE
    """the external service's short name"""

    def on_resolved(self) -> None:
        self.username = str(self.username).strip()
        self.service = str(self.service or "").strip() or DEFAULT_SERVICE
        for name in ("username", "password"):
            if not getattr(self, name):
                raise MoodleConfigError(f"{CREDENTIALS_PREFIX}{name.upper()} is empty: set it, or use a token "
                                        f"({CREDENTIALS_PREFIX}TOKEN) instead.")


# dlt tries them in this order and takes the first one the configuration fills
MoodleCredentials = Union[MoodleTokenCredentials, MoodleLoginCredentials]


def credentials_from(token: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None,
                     service: Optional[str] = None) -> Optional[MoodleCredentials]:
    """Credentials given as values (keyword arguments), already checked, so dlt takes them as they are instead of
    mixing them with others from the configuration; a token wins. None when nothing is given."""
    credentials: Optional[MoodleCredentials] = None
    if token and token.strip():
        credentials = MoodleTokenCredentials(token=token)
    elif username or password:
        credentials = MoodleLoginCredentials(username=username, password=password,  # type: ignore[arg-type]
                                             service=service or DEFAULT_SERVICE)  # partial: dlt fills the rest
    if credentials is not None and not credentials.is_partial():
        credentials.resolve()
    return credentials


def source_arguments(options: Mapping[str, Any]) -> Dict[str, Any]:
    """Settings given as keyword arguments (run_extract's: `token=`, `max_concurrency=`...) as moodle_source takes
    them: a None left out (that setting keeps its configured value), token / username / password / service given
    as `credentials`."""
    given = {k: v for k, v in options.items() if v is not None}
    login = {k: given.pop(k) for k in ("token", "username", "password", "service") if k in given}
    credentials = credentials_from(**login) if login else former_credentials()
    if credentials is not None:
        given["credentials"] = credentials
    return given


def former_credentials() -> Optional[MoodleCredentials]:
    """Credentials a deployment set under their former names (SOURCES__MOODLE__TOKEN, [sources.moodle] token...),
    read only when none are set under the current ones ([sources.moodle.credentials]): a scheduled run that worked
    before the credentials moved keeps working, and says once what to rename."""
    current: Any = dlt.secrets.get("sources.moodle.credentials")
    if current or any(dlt.secrets.get(f"sources.moodle.credentials.{k}") for k in ("token", "username", "password")):
        return None
    former: Dict[str, str] = {}
    for key in ("token", "username", "password", "service"):
        value: Any = dlt.secrets.get(f"sources.moodle.{key}") or dlt.config.get(f"sources.moodle.{key}")
        if value is not None and str(value).strip():
            former[key] = str(value)
    if not (former.get("token") or former.get("username") or former.get("password")):
        return None
    renamed = ", ".join(f"{env_name(k)} -> {CREDENTIALS_PREFIX}{k.upper()}" for k in sorted(former))
    log.warning("Moodle credentials read under their former names; rename them (%s, or [sources.moodle] to "
                "[sources.moodle.credentials] in .dlt/secrets.toml): a later version will stop reading them.", renamed)
    return credentials_from(**former)


def no_credentials() -> MoodleConfigError:
    return MoodleConfigError(
        f"No Moodle credentials: set {CREDENTIALS_PREFIX}TOKEN (a web-service token), or {CREDENTIALS_PREFIX}USERNAME "
        f"and {CREDENTIALS_PREFIX}PASSWORD (with {CREDENTIALS_PREFIX}SERVICE), in .dlt/secrets.toml "
        "([sources.moodle.credentials]) or the environment.")


@configspec
class MoodleSettings(HttpSettings):
    """Every setting of the Moodle source. dlt fills it (the source's spec) and calls on_resolved, which checks and
    normalises every value; `build` does the same for values given in code."""

    base_url: str = dlt.config.value
    """the site root, https://moodle.school.org or https://school.org/moodle"""
    credentials: MoodleCredentials = dlt.secrets.value
    course_ids: List[int] = dataclasses.field(default_factory=list)
    """only these courses (default: every course the token's user can open)"""
    category_ids: List[int] = dataclasses.field(default_factory=list)
    """only the courses of these categories and their sub-categories"""
    student_roles: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_STUDENT_ROLES))
    """role shortnames that make an enrolment a student's"""
    allow_hidden: List[str] = dataclasses.field(default_factory=list)
    """data the site hides from the token's user that the run may go without (gaps.ACCEPTABLE_GAPS)"""
    due_date_overrides: bool = False
    """read each student's own due date (one call per student and assignment of the courses that changed)"""
    max_concurrency: int = DEFAULT_CONCURRENCY
    page_size: int = DEFAULT_PAGE_SIZE
    user_batch_size: int = DEFAULT_USER_BATCH_SIZE
    call_batch_size: int = DEFAULT_CALL_BATCH_SIZE
    """per-student calls per request when the service has tool_mobile_call_external_functions (1: one per request)"""
    participants_report_id: Optional[int] = None
    """a "Course participants" custom report (Moodle 4.1+) to read progress, completion and last access from, in
    pages, instead of one call per student (report.py; the README says how an admin builds it)"""
    report_page_size: int = DEFAULT_REPORT_PAGE_SIZE
    """rows per page of that report"""
    full_refresh: bool = False
    """ignore the watermarks and cursors this run"""
    refresh_course_ids: List[int] = dataclasses.field(default_factory=list)
    """courses whose grades, outline and submissions this run re-reads though no access moved (a webhook event said
    they changed: a grade written through the web services, a cron recalculation)"""
    refresh_user_ids: List[int] = dataclasses.field(default_factory=list)
    """students whose engagement and completion this run re-reads though their access did not move (an event)"""
    language: Optional[str] = None
    """the language of names typed in several languages (e.g. sw); None: the one Moodle reports for the token's user"""
    default_phone_region: Optional[str] = None
    """country (ISO code, e.g. KE) for phones typed without a country code by users whose profile has no country"""
    http_auth: Annotated[Optional[Tuple[str, str]], NotResolved()] = None
    """HTTP basic auth in front of Moodle, given as https://user:password@host: taken out of base_url so the address
    in messages, the run log and dlt's trace never carries it. Never read from the configuration itself."""

    __env_prefix__: ClassVar[str] = ENV_PREFIX
    __error__: ClassVar[Type[Exception]] = MoodleConfigError
    __config_section__: ClassVar[str] = "[sources.moodle]"

    def on_resolved(self) -> None:
        clean, in_url = split_credentials(str(self.base_url or "").strip())
        self.http_auth = in_url or (tuple(self.http_auth) if self.http_auth else None)  # type: ignore[assignment]
        self.base_url = normalise_base_url(clean, bool(self.allow_insecure_http))
        if self.credentials is None or not self.credentials.is_resolved():
            raise no_credentials()
        self.course_ids = _ids(self.course_ids, "course_ids")
        self.refresh_course_ids = _ids(self.refresh_course_ids, "refresh_course_ids")
        self.refresh_user_ids = _ids(self.refresh_user_ids, "refresh_user_ids")
        self.category_ids = _ids(self.category_ids, "category_ids")
        self.student_roles = [str(r).strip() for r in self.student_roles or () if str(r).strip()] or list(
            DEFAULT_STUDENT_ROLES)
        self.allow_hidden = _gap_names(self.allow_hidden)
        self.language = _language(self.language)
        self.default_phone_region = _region(self.default_phone_region)
        for name in ("max_concurrency", "page_size", "user_batch_size", "call_batch_size", "report_page_size"):
            if int(getattr(self, name)) < 1:
                raise self.invalid(name, "must be a whole number of at least 1")
        if self.user_batch_size > MAX_USER_BATCH_SIZE:
            raise self.invalid("user_batch_size", f"too large: PHP's max_input_vars (1000 by default) would cut the "
                                                  f"request short. Use {MAX_USER_BATCH_SIZE} or less")
        if self.participants_report_id is not None and int(self.participants_report_id) < 1:
            raise self.invalid("participants_report_id", "must be a report's id (a whole number of at least 1), as "
                                                         "Report builder > Custom reports shows it in the report's address")
        if self.call_batch_size > MAX_CALL_BATCH_SIZE:
            raise self.invalid("call_batch_size", f"too large: PHP's max_input_vars (1000 by default) would cut the "
                                                  f"request short. Use {MAX_CALL_BATCH_SIZE} or less")

    @classmethod
    def describe(cls, exc: ConfigurationException) -> Optional[str]:
        if isinstance(exc, ConfigFieldMissingException) and "credentials" in exc.fields:
            return str(no_credentials())
        if isinstance(exc, ConfigFieldMissingException) and "base_url" in exc.fields:
            return _empty_base_url()
        return super().describe(exc)

    @classmethod
    def from_dlt(cls, **options: Any) -> "MoodleSettings":
        """The settings the extract would run with ([sources.moodle] in .dlt/, SOURCES__MOODLE__*, `options` not None
        winning, as run_extract takes them), for what reads the site without extracting it (`check`); a setting dlt
        refuses fails with its name, as MoodleConfigError."""
        from dlt.common.configuration import resolve_configuration

        try:
            return resolve_configuration(cls(), sections=("sources", "moodle"),
                                         explicit_value=source_arguments(options))
        except ConfigurationException as exc:
            described = cls.describe(exc)
            if described is None:
                raise
            raise MoodleConfigError(described) from None

    @classmethod
    def build(cls, base_url: Optional[str] = None, *, token: Optional[str] = None, username: Optional[str] = None,
              password: Optional[str] = None, service: Optional[str] = None, **settings: Any) -> "MoodleSettings":
        """Settings from these values alone (no file or environment is read: tests, scripts), checked as dlt's are.
        A setting given None keeps its default; an unknown one is a TypeError."""
        built = cls(base_url=base_url, credentials=credentials_from(token, username, password, service),  # type: ignore[arg-type]
                    **{k: v for k, v in settings.items() if v is not None})  # on_resolved says what is missing
        return built.resolve()

    @property
    def token(self) -> Optional[str]:
        """The configured token, None with a username and password."""
        return self.credentials.token if isinstance(self.credentials, MoodleTokenCredentials) else None

    @property
    def login(self) -> Optional[MoodleLoginCredentials]:
        """The username, password and service to get a token with, None with a token."""
        return self.credentials if isinstance(self.credentials, MoodleLoginCredentials) else None

    @property
    def secrets(self) -> Tuple[str, ...]:
        """What no message may show: the token, the password, the basic-auth password."""
        login = self.login
        return tuple(s for s in (self.token, login and login.password, self.http_auth and self.http_auth[1]) if s)


def split_credentials(url: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """`https://user:pw@host/path` -> (`https://host/path`, (user, pw)); a URL without credentials unchanged."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    clean = f"{parts.scheme}://{netloc}{parts.path}"
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))


def _empty_base_url() -> str:
    return f"{env_name('base_url')} is empty: set it to your Moodle site's address, e.g. https://moodle.example.org"


def normalise_base_url(base_url: Optional[str], allow_insecure_http: bool) -> str:
    """The site root, e.g. https://moodle.school.org or https://school.org/moodle, without a slash."""
    setting = env_name("base_url")
    url = (base_url or "").strip()
    if not url:
        raise MoodleConfigError(_empty_base_url())
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MoodleConfigError(
            f"{setting}={url!r} is not a web address: it must start with https:// (e.g. https://moodle.example.org)."
        )
    if parts.query or parts.fragment:
        raise MoodleConfigError(f"{setting} must be the site address only, without '?' or '#' parts.")
    path = parts.path.rstrip("/")
    for suffix in ("/webservice/rest/server.php", "/webservice/rest", "/webservice", "/login/token.php", "/login"):
        if path.endswith(suffix):
            raise MoodleConfigError(
                f"{setting} ends with {suffix!r}: give the site root instead "
                f"({parts.scheme}://{parts.netloc}{path[: -len(suffix)]}); the connector adds the web-service path."
            )
    if parts.scheme == "http" and not allow_insecure_http:
        raise MoodleConfigError(
            f"{setting} uses plain http://, which would send the token in clear text. Use https://, or set "
            f"{env_name('allow_insecure_http')}=true if this is a test server you trust."
        )
    return f"{parts.scheme}://{parts.netloc}{path}"


def _language(value: object) -> Optional[str]:
    """A Moodle language pack code (en, sw, pt_br; "pt-BR" read as pt_br), or None when blank."""
    code = str(value or "").strip().lower().replace("-", "_")
    if not code:
        return None
    if not re.fullmatch(r"[a-z]{2,3}(_[a-z0-9]+)*", code):
        raise MoodleConfigError(f"{env_name('language')}={value!r} is not a Moodle language code: use one such as en, "
                                "sw or pt_br (Site administration > Language > Language packs lists them).")
    return code


def _region(value: object) -> Optional[str]:
    """A country code libphonenumber knows (KE, UG, IN), or None when blank."""
    code = str(value or "").strip().upper()
    if not code:
        return None
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise MoodleConfigError(f"{env_name('default_phone_region')}={value!r} is not a country code: use the "
                                "two-letter ISO code of the country whose numbers students type without +, e.g. KE or UG.")
    return code


def _gap_names(values: Optional[List[str]]) -> List[str]:
    names = sorted({str(v).strip() for v in values or () if str(v).strip()})
    unknown = [n for n in names if n not in ACCEPTABLE_GAPS]
    if unknown:
        raise MoodleConfigError(
            f"{env_name('allow_hidden')} names {unknown}: the gaps a run can accept are {', '.join(ACCEPTABLE_GAPS)}."
        )
    return names


def _ids(values: Optional[List[Any]], name: str) -> List[int]:
    """Moodle ids, sorted, each once."""
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError(values)
        return sorted({int(v) for v in values or ()})
    except (TypeError, ValueError):
        raise MoodleConfigError(f"{env_name(name)} must be a list of numeric Moodle ids, e.g. [12, 15].") from None
