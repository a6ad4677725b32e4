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
    path.write_bytes(sheets(**{"moodle cases": [list(headers), *rows]}))  # as typed: no exporter policy
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


def raw_upload(hq: CommCareEmulator, content: bytes, **fields: str) -> requests.Response:
    return requests.post(f"{hq.base_url}/a/{hq.domain}/importer/excel/bulk_upload_api/",
                         headers={"Authorization": f"ApiKey {hq.username}:{hq.api_key}"},
                         files={"file": ("cases.xlsx", content)}, data=fields, timeout=10)


def sheets(**named: List[Sequence[Optional[str]]]) -> bytes:
    import io

    import xlsxwriter

    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    for title, rows in named.items():
        sheet = book.add_worksheet(title)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is not None:
                    sheet.write_string(r, c, value)
    book.close()
    return buf.getvalue()


def test_two_jobs_at_once_both_create_a_new_id_then_every_update_fails(hq: CommCareEmulator, tmp_path: Path) -> None:
    """No lock between imports and no unique external_id: the race section R.1-2 describe."""
    hq.importer.chunk_seconds = 0.3
    path = tmp_path / "s.xlsx"
    write_workbook(path, ["external_id", "name"], [["s-1", "Amina"]])
    cc = client(hq)
    first, second = cc.upload(path, "student"), cc.upload(path, "student")
    assert cc.wait(first).created == cc.wait(second).created == 1  # type: ignore[union-attr]
    assert hq.duplicates() == {("student", "s-1"): 2}
    later = upload(hq, tmp_path, ["external_id", "name"], [["s-1", "Amina O."]])
    assert later.row_errors() == {2: "Too Many Matches: More than one case matches"}


def test_jobs_one_after_another_upsert(hq: CommCareEmulator, tmp_path: Path) -> None:
    upload(hq, tmp_path, ["external_id", "name"], [["s-1", "Amina"]])
    again = upload(hq, tmp_path, ["external_id", "name"], [["s-1", "Amina"]])
    assert (again.created, again.updated, hq.duplicates()) == (0, 1, {})


def test_failed_job_keeps_its_earlier_chunks(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.fail_next_job, hq.fail_after_chunks = "Error: worker lost", 2
    result = upload(hq, tmp_path, ["external_id", "name"], [[f"s-{i}", "x"] for i in range(250)])
    assert result.state == 3 and result.failure == "Error: worker lost"
    assert len(hq.by_external_id("student")) == 200, "two committed chunks of 100 stay: no rollback"


def test_job_runs_in_the_background_and_status_404s_for_an_unknown_id(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.hold_jobs()
    path = tmp_path / "s.xlsx"
    write_workbook(path, ["external_id", "name"], [["s-1", "Amina"]])
    cc = client(hq)
    url = cc.upload(path, "student")
    auth = {"Authorization": f"ApiKey {hq.username}:{hq.api_key}"}
    assert requests.get(url, headers=auth, timeout=10).json() == {"state": 0, "progress": {"percent": 0},
                                                                   "result": None}
    assert cc.wait(url, timeout=0.2) is None and not hq.cases, "queued: nothing applied yet"
    hq.release_jobs()
    assert cc.wait(url).created == 1  # type: ignore[union-attr]
    unknown = requests.get(url.replace("dl-", "dl-0"), headers=auth, timeout=10)
    assert unknown.status_code == 404 and unknown.content == b""
    gone = cc.wait(url.replace("dl-", "dl-0"))
    assert gone is not None and gone.gone and not gone.succeeded


def test_finished_without_result_is_not_a_success(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.next_job_without_result = True
    result = upload(hq, tmp_path, ["external_id", "name"], [["s-1", "Amina"]])
    assert result.state == 2 and not result.succeeded


def test_refusals_before_queueing(hq: CommCareEmulator, tmp_path: Path) -> None:
    content = sheets(Sheet1=[["external_id", "name"], ["s-1", "A"]])
    hq.case_types = set()
    answer = raw_upload(hq, content, case_type="student", search_field="external_id", create_new_cases="on")
    assert answer.status_code == 500 and "does not use cases yet" in answer.json()["message"]
    hq.case_types = {"student"}
    hq.location_restricted = True
    assert raw_upload(hq, content, case_type="student").status_code == 403
    assert not hq.jobs


def test_multi_sheet_mode_when_every_sheet_is_a_case_type(hq: CommCareEmulator) -> None:
    content = sheets(student=[["external_id", "name"], ["s-1", "A"]])
    fields = dict(case_type="student", search_field="external_id", search_column="external_id")
    on = raw_upload(hq, content, create_new_cases="on", **fields)
    hq.wait_for_jobs()
    assert on.status_code == 200 and not hq.cases, "'on' is not 'True' in multi-sheet mode: new rows skipped"
    raw_upload(hq, content, create_new_cases="True", **fields)
    hq.wait_for_jobs()
    assert list(hq.by_external_id("student")) == ["s-1"]
    no_column = raw_upload(hq, content, case_type="student", search_field="external_id", create_new_cases="True")
    assert no_column.status_code == 500 and "html" in no_column.headers["Content-Type"], "a KeyError: Django's page"


def test_update_matches_a_closed_case_and_cannot_reopen_it(hq: CommCareEmulator, tmp_path: Path) -> None:
    upload(hq, tmp_path, ["external_id", "name"], [["s-1", "A"]])
    upload(hq, tmp_path, ["external_id", "name", "close"], [["s-1", "A", "yes"]])
    result = upload(hq, tmp_path, ["external_id", "name", "close"], [["s-1", "B", None]])
    case = hq.by_external_id("student")["s-1"]
    assert result.updated == 1 and case.closed and case.name == "B"


def test_data_dictionary_dates(hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.importer.dictionary = {"student": {"last_seen": "date"}}
    hq.importer.validate_dictionary = True
    result = upload(hq, tmp_path, ["external_id", "name", "last_seen"],
                    [["s-1", "A", "2026-11-25"], ["s-2", "B", "2026-11-25 15:27:11"], ["s-3", "C", "2026-11-25T15:27:11Z"]])
    assert result.created == 1 and sorted(result.row_errors()) == [3, 4]
    assert all(e.startswith("Invalid Date") for e in result.row_errors().values())


def test_case_api_bulk_fetch_by_external_id(hq: CommCareEmulator, tmp_path: Path) -> None:
    upload(hq, tmp_path, ["external_id", "name"], [["s-1", "A"], ["s-2", "B"]])
    found = client(hq).find_external_ids(["s-1", "s-9", "s-2"])
    assert sorted(found) == ["s-1", "s-2"] and found["s-1"]["case_name"] == "A" and found["s-1"]["closed"] is False
    auth = {"Authorization": f"ApiKey {hq.username}:{hq.api_key}"}
    listed = requests.get(f"{hq.base_url}/a/{hq.domain}/api/case/v2/", params={"external_id": "s-2"}, headers=auth,
                          timeout=10).json()
    assert [c["case_name"] for c in listed["cases"]] == ["B"]
    bad = requests.get(f"{hq.base_url}/a/{hq.domain}/api/case/v2/", params={"nonsense": "1"}, headers=auth, timeout=10)
    assert bad.status_code == 400
