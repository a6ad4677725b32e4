"""The Moodle emulator's core_reportbuilder_retrieve_report on the "Course participants" source, over real HTTP.

What a real 4.1 / 4.5 site does (reportbuilder/classes/external/reports/retrieve.php and the participants datasource;
emulators/moodle/reports.py cites each file): every cell is display text in the caller's language and timezone, one
row per user enrolment (two for a user enrolled through two instances, an empty one for an instance nobody uses),
rows collapsing only with "Remove any duplicate rows" and only where every column's fields agree, pages cut by
LIMIT/OFFSET over the report's sort, totalrowcount over the whole report, and the errors of an unknown report, a caller
outside the audience and a site without custom reports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from emulators.moodle import MoodleEmulator
from emulators.moodle.api import BATCH_FUNCTION
from emulators.moodle.site import SiteConfig
from pipelines.moodle.params import encode_params

from .conftest import SMALL

RETRIEVE = "core_reportbuilder_retrieve_report"
ALL = ["course:coursefullnamewithlink", "user:fullnamewithlink", "completion:progresspercent", "completion:completed",
       "access:timeaccess", "enrolment:method"]
RECOMMENDED = ALL[:5]
BY_NAME = ["course:coursefullnamewithlink", "user:fullnamewithlink"]
HEADERS_EN = ["Course full name with link", "Full name with link", "Student progress", "Completed",
              "Last access to course", "Method"]
HEADERS_FR = ["Nom complet du cours avec lien", "Nom complet avec lien", "Suivi des activités des participants",
              "Terminé", "Dernier accès au cours", "Méthode"]
WWW = "https://moodle.demo-academy.example"
# Tuesday 1 September 2026, 09:05 UTC: a day and a 12-hour hour that both lose their leading zero
ACCESS = 1788253500


def _call(moodle: MoodleEmulator, function: str, settings: Optional[Dict[str, str]] = None,
          token: Optional[str] = None, **params: Any) -> Any:
    body = [("wstoken", token or moodle.token), ("wsfunction", function), ("moodlewsrestformat", "json"),
            *sorted((settings or {}).items()), *encode_params(params)]
    return requests.post(f"{moodle.base_url}/webservice/rest/server.php", data=body, timeout=30).json()


def _retrieve(moodle: MoodleEmulator, reportid: int, settings: Optional[Dict[str, str]] = None,
              token: Optional[str] = None, **params: Any) -> Any:
    return _call(moodle, RETRIEVE, settings, token, reportid=reportid, **params)


def _rows(answer: Dict[str, Any]) -> List[List[str]]:
    assert "exception" not in answer, answer
    return [row["columns"] for row in answer["data"]["rows"]]


def _everything(moodle: MoodleEmulator, reportid: int, settings: Optional[Dict[str, str]] = None) -> List[List[str]]:
    answer = _retrieve(moodle, reportid, settings, perpage=0)  # limit 0: no limit
    rows = _rows(answer)
    assert len(rows) == answer["data"]["totalrowcount"]
    return rows


def _ids(cells: List[str]) -> Tuple[int, Optional[int]]:
    """(course id, user id or None) from a row's two link cells."""
    course = re.fullmatch(rf'<a href="{WWW}/course/view\.php\?id=(\d+)">[^<]*</a>', cells[0])
    assert course, cells[0]
    if cells[1] == "":
        return int(course.group(1)), None
    user = re.fullmatch(rf'<a href="{WWW}/user/profile\.php\?id=(\d+)">[^<]*</a>', cells[1])
    assert user, cells[1]
    return int(course.group(1)), int(user.group(1))


def _integration(moodle: MoodleEmulator) -> int:
    return moodle.school.service_users["integration"]


def _self_enrolled(moodle: MoodleEmulator) -> List[Tuple[int, int]]:
    pairs = [(cid, uid) for cid, uids in moodle.school.self_enrolled.items() for uid in uids]
    assert len(pairs) >= 5, "the school has students enrolled through two instances"
    return pairs


def _percent(value: float, decsep: str = ".", sign: str = "%") -> str:
    """format_float(1) as PHP rounds (half away from zero on the shortest decimal form), then the percents string."""
    return f"{Decimal(repr(value)).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}".replace(".", decsep) + sign


@pytest.fixture(scope="module")
def moodle() -> Iterator[MoodleEmulator]:
    """A 4.5 site; the token is the integration user's (a custom system role, no report capability of its own)."""
    with MoodleEmulator(spec=SMALL, batch_function=True) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def report(moodle: MoodleEmulator) -> int:
    return moodle.add_report(ALL, name="Participants & progress", sort=BY_NAME, audience=[_integration(moodle)])


def test_the_answer_has_the_exporters_shape(moodle: MoodleEmulator, report: int) -> None:
    answer = _retrieve(moodle, report)
    assert list(answer) == ["details", "data", "warnings"] and answer["warnings"] == []
    details = answer["details"]
    # the report persistent's properties in their order, then the exporter's own
    assert list(details) == ["name", "source", "type", "uniquerows", "conditiondata", "settingsdata", "contextid",
                             "component", "area", "itemid", "usercreated", "id", "timecreated", "timemodified",
                             "usermodified", "sourcename", "modifiedby"]
    assert details["name"] == "Participants &amp; progress", "external_format_string, as every PARAM_TEXT property"
    assert (details["source"], details["type"], details["uniquerows"], details["id"]) == (
        "core_course\\reportbuilder\\datasource\\participants", 0, False, report)
    # 4.5's default setup: the enrolment status condition set to Active
    assert details["conditiondata"] == '{"enrolment:status_operator":1,"enrolment:status_value":0}'
    assert (details["settingsdata"], details["contextid"], details["component"], details["area"], details["itemid"]) == (
        None, 1, "", "", 0)
    assert details["sourcename"] == "Course participants"
    assert details["modifiedby"] == {
        "id": 2, "email": "admin@example.org", "idnumber": "", "phone1": "", "phone2": "", "department": "",
        "institution": "", "fullname": "Site Admin", "identity": "admin@example.org",
        "profileurl": f"{WWW}/user/profile.php?id=2", "profileimageurl": f"{WWW}/theme/image.php/boost/core/1/u/f1",
        "profileimageurlsmall": f"{WWW}/theme/image.php/boost/core/1/u/f2"}
    data = answer["data"]
    assert list(data) == ["headers", "rows", "totalrowcount"] and data["headers"] == HEADERS_EN
    assert len(data["rows"]) == 10, "perpage defaults to 10"
    assert all(list(r) == ["columns"] and len(r["columns"]) == 6 and all(isinstance(c, str) for c in r["columns"])
               for r in data["rows"])


def test_pages_cut_one_sorted_list_and_count_all_of_it(moodle: MoodleEmulator, report: int) -> None:
    everything = _everything(moodle, report)
    total = len(everything)
    assert total > 40
    pages: List[List[str]] = []
    for page in range(total // 7 + 2):
        answer = _retrieve(moodle, report, page=page, perpage=7)
        assert answer["data"]["totalrowcount"] == total, "the count is the whole report's on every page"
        pages += _rows(answer)
    assert pages == everything, "LIMIT 7 OFFSET page*7 over one order; the page past the end is empty"
    assert _rows(_retrieve(moodle, report, page=-3, perpage=7)) == everything[:7], "a negative offset reads as 0"
    # sorted by the course's full name, then the user's first and last names (as stored: a multilang name's tags too)
    school = moodle.school
    keys = []
    for cells in everything:
        cid, uid = _ids(cells)
        assert uid is not None, "4.5's default condition (enrolment status Active) drops the rows without a user"
        user = school.users[uid]
        keys.append((school.courses[cid].fullname, user.firstname, user.lastname))
    assert keys == sorted(keys)
    # the rows are the active enrolments, each once: suspended ones and the closed self instance's are not current
    active = Counter((cid, uid) for cid, uid, e in school.all_enrolments() if e.active)
    assert Counter(_ids(cells) for cells in everything) == active
    assert all(cells[5] == "Manual enrolments" for cells in everything)


def test_a_user_enrolled_through_two_instances_is_two_rows_until_unique_rows_collapse_them(
        moodle: MoodleEmulator) -> None:
    """Without conditions every user enrolment is a row: the closed self instance's rows beside the manual ones, and a
    row with no user for the guest instance of every course (and the self instance where nobody used it)."""
    school, twice = moodle.school, _self_enrolled(moodle)
    audience = [_integration(moodle)]
    plain = moodle.add_report(ALL, sort=BY_NAME, audience=audience, conditions={})
    rows = _everything(moodle, plain)
    counts = Counter(_ids(cells) for cells in rows)
    enrolments = Counter((cid, uid) for cid, uid, _ in school.all_enrolments())
    empty = {cid: 1 + (cid not in school.self_enrolled or not school.self_enrolled[cid]) for cid in school.courses}
    assert counts == enrolments + Counter(twice) + Counter({(cid, None): n for cid, n in empty.items()})
    for cid, uid in twice:
        both = [cells for cells in rows if _ids(cells) == (cid, uid)]
        assert [cells[5] for cells in both] == ["Manual enrolments", "Self enrolment (Student)"]
        assert both[0][:5] == both[1][:5], "the same course, user, progress, completion and access"
    blank = [cells for cells in rows if _ids(cells)[1] is None]
    assert {tuple(cells[1:5]) for cells in blank} == {("", "", "", "")}, "no user: every user cell empty"
    assert Counter(cells[5] for cells in blank)["Guest access"] == len(school.courses)
    # unique rows: identical when every column's fields agree, so without the enrolment column the pairs collapse...
    unique = moodle.add_report(RECOMMENDED, sort=BY_NAME, audience=audience, conditions={}, uniquerows=True)
    rows = _everything(moodle, unique)
    assert Counter(_ids(cells) for cells in rows) == Counter(set(enrolments) | {(cid, None) for cid in school.courses})
    assert _retrieve(moodle, unique)["details"]["uniquerows"] is True
    # ...and with it (the instance differs) they stay
    kept = moodle.add_report(ALL, sort=BY_NAME, audience=audience, conditions={}, uniquerows=True)
    assert Counter(_ids(cells) for cells in _everything(moodle, kept)) == counts


def test_french_cells_and_headers_follow_moodlewssettinglang(moodle: MoodleEmulator, report: int) -> None:
    english = _retrieve(moodle, report, {"moodlewssettinglang": "en"}, perpage=0)
    french = _retrieve(moodle, report, {"moodlewssettinglang": "fr"}, perpage=0)
    assert english["data"]["headers"] == HEADERS_EN and french["data"]["headers"] == HEADERS_FR
    assert english["details"]["sourcename"] == "Course participants"
    assert french["details"]["sourcename"] == "Participants au cours"
    en, fr = _rows(english), _rows(french)
    assert [c[:2] for c in en] == [c[:2] for c in fr], "the same rows in the same order, links alike"
    words = {"Yes": "Oui", "No": "Non", "": "", "Never": "Jamais", "Manual enrolments": "Inscription manuelle"}
    seen = set()
    for e, f in zip(en, fr, strict=True):
        number = re.fullmatch(r"(\d+)\.(\d)%", e[2])
        assert number and f[2] == f"{number.group(1)},{number.group(2)} %", (e[2], f[2])
        assert f[3] == words[e[3]] and f[5] == words[e[5]]
        if e[4] == "Never":
            assert f[4] == "Jamais"
        else:
            assert re.fullmatch(r"(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d{1,2} [A-Z][a-z]+ 2026, \d{1,2}:\d\d [AP]M",
                                e[4]), e[4]
            assert re.fullmatch(r"(lun|mar|mercre|jeu|vendre|same)di \d{1,2} [a-zéû]+ 2026, \d\d:\d\d|dimanche "
                                r"\d{1,2} [a-zéû]+ 2026, \d\d:\d\d", f[4]), f[4]
        seen |= {e[3], e[4] == "Never"}
    assert {"Yes", "No", True, False} <= seen, "completed and not, accessed and never, all on the page"
    # no setting: the token user's own language, else the site's
    uid = _integration(moodle)
    moodle.school.update_user(uid, lang="fr")
    try:
        assert _retrieve(moodle, report)["data"]["headers"] == HEADERS_FR
        assert _retrieve(moodle, report, {"moodlewssettinglang": "en"})["data"]["headers"] == HEADERS_EN
    finally:
        moodle.school.update_user(uid, lang="en")


def _access_cell(moodle: MoodleEmulator, report: int, cid: int, uid: int, settings: Optional[Dict[str, str]] = None,
                 token: Optional[str] = None) -> str:
    [cells] = [cells for cells in _everything_as(moodle, report, settings, token) if _ids(cells) == (cid, uid)]
    return cells[4]


def _everything_as(moodle: MoodleEmulator, report: int, settings: Optional[Dict[str, str]],
                   token: Optional[str]) -> List[List[str]]:
    return _rows(_retrieve(moodle, report, settings, token, perpage=0))


def test_last_access_is_userdate_in_the_callers_timezone() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        uid = _integration(moodle)
        report = moodle.add_report(RECOMMENDED, sort=BY_NAME, audience=[uid])
        cid, student = next((c, u) for c, u, e in moodle.school.all_enrolments() if e.active and e.role == "student")
        moodle.school.enrolments[cid][student].lastcourseaccess = ACCESS
        # the integration user's timezone is 99, the server's: $CFG->timezone, Europe/London on a site installed on UTC
        assert _access_cell(moodle, report, cid, student) == "Tuesday, 1 September 2026, 10:05 AM"
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "UTC"}) == (
            "Tuesday, 1 September 2026, 9:05 AM")
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "Africa/Nairobi"}) == (
            "Tuesday, 1 September 2026, 12:05 PM")
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "Europe/Paris",
                                                           "moodlewssettinglang": "fr"}) == "mardi 1 septembre 2026, 11:05"
        # a legacy number is an Etc/GMT zone; a value PARAM_TIMEZONE refuses is '' and changes nothing
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "-4"}) == (
            "Tuesday, 1 September 2026, 5:05 AM")
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "Etc/GMT+3"}) == (
            "Tuesday, 1 September 2026, 10:05 AM")
        # the token user's own profile timezone
        moodle.school.update_user(uid, timezone="America/New_York")
        assert _access_cell(moodle, report, cid, student) == "Tuesday, 1 September 2026, 5:05 AM"
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "UTC"}) == (
            "Tuesday, 1 September 2026, 9:05 AM")
        # a forced timezone wins over the profile and the setting
        moodle.configure(forcetimezone="Asia/Tokyo")
        assert _access_cell(moodle, report, cid, student, {"moodlewssettingtimezone": "UTC"}) == (
            "Tuesday, 1 September 2026, 6:05 PM")
        moodle.configure(forcetimezone="99", timezone="99")  # 99: PHP's own, UTC here
        moodle.school.update_user(uid, timezone="99")
        assert _access_cell(moodle, report, cid, student) == "Tuesday, 1 September 2026, 9:05 AM"


def test_a_custom_heading_is_shown_as_typed_in_every_language(moodle: MoodleEmulator) -> None:
    report = moodle.add_report(RECOMMENDED, sort=BY_NAME, audience=[_integration(moodle)],
                               headings={"completion:progresspercent": "Progress & pace",
                                         "access:timeaccess": "Dernière visite"})
    for lang, titles in (("en", HEADERS_EN), ("fr", HEADERS_FR)):
        headers = _retrieve(moodle, report, {"moodlewssettinglang": lang})["data"]["headers"]
        assert headers == [titles[0], titles[1], "Progress &amp; pace", titles[3], "Dernière visite"]


def test_progress_and_completion_are_core_enrol_get_users_courses_numbers(moodle: MoodleEmulator, report: int) -> None:
    school, checked = moodle.school, Counter[str]()
    rows = {_ids(cells): cells for cells in _everything(moodle, report)}
    students = sorted({uid for cid, uid, e in school.all_enrolments() if e.role == "student" and e.active})
    for uid in students[:25]:
        for course in _call(moodle, "core_enrol_get_users_courses", userid=uid, returnusercount=0):
            cells = rows[(course["id"], uid)]
            if "progress" in course:
                assert cells[2] == _percent(course["progress"]) and cells[3] == ("Yes" if course["completed"] else "No")
                checked["tracked"] += 1
            else:  # completion off: (float) null is 0.0, and 4.5 has no course_completions row to say Yes or No
                assert not school.courses[course["id"]].enablecompletion
                assert (cells[2], cells[3]) == ("0.0%", "")
                checked["untracked"] += 1
    assert checked["tracked"] > 20 and checked["untracked"] > 0, checked
    teachers = [cells for (cid, uid), cells in rows.items()
                if uid is not None and school.enrolments[cid][uid].role != "student"]
    assert teachers and all(cells[2:4] == ["0.0%", ""] for cells in teachers), "not tracked: no progress, no row"


def test_the_4_1_default_setup_filters_nothing_and_says_no_without_a_completion_row() -> None:
    with MoodleEmulator(spec=SMALL, site=SiteConfig.recommended(version="4.1")) as moodle:
        report = moodle.add_report(ALL, sort=BY_NAME, audience=[_integration(moodle)])
        answer = _retrieve(moodle, report, perpage=0)
        assert answer["details"]["conditiondata"] == "[]", "4.1's participants source sets no condition value"
        rows = _rows(answer)
        school = moodle.school
        enrolments = Counter((cid, uid) for cid, uid, _ in school.all_enrolments())
        counts = Counter(_ids(cells) for cells in rows)
        assert +Counter({k: v for k, v in counts.items() if k[1] is not None}) == enrolments + Counter(
            _self_enrolled(moodle)), "suspended enrolments and the closed instance's rows are there"
        suspended = [(cid, uid) for cid, uid, e in school.all_enrolments() if not e.active]
        assert suspended and all(counts[pair] >= 1 for pair in suspended)
        for (cid, uid), cells in ((_ids(cells), cells) for cells in rows):
            if uid is None:
                assert cells[2:5] == ["", "", ""]
            elif school.enrolments[cid].get(uid) and school.enrolments[cid][uid].role != "student":
                assert cells[3] == "No", "4.1: CASE timecompleted > 0 THEN 1 ELSE 0, No without a row"


def test_errors_as_moodle_throws_them() -> None:
    with MoodleEmulator(spec=SMALL, profile="integration") as moodle:
        uid = _integration(moodle)
        mine = moodle.add_report(RECOMMENDED, audience=[uid])
        theirs = moodle.add_report(RECOMMENDED, audience=[uid + 1000])
        assert _retrieve(moodle, 999) == {"exception": "dml_missing_record_exception", "errorcode": "invalidrecord",
                                          "message": "Can't find data record in database table reportbuilder_report."}
        denied = {"exception": "core_reportbuilder\\exception\\report_access_exception", "errorcode": "errorreportview",
                  "message": "You cannot view this report"}
        assert _retrieve(moodle, theirs) == denied, "not in the audience"
        assert _retrieve(moodle, theirs, {"moodlewssettinglang": "fr"}) == {
            **denied, "message": "Vous ne pouvez pas consulter ce rapport"}
        # a site admin views every report (moodle/reportbuilder:viewall)
        admin = moodle.issue_token("admin")
        assert _rows(_retrieve(moodle, theirs, token=admin))
        # no moodle/reportbuilder:view (every authenticated user's by default): no report list, no report
        moodle.prohibit("moodle/reportbuilder:view")
        assert _retrieve(moodle, mine) == denied
        moodle.prohibited.clear()
        assert _rows(_retrieve(moodle, mine))
        # custom reports off: nobody views any, an unknown id is still unknown first
        moodle.configure(enablecustomreports=False)
        assert _retrieve(moodle, mine) == denied and _retrieve(moodle, mine, token=admin) == denied
        assert _retrieve(moodle, 999)["errorcode"] == "invalidrecord"
        moodle.configure(enablecustomreports=True)
        # validate_parameters, and an id of 0 that PHP itself fails on (a TypeError has no errorcode)
        assert _retrieve(moodle, mine, sortby="x")["errorcode"] == "invalidparameter"
        assert _call(moodle, RETRIEVE)["errorcode"] == "invalidparameter"
        assert _retrieve(moodle, 0) == {"exception": "TypeError", "message": (
            "core_reportbuilder\\manager::report_source_exists(): Argument #1 ($source) must be of type string, null "
            "given")}


def test_a_batched_sub_call_answers_as_the_single_call(moodle: MoodleEmulator, report: int) -> None:
    calls: List[Dict[str, Any]] = [{"reportid": report, "page": 0, "perpage": 5},
                                   {"reportid": report, "page": 1, "perpage": 5}, {"reportid": 999}]
    reqs = [{"function": RETRIEVE, "arguments": json.dumps(a), "settinglang": "fr"} for a in calls]
    body = [("wstoken", moodle.token), ("wsfunction", BATCH_FUNCTION), ("moodlewsrestformat", "json"),
            ("moodlewssettingtimezone", "Africa/Nairobi"), *encode_params({"requests": reqs})]
    responses = requests.post(f"{moodle.base_url}/webservice/rest/server.php", data=body, timeout=30).json()["responses"]
    settings = {"moodlewssettinglang": "fr", "moodlewssettingtimezone": "Africa/Nairobi"}
    assert [json.loads(r["data"]) for r in responses[:2]] == [_call(moodle, RETRIEVE, settings, None, **a)
                                                              for a in calls[:2]]
    assert json.loads(responses[1]["data"])["data"]["headers"] == HEADERS_FR
    assert responses[2]["error"] is True
    assert json.loads(responses[2]["exception"])["errorcode"] == "invalidrecord"


def test_an_enrolment_changed_between_two_pages_shifts_the_next_page() -> None:
    """OFFSET over the live table: a row removed after page 0 moves page 1's first row onto page 0, never read."""
    with MoodleEmulator(spec=SMALL) as moodle:
        report = moodle.add_report(RECOMMENDED, sort=BY_NAME, audience=[_integration(moodle)])
        before = _everything(moodle, report)
        gone = _ids(before[2])

        def unenrol_once(function: str, params: Dict[str, Any]) -> None:
            if function == RETRIEVE and str(params.get("page")) == "0" and gone[1] in moodle.school.enrolments[gone[0]]:
                moodle.school.unenrol(gone[0], gone[1])

        moodle.after_request(unenrol_once)
        first = _retrieve(moodle, report, page=0, perpage=5)
        second = _retrieve(moodle, report, page=1, perpage=5)
        assert _rows(first) == before[:5] and first["data"]["totalrowcount"] == len(before)
        assert second["data"]["totalrowcount"] == len(before) - 1
        assert _rows(second) == before[6:11], "before[5] slid onto page 0 after it was read: nobody sees it"


def test_the_command_line_emulator_builds_the_recommended_report() -> None:
    command = [sys.executable, "-m", "emulators.moodle", "--participants-report", "--courses", "4", "--students", "20"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        body = {"wstoken": started["token"], "wsfunction": RETRIEVE, "moodlewsrestformat": "json",
                "reportid": started["participants_report"], "perpage": 0}
        answer = requests.post(f"{started['base_url']}/webservice/rest/server.php", data=body, timeout=30).json()
        assert answer["data"]["headers"] == HEADERS_EN[:5] and answer["details"]["uniquerows"] is True
        assert answer["data"]["totalrowcount"] == len(answer["data"]["rows"]) > 20
    finally:
        process.terminate()
        process.wait(timeout=10)
