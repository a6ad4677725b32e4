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
