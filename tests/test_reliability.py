"""Failed runs change nothing, secrets never land anywhere, and text people type survives the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.commcare import CommCareEmulator
from exports.commcare import CommCareSettings, run_export
from exports.commcare.errors import CommCareConfigError
from moodle_commcare.demo import OWNERS
from moodle_commcare.transform import run_transform
from pipelines.moodle.errors import MoodleInvalidTokenError, MoodleRecordNotFoundError
from pipelines.moodle_pipeline import make_pipeline

from .conftest import Warehouse
from .oracle import VARS


def _tables(wh: Warehouse) -> dict:
    return {t: sorted(wh.rows(f'select * exclude (_dlt_load_id, _dlt_id) from "{t}"'), key=repr) for t in wh.tables()}


def test_a_failed_run_leaves_tables_and_cursors_as_after_the_last_good_run(warehouse: Warehouse) -> None:
    warehouse.extract()
    before = _tables(warehouse)
    state_before = make_pipeline(warehouse.path).state["sources"]["moodle"]["course_watermarks"]
    s = warehouse.moodle.school
    cid, uid = next((c, u) for c, u, e in s.all_enrolments() if e.role == "student" and e.active and s.grade_items[c])
    item = next(i for i in s.grade_items[cid] if i.itemtype == "mod")
    s.set_grade(cid, uid, item.id, 3.0)
    s.update_user(uid, city="Eldoret")
    # the course is deleted half-way through the run: Moodle answers its contents call with invalidrecord
    warehouse.moodle.inject("invalidrecord", function="core_course_get_contents", course_id=cid)
    with pytest.raises(MoodleRecordNotFoundError):
        warehouse.extract()
    assert _tables(warehouse) == before, "nothing of the failed run was loaded"
    assert make_pipeline(warehouse.path).state["sources"]["moodle"]["course_watermarks"] == state_before
    warehouse.extract()
    assert warehouse.rows("select graderaw from grades where course_id=? and user_id=? and grade_item_id=?",
                          cid, uid, item.id) == [(3.0,)], "the next good run still sees the change"
    assert warehouse.rows("select city from users where id=?", uid) == [("Eldoret",)]


def test_token_revoked_mid_run_without_credentials_to_renew(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("invalidtoken", function="core_enrol_get_users_courses", times=1)
    with pytest.raises(MoodleInvalidTokenError, match="SOURCES__MOODLE__CREDENTIALS__TOKEN"):
        warehouse.extract()
    assert warehouse.tables() == []


def test_plain_http_commcare_is_refused_unless_allowed(tmp_path: Path) -> None:
    settings = CommCareSettings(base_url="http://commcare.example.org", project="p", username="u", api_key="k")
    with pytest.raises(CommCareConfigError, match="COMMCARE__ALLOW_INSECURE_HTTP"):
        settings.require_upload()
    with pytest.raises(CommCareConfigError, match="COMMCARE__API_KEY"):
        CommCareSettings(project="p", username="u").require_upload()


TYPED = {
    "first_name": "=HYPERLINK(\"http://evil.example\",\"click\")",
    "last_name": "+254 (that's my number) \u202eRTL\u202c",
    "city": "-12 @home 🏠 مدينة",
    "department": "Form\t1\u0007\u001f" + "é" * 300,
    "email": "@user@example.org",
}


def test_people_typed_text_survives_to_commcare_unchanged(warehouse: Warehouse, tmp_path: Path) -> None:
    s = warehouse.moodle.school
    uid = next(u for _, u, e in s.all_enrolments() if e.role == "student" and e.active and not s.users[u].suspended)
    moodle_fields = {"firstname": TYPED["first_name"], "lastname": TYPED["last_name"], "city": TYPED["city"],
                     "department": TYPED["department"], "email": TYPED["email"]}
    s.update_user(uid, **moodle_fields)
    warehouse.extract()
    run_transform(warehouse.path, VARS)
    with CommCareEmulator(owners=OWNERS | {"owner-default"}) as hq:
        run_export(warehouse.path, CommCareSettings(
            base_url=hq.base_url, project=hq.domain, username=hq.username, api_key=hq.api_key,
            allow_insecure_http=True, out_dir=tmp_path / "out", poll_interval=0.01), upload=True)
        case = hq.by_external_id("student")[f"moodle-moodle-demo-academy-example-u-{uid}"]
        assert hq.uploads[0]["cell_types"] == {"str", "NoneType"}, "no cell became a formula or a number"
    for prop, value in TYPED.items():
        # C0 controls other than tab/newline cannot travel in xlsx (XML): they are dropped, the rest survives
        assert case.properties[prop] == value.replace("\u0007", "").replace("\u001f", ""), prop
    assert case.name == f"{TYPED['first_name']} {TYPED['last_name']}"


def test_no_secret_lands_in_any_file_a_run_writes(warehouse: Warehouse, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from emulators.moodle import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME

    with caplog.at_level("DEBUG"):
        warehouse.extract(token=None, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE)
        warehouse.moodle.inject("http500", function="core_course_get_courses_by_field")
        warehouse.extract(token=warehouse.moodle.token)
        run_transform(warehouse.path, VARS)
        with CommCareEmulator(owners=OWNERS | {"owner-default"}) as hq:
            hq.upload_faults = [(429, None)]
            run_export(warehouse.path, CommCareSettings(
                base_url=hq.base_url, project=hq.domain, username=hq.username, api_key=hq.api_key,
                allow_insecure_http=True, out_dir=tmp_path / "out", poll_interval=0.01, backoff_factor=0.01),
                upload=True)
            secrets = [warehouse.moodle.token, DEMO_PASSWORD, hq.api_key]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".duckdb" for p in written) and any(p.suffix == ".xlsx" for p in written)
    assert any(".dlt_pipelines" in p.parts for p in written), "dlt's state and trace are scanned too"
    for path in written:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is in {path}"
    for record in caplog.records:
        for secret in secrets:
            assert secret not in record.getMessage()


def test_tls_certificates_are_verified(tmp_path: Path) -> None:
    """A self-signed certificate is refused, with a message saying how to trust a private CA."""
    import shutil
    import ssl
    import subprocess

    from emulators.moodle import MoodleEmulator

    from .conftest import SMALL

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with MoodleEmulator(spec=SMALL, ssl_context=context) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        assert moodle.base_url.startswith("https://")
        from pipelines.moodle.errors import MoodleTransportError

        with pytest.raises(MoodleTransportError, match="could not be verified.*REQUESTS_CA_BUNDLE"):
            wh.extract(allow_insecure_http=False)
        assert moodle.requests["core_webservice_get_site_info"] == 0, "no request got through the handshake"
