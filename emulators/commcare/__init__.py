"""CommCare HQ bulk case import emulator."""

from .server import DEMO_API_KEY, DEMO_DOMAIN, DEMO_USERNAME, Case, CommCareEmulator

__all__ = ["CommCareEmulator", "Case", "DEMO_DOMAIN", "DEMO_USERNAME", "DEMO_API_KEY"]
