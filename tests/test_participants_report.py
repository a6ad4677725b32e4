"""Engagement from a "Course participants" custom report (pipelines/moodle/report.py), through real HTTP against the
emulator, which answers core_reportbuilder_retrieve_report as Moodle 4.1 / 4.5 do (emulators/moodle/reports.py):
display text in the caller's language and timezone, a row per user enrolment, offset pages over a report that may
change between them.

The same engagement as one call per student (progress to one decimal, as the report shows it) in a few pages; a site
whose default language is French still read in English; a report retitled in French, or a site forcing its timezone,
refused before anything is loaded; rows shifting between pages read again, and enrolments a report keeps losing read
one student per call; an unknown report or one the connector may not view named with the fix; `check` says each.
"""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import duckdb
import pytest
import requests

from emulators.moodle import MoodleEmulator
from emulators.moodle.reports import RECOMMENDED
from moodle_commcare.findings import Status
from pipelines.moodle.config import MoodleSettings
from pipelines.moodle.errors import MoodleConfigError
from pipelines.moodle.preflight import check_moodle
from pipelines.moodle.report import ReportError
from pipelines.moodle.webservice import FN_RETRIEVE_REPORT, FN_USERS_COURSES

from .conftest import SMALL
from .conftest import Warehouse as Extracts

ENGAGEMENT = "select user_id, course_id, progress, completed, lastaccess, completionusertracked " \
             "from moodle_raw.course_engagement order by all"


def _engagement(db: Path, one_decimal: bool = False) -> List[Tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(ENGAGEMENT).fetchall()
    if not one_decimal:
        return rows
    return [(u, c, None if p is None else float(Decimal(repr(p)).quantize(Decimal("0.1"), ROUND_HALF_UP)), *rest)
            for u, c, p, *rest in rows]


def _report(moodle: MoodleEmulator, **changes: Any) -> int:
    """The report the README asks an admin to build, the connector's user in its audience."""
    spec: Dict[str, Any] = {**RECOMMENDED, "audience": [moodle.school.service_users["integration"]], **changes}
    return moodle.add_report(**spec)


def _pages(moodle: MoodleEmulator) -> List[Dict[str, Any]]:
    seen: List[Dict[str, Any]] = []
    moodle.after_request(lambda function, args: seen.append(dict(args)) if function == FN_RETRIEVE_REPORT else None)
    return seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> List[Tuple[Any, ...]]:
    """The school's engagement read one call per student: what the report must give."""
    tmp = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        with MoodleEmulator(spec=SMALL) as moodle:
            Extracts(moodle, tmp / "single.duckdb").extract()
    return _engagement(tmp / "single.duckdb", one_decimal=True)


@pytest.mark.parametrize("setup", ["recommended", "every row of every enrolment instance"])
def test_the_report_gives_the_same_engagement_in_a_few_pages(setup: str, reference: List[Tuple[Any, ...]],
                                                             tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        changes: Dict[str, Any] = {} if setup == "recommended" else {
            # no conditions (4.5's default keeps active enrolments only): suspended and not-current enrolments, a
            # second one through a closed instance, an empty row for each instance nobody uses
            "columns": [*RECOMMENDED["columns"], "enrolment:method"], "uniquerows": False, "conditions": {}}
        report_id = _report(moodle, **changes)
        rows = _all_rows(moodle, report_id)
        pages = _pages(moodle)
        Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id, report_page_size=50)
        per_student = moodle.calls[FN_USERS_COURSES]
    assert _engagement(tmp_path / "report.duckdb") == reference
    assert len(reference) > 100
    links = [tuple(r[:2]) for r in rows]
    if setup != "recommended":  # students enrolled through two instances: their rows repeat, and are read once
        assert len(links) > len(set(links)), "the school has no student enrolled twice"
        assert any(user == "" for _, user in links), "no empty row of an unused instance"
    else:
        assert len(links) == len(set(links))
    students = len({u for u, *_ in reference})
    # the enrolment reader's own count checks, plus the calibration's few students: not one call per student
    assert per_student < students / 4, (per_student, students)
    assert len(pages) >= 3 and {int(p["perpage"]) for p in pages} == {50}
    assert sorted(int(p["page"]) for p in pages) == list(range(len(pages))), "each page once: nothing read twice"


def _all_rows(moodle: MoodleEmulator, report_id: int) -> List[List[str]]:
    """Every row of the report in one page (perpage 0: no limit, as the DML layer reads it)."""
    body = {"wstoken": moodle.token, "wsfunction": FN_RETRIEVE_REPORT, "moodlewsrestformat": "json",
            "reportid": report_id, "perpage": 0}
    answer = requests.post(f"{moodle.base_url}/webservice/rest/server.php", data=body, timeout=30).json()
    return [r["columns"] for r in answer["data"]["rows"]]


def test_a_quiet_day_reads_its_few_students_one_call_each_not_the_whole_report(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        s = moodle.school
        report_id = _report(moodle)
        extracts = Extracts(moodle, tmp_path / "report.duckdb")
        extracts.extract(participants_report_id=report_id)

        cid, uid = next((c, u) for c, u, e in s.all_enrolments() if e.role == "student" and e.active
                        and s.courses[c].enablecompletion and s.courses[c].visible)
        before = {(u, c): rest for u, c, *rest in _engagement(tmp_path / "report.duckdb")}[(uid, cid)]
        at = s.record_access(uid, cid)  # one student opens a course: the only engagement that may have moved
        pages = _pages(moodle)
        moodle.reset_counts()
        extracts.extract(participants_report_id=report_id)
        per_student = moodle.calls[FN_USERS_COURSES]
    assert pages == [], "the report is not read for one student"
    assert per_student >= 1
    progress, completed, last, tracked = {(u, c): rest for u, c, *rest in _engagement(tmp_path / "report.duckdb")}[
        (uid, cid)]
    assert last == at
    assert [progress, completed, tracked] == [before[0], before[1], before[3]], "read with its own call: the same"


def test_the_report_is_read_in_english_and_utc_whatever_the_site_and_user_prefer(
        reference: List[Tuple[Any, ...]], tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.configure(lang="fr", timezone="Africa/Nairobi")
        user = moodle.school.service_users["integration"]
        moodle.school.update_user(user, lang="fr", timezone="America/Mexico_City")
        report_id = _report(moodle)
        Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id)
    assert _engagement(tmp_path / "report.duckdb") == reference


def test_a_report_retitled_in_french_is_refused_before_anything_is_loaded(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        report_id = _report(moodle, headings={"completion:progresspercent": "Progression",
                                              "access:timeaccess": "Dernier accès au cours"})
        with pytest.raises(ReportError) as refused:
            Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id)
    message = str(refused.value)
    assert "'Student progress'" in message and "'Last access to course'" in message
    assert "'Progression'" in message and "English title" in message
    assert isinstance(refused.value, MoodleConfigError)


def test_a_site_that_forces_its_timezone_fails_the_calibration(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.configure(forcetimezone="Africa/Nairobi")
        report_id = _report(moodle)
        with pytest.raises(ReportError, match=r"not in UTC.*\+3 h|\+3 h.*not in UTC"):
            Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id)


def test_rows_shifting_between_pages_are_read_again(reference: List[Tuple[Any, ...]], tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        s = moodle.school
        report_id = _report(moodle)
        teacher_course = next(iter(s.courses))
        newcomer = next(u for u in sorted(s.users) if u not in s.enrolments[teacher_course] and
                        u not in s.service_users.values() and u > 2)
        moved: List[int] = []

        def enrol_while_paging(function: str, args: Dict[str, Any]) -> None:
            if function == FN_RETRIEVE_REPORT and not moved:
                moved.append(1)  # a teacher enrols someone: every row after theirs moves down one
                s.enrol(teacher_course, newcomer, role="editingteacher")

        moodle.after_request(enrol_while_paging)
        pages = _pages(moodle)
        with caplog.at_level(logging.WARNING, logger="pipelines.moodle.report"):
            Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id,
                                                                 report_page_size=40)
    assert moved and "changed while it was read" in caplog.text
    assert sum(1 for p in pages if int(p["page"]) == 0) == 2, "read once more, whole"
    assert _engagement(tmp_path / "report.duckdb") == reference


def test_enrolments_a_moving_report_keeps_losing_are_read_one_student_per_call(
        reference: List[Tuple[Any, ...]], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        s = moodle.school
        # the course sorted first: a row of it removed shifts every later row up one, across every page boundary
        first = min(s.courses, key=lambda c: s.courses[c].fullname)
        staff = [u for u in sorted(s.users) if u not in s.enrolments[first] and u not in s.service_users.values()
                 and u > 3][:30]
        for uid in staff:
            s.enrol(first, uid, role="editingteacher")
        report_id = _report(moodle)

        def churn(function: str, args: Dict[str, Any]) -> None:
            """A teacher leaves the first course while each page is read: the count drops each time, and a row
            at every page boundary is never read."""
            if function == FN_RETRIEVE_REPORT and staff:
                s.unenrol(first, staff.pop())

        moodle.after_request(churn)
        with caplog.at_level(logging.WARNING, logger="pipelines.moodle.report"):
            Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id,
                                                                 report_page_size=30)
        per_student = moodle.calls[FN_USERS_COURSES]
    assert caplog.text.count("reading it again") == 2, "three reads, then no more"
    assert "(it changed while it was read): they are read one student per call" in caplog.text
    assert _engagement(tmp_path / "report.duckdb") == reference, "nothing lost"
    assert per_student > 0


@pytest.mark.parametrize("case, expected", [
    ("unknown", "there is no custom report 999"),
    ("audience", "Add the user to the report's audience"),
    ("disabled", "Enable custom reports"),
])
def test_a_report_moodle_will_not_give_names_the_fix(case: str, expected: str, tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        audience: List[int] = [] if case == "audience" else [moodle.school.service_users["integration"]]
        report_id = 999 if case == "unknown" else moodle.add_report(**{**RECOMMENDED, "audience": audience})
        if case == "disabled":
            moodle.configure(enablecustomreports=False)
        with pytest.raises(ReportError, match=expected):
            Extracts(moodle, tmp_path / "report.duckdb").extract(participants_report_id=report_id)


def _check(moodle: MoodleEmulator, report_id: Optional[int]) -> Any:
    settings = MoodleSettings.build(moodle.base_url, token=moodle.token, allow_insecure_http=True,
                                    participants_report_id=report_id)
    return {f.check: f for f in check_moodle(settings).findings}


def test_check_reads_and_calibrates_the_report() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        good = _report(moodle)
        retitled = _report(moodle, headings={"completion:completed": "Terminé"})
        assert "moodle.participants_report" not in _check(moodle, None)
        ok = _check(moodle, good)["moodle.participants_report"]
        assert ok.status == Status.OK and "read as English and UTC" in ok.detail, ok
        refused = _check(moodle, retitled)["moodle.participants_report"]
        assert refused.status == Status.FAIL and "'Terminé'" in refused.detail, refused
        moodle.remove_function(FN_RETRIEVE_REPORT)
        findings = _check(moodle, good)
        assert findings["moodle.functions"].status == Status.FAIL
        assert FN_RETRIEVE_REPORT in findings["moodle.functions"].detail
