"""Telling someone about an unattended run: a command to run, or a URL to POST to, with the run's summary.

A scheduler sees an exit code; a person needs to hear of a run that needs them. The summary (sync.SyncReport
.summary) holds counts, the stages' outcomes and the error line, all already scrubbed of tokens and keys, never a
setting. Sending it never changes the run's outcome: a notification that fails is logged and said, no more.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Any, Dict, List

import requests

from .failures import SUCCESS

log = logging.getLogger(__name__)

COMMAND_ENV = "MOODLE_COMMCARE_NOTIFY_COMMAND"  # a shell command; the summary JSON on its standard input
URL_ENV = "MOODLE_COMMCARE_NOTIFY_URL"  # an https URL; the summary JSON POSTed to it
WHEN_ENV = "MOODLE_COMMCARE_NOTIFY_ON"  # failure (the default), warnings (failures and warnings), always
WHEN = ("failure", "warnings", "always")
TIMEOUT_SECONDS = 30


def due(exit_code: int, when: str) -> bool:
    if when == "always":
        return True
    if when == "warnings":
        return exit_code != 0
    return exit_code not in SUCCESS


def notify(summary: Dict[str, Any], exit_code: int) -> List[str]:
    """Send the configured notifications if this run's outcome calls for one; what could not be sent, as lines to
    show (never with the URL, which may itself be a secret, as a chat webhook's is)."""
    command, url = os.environ.get(COMMAND_ENV, "").strip(), os.environ.get(URL_ENV, "").strip()
    when = os.environ.get(WHEN_ENV, "failure").strip().lower() or "failure"
    if when not in WHEN:
        return [f"{WHEN_ENV}={when!r} is not one of {', '.join(WHEN)}: no notification sent."]
    if not (command or url) or not due(exit_code, when):
        return []
    body = json.dumps({**summary, "exit_code": int(exit_code)}, default=str)
    problems: List[str] = []
    if command:
        try:
            done = subprocess.run(command, shell=True, input=body, text=True, timeout=TIMEOUT_SECONDS,
                                  capture_output=True, env={**os.environ, "MOODLE_COMMCARE_EXIT_CODE": str(exit_code)})
            if done.returncode != 0:
                problems.append(f"The notification command ({COMMAND_ENV}) ended with exit code {done.returncode}.")
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"The notification command ({COMMAND_ENV}) could not run: {type(exc).__name__}.")
    if url:
        try:
            answer = requests.post(url, data=body, headers={"Content-Type": "application/json"},
                                   timeout=TIMEOUT_SECONDS)
            if answer.status_code >= 300:
                problems.append(f"The notification URL ({URL_ENV}) answered HTTP {answer.status_code}.")
        except requests.RequestException as exc:
            problems.append(f"The notification URL ({URL_ENV}) could not be reached: {type(exc).__name__}.")
    for problem in problems:
        log.warning(problem)
    return problems
