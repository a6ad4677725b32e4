"""Typed, validated settings of the Moodle source.

dlt resolves the raw values (config.toml, secrets.toml, SOURCES__MOODLE__* env vars); this module turns
them into one object and rejects what would fail later with a less helpful message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

import phonenumbers

from . import settings
from .errors import MoodleConfigError


def _env(name: str) -> str:
    return f"SOURCES__MOODLE__{name.upper()}"


@dataclass(frozen=True)
class MoodleSettings:
    """Every Moodle setting, validated once (build) with the name a user sets it by in each message."""
    base_url: str
    token: Optional[str] = field(default=None, repr=False)
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    service: str = "moodle_mobile_app"
    course_ids: Tuple[int, ...] = ()
    category_ids: Tuple[int, ...] = ()
    student_roles: Tuple[str, ...] = settings.DEFAULT_STUDENT_ROLES
    max_concurrency: int = settings.DEFAULT_CONCURRENCY
    page_size: int = settings.DEFAULT_PAGE_SIZE
    user_batch_size: int = settings.DEFAULT_USER_BATCH_SIZE
    request_timeout: float = settings.DEFAULT_TIMEOUT_SECONDS
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS
    backoff_factor: float = settings.DEFAULT_BACKOFF_FACTOR
    max_retry_delay: float = settings.DEFAULT_MAX_RETRY_DELAY
    allow_insecure_http: bool = False
    full_refresh: bool = False
    allow_hidden: Tuple[str, ...] = ()  # gaps to accept: settings.ACCEPTABLE_GAPS
    due_date_overrides: bool = False  # read per-student overrides (one call per student and assignment)
    # names typed in several languages (multilang blocks) are read in this one (e.g. sw); None: the language
    # Moodle reports for the token's user, normally the site's default
    language: Optional[str] = None
    # phones typed without a country code are read in the user's country, else in this one (ISO code, e.g. KE)
    default_phone_region: Optional[str] = None
    # HTTP basic auth in front of Moodle, given as https://user:password@host: taken out of base_url, so the
    # address printed in messages and stored in the run log never carries it
    http_auth: Optional[Tuple[str, str]] = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        base_url: Optional[str],
        token: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        course_ids: Optional[Sequence[int]] = None,
        category_ids: Optional[Sequence[int]] = None,
        student_roles: Optional[Sequence[str]] = None,
        allow_hidden: Optional[Sequence[str]] = None,
        **options: object,
    ) -> "MoodleSettings":
        """Normalise and validate; raises MoodleConfigError naming the setting to fix."""
        clean, in_url = split_credentials((base_url or "").strip())
        passed = options.pop("http_auth", None)  # run_extract takes it out of the URL before dlt sees it
        http_auth = in_url or passed
        url = normalise_base_url(clean, bool(options.get("allow_insecure_http")))
        token = (token or "").strip() or None
        username = (username or "").strip() or None
        if not token and not (username and password):
            raise MoodleConfigError(
                f"No Moodle credentials: set {_env('token')} (a web-service token), or "
                f"{_env('username')} and {_env('password')} (with {_env('service')}) in .dlt/secrets.toml "
                "or the environment."
            )
        for name, check in (("language", _language), ("default_phone_region", _region)):
            if options.get(name) is not None:
                options[name] = check(options[name])
        built = cls(
            base_url=url,
            token=token,
            username=username,
            password=password or None,
            course_ids=_int_tuple(course_ids, "course_ids"),
            category_ids=_int_tuple(category_ids, "category_ids"),
            student_roles=tuple(student_roles or settings.DEFAULT_STUDENT_ROLES),
            allow_hidden=_gap_names(allow_hidden),
            http_auth=tuple(http_auth) if http_auth else None,  # type: ignore[arg-type]
            **{k: v for k, v in options.items() if v is not None},  # type: ignore[arg-type]
        )
        for name in ("max_concurrency", "page_size", "user_batch_size", "max_attempts"):
            if int(getattr(built, name)) < 1:
                raise MoodleConfigError(f"{_env(name)} must be a whole number of at least 1.")
        for name in ("request_timeout", "max_retry_delay"):
            if not float(getattr(built, name)) > 0:
                raise MoodleConfigError(f"{_env(name)} must be a number of seconds above 0 (it is {getattr(built, name)!r}).")
        if float(built.backoff_factor) < 0:
            raise MoodleConfigError(f"{_env('backoff_factor')} must be 0 or more (seconds before the first retry).")
        if built.user_batch_size > 400:
            raise MoodleConfigError(
                f"{_env('user_batch_size')}={built.user_batch_size} is too large: PHP's max_input_vars "
                "(1000 by default) would cut the request short. Use 400 or less."
            )
        return built

    @property
    def secrets(self) -> Tuple[str, ...]:
        return tuple(s for s in (self.token, self.password, self.http_auth and self.http_auth[1]) if s)


def split_credentials(url: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """`https://user:pw@host/path` -> (`https://host/path`, (user, pw)); a URL without credentials unchanged."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    clean = f"{parts.scheme}://{netloc}{parts.path}"
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))


def normalise_base_url(base_url: Optional[str], allow_insecure_http: bool) -> str:
    """The site root, e.g. https://moodle.school.org or https://school.org/moodle, without a slash."""
    setting = _env("base_url")
    url = (base_url or "").strip()
    if not url:
        raise MoodleConfigError(f"{setting} is empty: set it to your Moodle site's address, e.g. https://moodle.example.org")
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
            f"{_env('allow_insecure_http')}=true if this is a test server you trust."
        )
    return f"{parts.scheme}://{parts.netloc}{path}"


def _language(value: object) -> Optional[str]:
    """A Moodle language pack code (en, sw, pt_br; "pt-BR" read as pt_br), or None when blank."""
    code = str(value).strip().lower().replace("-", "_")
    if not code:
        return None
    if not re.fullmatch(r"[a-z]{2,3}(_[a-z0-9]+)*", code):
        raise MoodleConfigError(f"{_env('language')}={value!r} is not a Moodle language code: use one such as en, "
                                "sw or pt_br (Site administration > Language > Language packs lists them).")
    return code


def _region(value: object) -> Optional[str]:
    """A country code libphonenumber knows (KE, UG, IN), or None when blank."""
    code = str(value).strip().upper()
    if not code:
        return None
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise MoodleConfigError(f"{_env('default_phone_region')}={value!r} is not a country code: use the two-letter "
                                "ISO code of the country whose numbers students type without +, e.g. KE or UG.")
    return code


def _gap_names(values: Optional[Sequence[str]]) -> Tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [v.strip() for v in values.replace(";", ",").split(",")]
    names = tuple(sorted({str(v).strip() for v in values if str(v).strip()}))
    unknown = [n for n in names if n not in settings.ACCEPTABLE_GAPS]
    if unknown:
        raise MoodleConfigError(
            f"{_env('allow_hidden')} names {unknown}: the gaps a run can accept are "
            f"{', '.join(settings.ACCEPTABLE_GAPS)}."
        )
    return names


def _int_tuple(values: Optional[Sequence[Any] | str | int], name: str) -> Tuple[int, ...]:
    """Ids from a list, or from text as an environment variable gives it ("12,15")."""
    if values is None:
        return ()
    if isinstance(values, (str, int)):
        values = [v for v in str(values).replace(";", ",").split(",") if v.strip()]
    try:
        return tuple(sorted({int(v) for v in values}))
    except (TypeError, ValueError):
        raise MoodleConfigError(f"{_env(name)} must be a list of numeric Moodle ids, e.g. [12, 15].") from None
