"""The HTTP settings both ends share, declared once: a dlt configspec the Moodle source's settings and the CommCare
export's settings derive from, each with its own defaults, environment prefix and error type.

Every check lives in `on_resolved`, which dlt calls once it has read a configuration, and which also runs when
an end's settings are built directly with every required value (tests, the benchmark): a wrong value fails with
the name a user sets it by (`SOURCES__MOODLE__REQUEST_TIMEOUT=0.0: ...`, `COMMCARE__MAX_ATTEMPTS=0: ...`).
`describe` says the same of what dlt itself refuses while reading: a value it cannot type, a secret in
config.toml. dlt does not report keys nobody reads, so a misspelt name is not caught: the setting keeps its default.

Part of the core: it imports nothing of this project.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar, Optional, Type
from urllib.parse import urlsplit

from dlt.common.configuration import configspec
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigProviderException,
    ConfigurationException,
    ConfigValueCannotBeCoercedException,
    ValueNotSecretException,
)
from dlt.common.configuration.specs import BaseConfiguration
from dlt.sources.helpers.requests import Client


@configspec
class HttpSettings(BaseConfiguration):
    """Timeout, retries with exponential backoff (Retry-After honoured, capped by `max_retry_delay`), and whether
    plain http:// may carry the credentials. Subclasses set `__env_prefix__` and `__error__`."""

    request_timeout: float = 60.0
    """seconds one request may take"""
    max_attempts: int = 5
    """attempts per request, the first included"""
    backoff_factor: float = 1.0
    """seconds before the first retry, doubling with each"""
    max_retry_delay: float = 60.0
    """longest wait between two attempts, a server's Retry-After included"""
    allow_insecure_http: bool = False
    """let an http:// address carry the credentials in clear text (a test server)"""

    __env_prefix__: ClassVar[str] = ""
    """what the environment variables of these settings start with, e.g. COMMCARE__"""
    __error__: ClassVar[Type[Exception]] = ValueError
    """the end's own error for a setting that is wrong"""
    __config_section__: ClassVar[str] = ""
    """where the settings sit in .dlt/*.toml, e.g. [commcare]"""

    def __post_init__(self) -> None:
        """Settings built directly with every required value are checked at once; dlt builds an empty instance,
        fills it, then calls on_resolved."""
        if not self.is_partial():
            self.call_method_in_mro("on_resolved")

    def on_resolved(self) -> None:
        for name in ("request_timeout",):
            if not float(getattr(self, name)) > 0:
                raise self.invalid(name, "must be a number of seconds above 0")
        for name in ("backoff_factor", "max_retry_delay"):
            if float(getattr(self, name)) < 0:
                raise self.invalid(name, "must be a number of seconds, 0 or more")
        if int(self.max_attempts) < 1:
            raise self.invalid("max_attempts", "must be a whole number of at least 1")

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable a user sets this field by."""
        return f"{cls.__env_prefix__}{field.upper()}"

    @classmethod
    def error(cls, message: str) -> Exception:
        return cls.__error__(message)

    def invalid(self, field: str, rule: str) -> Exception:
        """`NAME=value: rule.`, as the end's error."""
        return self.error(f"{self.env_name(field)}={getattr(self, field)!r}: {rule}.")

    @classmethod
    def describe(cls, exc: ConfigurationException) -> Optional[str]:
        """One line naming the setting for what dlt refused while reading these settings; None for other errors."""
        if isinstance(exc, ConfigValueCannotBeCoercedException):
            kind = getattr(exc.hint, "__name__", str(exc.hint))
            example = {"list": ": write it as a list, e.g. [12, 15] or [\"phones\"]",
                       "bool": ": write true or false"}.get(kind, "")
            return (f"{cls.env_name(exc.field_name)}={exc.field_value!r} is not a valid {kind}{example}. Fix it in "
                    ".dlt/config.toml or the environment.")
        if isinstance(exc, ValueNotSecretException):
            return (f"{exc.key.replace('.', '__').upper()} is a secret: move it from {exc.provider_name} to "
                    ".dlt/secrets.toml or the environment.")
        if isinstance(exc, ConfigProviderException):  # a TOML typo: never read as "unset", which means the defaults
            detail = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
            return (f"The {cls.__config_section__} settings could not be read ({detail}). Fix .dlt/config.toml, "
                    f".dlt/secrets.toml or the {cls.__env_prefix__}* environment variables.")
        if isinstance(exc, ConfigFieldMissingException):
            return f"{', '.join(cls.env_name(f) for f in exc.fields)} not set: set it in .dlt/ or the environment."
        return None

    def retrying_client(self, **options: Any) -> Client:
        """dlt's requests client with these settings: retries on connection errors, timeouts, 429 and 5xx (and
        on what `retry_condition` adds), per-thread sessions. `options` go to dlt's Client as they are."""
        return Client(
            request_timeout=self.request_timeout,
            request_max_attempts=self.max_attempts,
            request_backoff_factor=self.backoff_factor,
            request_max_retry_delay=self.max_retry_delay,
            respect_retry_after_header=True,
            **options,
        )


def is_loopback(url: str) -> bool:
    """Whether `url` names this very machine (127.0.0.0/8, ::1, localhost): plain http there carries nothing over a
    network (a test server, an SSH tunnel), so the checks do not warn about it."""
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
