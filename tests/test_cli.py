"""The `moodle-commcare` command through typer's own runner: options, exit codes and what status prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from moodle_commcare.cli import app
from moodle_commcare.failures import ExitCode

from .conftest import Warehouse
from .oracle import VARS

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_var_without_a_value_is_refused_with_how_to_write_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["transform", "--duckdb", str(tmp_path / "w.duckdb"), "--var", "as_of"])
    assert result.exit_code == ExitCode.SETTINGS
    assert "--var 'as_of': write it as NAME=VALUE" in flat(result.output)


def test_transform_before_any_extract_says_what_to_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["transform", "--duckdb", str(tmp_path / "w.duckdb")])
    assert result.exit_code == ExitCode.NOT_READY, result.output
    assert "does not exist: run `moodle-commcare extract` first" in flat(result.output)


def test_status_of_a_warehouse_nothing_ran_against(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--duckdb", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 0
    assert "Nothing has run against" in flat(result.output)


def test_vars_reach_dbt_and_status_lists_each_stage(warehouse: Warehouse) -> None:
    warehouse.extract()
    args = ["transform", "--duckdb", str(warehouse.path)]
    for name, value in VARS.items():
        if name != "commcare_default_owner_id":
            args += ["--var", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    args += ["--var", "commcare_default_owner_id=owner-from-the-command-line"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        owners = {r[0] for r in con.execute("select owner_id from commcare.commcare_enrolment_cases").fetchall()}
    assert "owner-from-the-command-line" in owners

    status = runner.invoke(app, ["status", "--duckdb", str(warehouse.path)])
    assert status.exit_code == 0
    out = flat(status.output)
    assert re.search(r"extract\W+ok", out) and re.search(r"transform\W+ok", out), out
    assert "rows loaded" in out and "student cases" in out


def test_an_unknown_moodle_version_for_the_emulator(tmp_path: Path) -> None:
    result = runner.invoke(app, ["emulator", "--moodle-version", "3.9"])
    assert result.exit_code == ExitCode.SETTINGS
    assert "--moodle-version '3.9': choose one of 4.1, 4.5" in flat(result.output)
