"""`moodle-commcare check`, the CommCare half, through real HTTP against the emulator: every check's OK path on a
project set up right (over https, as CommCare HQ serves), and each way it fails, with the place to fix it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import CommCareSettings
from exports.commcare.preflight import CHECKS, CommCareFindings, check_commcare
from moodle_commcare.findings import Finding, Status

from .conftest import network_address

API_KEY = "cc-secret-check-5b1f0e9d7a"  # distinct from the emulator's default, to be found if it leaks
OWNERS = {"owner-default", "demo-location-science", "demo-group-biology"}
KINDS = {"demo-location-science": "location", "demo-group-biology": "group"}
STUDENT_WORKERS = ("worker-of-student-1", "worker-of-student-2")  # students' own mobile workers
CASE_TYPES = {"student", "course_enrolment", "course", "student_course"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to serve the emulator over https")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
def hq(certificate: Tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[CommCareEmulator]:
    """A project set up right, served over https; this machine trusts its certificate."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    with CommCareEmulator(owners=set(OWNERS) | set(STUDENT_WORKERS), owner_kinds=dict(KINDS), tls=certificate,
                          case_types=set(CASE_TYPES)) as emulator:
        emulator.api_key = API_KEY
        yield emulator


def settings(hq: CommCareEmulator, tmp_path: Path, **extra: Any) -> CommCareSettings:
    values: Dict[str, Any] = dict(base_url=hq.base_url, project=hq.domain, username=hq.username, api_key=API_KEY,
                                  out_dir=tmp_path / "out", backoff_factor=0.01, max_retry_delay=0.1)
    values.update(extra)
    return CommCareSettings(**values)


def check(hq: CommCareEmulator, tmp_path: Path, owners: Any = tuple(OWNERS), students: Any = STUDENT_WORKERS,
          **extra: Any) -> Dict[str, Finding]:
    findings = check_commcare(settings(hq, tmp_path, **extra), owners, student_workers=students)
    assert [f.check for f in findings] == list(CHECKS), "one finding per check, in the documented order"
    assert API_KEY not in json.dumps([f.to_json() for f in findings])
    return {f.check.removeprefix("commcare."): f for f in findings}


def assert_skipped_after(found: Dict[str, Finding], first: str) -> None:
    later = list(found)[list(found).index(first) + 1:]
    assert all(found[c].status == Status.SKIPPED and found[c].detail for c in later), later


# ---------------------------------------------------------------------------------------------- the right setup
def test_a_project_set_up_right_raises_no_alarm_in_a_handful_of_requests(hq: CommCareEmulator, tmp_path: Path) -> None:
    counted: List[int] = []
    findings = check_commcare(settings(hq, tmp_path), sorted(OWNERS), on_request=lambda: counted.append(1),
                              student_workers=STUDENT_WORKERS)
    assert [(f.check, f.status) for f in findings] == [(c, Status.OK) for c in CHECKS]
    assert all(f.system == "CommCare" and f.detail and not f.fix and not f.loses for f in findings)
    assert isinstance(findings, CommCareFindings)
    requests = findings.requests
    assert requests == len(counted) == sum(hq.requests.values()) and requests <= 10
    found = {f.check: f for f in findings}
    assert "'file' and 'case_type' are required" in found["commcare.importer"].detail
    assert "demo-group-biology (a case-sharing group)" in found["commcare.owners"].detail
    assert hq.uploads == [] and hq.jobs == {} and hq.cases == {}, "the check changes nothing"


def test_no_finding_carries_the_api_key(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.permissions.clear()  # every refusal path, and a key that is right
    for findings in (check_commcare(settings(hq, tmp_path), OWNERS),
                     check_commcare(settings(hq, tmp_path, api_key=API_KEY + "-wrong"), OWNERS)):
        text = json.dumps([f.to_json() for f in findings])
        assert API_KEY not in text and "wrong" not in text


# ---------------------------------------------------------------------------------------------- settings
def test_missing_settings_are_named_and_nothing_is_sent(hq: CommCareEmulator, tmp_path: Path) -> None:
    found = check(hq, tmp_path, api_key="", username="")
    assert found["settings"].status == Status.FAIL
    assert "COMMCARE__USERNAME" in found["settings"].detail and "COMMCARE__API_KEY" in found["settings"].detail
    assert "secrets.toml" in found["settings"].fix
    assert_skipped_after(found, "settings")
    assert sum(hq.requests.values()) == 0
    one = check(hq, tmp_path, project="")
    assert "COMMCARE__PROJECT is not set" in one["settings"].detail


def test_plain_http_is_refused_unless_allowed_then_warned(tmp_path: Path) -> None:
    """Plain http carries the key in clear over a network; to this very machine (the tests' emulators, a tunnel)
    it carries it nowhere, and is not warned about."""
    address = network_address()
    with CommCareEmulator(owners=set(OWNERS) | set(STUDENT_WORKERS), owner_kinds=dict(KINDS), host="0.0.0.0",
                          case_types=set(CASE_TYPES)) as plain_hq:
        plain_hq.api_key = API_KEY
        over_network = plain_hq.base_url.replace("0.0.0.0", address)
        refused = check(plain_hq, tmp_path, base_url=over_network)
        assert refused["settings"].status == Status.FAIL and "COMMCARE__ALLOW_INSECURE_HTTP" in refused["settings"].detail
        assert sum(plain_hq.requests.values()) == 0
        allowed = check(plain_hq, tmp_path, base_url=over_network, allow_insecure_http=True)
        assert allowed["server"].status == Status.WARN and "clear text" in allowed["server"].detail
        assert "https://" in allowed["server"].fix and allowed["server"].loses
        assert [c for c, f in allowed.items() if f.status != Status.OK] == ["server"]
        local = check(plain_hq, tmp_path, base_url=plain_hq.base_url.replace("0.0.0.0", "127.0.0.1"),
                      allow_insecure_http=True)
        assert local["server"].status == Status.OK and "this machine" in local["server"].detail


# ---------------------------------------------------------------------------------------------- server
def test_a_server_that_does_not_answer(hq: CommCareEmulator, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    found = check(hq, tmp_path, base_url=f"https://127.0.0.1:{port}")
    assert found["server"].status == Status.FAIL and "could not be reached" in found["server"].detail
    assert "COMMCARE__BASE_URL" in found["server"].fix
    assert_skipped_after(found, "server")


def test_a_certificate_this_machine_does_not_trust(hq: CommCareEmulator, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    found = check(hq, tmp_path)
    assert found["server"].status == Status.FAIL and "certificate is not trusted" in found["server"].detail
    assert "REQUESTS_CA_BUNDLE" in found["server"].fix
    assert_skipped_after(found, "server")


@pytest.mark.parametrize("front, seen", [("login", "a login page"), ("proxy", "HTTP 502")])
def test_a_login_page_or_a_proxy_is_not_taken_for_commcare(hq: CommCareEmulator, tmp_path: Path, front: str,
                                                           seen: str) -> None:
    hq.front = front
    found = check(hq, tmp_path)
    assert found["server"].status == Status.FAIL and seen in found["server"].detail
    assert found["server"].fix
    assert_skipped_after(found, "server")


def test_an_address_that_is_not_the_server_root(hq: CommCareEmulator, tmp_path: Path) -> None:
    found = check(hq, tmp_path, base_url=hq.base_url + "/hq")
    assert found["server"].status == Status.FAIL and "HTTP 404" in found["server"].detail
    assert "root of your CommCare HQ server" in found["server"].fix


# ---------------------------------------------------------------------------------------------- credentials
def test_a_wrong_api_key(hq: CommCareEmulator, tmp_path: Path) -> None:
    found = check(hq, tmp_path, api_key="not-the-key")
    assert found["server"].status == Status.OK
    assert found["credentials"].status == Status.FAIL and "HTTP 401" in found["credentials"].detail
    assert "API Keys" in found["credentials"].fix and "COMMCARE__API_KEY" in found["credentials"].fix
    assert_skipped_after(found, "credentials")


@pytest.mark.parametrize("case", ["no such project", "not a member"])
def test_a_project_that_does_not_exist_or_a_user_not_in_it(hq: CommCareEmulator, tmp_path: Path, case: str) -> None:
    if case == "not a member":
        hq.member = False
        found = check(hq, tmp_path)
    else:
        found = check(hq, tmp_path, project="no-such-project")
    assert found["credentials"].status == Status.FAIL and "HTTP 403" in found["credentials"].detail
    assert "COMMCARE__PROJECT" in found["credentials"].fix and "Invite Web User" in found["credentials"].fix
    assert_skipped_after(found, "credentials")


# ---------------------------------------------------------------------------------------------- case types
def test_a_case_type_no_application_uses_is_a_warning(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.case_types = {"student", "household"}
    found = check(hq, tmp_path)
    assert found["case_types"].status == Status.WARN and "'course_enrolment'" in found["case_types"].detail
    assert "Applications >" in found["case_types"].fix and "'course_enrolment'" in found["case_types"].fix
    assert "no case list shows them" in found["case_types"].loses or "no application" in found["case_types"].loses


def test_a_project_without_cases_is_refused_by_the_importer(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.case_types = set()
    found = check(hq, tmp_path)
    assert found["case_types"].status == Status.FAIL and "does not use cases yet" in found["case_types"].detail
    assert "Case List" in found["case_types"].fix
    hq.store.create("household", "h-1", "A household", "owner-default", {}, None)  # cases, but no application
    again = check(hq, tmp_path)
    assert again["case_types"].status == Status.WARN


def test_case_types_unreadable_without_api_access(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.permissions.discard("access_api")
    found = check(hq, tmp_path)
    assert found["importer"].status == Status.OK, "the bulk upload API itself does not require Access APIs"
    assert found["case_types"].status == Status.WARN and "could not be read" in found["case_types"].detail
    assert "Access APIs" in found["case_types"].fix and "Data > Data Dictionary" in found["case_types"].fix
    assert found["case_api"].status == Status.FAIL and "Access APIs" in found["case_api"].fix
    assert found["case_api"].capability == "access_api"
    assert found["owners"].status == Status.WARN and "not checked" in found["owners"].detail


# ---------------------------------------------------------------------------------------------- importer
def test_a_role_without_edit_data(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.forbidden = True
    found = check(hq, tmp_path)
    assert found["credentials"].status == Status.OK
    assert found["importer"].status == Status.FAIL and found["importer"].capability == "edit_data"
    assert "Users > Roles & Permissions" in found["importer"].fix and "Edit Data" in found["importer"].fix
    assert found["import_status"].status == found["case_api"].status == Status.SKIPPED
    assert hq.uploads == []


def test_a_location_restricted_role(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.location_restricted = True
    found = check(hq, tmp_path)
    assert found["importer"].status == Status.FAIL and "restricted to locations" in found["importer"].detail
    assert "Full Organization Access" in found["importer"].fix
    assert found["importer"].capability == "access_all_locations"


# ---------------------------------------------------------------------------------------------- reading back
def test_a_job_status_that_cannot_be_confirmed(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.status_faults.extend([(502, None)] * 2)  # a proxy failing the status path on both attempts
    found = check(hq, tmp_path)
    assert found["import_status"].status == Status.WARN and "HTTP 502" in found["import_status"].detail
    assert "/importer/case_importer/status/" in found["import_status"].fix


def test_a_plan_without_api_access(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.api_privilege = False
    found = check(hq, tmp_path)
    assert found["case_api"].status == Status.FAIL and "HTTP 402" in found["case_api"].detail
    assert "Subscription" in found["case_api"].fix


# ---------------------------------------------------------------------------------------------- owners
def test_owners_not_in_the_project_fail(hq: CommCareEmulator, tmp_path: Path) -> None:
    found = check(hq, tmp_path, owners=[*OWNERS, "typo-owner"])
    assert found["owners"].status == Status.FAIL and "typo-owner" in found["owners"].detail
    assert "Users > Mobile Workers" in found["owners"].fix and "commcare_owner_map.csv" in found["owners"].fix


def test_owners_that_cannot_own_cases_fail(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.owner_kinds.update({"demo-group-biology": "group_not_sharing", "demo-location-science": "location_not_sharing"})
    found = check(hq, tmp_path)
    assert found["owners"].status == Status.FAIL
    assert "Case Sharing: on" in found["owners"].detail and "Owns Cases" in found["owners"].detail


def test_a_web_user_may_own_cases(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.owners.add("coach-web")
    hq.owner_kinds["coach-web"] = "web_user"
    found = check(hq, tmp_path, owners=["coach-web"])
    assert found["owners"].status == Status.OK and "a web user" in found["owners"].detail


@pytest.mark.parametrize("permission, label", [("edit_commcare_users", "Mobile Workers"),
                                               ("edit_locations", "Locations")])
def test_owner_lists_the_role_may_not_read_are_a_warning(hq: CommCareEmulator, tmp_path: Path, permission: str,
                                                         label: str) -> None:
    hq.permissions.discard(permission)
    owner = "owner-default" if permission == "edit_commcare_users" else "demo-location-science"
    found = check(hq, tmp_path, owners=[owner])
    assert found["owners"].status == Status.WARN and owner in found["owners"].detail
    assert label in found["owners"].fix and permission in found["owners"].capability
    # the students' own workers are looked up in the mobile workers' list too
    unread = ["owners", "student_workers"] if permission == "edit_commcare_users" else ["owners"]
    assert [c for c, f in found.items() if f.status != Status.OK] == unread


def test_students_own_workers_must_be_users_of_their_own(hq: CommCareEmulator, tmp_path: Path) -> None:
    """A group or a location owning a student's own cases would put that student's grades on every member's phone
    (livequery syncs every case of a user's owner ids): a stop. A worker not found fails only its student: a warning."""
    found = check(hq, tmp_path, students=[*STUDENT_WORKERS, "demo-group-biology"])
    assert found["student_workers"].status == Status.FAIL
    assert "demo-group-biology (one of the groups)" in found["student_workers"].detail
    assert "commcare_student_workers.csv" in found["student_workers"].fix
    found = check(hq, tmp_path, students=[*STUDENT_WORKERS, "worker-nobody"])
    assert found["student_workers"].status == Status.WARN and "worker-nobody" in found["student_workers"].detail
    assert "2 of 3" in found["student_workers"].detail
    found = check(hq, tmp_path, students=())
    assert found["student_workers"].status == Status.SKIPPED


def test_students_own_case_types_are_wanted_only_when_students_have_workers(tmp_path: Path,
                                                                             certificate: Tuple[str, str],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    with CommCareEmulator(owners=set(OWNERS), owner_kinds=dict(KINDS), tls=certificate,
                          case_types={"student", "course_enrolment"}) as coaches_only:
        coaches_only.api_key = API_KEY
        assert check(coaches_only, tmp_path, students=())["case_types"].status == Status.OK
        found = check(coaches_only, tmp_path, students=["owner-default"])
        assert found["case_types"].status == Status.WARN and "'student_course'" in found["case_types"].detail


def test_no_owner_ids_is_not_checked(hq: CommCareEmulator, tmp_path: Path) -> None:
    found = check(hq, tmp_path, owners=())
    assert found["owners"].status == Status.SKIPPED and "owner" in found["owners"].detail


def test_owner_lists_are_read_page_by_page_only_as_far_as_needed(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.owners |= {f"worker-{n:04d}" for n in range(1500)}  # two pages of mobile workers (1000 a page)
    counted: List[int] = []
    findings = check_commcare(settings(hq, tmp_path), ["worker-1499"], on_request=lambda: counted.append(1))
    found = {f.check: f for f in findings}
    assert found["commcare.owners"].status == Status.OK and "worker-1499 (a mobile worker)" in found["commcare.owners"].detail
    assert len(counted) == 4 + 2, "the four checks before, then two pages of the user list and no other list"


def test_every_check_is_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for check_id in CHECKS:
        assert f"`{check_id}`" in readme, f"README lists {check_id}"
