"""Misconfiguration fails before any request, with one line naming the setting to fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moodle_commcare.failures import ExitCode
from pipelines.moodle.config import MoodleSettings
from pipelines.moodle.errors import MoodleConfigError

from .conftest import Warehouse


@pytest.mark.parametrize(
    "base_url, setting_hint",
    [
        ("", "SOURCES__MOODLE__BASE_URL is empty"),
        (None, "SOURCES__MOODLE__BASE_URL is empty"),
        ("moodle.example.org", "must start with https://"),
        ("https://moodle.example.org/webservice/rest/server.php", "give the site root instead (https://moodle.example.org)"),
        ("https://school.org/moodle/login/token.php", "(https://school.org/moodle)"),
        ("http://moodle.example.org", "SOURCES__MOODLE__ALLOW_INSECURE_HTTP"),
        ("https://moodle.example.org/?lang=fr", "without '?'"),
    ],
)
def test_bad_base_url(base_url: str, setting_hint: str) -> None:
    with pytest.raises(MoodleConfigError) as caught:
        MoodleSettings.build(base_url, token="t0ken")
    assert setting_hint in str(caught.value)
    assert "\n" not in str(caught.value)


def test_site_root_is_normalised() -> None:
    assert MoodleSettings.build("https://school.org/moodle/", token="x").base_url == "https://school.org/moodle"


def test_missing_credentials_name_both_ways() -> None:
    with pytest.raises(MoodleConfigError) as caught:
        MoodleSettings.build("https://moodle.example.org", token="  ")
    said = str(caught.value)
    assert "SOURCES__MOODLE__CREDENTIALS__TOKEN" in said and "SOURCES__MOODLE__CREDENTIALS__USERNAME" in said


def test_a_username_without_its_password_is_no_credentials() -> None:
    with pytest.raises(MoodleConfigError, match="No Moodle credentials"):
        MoodleSettings.build("https://moodle.example.org", username="ws-user")


def test_oversized_user_batch_is_refused() -> None:
    with pytest.raises(MoodleConfigError, match="max_input_vars"):
        MoodleSettings.build("https://moodle.example.org", token="x", user_batch_size=5000)


def test_course_ids_are_sorted_once_each_and_numbers() -> None:
    assert MoodleSettings.build("https://m.example.org", token="x", course_ids=[15, "12", 15]).course_ids == [12, 15]
    with pytest.raises(MoodleConfigError, match="COURSE_IDS"):
        MoodleSettings.build("https://m.example.org", token="x", course_ids=["twelve"])


def test_a_misspelt_keyword_is_refused_naming_it() -> None:
    """A keyword argument is checked by Python; dlt does not report keys nobody reads in .dlt/ or the environment
    (SOURCES__MOODLE__MAX_CONCURENCY is simply not looked up), so there the setting keeps its default."""
    with pytest.raises(TypeError, match="max_concurency"):
        MoodleSettings.build("https://m.example.org", token="x", max_concurency=2)


def test_secrets_are_not_in_the_repr() -> None:
    config = MoodleSettings.build("https://m.example.org", token="s3cret-token", username="u", password="pa55word")
    assert "s3cret-token" not in repr(config) and "pa55word" not in repr(config)


def test_unknown_course_id_is_reported_by_name(warehouse: Warehouse) -> None:
    with pytest.raises(MoodleConfigError) as caught:
        warehouse.extract(course_ids=[2, 99999])
    assert "99999" in str(caught.value) and "SOURCES__MOODLE__COURSE_IDS" in str(caught.value)
    assert warehouse.tables() == []


@pytest.mark.parametrize("credentials", ["token", "token alone", "username and password"])
def test_settings_come_from_dlt_env_vars(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch,
                                         credentials: str) -> None:
    """The documented env vars configure the source without code; the credentials are either kind of the union."""
    from emulators.moodle import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME
    from pipelines.moodle_pipeline import run_extract

    monkeypatch.setenv("SOURCES__MOODLE__BASE_URL", warehouse.moodle.base_url)
    if credentials == "token":
        monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__TOKEN", warehouse.moodle.token)
    elif credentials == "token alone":  # dlt's native form of a credential: the whole of it in one value
        monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS", warehouse.moodle.token)
    else:
        monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__USERNAME", DEMO_USERNAME)
        monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__PASSWORD", DEMO_PASSWORD)
        monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__SERVICE", DEMO_SERVICE)
    monkeypatch.setenv("SOURCES__MOODLE__ALLOW_INSECURE_HTTP", "true")
    monkeypatch.setenv("SOURCES__MOODLE__COURSE_IDS", "[3]")
    report = run_extract(warehouse.path)
    assert report.table_rows["courses"] == 1
    assert report.stats.requests["login/token.php"] == (1 if credentials == "username and password" else 0)


def test_keyword_credentials_win_over_configured_ones(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword arguments override the configuration, credentials as a whole: a configured token does not slip
    in beside a username and password given in code."""
    from emulators.moodle import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME

    monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__TOKEN", "a-revoked-token")
    report = warehouse.extract(token=None, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE)
    assert report.stats.requests["login/token.php"] == 1 and report.table_rows["users"] > 0


def test_settings_come_from_the_dlt_files(warehouse: Warehouse, tmp_path: Path) -> None:
    """.dlt/config.toml and .dlt/secrets.toml as the README lays them out ([sources.moodle], and the credentials
    in [sources.moodle.credentials]), read by a scheduler's run in a fresh process (dlt reads .dlt/ once)."""
    from .cli_support import cli

    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(
        f'[sources.moodle]\nbase_url = "{warehouse.moodle.base_url}"\nallow_insecure_http = true\ncourse_ids = [3]\n')
    (tmp_path / ".dlt" / "secrets.toml").write_text(
        f'[sources.moodle.credentials]\ntoken = "{warehouse.moodle.token}"\n')
    run = cli("extract", "--duckdb", str(warehouse.path), env={}, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert warehouse.rows("select id from courses") == [(3,)]


@pytest.mark.parametrize("name, value, hint", [
    ("MAX_CONCURRENCY", "abc", "SOURCES__MOODLE__MAX_CONCURRENCY='abc' is not a valid int"),
    ("REQUEST_TIMEOUT", "0", "SOURCES__MOODLE__REQUEST_TIMEOUT=0.0: must be a number of seconds above 0"),
    ("COURSE_IDS", "12,15", "SOURCES__MOODLE__COURSE_IDS='12,15' is not a valid list: write it as a list, e.g. [12, 15]"),
    ("FULL_REFRESH", "ture", "SOURCES__MOODLE__FULL_REFRESH='ture' is not a valid bool: write true or false"),
    ("ALLOW_HIDDEN", '["phone"]', "SOURCES__MOODLE__ALLOW_HIDDEN names ['phone']"),
])
def test_bad_number_in_the_environment_names_the_setting(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch,
                                                         name: str, value: str, hint: str) -> None:
    """A value dlt cannot read as its setting's type, or one the settings refuse, names the variable."""
    monkeypatch.setenv(f"SOURCES__MOODLE__{name}", value)
    with pytest.raises(MoodleConfigError) as caught:
        warehouse.extract()
    assert hint in str(caught.value)
    assert warehouse.moodle.requests.total() == 0, "nothing asked of Moodle"


def test_a_blank_token_in_the_environment_is_named(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__MOODLE__BASE_URL", warehouse.moodle.base_url)
    monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__TOKEN", " ")
    with pytest.raises(MoodleConfigError, match="SOURCES__MOODLE__CREDENTIALS__TOKEN is empty"):
        warehouse.extract(token=None, base_url=None)
    assert warehouse.moodle.requests.total() == 0


def test_no_credentials_at_all_says_how_to_give_them(warehouse: Warehouse) -> None:
    with pytest.raises(MoodleConfigError, match="No Moodle credentials: set SOURCES__MOODLE__CREDENTIALS__TOKEN"):
        warehouse.extract(token=None)


def test_the_http_settings_are_declared_once_for_both_ends() -> None:
    """Timeout, retries and plain http:// mean the same at both ends and are checked by the same code; each end
    has its own defaults and names its own variables."""
    from exports.commcare import CommCareSettings
    from exports.commcare.errors import CommCareConfigError
    from moodle_commcare.http_settings import HttpSettings

    shared = set(HttpSettings.get_resolvable_fields())
    assert shared == {"request_timeout", "max_attempts", "backoff_factor", "max_retry_delay", "allow_insecure_http"}
    moodle = MoodleSettings.build("https://m.example.org", token="x")
    commcare = CommCareSettings()
    assert [getattr(moodle, f) for f in sorted(shared)] == [False, 1.0, 5, 60.0, 60.0]
    assert [getattr(commcare, f) for f in sorted(shared)] == [False, 1.0, 5, 120.0, 120.0]
    with pytest.raises(MoodleConfigError, match=r"^SOURCES__MOODLE__MAX_ATTEMPTS=0: must be a whole number of at least 1"):
        MoodleSettings.build("https://m.example.org", token="x", max_attempts=0)
    with pytest.raises(CommCareConfigError, match=r"^COMMCARE__MAX_ATTEMPTS=0: must be a whole number of at least 1"):
        CommCareSettings(max_attempts=0)
    with pytest.raises(CommCareConfigError, match=r"^COMMCARE__BACKOFF_FACTOR=-1: must be a number of seconds"):
        CommCareSettings(backoff_factor=-1)


def test_the_source_takes_every_setting_by_name_with_its_default() -> None:
    """moodle_source's keyword arguments are MoodleSettings' fields (dlt's spec of the source), defaults alike."""
    import inspect

    from pipelines.moodle import moodle_source

    parameters = inspect.signature(moodle_source).parameters
    for name, spec in MoodleSettings.__dataclass_fields__.items():
        if name.startswith("__"):
            continue
        assert name in parameters, f"moodle_source lacks {name}"
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        given = parameters[name].default
        if isinstance(default, list):
            assert list(given) == default, name
        elif default is not None:
            assert given == default, name


@pytest.mark.parametrize("name, value, hint", [
    ("CHUNK_ROWS", "abc", "COMMCARE__CHUNK_ROWS='abc' is not a valid int"),
    ("MAX_ATTEMPTS", "0", "COMMCARE__MAX_ATTEMPTS=0: must be a whole number of at least 1"),
    ("ALLOW_INSECURE_HTTP", "maybe", "COMMCARE__ALLOW_INSECURE_HTTP='maybe' is not a valid bool"),
])
def test_bad_commcare_settings_in_the_environment_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   value: str, hint: str) -> None:
    from exports.commcare import CommCareSettings
    from exports.commcare.errors import CommCareConfigError

    monkeypatch.setenv(f"COMMCARE__{name}", value)
    with pytest.raises(CommCareConfigError) as caught:
        CommCareSettings.from_dlt()
    assert hint in str(caught.value)


def test_commcare_settings_come_from_the_environment_and_options_win(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from exports.commcare import CommCareSettings

    monkeypatch.setenv("COMMCARE__PROJECT", "school")
    monkeypatch.setenv("COMMCARE__API_KEY", "k3y")
    monkeypatch.setenv("COMMCARE__CHUNK_ROWS", "500")
    monkeypatch.setenv("COMMCARE__OUT_DIR", str(tmp_path / "from-env"))
    settings = CommCareSettings.from_dlt(out_dir=tmp_path / "from-option", max_attempts=None)
    assert (settings.project, settings.api_key, settings.chunk_rows) == ("school", "k3y", 500)
    assert settings.out_dir == tmp_path / "from-option" and settings.max_attempts == 5
    assert settings.base_url == "https://www.commcarehq.org"


def test_a_secret_in_config_toml_is_refused_naming_it(tmp_path: Path) -> None:
    """config.toml is for what may be shown; an API key there stops the export rather than being sent."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text('[commcare]\nproject = "school"\napi_key = "k3y"\n')
    run = subprocess.run([sys.executable, "-m", "moodle_commcare.cli", "export", "--upload"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    said = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == ExitCode.SETTINGS, said
    assert "COMMCARE__API_KEY is a secret: move it from config.toml to .dlt/secrets.toml" in said, said
    assert "k3y" not in said


@pytest.mark.parametrize("setting, value, hint", [
    ("chunk_rows", 0, "COMMCARE__CHUNK_ROWS=0: rows per workbook must be between 1"),
    ("poll_interval", 0, "COMMCARE__POLL_INTERVAL=0: must be a number of seconds above 0"),
    ("max_close_share", 5, "COMMCARE__MAX_CLOSE_SHARE=5: must be a share"),
])
def test_bad_commcare_settings_name_the_setting(setting: str, value: object, hint: str) -> None:
    from exports.commcare import CommCareSettings
    from exports.commcare.errors import CommCareConfigError

    with pytest.raises(CommCareConfigError, match=hint):
        CommCareSettings(**{setting: value})  # type: ignore[arg-type]


def test_out_naming_a_file_and_export_before_transform_say_what_to_do(warehouse: Warehouse, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from exports.commcare import CommCareSettings, run_export
    from exports.commcare.errors import CommCareConfigError, CommCareError

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CommCareConfigError, match="names a file"):
        CommCareSettings(out_dir=tmp_path / "a-file")
    warehouse.extract()
    with pytest.raises(CommCareError, match="run `moodle-commcare transform` before exporting"):
        run_export(warehouse.path, CommCareSettings(out_dir=tmp_path / "out"))


def test_a_typo_in_the_commcare_config_file_is_never_taken_for_the_default_server(tmp_path: Path) -> None:
    """Read as "unset", a broken [commcare] section sent the API key to https://www.commcarehq.org. Run as a
    scheduler would, in a fresh process: dlt reads .dlt/ once per process."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text('[commcare]\nbase_url = "https://india.commcarehq.org\n'
                                                  'project = "school"\n')  # the closing quote forgotten
    run = subprocess.run([sys.executable, "-m", "moodle_commcare.cli", "export", "--upload"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    said = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == ExitCode.SETTINGS, said
    assert re.search(r"\[commcare\] settings could not be read \(.*config.toml.*line 2", said), said
    assert "Traceback" not in said


@pytest.mark.parametrize("setting, value, hint", [
    ("language", "Swahili!", "SOURCES__MOODLE__LANGUAGE='Swahili!' is not a Moodle language code"),
    ("default_phone_region", "Kenya", "SOURCES__MOODLE__DEFAULT_PHONE_REGION='Kenya' is not a country code"),
])
def test_bad_language_or_phone_region_names_the_setting(setting: str, value: str, hint: str) -> None:
    with pytest.raises(MoodleConfigError) as caught:
        MoodleSettings.build("https://m.example.org", token="x", **{setting: value})
    assert hint in str(caught.value)


def test_names_and_phones_are_read_in_the_configured_language_and_region(warehouse: Warehouse) -> None:
    """The extract computes what phones show (pipelines/moodle/readable.py): names in the configured language,
    not the site's (English here); a number typed without a country code, by a user without a country, in the
    configured region."""
    school = warehouse.moodle.school
    user = next(u for u in school.users.values() if u.phone1)
    user.country, user.phone1 = "", "0712 345 678"
    warehouse.extract(language="sw", default_phone_region="KE")
    [(e164, country)] = warehouse.rows("select phone1_e164, country from users where id = ?", user.id)
    assert (e164, country or None) == ("+254712345678", None)
    names = dict(warehouse.rows("select fullname, fullname_plain from courses"))
    multilang = [raw for raw in names if 'lang="sw"' in raw]
    assert multilang, "the demo school has courses named in two languages"
    assert all("Kiswahili" in names[raw] and "<" not in names[raw] for raw in multilang)
    warehouse.extract(default_phone_region="UG")  # the site's language again; the region applies on every read
    assert warehouse.rows("select phone1_e164 from users where id = ?", user.id) == [("+256712345678",)]


@pytest.mark.parametrize("former", ["token", "login"])
def test_credentials_under_their_former_names_still_work_and_say_what_to_rename(
        warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, former: str) -> None:
    """A scheduled run set up before the credentials moved to [sources.moodle.credentials] keeps running."""
    from emulators.moodle import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME
    from pipelines.moodle_pipeline import run_extract

    monkeypatch.setenv("SOURCES__MOODLE__BASE_URL", warehouse.moodle.base_url)
    monkeypatch.setenv("SOURCES__MOODLE__ALLOW_INSECURE_HTTP", "true")
    monkeypatch.setenv("SOURCES__MOODLE__COURSE_IDS", "[3]")
    if former == "token":
        monkeypatch.setenv("SOURCES__MOODLE__TOKEN", warehouse.moodle.token)
    else:
        monkeypatch.setenv("SOURCES__MOODLE__USERNAME", DEMO_USERNAME)
        monkeypatch.setenv("SOURCES__MOODLE__PASSWORD", DEMO_PASSWORD)
        monkeypatch.setenv("SOURCES__MOODLE__SERVICE", DEMO_SERVICE)
    with caplog.at_level("WARNING"):
        report = run_extract(warehouse.path)
    assert report.table_rows["courses"] == 1
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "SOURCES__MOODLE__CREDENTIALS__" in said and "former names" in said
    assert warehouse.moodle.token not in said and DEMO_PASSWORD not in said
