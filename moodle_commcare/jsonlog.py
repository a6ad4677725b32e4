"""A run's log as JSON lines in a rotating file, besides the console: what a log shipper or `jq` reads later.

Only this project's own loggers are written (moodle_commcare, pipelines, exports): their messages are built to
carry no token, key or password (the clients redact them), whereas a library's debug lines could quote a request.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Iterator

from pythonjsonlogger.json import JsonFormatter

LOG_FILE_ENV = "MOODLE_COMMCARE_LOG_FILE"
OURS = ("moodle_commcare", "pipelines", "exports")
MAX_BYTES = 10 * 1024 * 1024  # per file; five old files kept beside it
BACKUPS = 5


def log_file(warehouse_path: Path) -> Path:
    """MOODLE_COMMCARE_LOG_FILE, else logs/moodle-commcare.jsonl beside the warehouse (where every run writes)."""
    configured = os.environ.get(LOG_FILE_ENV, "").strip()
    return Path(configured) if configured else warehouse_path.parent / "logs" / "moodle-commcare.jsonl"


@contextmanager
def json_log(path: Path, run_id: str) -> Iterator[Path]:
    """Our loggers' INFO and above go to `path` as JSON lines tagged with `run_id` while the block runs; the
    console keeps the level it had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                                       static_fields={"run_id": run_id}))
    handler.setLevel(logging.INFO)
    handler.addFilter(lambda record: record.name.split(".")[0] in OURS)
    root = logging.getLogger()
    for console in root.handlers:  # the console shows what it showed before: INFO only with --verbose
        if console.level == logging.NOTSET:
            console.setLevel(root.level)
    loggers = [logging.getLogger(name) for name in OURS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
