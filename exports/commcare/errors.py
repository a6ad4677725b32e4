"""Errors of the CommCare export, each saying what to do."""


class CommCareError(Exception):
    """Base of the export's deliberate errors."""


class CommCareConfigError(CommCareError):
    """A setting is missing or malformed; nothing was sent."""


class CommCareAuthError(CommCareError):
    """CommCare refused the credentials (401) or the permission (403): retrying cannot help."""


class CommCareUploadRejected(CommCareError):
    """CommCare refused the file before queueing it (HTTP 500 with a message)."""


class CommCareJobFailed(CommCareError):
    """The import job failed as a whole (state 3) or never finished."""


class CommCareUnavailable(CommCareError):
    """CommCare could not be reached or kept failing (5xx, 429) after retries."""


class CommCareUploadUncertain(CommCareError):
    """An upload may or may not have queued a job (timeout, dropped connection, gateway error after sending).

    Its rows are withheld until the job can be ruled out or found: see journal.py.
    """


class CommCareMassChange(CommCareError):
    """The export would close or update more of the open cases than the safety thresholds allow; nothing sent."""


class CommCareNotReady(CommCareError):
    """The warehouse has no case tables to export yet (no extract, or no transform since)."""
