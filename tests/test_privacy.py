"""Nothing about a school's run leaves the machine unless the user asks: dlt's and dbt's telemetry are off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moodle_commcare.transform import run_transform

from .conftest import Warehouse
from .oracle import VARS


def test_dlt_and_dbt_telemetry_are_off(warehouse: Warehouse) -> None:
    from dlt.common.runtime import anon_tracker

    warehouse.extract()
    assert anon_tracker._ANON_TRACKER_ENDPOINT is None, "dlt would report anonymous usage to dlthub"
    run_transform(warehouse.path, VARS)
    from moodle_commcare.transform import artifacts_dir

    # dbt runs in a child process; what it ran with is in the manifest it wrote
    manifest = json.loads((artifacts_dir(warehouse.path) / "target" / "manifest.json").read_text())
    assert manifest["metadata"]["send_anonymous_usage_stats"] is False, "dbt would report usage events"


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_basic_auth_in_the_base_url_is_used_and_never_printed_or_stored(
        warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str) -> None:
    """https://user:password@host (a web server's basic auth in front of Moodle) works and stays secret."""
    from pipelines.moodle.errors import MoodleError

    moodle = warehouse.moodle
    moodle.basic_auth = ("gatekeeper", "Pw-Secret-42")
    url = moodle.base_url.replace("http://", "http://gatekeeper:Pw-Secret-42@")
    if via == "environment":
        monkeypatch.setenv("SOURCES__MOODLE__BASE_URL", url)
        report = warehouse.extract(base_url=None)
    else:
        report = warehouse.extract(base_url=url)
    assert sum(report.rows_loaded.values()) > 0, "the credentials reached the server in front of Moodle"
    broken = url.replace(moodle.base_url.rsplit(":", 1)[1], "1")  # then a run that fails, with a message
    if via == "environment":
        monkeypatch.setenv("SOURCES__MOODLE__BASE_URL", broken)
    with pytest.raises(MoodleError) as failed:
        warehouse.extract(base_url=None if via == "environment" else broken, max_attempts=1)
    assert "Pw-Secret-42" not in str(failed.value) and "127.0.0.1:1" in str(failed.value)
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert b"Pw-Secret-42" not in path.read_bytes(), f"the password is in {path}"


def test_after_three_extracts_a_students_email_is_only_in_the_warehouse_table(warehouse: Warehouse,
                                                                               tmp_path: Path) -> None:
    import duckdb

    s = warehouse.moodle.school
    uid = next(u for _, u, e in s.all_enrolments() if e.role == "student")
    s.update_user(uid, email="only-once-7f3a@school.example")
    for n in range(3):
        s.update_user(uid, city=f"City {n}")  # each run loads the profile again
        warehouse.extract()
    email = b"only-once-7f3a@school.example"
    holders = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".duckdb" and email in p.read_bytes()]
    assert holders == [], "dlt's loaded packages keep no copy"
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
        found = [(sch, t) for sch, t in tables if con.execute(
            f'select count(*) from "{sch}"."{t}" as r where cast(r as varchar) like \'%only-once-7f3a%\'').fetchone()[0]]
    assert found == [("moodle_raw", "users")], found
