"""The CommCare export's settings, the dlt way: a configspec dlt fills from [commcare] in .dlt/config.toml and
.dlt/secrets.toml, or COMMCARE__* variables, with the HTTP settings (timeout, retries, plain http://) declared once
for both ends (moodle_commcare/http_settings.py). Every value is checked in `on_resolved`, naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Type
from urllib.parse import urlsplit

from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.typing import TSecretStrValue

from moodle_commcare.http_settings import HttpSettings

from .errors import CommCareConfigError

DEFAULT_CHUNK_ROWS = 10_000


@configspec
class CommCareSettings(HttpSettings):
    """Every export setting, from [commcare] in .dlt/ or COMMCARE__* variables (`from_dlt`), or given in code;
    checked either way."""

    base_url: str = "https://www.commcarehq.org"
    project: str = ""
    username: str = ""
    api_key: TSecretStrValue = ""
    out_dir: Any = Path("exports/out")
    """the folder of the workbooks, a Path once checked (Any: dlt has no path type, it reads text)"""
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    poll_interval: float = 2.0
    poll_timeout: float = 1800.0
    unknown_job_grace: float = 7200.0
    """how long a job whose upload answer was lost may still be running before its rows are looked up in
    CommCare: beyond the hour the importer keeps an upload's file (a job not started by then fails)"""
    max_close_share: float = 0.10
    """sync safety thresholds: an export that would close, or update, more than this share of the open cases
    CommCare holds stops before sending anything (a half-loaded extract, a role that lost a capability)"""
    max_update_share: float = 0.50
    request_timeout: float = 120.0
    max_retry_delay: float = 120.0

    __section__: ClassVar[str] = "commcare"
    __env_prefix__: ClassVar[str] = "COMMCARE__"
    __error__: ClassVar[Type[Exception]] = CommCareConfigError
    __config_section__: ClassVar[str] = "[commcare]"

    @classmethod
    def from_dlt(cls, **overrides: Any) -> "CommCareSettings":
        """Read [commcare] from .dlt/config.toml and .dlt/secrets.toml (or COMMCARE__* env vars); `overrides` not
        None win. A file dlt cannot read stops here: never taken as "unset", where the defaults
        (https://www.commcarehq.org) would get the credentials."""
        try:
            return resolve_configuration(cls(), explicit_value={k: v for k, v in overrides.items() if v is not None})
        except ConfigurationException as exc:
            described = cls.describe(exc)
            if described is None:
                raise
            raise cls.error(f"{described} Nothing was sent.") from None

    def on_resolved(self) -> None:
        """Numbers in range, each error naming its setting: a chunk of 0 rows would send nothing, silently."""
        self.out_dir = Path(self.out_dir)
        if not 1 <= int(self.chunk_rows) <= 1_000_000:
            raise self.invalid("chunk_rows", "rows per workbook must be between 1 and 1,000,000")
        if not float(self.poll_interval) > 0:
            raise self.invalid("poll_interval", "must be a number of seconds above 0")
        for name in ("poll_timeout", "unknown_job_grace"):
            if float(getattr(self, name)) < 0:
                raise self.invalid(name, "must be a number of seconds, 0 or more")
        for name in ("max_close_share", "max_update_share"):
            if not 0 < float(getattr(self, name)) <= 1:
                raise self.invalid(name, "must be a share above 0 and at most 1 (0.1 = 10%)")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise self.invalid("out_dir", "names a file; give a folder for the workbooks (--out)")

    def require_upload(self) -> None:
        """Uploading needs the project, the credentials and a safe URL; say which setting is missing."""
        for name in ("project", "username", "api_key"):
            if not str(getattr(self, name) or "").strip():
                raise self.error(f"{self.env_name(name)} is not set: uploading to CommCare needs it (.dlt/secrets.toml "
                                 "[commcare] or the environment).")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.error(f"COMMCARE__BASE_URL={self.base_url!r} is not a web address, e.g. https://www.commcarehq.org")
        if parts.scheme == "http" and not self.allow_insecure_http:
            raise self.error(
                "COMMCARE__BASE_URL uses plain http://, which would send the API key in clear text. Use https://, "
                "or set COMMCARE__ALLOW_INSECURE_HTTP=true for a test server you trust.")

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")
