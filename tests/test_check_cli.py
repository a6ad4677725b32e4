"""`moodle-commcare check`, and the checks `extract` and `export --upload` run first, as a scheduler runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from emulators.moodle.site import SiteConfig
from moodle_commcare.failures import ExitCode
from pipelines.moodle import webservice

from .cli_support import cli, moodle_env
from .conftest import SMALL, Warehouse


def commcare_env(hq: CommCareEmulator, tmp_path: Path) -> Dict[str, str]:
    return {"COMMCARE__BASE_URL": hq.base_url, "COMMCARE__PROJECT": hq.domain, "COMMCARE__USERNAME": hq.username,
            "COMMCARE__API_KEY": hq.api_key, "COMMCARE__ALLOW_INSECURE_HTTP": "true",
            "COMMCARE__OUT_DIR": str(tmp_path / "out"), "COMMCARE__POLL_INTERVAL": "0.01"}


def test_check_a_site_set_up_right_as_json(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle, CommCareEmulator() as hq:
        run = cli("check", "--json", "--warehouse", str(tmp_path / "m.duckdb"),
                  env={**moodle_env(moodle), **commcare_env(hq, tmp_path)})
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["exit_code"] == 0
        systems = {f["system"] for f in report["findings"]}
        assert systems == {"Moodle", "CommCare"}
        assert {f["status"] for f in report["findings"]} <= {"OK", "SKIPPED"}
        assert 0 < report["requests"]["moodle"] <= 40 and 0 < report["requests"]["commcare"] <= 10
        for secret in (moodle.token, hq.api_key):
            assert secret not in run.stdout + run.stderr


def test_check_says_where_to_fix_and_exits_2_on_a_failure(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, site=SiteConfig()) as moodle:  # Show user identity left at email
        run = cli("check", "--moodle", "--warehouse", str(tmp_path / "m.duckdb"), env=moodle_env(moodle))
        said = " ".join(run.stdout.split())
        assert run.returncode == 2, said
        assert "FAIL" in said and "Show user identity" in said and "phone" in said
        assert moodle.token not in run.stdout + run.stderr


def test_warnings_only_exit_1(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, site=SiteConfig()) as moodle:
        run = cli("check", "--moodle", "--json", "--warehouse", str(tmp_path / "m.duckdb"),
                  env=moodle_env(moodle, SOURCES__MOODLE__ALLOW_HIDDEN='["phones"]'))
        assert run.returncode == 1, run.stdout + run.stderr
        warned = [f["check"] for f in json.loads(run.stdout)["findings"] if f["status"] == "WARN"]
        assert warned == ["moodle.phones"]


def test_extract_stops_before_reading_when_the_check_fails(warehouse: Warehouse) -> None:
    """A role without moodle/course:enrolreview: the extract's check stops it before any table is written, and says
    what to grant; --skip-check leaves it to the extract, which stops on the same thing, later."""
    warehouse.moodle.prohibit(webservice.CAP_ENROLREVIEW)
    run = cli("extract", "--duckdb", str(warehouse.path), env=moodle_env(warehouse.moodle))
    said = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == ExitCode.MOODLE, said
    assert "Stopped before extracting" in said and webservice.CAP_ENROLREVIEW in said
    assert warehouse.tables() == []
    checked = sum(warehouse.moodle.requests.values())
    assert checked <= 40, "only the check's requests"

    warehouse.moodle.reset_counts()
    skipped = cli("extract", "--skip-check", "--duckdb", str(warehouse.path), env=moodle_env(warehouse.moodle))
    assert skipped.returncode == ExitCode.MOODLE
    assert "Pre-flight" not in skipped.stdout + skipped.stderr
    assert webservice.CAP_ENROLREVIEW in " ".join(skipped.stderr.split())


def test_extract_shows_warnings_and_goes_on(warehouse: Warehouse) -> None:
    warehouse.moodle.prohibit("report/completion:view")
    run = cli("extract", "--duckdb", str(warehouse.path), env=moodle_env(warehouse.moodle))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "report/completion:view" in " ".join(run.stderr.split())
    assert "courses" in warehouse.tables()


def test_upload_stops_before_sending_when_commcare_refuses(warehouse: Warehouse, tmp_path: Path) -> None:
    from moodle_commcare.transform import run_transform

    from .oracle import VARS

    warehouse.extract()
    run_transform(warehouse.path, VARS)
    with CommCareEmulator() as hq:
        hq.forbidden = True  # the API user's role lacks Edit Data
        run = cli("export", "--upload", "--duckdb", str(warehouse.path), env=commcare_env(hq, tmp_path))
        said = " ".join((run.stdout + run.stderr).split())
        assert run.returncode == ExitCode.COMMCARE, said
        assert "Stopped before uploading" in said and "Edit Data" in said
        assert hq.requests.get("upload", 0) == 0 and not hq.jobs
        assert hq.api_key not in run.stdout + run.stderr
