"""CommCare HQ bulk case import emulator."""

from .importer import Job
from .server import DEMO_API_KEY, DEMO_DOMAIN, DEMO_USERNAME, CommCareEmulator
from .store import Case

__all__ = ["CommCareEmulator", "Case", "Job", "DEMO_DOMAIN", "DEMO_USERNAME", "DEMO_API_KEY"]
