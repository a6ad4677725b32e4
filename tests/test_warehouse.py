"""The warehouse is one object built from one destination setting, and a setting it cannot use is refused by
name, without echoing what a database URL may carry (a password)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from moodle_commcare.cli import app
from moodle_commcare.failures import ExitCode
from moodle_commcare.warehouse import CASE_TYPES, Warehouse, WarehouseConfigError


def test_a_path_or_a_duckdb_url_names_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = (tmp_path / "school.duckdb").resolve()
    assert Warehouse.of("school.duckdb").path == expected
    assert Warehouse.of("duckdb:///school.duckdb").path == expected  # three slashes: relative, as in dlt and SQLAlchemy
    assert Warehouse.of(f"duckdb:///{expected}").path == expected  # four: absolute
    assert Warehouse.of(Warehouse.of(expected)).path == expected


def test_the_setting_then_the_older_name_then_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOODLE_COMMCARE_WAREHOUSE", raising=False)
    monkeypatch.delenv("MOODLE_COMMCARE_DUCKDB", raising=False)
    assert Warehouse.of().path == tmp_path / "moodle.duckdb"
    monkeypatch.setenv("MOODLE_COMMCARE_DUCKDB", str(tmp_path / "old.duckdb"))
    assert Warehouse.of().path == tmp_path / "old.duckdb"
    monkeypatch.setenv("MOODLE_COMMCARE_WAREHOUSE", "duckdb:///new.duckdb")
    assert Warehouse.of().path == tmp_path / "new.duckdb"


@pytest.mark.parametrize("destination, says", [
    ("snowflake://loader:pa55word@school/warehouse", "names a snowflake:// destination"),
    ("postgresql://loader:pa55word@db.school.org", "without a host or database"),
    ("postgresql://loader:pa55word@db.school.org:port/w", "port that is not a number"),
    ("duckdb:///", "is empty"),
])
def test_a_destination_it_cannot_use_is_refused_by_name(destination: str, says: str) -> None:
    with pytest.raises(WarehouseConfigError) as caught:
        Warehouse.from_destination(destination, setting="MOODLE_COMMCARE_WAREHOUSE")
    assert says in str(caught.value) and "MOODLE_COMMCARE_WAREHOUSE" in str(caught.value)
    assert "pa55word" not in str(caught.value) and "loader" not in str(caught.value)


def test_a_folder_is_not_a_warehouse(tmp_path: Path) -> None:
    with pytest.raises(WarehouseConfigError, match="is a folder"):
        Warehouse.of(tmp_path)


def test_the_cli_names_the_warehouse_and_refuses_a_bad_one_with_the_settings_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["status", "--warehouse", "snowflake://loader:pa55word@db/w"])
    assert done.exit_code == ExitCode.SETTINGS, done.output
    assert "--warehouse names a snowflake:// destination" in " ".join(done.output.split())
    assert "pa55word" not in done.output
    for option in ("--warehouse", "--duckdb"):  # the former name still works
        done = runner.invoke(app, ["status", option, str(tmp_path / "x.duckdb")])
        assert done.exit_code == 0 and "Nothing has run against" in done.output


def test_the_warehouse_owns_the_marts_names() -> None:
    assert [t.relation for t in CASE_TYPES] == ["commcare.commcare_student_cases", "commcare.commcare_enrolment_cases",
                                                "commcare.commcare_course_cases",
                                                "commcare.commcare_student_course_cases"]
    assert Warehouse.mart("commcare_unowned_cases") == "commcare.commcare_unowned_cases"


def test_a_postgresql_url_names_a_server_warehouse_and_never_shows_its_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOODLE_COMMCARE_STATE_DIR", raising=False)
    monkeypatch.delenv("MOODLE_COMMCARE_WAREHOUSE_PASSWORD", raising=False)
    wh = Warehouse.of("postgresql://loader:pa55%40word@db.school.org:6543/moodle?sslmode=require")
    assert wh.engine == "postgres" and wh.postgres is not None
    assert (wh.postgres.host, wh.postgres.port, wh.postgres.dbname, wh.postgres.user, wh.postgres.sslmode) == (
        "db.school.org", 6543, "moodle", "loader", "require")
    assert wh.postgres.password == "pa55@word"  # percent-decoded, as libpq reads it
    assert str(wh) == "postgresql://loader@db.school.org:6543/moodle"
    assert "pa55" not in repr(wh) and "pa55" not in str(wh.path)
    env = wh.dbt_env()
    assert env["MOODLE_COMMCARE_DBT_TARGET"] == "postgres" and env["MOODLE_COMMCARE_PG_PASSWORD"] == "pa55@word"
    assert env["PGTZ"] == "UTC"
    # its local folders (dlt's state, dbt's artifacts) sit in the current folder, one per server and database
    assert wh.pipelines_dir.parent == tmp_path / ".dlt_pipelines" and "6543" in wh.pipelines_dir.name
    # the password from its own setting when the URL has none
    monkeypatch.setenv("MOODLE_COMMCARE_WAREHOUSE_PASSWORD", "s3cret")
    monkeypatch.setenv("MOODLE_COMMCARE_WAREHOUSE", "postgres://loader@db.school.org/moodle")
    from_env = Warehouse.of()
    assert from_env.postgres is not None and from_env.postgres.password == "s3cret" and from_env.postgres.port == 5432


def test_a_postgresql_server_that_does_not_answer_is_a_retry_later_exit_without_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["export", "--warehouse", f"postgresql://loader:pa55word@127.0.0.1:{port}/w"])
    assert done.exit_code == ExitCode.BUSY, done.output
    text = " ".join(done.output.split())
    assert f"postgresql://loader@127.0.0.1:{port}/w" in text and "Could not connect" in text
    assert "pa55word" not in done.output


def test_a_postgresql_warehouse_without_its_driver_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = ("import sys; sys.modules['psycopg2'] = None\n"  # as on an install without the [postgres] extra
              "from moodle_commcare.warehouse import Warehouse, WarehouseConfigError\n"
              "try:\n    Warehouse.of('postgresql://loader:pa55word@127.0.0.1:1/w').connect()\n"
              "except WarehouseConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "pip install 'moodle-commcare[postgres]'" in done.stdout, done.stdout + done.stderr
    assert "pa55word" not in done.stdout
