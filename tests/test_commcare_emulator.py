"""The CommCare emulator answers as the spec says CommCare HQ does, driven through our client over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import pytest
import requests

from emulators.commcare import CommCareEmulator
from exports.commcare.client import CommCareClient, JobResult
from exports.commcare.config import CommCareSettings
from exports.commcare.errors import CommCareAuthError, CommCareUploadRejected
from exports.commcare.xlsx import write_workbook


@pytest.fixture
def hq() -> Iterator[CommCareEmulator]:
    with CommCareEmulator(owners={"owner-1"}) as emulator:
        yield emulator


def client(hq: CommCareEmulator, **extra: object) -> CommCareClient:
    return CommCareClient(CommCareSettings(base_url=hq.base_url, project=hq.domain, username=hq.username,
                                           api_key=hq.api_key, allow_insecure_http=True, poll_interval=0.01,
                                           backoff_factor=0.01, max_attempts=2, **extra))  # type: ignore[arg-type]


def upload(hq: CommCareEmulator, tmp_path: Path, headers: Sequence[str], rows: List[Sequence[Optional[str]]],
           case_type: str = "student") -> JobResult:
    path = tmp_path / f"{case_type}-{len(hq.uploads)}.xlsx"
    write_workbook(path, headers, rows)
    cc = client(hq)
    return cc.wait(cc.upload(path, case_type))


def test_create_update_close_and_blank_clears(hq: CommCareEmulator, tmp_path: Path) -> None:
    headers = ["external_id", "name", "owner_id", "city", "close"]
    first = upload(hq, tmp_path, headers, [["s-1", "Amina", "owner-1", "Nairobi", "yes"]])
    assert (first.created, first.updated) == (1, 0)
    case = hq.by_external_id("student")["s-1"]
    assert not case.closed, "create ignores close"
    second = upload(hq, tmp_path, headers, [["s-1", "Amina O.", "owner-1", None, "yes"]])
    assert (second.created, second.updated) == (0, 1)
    assert case.closed and case.name == "Amina O." and case.properties["city"] == "", "a blank cell clears"


def test_row_errors_are_reported_with_sheet_rows(hq: CommCareEmulator, tmp_path: Path) -> None:
    headers = ["external_id", "name", "owner_id", "parent_external_id", "parent_type"]
    result = upload(hq, tmp_path, headers, [
        ["e-1", "ok", "owner-1", None, None],
        ["e-2", "bad owner", "nobody", None, None],
        [None, "no id", "owner-1", None, None],
        ["e-4", "x" * 256, "owner-1", None, None],
        ["e-5", "orphan", "owner-1", "missing-parent", "student"],
    ], case_type="course_enrolment")
    assert result.created == 1
    assert result.row_errors() == {
        3: "Invalid Owner (owner_id): Owner ID was used in the mapping but there were errors",
        4: "Blank External ID: A row has a blank external id",
        5: "Name Too Long (name): Name is too long",
        6: "Invalid Parent ID (parent_external_id): Could not find parent case",
    }


def test_numeric_external_ids_are_normalised_as_commcare_does(hq: CommCareEmulator, tmp_path: Path) -> None:
    upload(hq, tmp_path, ["external_id", "name"], [["0042", "Zoë"]])
    assert "42" in hq.by_external_id("student")


def test_reserved_column_fails_the_whole_job(hq: CommCareEmulator, tmp_path: Path) -> None:
    result = upload(hq, tmp_path, ["external_id", "name", "type"], [["s-1", "A", "x"]])
    assert result.state == 3 and 'Field name "type" is reserved' in (result.failure or "")
    assert hq.cases == {}


def test_bad_header_is_rejected_before_queueing(hq: CommCareEmulator, tmp_path: Path) -> None:
    with pytest.raises(CommCareUploadRejected, match="Column names"):
        upload(hq, tmp_path, ["external_id", "1st name"], [["s-1", "A"]])


def test_bad_key_gets_a_bare_401_and_no_permission_a_403(hq: CommCareEmulator, tmp_path: Path) -> None:
    raw = requests.post(f"{hq.base_url}/a/{hq.domain}/importer/excel/bulk_upload_api/",
                        headers={"Authorization": "ApiKey someone:wrong"}, timeout=10)
    assert raw.status_code == 401 and raw.content == b"" and "WWW-Authenticate" in raw.headers
    hq.forbidden = True
    with pytest.raises(CommCareAuthError, match="Edit Data"):
        upload(hq, tmp_path, ["external_id", "name"], [["s-1", "A"]])


def test_chunks_of_one_hundred_are_counted(hq: CommCareEmulator, tmp_path: Path) -> None:
    rows: List[Sequence[Optional[str]]] = [[f"s-{i}", f"Student {i}"] for i in range(250)]
    result = upload(hq, tmp_path, ["external_id", "name"], rows)
    assert result.created == 250
    assert hq.jobs[result.upload_id.removeprefix("dl-")].result["num_chunks"] == 3  # type: ignore[index]
