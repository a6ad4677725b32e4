"""A DuckDB file held by another process gives one clear line, not a stack trace or a corrupt file."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from moodle_commcare.failures import ExitCode
from moodle_commcare.warehouse import WarehouseBusy

from .conftest import Warehouse


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Another process holds the DuckDB file for writing while the block runs."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"),
        str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        yield
    finally:
        holder.kill()
        holder.wait()


def test_extract_into_a_file_another_process_holds(warehouse: Warehouse) -> None:
    warehouse.extract()
    with held(warehouse.path), pytest.raises(WarehouseBusy, match="open in another program"):
        warehouse.extract()
    report = warehouse.extract()  # the file is intact and usable once released (the holder was waited for)
    assert report.table_rows["enrolments"] == len(list(warehouse.moodle.school.all_enrolments()))


@pytest.mark.parametrize("command", ["status", "transform", "export"])
def test_every_command_on_a_held_file_says_so_in_one_line(warehouse: Warehouse, command: str) -> None:
    warehouse.extract()
    with held(warehouse.path):
        run = subprocess.run([sys.executable, "-m", "moodle_commcare.cli", command, "--duckdb", str(warehouse.path)],
                             capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == ExitCode.BUSY and "open in another program" in out, out[-2000:]
    assert "Traceback" not in out and "╭" not in out, "no stack trace"
