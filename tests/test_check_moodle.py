"""`check`, the Moodle half, through real HTTP against the emulator set up as real sites are set up wrong.

The matrix runs the check and then the extract against the same site: whatever makes the extract stop must be a
FAIL of the check naming the same thing, whatever the extract loads with a recorded gap must be a WARN, and a site
the extract reads cleanly must get no WARN or FAIL (no false alarm). The rest covers the checks that come before
any data: the address, the protocol, the token, the version, the settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from emulators.moodle import MoodleEmulator, SchoolSpec
from emulators.moodle.server import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME
from emulators.moodle.site import SiteConfig
from moodle_commcare.findings import Finding, Status, exit_code
from pipelines.moodle.config import MoodleSettings
from pipelines.moodle.errors import (
    MoodleAccessError,
    MoodleConfigError,
    MoodleDataGapError,
    MoodleError,
    MoodleFunctionNotAvailableError,
    MoodleInvalidTokenError,
)
from pipelines.moodle.preflight import CHECKS, GAP_CHECKS, MoodleCheck, check_configured_moodle, check_moodle

from .conftest import SMALL, Warehouse, network_address

FAST = dict(allow_insecure_http=True, backoff_factor=0.01, max_attempts=2, max_retry_delay=0.1)


def run_check(moodle: MoodleEmulator, token: Optional[str] = None, **options: Any) -> MoodleCheck:
    if "username" not in options:
        options["token"] = token or moodle.token
    return check_moodle(MoodleSettings.build(moodle.base_url, **{**FAST, **options}))


def by_check(result: MoodleCheck) -> Dict[str, Finding]:
    return {f.check: f for f in result.findings}


def not_ok(result: MoodleCheck) -> Dict[str, Status]:
    return {f.check: f.status for f in result.findings if f.status in (Status.WARN, Status.FAIL)}


# ---------------------------------------------------------------------------------------------- the matrix
@dataclass
class Setup:
    """A site as an admin might leave it, and what `check` must say of it (checks not named: OK or SKIPPED)."""

    name: str
    expect: Dict[str, Status]
    profile: str = "integration"
    site: SiteConfig = field(default_factory=SiteConfig.recommended)
    spec: SchoolSpec = field(default_factory=lambda: SMALL)
    prepare: Callable[[MoodleEmulator], None] = lambda moodle: None
    options: Dict[str, Any] = field(default_factory=dict)


F, W = Status.FAIL, Status.WARN
SETUPS = [
    Setup("as the README asks", {}),
    Setup("site admin's token", {}, profile="admin"),
    Setup("Manager role", {}, profile="manager"),
    Setup("Moodle 4.1", {}, site=SiteConfig.recommended(version="4.1")),
    Setup("only the capabilities services.php declares", {"moodle.enrolment_status": F}, profile="declared"),
    Setup("a teacher's token, every course", {"moodle.courses": F, "moodle.enrolment_status": F}, profile="teacher"),
    Setup("a teacher's token, its own courses", {"moodle.profiles": W, "moodle.profile_fields": W}, profile="teacher",
          options={"course_ids": [2, 3]}),
    Setup("a teacher's token, one course as non-editing teacher", {"moodle.enrolment_status": F}, profile="teacher",
          options={"course_ids": [2, 3, 5]}),
    Setup("Show user identity left at email only", {"moodle.phones": F}, site=SiteConfig()),
    Setup("... and the gap accepted", {"moodle.phones": W}, site=SiteConfig(), options={"allow_hidden": ["phones"]}),
    Setup("last access in Hide user fields, role without viewhiddenuserfields", {"moodle.last_access": F},
          site=SiteConfig.recommended(hiddenuserfields=("lastaccess",)),
          prepare=lambda m: m.prohibit("moodle/course:viewhiddenuserfields")),
    Setup("... and the gap accepted", {"moodle.last_access": W},
          site=SiteConfig.recommended(hiddenuserfields=("lastaccess",)),
          prepare=lambda m: m.prohibit("moodle/course:viewhiddenuserfields"), options={"allow_hidden": ["last_access"]}),
    Setup("suspended in Hide user fields, role without viewhiddendetails", {"moodle.profiles": F},
          site=SiteConfig.recommended(hiddenuserfields=("suspended",)),
          prepare=lambda m: m.prohibit("moodle/user:viewhiddendetails")),
    # separate groups thin the enrolment list; visible groups, the grade report
    Setup("role without accessallgroups", {"moodle.enrolments": F, "moodle.grades": F},
          prepare=lambda m: m.prohibit("moodle/site:accessallgroups")),
    Setup("role without user:viewdetails", {"moodle.enrolments": F},
          prepare=lambda m: m.prohibit("moodle/user:viewdetails")),
    Setup("role without viewfullnames", {"moodle.profile_fields": W},
          prepare=lambda m: m.prohibit("moodle/site:viewfullnames")),
    Setup("role without report/completion:view", {"moodle.progress": W},
          prepare=lambda m: m.prohibit("report/completion:view")),
    Setup("role without report/progress:view", {"moodle.activity_completion": F},
          prepare=lambda m: m.prohibit("report/progress:view")),
    Setup("role without grade:viewall", {"moodle.grades": F}, prepare=lambda m: m.prohibit("moodle/grade:viewall")),
    Setup("role without mod/assign:grade", {"moodle.assignments": F},
          prepare=lambda m: m.prohibit("mod/assign:grade")),
    Setup("role without mod/assign:view", {"moodle.assignments": F, "moodle.contents": W},
          prepare=lambda m: m.prohibit("mod/assign:view")),
    # Moodle leaves quizzes out of the outline without a word; their grade items still show in the grade report
    Setup("role without mod/quiz:view", {"moodle.contents": W}, prepare=lambda m: m.prohibit("mod/quiz:view")),
    Setup("a function missing from the service", {"moodle.functions": F},
          prepare=lambda m: m.remove_function("core_course_get_contents")),
    Setup("COURSE_IDS names a course Moodle does not have", {"moodle.courses": F}, options={"course_ids": [2, 999]}),
    Setup("no course tracks completion", {"moodle.completion_settings": W},
          spec=dataclasses.replace(SMALL, completion=False)),
    Setup("per-student due dates", {}, options={"due_date_overrides": True}),
    Setup("per-student due dates, function missing", {"moodle.functions": F}, options={"due_date_overrides": True},
          prepare=lambda m: m.remove_function("mod_assign_get_participant")),
]
# WARNs about what a site chose rather than what the role lacks: the extract records no gap for them
SITE_CHOICES = {"moodle.completion_settings"}


def _extract(moodle: MoodleEmulator, tmp_path: Path, options: Dict[str, Any]) -> Tuple[Optional[MoodleError], set]:
    wh = Warehouse(moodle, tmp_path / "m.duckdb")
    try:
        wh.extract(**options)
    except MoodleError as exc:
        return exc, set()
    return None, {(code, accepted) for code, accepted in wh.rows("select code, accepted from access_gaps")}


def _named_by(error: MoodleError) -> List[str]:
    """The checks that must FAIL when the extract stops with `error`."""
    if isinstance(error, MoodleDataGapError):
        return [GAP_CHECKS[error.code]]
    if isinstance(error, MoodleFunctionNotAvailableError):
        return ["moodle.functions"]
    if isinstance(error, MoodleInvalidTokenError):
        return ["moodle.token"]
    if isinstance(error, MoodleConfigError):
        return ["moodle.courses", "moodle.settings"]
    if isinstance(error, MoodleAccessError):
        return []  # matched on the capability instead
    return ["moodle.site"]


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_check_names_what_the_extract_meets(setup: Setup, tmp_path: Path) -> None:
    with MoodleEmulator(spec=setup.spec, profile=setup.profile, site=setup.site) as moodle:
        setup.prepare(moodle)
        result = run_check(moodle, **setup.options)
        statuses = not_ok(result)
        assert statuses == setup.expect, [f"{f.check}: {f.status.value} {f.detail}" for f in result.findings]
        for f in result.findings:
            if f.status in (Status.WARN, Status.FAIL):
                assert f.fix, f"{f.check} says where to fix it"
                assert f.loses, f"{f.check} says what is lost"
        assert exit_code(result.findings) == (2 if F in statuses.values() else 1 if statuses else 0)

        error, gaps = _extract(moodle, tmp_path, setup.options)
    failing = [f for f in result.findings if f.status == F]
    if error is not None:  # what stops the extract, the check names
        assert failing, f"the extract stopped ({error}) and the check saw nothing"
        named = _named_by(error)
        if named:
            assert {f.check for f in failing} & set(named), (error, failing)
        else:
            assert isinstance(error, MoodleAccessError) and error.capability
            capability = error.capability.split(" ")[0]
            assert any(capability in f.capability or capability in f.fix for f in failing), (error, failing)
    else:  # a clean extract: no FAIL; every gap it recorded is a WARN of the check, and nothing else is
        assert not failing, failing
        warned = {check for check, status in statuses.items() if status == W}
        assert warned - SITE_CHOICES == {GAP_CHECKS[code] for code, _ in gaps}, (warned, gaps)


# ---------------------------------------------------------------------------------------------- before any data
def test_a_correct_site_costs_a_few_requests_and_reports_the_sample() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        result = run_check(moodle)
        assert exit_code(result.findings) == 0
        assert result.requests == sum(moodle.requests.values())
        assert result.requests <= 40
        sample = result.sampled_courses
        courses = moodle.school.courses
        assert any(courses[cid].groupmode == 1 for cid in sample), "a separate-groups course is in the sample"
        assert len(sample) < len(courses)


def test_rest_protocol_off() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.rest_protocol_enabled = False
        found = by_check(run_check(moodle))
        assert found["moodle.site"].status == F
        assert "Manage protocols" in found["moodle.site"].fix
        assert all(f.status == Status.SKIPPED for c, f in found.items() if c not in ("moodle.settings", "moodle.site"))


def test_web_services_off_refuses_the_login() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.web_services_enabled = False
        found = by_check(run_check(moodle, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE))
        assert found["moodle.token"].status == F
        assert "Enable web services" in found["moodle.token"].fix


@pytest.mark.parametrize("maintenance", ["json", "html"])
def test_maintenance_mode(maintenance: str) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.maintenance = maintenance
        found = by_check(run_check(moodle))
        failed = found["moodle.site"] if found["moodle.site"].status == F else found["moodle.token"]
        assert failed.status == F and "maintenance" in failed.detail.lower() + failed.fix.lower()


def test_not_the_site_root() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        settings = MoodleSettings.build(moodle.base_url + "/moodle", token=moodle.token, **FAST)
        found = by_check(check_moodle(settings))
        assert found["moodle.site"].status == F
        assert "SOURCES__MOODLE__BASE_URL" in found["moodle.site"].fix


def test_nothing_listening() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        url, token = moodle.base_url, moodle.token
    found = by_check(check_moodle(MoodleSettings.build(url, token=token, **{**FAST, "max_attempts": 1})))
    assert found["moodle.site"].status == F and "reach" in found["moodle.site"].detail


def test_a_login_page_instead_of_the_web_service() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.inject("html200", "core_webservice_get_site_info", times=5)
        found = by_check(run_check(moodle))
        assert found["moodle.site"].status == F and "HTML" in found["moodle.site"].detail


def test_revoked_token() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.revoke_token()
        found = by_check(run_check(moodle))
        assert found["moodle.site"].status == Status.OK
        assert found["moodle.token"].status == F and "Manage tokens" in found["moodle.token"].fix


def test_wrong_password() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        found = by_check(run_check(moodle, username=DEMO_USERNAME, password="not-it", service=DEMO_SERVICE))
        assert found["moodle.token"].status == F
        assert "SOURCES__MOODLE__CREDENTIALS__PASSWORD" in found["moodle.token"].fix


def test_a_login_checks_as_a_token_does() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        result = run_check(moodle, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE)
        assert exit_code(result.findings) == 0, not_ok(result)


def test_a_release_newer_than_tested() -> None:
    with MoodleEmulator(spec=SMALL, site=SiteConfig.recommended(version="5.0")) as moodle:
        found = by_check(run_check(moodle))
        assert found["moodle.version"].status == W and "5.0" in found["moodle.version"].detail
        assert {c for c, s in not_ok(run_check(moodle)).items()} == {"moodle.version"}


def test_a_function_failing_on_the_server() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.inject("http500", "core_course_get_contents", times=10)
        found = by_check(run_check(moodle))
        assert found["moodle.contents"].status == F and "500" in found["moodle.contents"].detail
        assert found["moodle.grades"].status == Status.OK, "one failing function fails its own check only"


def test_settings_that_cannot_be_read_fail_first_and_send_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        monkeypatch.setenv("SOURCES__MOODLE__BASE_URL", moodle.base_url)
        monkeypatch.setenv("SOURCES__MOODLE__ALLOW_INSECURE_HTTP", "true")
        result = check_configured_moodle()
        found = by_check(result)
        assert found["moodle.settings"].status == F
        assert "SOURCES__MOODLE__CREDENTIALS__TOKEN" in found["moodle.settings"].detail
        assert sum(moodle.requests.values()) == 0
        assert {f.status for f in result.findings[1:]} == {Status.SKIPPED}

        monkeypatch.setenv("SOURCES__MOODLE__CREDENTIALS__TOKEN", moodle.token)
        assert exit_code(check_configured_moodle().findings) == 0


def test_no_secret_in_any_finding() -> None:
    """The token, the password and a basic-auth password never appear, whatever fails."""
    with MoodleEmulator(spec=SMALL, site=SiteConfig()) as moodle:
        moodle.basic_auth = ("gate", "basic-secret-9")
        url = moodle.base_url.replace("http://", "http://gate:basic-secret-9@")
        moodle.prohibit("moodle/site:accessallgroups")
        outputs = []
        for credentials in ({"token": moodle.token}, {"token": "wrong-token-0123456789"},
                            {"username": DEMO_USERNAME, "password": "pw-secret-77", "service": DEMO_SERVICE}):
            result = check_moodle(MoodleSettings.build(url, **credentials, **FAST))
            assert any(f.status == F for f in result.findings)
            outputs.append(json.dumps([f.to_json() for f in result.findings]))
        text = "\n".join(outputs)
        for secret in (moodle.token, "wrong-token-0123456789", "pw-secret-77", "basic-secret-9"):
            assert secret not in text


def test_every_check_is_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for check in CHECKS:
        assert f"`{check}`" in readme, f"README lists {check}"


def test_plain_http_over_a_network_is_warned_about() -> None:
    """Plain http (allowed) carries the token in clear to another machine; to this one it carries it nowhere."""
    address = network_address()
    with MoodleEmulator(spec=SMALL, host="0.0.0.0") as moodle:
        over_network = moodle.base_url.replace("0.0.0.0", address)
        found = by_check(check_moodle(MoodleSettings.build(over_network, token=moodle.token, **FAST)))
        assert found["moodle.site"].status == W and "clear text" in found["moodle.site"].detail
        assert "https" in found["moodle.site"].fix and found["moodle.site"].loses
        local = by_check(check_moodle(MoodleSettings.build(moodle.base_url.replace("0.0.0.0", "127.0.0.1"),
                                                           token=moodle.token, **FAST)))
        assert local["moodle.site"].status == Status.OK


def test_the_role_preset_allows_exactly_the_role() -> None:
    """`moodle-commcare moodle-role` writes what Moodle's role preset reader takes (admin/roles/role_schema.xml: the
    elements in this order), allowing exactly the README's role, which is the emulator's `integration` profile."""
    from xml.etree import ElementTree

    from emulators.moodle.access import README_ROLE
    from pipelines.moodle.preflight import role_preset
    from pipelines.moodle.webservice import CAP_CREATETOKEN, ROLE_CAPABILITIES

    assert set(ROLE_CAPABILITIES) == set(README_ROLE)
    for login in (False, True):
        role = ElementTree.fromstring(role_preset(login=login))
        assert [child.tag for child in role] == ["shortname", "name", "description", "archetype", "contextlevels",
                                                 "allowassign", "allowoverride", "allowswitch", "permissions"]
        assert [level.text for level in role.find("contextlevels")] == ["system"]  # type: ignore[union-attr]
        allowed = {p.text for p in role.find("permissions")}  # type: ignore[union-attr]
        assert {p.tag for p in role.find("permissions")} == {"allow"}  # type: ignore[union-attr]
        assert allowed == set(ROLE_CAPABILITIES) | ({CAP_CREATETOKEN} if login else set())


def test_per_student_due_dates_refused() -> None:
    """mod_assign_get_participant checks the caller's rights on the assignment itself (mod/assign/externallib.php):
    a site whose role was changed by an override on that one activity refuses it while the others read fine."""
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.inject("nopermissions", "mod_assign_get_participant", times=5)
        found = by_check(run_check(moodle, due_date_overrides=True))
        assert found["moodle.due_dates"].status == F
        assert "mod/assign:grade" in found["moodle.due_dates"].capability
        assert found["moodle.assignments"].status == Status.OK
