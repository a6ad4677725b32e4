"""Typed Moodle errors.

Moodle answers almost every failure with HTTP 200 and a JSON body, so the only way a scheduled job can
decide between "retry later", "fix the configuration" and "fix the Moodle service" is by errorcode.
Each class below says which of those it is, and every message ends with what the user should do.
"""

from __future__ import annotations

from typing import Optional


class MoodleError(Exception):
    """Base of every error the Moodle source raises on purpose."""

    retryable: bool = False


class MoodleConfigError(MoodleError):
    """The connector's own settings are missing or malformed; nothing was sent to Moodle."""


class MoodleTransportError(MoodleError):
    """Moodle could not be reached or answered with something that is not a web-service response."""

    retryable = True


class MoodleUnavailableError(MoodleTransportError):
    """Moodle is down, overloaded or in maintenance: try again later."""


class MoodleMaintenanceError(MoodleUnavailableError):
    """The site is in maintenance mode."""


class MoodleInvalidResponseError(MoodleTransportError):
    """The body was not the JSON a web-service function returns (HTML page, truncated JSON...)."""


class MoodleLoginError(MoodleError):
    """login/token.php refused the username, password or service."""

    def __init__(self, message: str, errorcode: Optional[str] = None) -> None:
        super().__init__(message)
        self.errorcode = errorcode


class MoodleAPIError(MoodleError):
    """Moodle ran the function and answered with an `exception` body."""

    def __init__(self, message: str, *, function: str, errorcode: str, exception: str = "") -> None:
        super().__init__(message)
        self.function = function
        self.errorcode = errorcode
        self.exception = exception


class MoodleInvalidTokenError(MoodleAPIError):
    """The token is unknown, expired or revoked."""


class MoodleAccessError(MoodleAPIError):
    """The token's user lacks a capability, or the token is restricted (IP, validity, suspended user).
    `capability`: the capability the function needs, when Moodle refused for lack of one."""

    capability: Optional[str] = None


class MoodleDataGapError(MoodleError):
    """Moodle answered, but left out data the cases need (hidden fields, invisible users, one group only).

    Raised instead of loading tables that would look complete; `fix` names the capability or site setting.
    """

    def __init__(self, message: str, *, code: str, fix: str) -> None:
        super().__init__(message)
        self.code = code
        self.fix = fix


class MoodleFunctionNotAvailableError(MoodleAPIError):
    """The web service behind the token does not include a function the connector needs."""


class MoodleInvalidParameterError(MoodleAPIError):
    """Moodle rejected a parameter: usually a bug in the request or an option the site does not know."""


class MoodleRecordNotFoundError(MoodleAPIError):
    """The thing asked for (usually a course) does not exist (any more)."""


class MoodleRetryableAPIError(MoodleAPIError):
    """A transient server-side error such as `ex_unabletolock`."""

    retryable = True
