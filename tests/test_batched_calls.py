"""Per-student calls in batches (tool_mobile_call_external_functions), through real HTTP against the emulator, which
answers a batch as Moodle's admin/tool/mobile/classes/external.php does (emulators/moodle/batch.py): the same rows as
one call per request in far fewer requests; a call failing mid-batch resumed from the next index with nothing lost
and nothing fetched twice; a site without the function served one call per request; a batch cut by max_input_vars
sent again in smaller parts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

import duckdb
import pytest

from emulators.moodle import MoodleEmulator
from pipelines.moodle.client import BATCH_FUNCTION
from pipelines.moodle.config import ENROLLED_USERS_PER_REQUEST
from pipelines.moodle.errors import MoodleAccessError
from pipelines.moodle.webservice import (
    FN_ACTIVITIES_COMPLETION,
    FN_COURSE_CONTENTS,
    FN_ENROLLED_USERS,
    FN_USERS_COURSES,
)

from .conftest import SMALL
from .conftest import Warehouse as Extracts

PER_STUDENT = (FN_USERS_COURSES, FN_ACTIVITIES_COMPLETION)
SKIP = ("_dlt_load_id", "_dlt_id", "extracted_at", "seen_at")


def _rows(db: Path, table: str) -> List[Tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        names = [r[0] for r in con.execute(f"describe moodle_raw.{table}").fetchall() if r[0] not in SKIP]
        cols = ", ".join(f'"{n}"' for n in names)
        return con.execute(f"select {cols} from moodle_raw.{table} order by all").fetchall()


def _fetched(moodle: MoodleEmulator) -> List[Tuple[str, Tuple[Tuple[str, str], ...]]]:
    """Every per-student call the emulator answered (single or batched), with its arguments."""
    seen: List[Tuple[str, Tuple[Tuple[str, str], ...]]] = []
    moodle.after_request(lambda function, args: seen.append((function, tuple(sorted(
        (k, str(v)) for k, v in args.items())))) if function in PER_STUDENT else None)
    return seen


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The same school read one call per request (a service without the batch function): the reference."""
    tmp = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("DLT_DATA_DIR", str(tmp / "dlt_data"))
        with MoodleEmulator(spec=SMALL) as moodle:
            report = Extracts(moodle, tmp / "single.duckdb").extract()
            calls = dict(moodle.calls)
    return {"db": tmp / "single.duckdb", "report": report, "calls": calls}


def test_batched_calls_load_the_same_rows_in_far_fewer_requests(single: Dict[str, Any], tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, batch_function=True) as moodle:
        fetched = _fetched(moodle)
        report = Extracts(moodle, tmp_path / "batched.duckdb").extract()
        served = dict(moodle.requests)
    for table in ("course_engagement", "activity_completion", "enrolments", "course_modules", "course_sections"):
        assert _rows(tmp_path / "batched.duckdb", table) == _rows(single["db"], table), table
    completion = single["report"].stats.calls[FN_ACTIVITIES_COMPLETION]
    assert completion > 100
    # every completion call went in a batch: none as a request of its own, each made once
    assert served.get(FN_ACTIVITIES_COMPLETION, 0) == 0 and report.stats.requests.get(FN_ACTIVITIES_COMPLETION, 0) == 0
    assert report.stats.web_service_calls[FN_ACTIVITIES_COMPLETION] == completion
    assert len(fetched) == len(set(fetched)), "nothing fetched twice"
    # one course's calls per batch, at most 100 each: about one request per course instead of one per pair (and
    # one or two for the users' course lists, the engagement's and the enrolment check's)
    courses = len({dict(a)["courseid"] for f, a in fetched if f == FN_ACTIVITIES_COMPLETION})
    per_student = report.stats.batches[FN_ACTIVITIES_COMPLETION] + report.stats.batches[FN_USERS_COURSES]
    assert per_student <= courses + single["report"].stats.calls[FN_USERS_COURSES] // 100 + 3
    # the per-course calls too: enrolment pages and outlines, several courses to a request
    for function in (FN_ENROLLED_USERS, FN_COURSE_CONTENTS):
        assert served.get(function, 0) == 0 and report.stats.requests.get(function, 0) == 0, function
        assert report.stats.web_service_calls[function] == single["report"].stats.calls[function], function
        assert report.stats.batches[function] * 4 <= report.stats.web_service_calls[function], function
    assert report.stats.total_requests < single["report"].stats.total_requests - completion
    # the counts say both: HTTP requests, and the calls inside them
    assert sum(report.stats.web_service_calls.values()) == sum(
        n for f, n in single["report"].stats.calls.items())


@pytest.mark.parametrize("page_size", [7, 1000])
def test_enrolment_pages_go_many_to_a_request_within_the_server_time_budget(
        single: Dict[str, Any], tmp_path: Path, page_size: int) -> None:
    """Round by round, every list's next page together: the same enrolments as one call per request; each batch of
    one list (a refusal of the active list names its own capability); no more full pages to a request than
    ENROLLED_USERS_PER_REQUEST users (the server's time on it), while pages after a short one, nearly always empty,
    go many to a request."""
    sent: List[List[Dict[str, Any]]] = []
    with MoodleEmulator(spec=SMALL, batch_function=True) as moodle:
        moodle.after_request(lambda function, params: sent.append(list(params["requests"]))
                             if function == BATCH_FUNCTION else None)
        Extracts(moodle, tmp_path / "e.duckdb").extract(page_size=page_size)
    assert _rows(tmp_path / "e.duckdb", "enrolments") == _rows(single["db"], "enrolments")
    batches = []
    for batch in sent:
        pages = [json.loads(r["arguments"]) for r in batch if r["function"] == FN_ENROLLED_USERS]
        if pages:
            assert len(pages) == len(batch), "enrolment pages travel on their own"
            batches.append([(p["courseid"], {o["name"]: o["value"] for o in p["options"]}) for p in pages])
    pages = [(cid, "onlyactive" in o, o["limitfrom"]) for b in batches for cid, o in b]
    assert len(pages) == len(set(pages)), "no page fetched twice"
    for batch in batches:
        assert len({"onlyactive" in o for _, o in batch}) == 1, "one list per batch"
        assert len(batch) <= 100
    first_pages = [b for b in batches if all(o["limitfrom"] == 0 for _, o in b)]
    if page_size == 1000:  # 2,500 users' worth: two first pages to a request; the (empty) second pages ten
        assert first_pages and max(map(len, first_pages)) == ENROLLED_USERS_PER_REQUEST // page_size
        assert max(len(b) for b in batches if b not in first_pages) > ENROLLED_USERS_PER_REQUEST // page_size
    else:  # courses of more than 7: several rounds, each course's next page with the others'
        assert max(offset for _, _, offset in pages) >= 3 * page_size
        assert max(map(len, first_pages)) == len({cid for cid, _, _ in pages}), "every course's first page at once"


def test_a_call_failing_mid_batch_is_retried_and_the_rest_resumed(single: Dict[str, Any], tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, batch_function=True) as moodle:
        s = moodle.school
        course = next(c for c in sorted(s.enrolments) if len(s.students_of(c, True)) >= 5)
        middle = sorted(s.students_of(course, True))[len(s.students_of(course, True)) // 2]
        moodle.inject("ex_unabletolock", function=FN_ACTIVITIES_COMPLETION, course_id=course, user_id=middle)
        fetched = _fetched(moodle)
        Extracts(moodle, tmp_path / "b.duckdb").extract()
    assert _rows(tmp_path / "b.duckdb", "activity_completion") == _rows(single["db"], "activity_completion")
    again = [a for f, a in fetched if f == FN_ACTIVITIES_COMPLETION and dict(a)["userid"] == str(middle)
             and dict(a)["courseid"] == str(course)]
    assert len(again) == 2, "the failed call once more, on its own"
    others = [a for f, a in fetched if a not in again]
    assert len(others) == len(set(others)), "the calls after it resumed, none fetched twice"


def test_a_call_refused_mid_batch_stops_the_run_as_the_single_call_does(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, batch_function=True) as moodle:
        s = moodle.school
        course = next(c for c in sorted(s.enrolments) if len(s.students_of(c, True)) >= 5)
        middle = sorted(s.students_of(course, True))[2]
        # refused for good: inside the batch, then on its own
        moodle.inject("nopermissions", function=FN_ACTIVITIES_COMPLETION, course_id=course, user_id=middle, times=2)
        with pytest.raises(MoodleAccessError) as refused:
            Extracts(moodle, tmp_path / "r.duckdb").extract()
    said = str(refused.value)
    assert FN_ACTIVITIES_COMPLETION in said and "report/progress:view" in said


def test_a_site_without_the_batch_function_is_read_one_call_per_request_and_says_so(
        single: Dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="moodle_commcare.moodle"):
        with MoodleEmulator(spec=SMALL) as moodle:
            report = Extracts(moodle, tmp_path / "s.duckdb").extract()
    assert report.stats.requests.get(BATCH_FUNCTION, 0) == 0
    assert report.stats.requests[FN_ACTIVITIES_COMPLETION] == single["report"].stats.calls[FN_ACTIVITIES_COMPLETION]
    said = [r.getMessage() for r in caplog.records if BATCH_FUNCTION in r.getMessage()]
    assert len(said) == 1 and "Add it to the service" in said[0]


def test_a_batch_cut_by_max_input_vars_is_sent_again_in_smaller_parts(
        single: Dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 100 calls need 300+ input variables: a php.ini of 200 cuts every full batch short, without a word
    with caplog.at_level(logging.WARNING, logger="moodle_commcare.moodle"):
        with MoodleEmulator(spec=SMALL, batch_function=True, max_input_vars=200) as moodle:
            fetched = _fetched(moodle)
            Extracts(moodle, tmp_path / "m.duckdb").extract(user_batch_size=50)
    for table in ("course_engagement", "activity_completion"):
        assert _rows(tmp_path / "m.duckdb", table) == _rows(single["db"], table), table
    assert len(fetched) == len(set(fetched)), "what was cut off is sent once, not twice"
    assert any("max_input_vars" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("batch_function, says", [
    (True, "per-student calls go 100 to a request, enrolment pages and course outlines several courses' to a request"),
    (False, "every call is a request of its own")])
def test_check_says_whether_calls_will_be_batched(batch_function: bool, says: str) -> None:
    from pipelines.moodle.preflight import check_configured_moodle

    with MoodleEmulator(spec=SMALL, batch_function=batch_function) as moodle:
        result = check_configured_moodle(base_url=moodle.base_url, token=moodle.token, allow_insecure_http=True)
    [functions] = [f for f in result.findings if f.check == "moodle.functions"]
    assert says in functions.detail and BATCH_FUNCTION in functions.detail
