"""Reverse-ETL of the case marts to CommCare HQ's bulk case import, sending only what changed."""

from .config import CommCareSettings
from .errors import CommCareError
from .export import ExportReport, run_export

__all__ = ["CommCareSettings", "CommCareError", "ExportReport", "run_export"]
