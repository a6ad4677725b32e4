"""Each kind of Moodle failure gives its typed error, says what to fix, and loads nothing."""

from __future__ import annotations

from typing import Type

import pytest

from emulators.moodle import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME
from pipelines.moodle.errors import (
    MoodleAccessError,
    MoodleAPIError,
    MoodleError,
    MoodleFunctionNotAvailableError,
    MoodleInvalidParameterError,
    MoodleInvalidResponseError,
    MoodleInvalidTokenError,
    MoodleLoginError,
    MoodleMaintenanceError,
    MoodleRecordNotFoundError,
    MoodleUnavailableError,
)

from .conftest import Warehouse


def _fails(warehouse: Warehouse, error: Type[MoodleError], **options: object) -> MoodleError:
    with pytest.raises(error) as caught:
        warehouse.extract(**options)
    message = str(caught.value)
    assert warehouse.moodle.token not in message
    assert warehouse.tables() == [], "a failed first run must not leave partial tables"
    return caught.value


@pytest.mark.parametrize(
    "errorcode, function, error, hint",
    [
        ("invalidtoken", "core_webservice_get_site_info", MoodleInvalidTokenError, "SOURCES__MOODLE__CREDENTIALS__TOKEN"),
        ("nopermissions", "gradereport_user_get_grade_items", MoodleAccessError, "capabilit"),
        ("accessexception", "core_enrol_get_users_courses", MoodleAccessError, "IP address"),
        ("invalidparameter", "core_enrol_get_enrolled_users", MoodleInvalidParameterError, "parameter"),
        ("invalidrecord", "core_course_get_contents", MoodleRecordNotFoundError, "no longer exists"),
        ("sitemaintenance", "core_user_get_users_by_field", MoodleMaintenanceError, "maintenance"),
        ("codingerror", "core_completion_get_activities_completion_status", MoodleAPIError, "error log"),
    ],
)
def test_exception_bodies_become_typed_errors(warehouse: Warehouse, errorcode: str, function: str,
                                              error: Type[MoodleError], hint: str) -> None:
    warehouse.moodle.inject(errorcode, function=function, times=1)
    raised = _fails(warehouse, error)
    assert type(raised) is error
    assert function in str(raised) or isinstance(raised, MoodleMaintenanceError)
    assert hint in str(raised)
    # the fault hit one request only: the run failing shows the error body was not retried


def test_revoked_token(warehouse: Warehouse) -> None:
    warehouse.moodle.revoke_token()
    raised = _fails(warehouse, MoodleInvalidTokenError)
    assert raised.errorcode == "invalidtoken"


def test_missing_function_fails_before_extracting_and_names_it(warehouse: Warehouse) -> None:
    warehouse.moodle.remove_function("core_course_get_contents")
    raised = _fails(warehouse, MoodleFunctionNotAvailableError)
    assert "core_course_get_contents" in str(raised)
    assert "'course_sections'" in str(raised)
    assert warehouse.moodle.requests["core_course_get_contents"] == 0


def test_maintenance_page_is_retried_then_reported(warehouse: Warehouse) -> None:
    warehouse.moodle.maintenance = "html"
    raised = _fails(warehouse, MoodleMaintenanceError, max_attempts=2)
    assert "maintenance" in str(raised)
    assert warehouse.moodle.requests["core_webservice_get_site_info"] == 2


def test_html_instead_of_json(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("html200", function="core_course_get_courses_by_field")
    raised = _fails(warehouse, MoodleInvalidResponseError)
    assert "HTML" in str(raised) and "SOURCES__MOODLE__BASE_URL" in str(raised)


def test_invalid_json(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("invalid_json", function="core_course_get_categories")
    _fails(warehouse, MoodleInvalidResponseError)


def test_persistent_truncation_fails_after_retries(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("truncate", function="core_course_get_courses_by_field", times=10)
    _fails(warehouse, MoodleInvalidResponseError, max_attempts=3)
    assert warehouse.moodle.requests["core_course_get_courses_by_field"] == 3


def test_persistent_5xx_fails_as_unavailable(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("http502", function="core_webservice_get_site_info", times=10)
    raised = _fails(warehouse, MoodleUnavailableError, max_attempts=3)
    assert "502" in str(raised)


def test_unreachable_site(warehouse: Warehouse) -> None:
    warehouse.moodle.stop()
    raised = _fails(warehouse, MoodleUnavailableError, max_attempts=2)
    assert "Could not reach Moodle" in str(raised)


@pytest.mark.parametrize("kind", ["http500", "reset", "truncate", "ex_unabletolock", "maintenance_html"])
def test_transient_faults_are_retried_and_the_run_completes(warehouse: Warehouse, kind: str) -> None:
    warehouse.moodle.inject(kind, function="core_enrol_get_enrolled_users", times=2)
    report = warehouse.extract()
    assert report.stats.retries == 2
    assert report.table_rows["enrolments"] == len(list(warehouse.moodle.school.all_enrolments()))


def test_slow_answer_times_out_and_is_retried(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("timeout", function="core_course_get_courses_by_field", times=1, seconds=1.5)
    report = warehouse.extract(request_timeout=0.5)
    assert report.stats.requests["core_course_get_courses_by_field"] == 2
    assert report.table_rows["courses"] == len(warehouse.moodle.school.courses)


def test_429_honours_retry_after(warehouse: Warehouse) -> None:
    """The server, not the test's clock, says whether the client waited: the retry arrives after Retry-After."""
    warehouse.moodle.keep_log = True
    warehouse.moodle.inject("http429", function="core_course_get_categories", times=1, retry_after=1)
    report = warehouse.extract()
    assert report.stats.retries == 1
    refused, retried = [r["at"] for r in warehouse.moodle.request_log if r["function"] == "core_course_get_categories"]
    assert retried - refused >= 1.0


def test_username_and_password_are_exchanged_for_a_token(warehouse: Warehouse) -> None:
    report = warehouse.extract(token=None, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE)
    assert report.table_rows["users"] > 0


def test_wrong_password_names_the_settings(warehouse: Warehouse) -> None:
    with pytest.raises(MoodleLoginError) as caught:
        warehouse.extract(token=None, username=DEMO_USERNAME, password="wrong-Secret-42", service=DEMO_SERVICE)
    assert "SOURCES__MOODLE__CREDENTIALS__PASSWORD" in str(caught.value)
    assert "wrong-Secret-42" not in str(caught.value)
    assert warehouse.tables() == []


def test_token_revoked_mid_run_is_renewed_when_credentials_are_configured(warehouse: Warehouse) -> None:
    warehouse.moodle.inject("invalidtoken", function="core_user_get_users_by_field", times=1)
    report = warehouse.extract(token=None, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE)
    assert report.table_rows["users"] > 0
