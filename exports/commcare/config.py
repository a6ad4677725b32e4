"""Typed settings of the CommCare export, from dlt's config and secrets ([commcare] / COMMCARE__*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from .errors import CommCareConfigError

DEFAULT_CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class CommCareSettings:
    """Every export setting, from [commcare] in .dlt/ or COMMCARE__* variables; checked on creation."""
    base_url: str = "https://www.commcarehq.org"
    project: str = ""
    username: str = ""
    api_key: str = field(default="", repr=False)
    out_dir: Path = Path("exports/out")
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    poll_interval: float = 2.0
    poll_timeout: float = 1800.0
    # how long a job whose upload answer was lost may still be running before its rows are looked up in
    # CommCare: beyond the hour the importer keeps an upload's file (a job not started by then fails)
    unknown_job_grace: float = 7200.0
    # sync safety thresholds: an export that would close, or update, more than this share of the open cases
    # CommCare holds stops before sending anything (a half-loaded extract, a role that lost a capability)
    max_close_share: float = 0.10
    max_update_share: float = 0.50
    request_timeout: float = 120.0
    max_attempts: int = 5
    backoff_factor: float = 1.0
    max_retry_delay: float = 120.0
    allow_insecure_http: bool = False

    @classmethod
    def from_dlt(cls, **overrides: Any) -> "CommCareSettings":
        """Read [commcare] from .dlt/config.toml and .dlt/secrets.toml (or COMMCARE__* env vars)."""
        import dlt

        values: dict = {}
        for name in cls.__dataclass_fields__:
            value: Any
            try:
                value = dlt.config.get(f"commcare.{name}") if name != "api_key" else dlt.secrets.get("commcare.api_key")
            except Exception as exc:  # noqa: BLE001 - dlt's provider errors: a TOML typo, an unreadable file
                # never taken as "unset": the defaults (https://www.commcarehq.org) would get the credentials
                detail = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
                raise CommCareConfigError(
                    f"The [commcare] settings could not be read ({detail}). Fix .dlt/config.toml, .dlt/secrets.toml "
                    "or the COMMCARE__* environment variables; nothing was sent.") from None
            if value is not None:
                values[name] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{name: _coerce(name, hints[name], value) for name, value in values.items()
                      for hints in [get_type_hints(cls)]})

    def __post_init__(self) -> None:
        """Numbers in range, each error naming its setting: a chunk of 0 rows would send nothing, silently."""
        def bad(name: str, rule: str) -> CommCareConfigError:
            return CommCareConfigError(f"COMMCARE__{name.upper()}={getattr(self, name)!r}: {rule}.")

        if not 1 <= int(self.chunk_rows) <= 1_000_000:
            raise bad("chunk_rows", "rows per workbook must be between 1 and 1,000,000")
        for name in ("poll_interval", "request_timeout"):
            if not float(getattr(self, name)) > 0:
                raise bad(name, "must be a number of seconds above 0")
        for name in ("poll_timeout", "unknown_job_grace", "backoff_factor", "max_retry_delay"):
            if float(getattr(self, name)) < 0:
                raise bad(name, "must be 0 or more")
        if int(self.max_attempts) < 1:
            raise bad("max_attempts", "must be at least 1")
        for name in ("max_close_share", "max_update_share"):
            if not 0 < float(getattr(self, name)) <= 1:
                raise bad(name, "must be a share above 0 and at most 1 (0.1 = 10%)")
        if Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            raise bad("out_dir", "names a file; give a folder for the workbooks (--out)")

    def require_upload(self) -> None:
        """Uploading needs the project, the credentials and a safe URL; say which setting is missing."""
        for name, env in (("project", "COMMCARE__PROJECT"), ("username", "COMMCARE__USERNAME"),
                          ("api_key", "COMMCARE__API_KEY")):
            if not str(getattr(self, name) or "").strip():
                raise CommCareConfigError(f"{env} is not set: uploading to CommCare needs it (.dlt/secrets.toml "
                                          "[commcare] or the environment).")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommCareConfigError(f"COMMCARE__BASE_URL={self.base_url!r} is not a web address, e.g. https://www.commcarehq.org")
        if parts.scheme == "http" and not self.allow_insecure_http:
            raise CommCareConfigError(
                "COMMCARE__BASE_URL uses plain http://, which would send the API key in clear text. Use https://, "
                "or set COMMCARE__ALLOW_INSECURE_HTTP=true for a test server you trust.")

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Env vars and TOML arrive as text or other types; the setting's own type decides."""
    try:
        if kind is bool and isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if kind in (int, float):
            return kind(value)
        if kind is Path:
            return Path(value)
        return str(value) if kind is str else value
    except (TypeError, ValueError):
        raise CommCareConfigError(f"COMMCARE__{name.upper()}={value!r} is not a valid {kind.__name__}.") from None
