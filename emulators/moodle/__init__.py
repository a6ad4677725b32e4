"""Moodle web-service emulator: a synthetic school served over real HTTP."""

from .school import School, SchoolSpec
from .server import DEMO_PASSWORD, DEMO_SERVICE, DEMO_TOKEN, DEMO_USERNAME, MoodleEmulator

__all__ = ["School", "SchoolSpec", "MoodleEmulator", "DEMO_TOKEN", "DEMO_USERNAME", "DEMO_PASSWORD", "DEMO_SERVICE"]
