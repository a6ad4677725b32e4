"""Running the `moodle-commcare` command as a scheduler does, for the tests of what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, List

from emulators.moodle import MoodleEmulator
from moodle_commcare.failures import ExitCode

from .conftest import Warehouse


def cli(*args: str, env: Dict[str, str], wait: bool = True, **kwargs: Any) -> Any:
    command = [sys.executable, "-m", "moodle_commcare.cli", *args]
    full_env = {**without_dlt_log_level(), "COLUMNS": "200", **env}
    if not wait:
        return subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                **kwargs)
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=300, **kwargs)


def without_dlt_log_level() -> Dict[str, str]:
    """The environment as a scheduler's is: the tests' RUNTIME__LOG_LEVEL (conftest) is not the user's."""
    return {k: v for k, v in os.environ.items() if k != "RUNTIME__LOG_LEVEL"}


def moodle_env(moodle: MoodleEmulator, **extra: str) -> Dict[str, str]:
    return {"SOURCES__MOODLE__BASE_URL": moodle.base_url, "SOURCES__MOODLE__CREDENTIALS__TOKEN": moodle.token,
            "SOURCES__MOODLE__ALLOW_INSECURE_HTTP": "true", "SOURCES__MOODLE__MAX_ATTEMPTS": "2",
            "SOURCES__MOODLE__BACKOFF_FACTOR": "0.01", **extra}


def one_line_failure(run: Any, code: ExitCode, words: str) -> str:
    out = run.stdout + run.stderr
    assert run.returncode == code, f"exit {run.returncode}, wanted {code.name} ({int(code)}):\n{out[-3000:]}"
    assert words in " ".join(out.split()), out[-3000:]
    assert "Traceback" not in out and "╭" not in out, f"no stack trace:\n{out[-3000:]}"
    return out


def snapshot_of(warehouse: Warehouse) -> List[Any]:
    """Every raw table's rows (sorted): what a failed run must leave exactly as it was."""
    return [(t, sorted(map(repr, warehouse.rows(f'select * from "{t}"')))) for t in warehouse.tables()]
