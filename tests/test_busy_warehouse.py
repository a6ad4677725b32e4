"""A DuckDB file held by another process gives one clear line, not a stack trace or a corrupt file."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from moodle_commcare.warehouse import WarehouseBusy

from .conftest import Warehouse


def test_extract_into_a_file_another_process_holds(warehouse: Warehouse) -> None:
    warehouse.extract()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"),
        str(warehouse.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        with pytest.raises(WarehouseBusy, match="open in another program"):
            warehouse.extract()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    report = warehouse.extract()  # the file is intact and usable once released
    assert report.table_rows["enrolments"] == len(list(warehouse.moodle.school.all_enrolments()))


@pytest.mark.parametrize("command", ["status", "transform", "export"])
def test_every_command_on_a_held_file_says_so_in_one_line(warehouse: Warehouse, command: str) -> None:
    warehouse.extract()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"),
        str(warehouse.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        run = subprocess.run([sys.executable, "-m", "moodle_commcare.cli", command, "--duckdb", str(warehouse.path)],
                             capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "open in another program" in out, out[-2000:]
    assert "Traceback" not in out and "╭" not in out, "no stack trace"
