"""core_course_get_contents answers each caller as Moodle's get_course_contents does (course/externallib.php): hidden,
stealth and restricted activities, hidden sections, and each activity's dates, over real HTTP.

What a caller sees follows cm_info::update_user_visible() and section_info::get_uservisible() (lib/modinfolib.php;
later releases keep the classes in their own files under the same names) with the capabilities of lib/db/access.php;
the school's own oracle (School.outline, School.offline_hidden_cmids) must agree with what a student-safe reading of
the answer keeps.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterator, List

import pytest
import requests

from emulators.moodle import MoodleEmulator
from emulators.moodle.school import Module, School
from pipelines.moodle.params import encode_params

from .conftest import SMALL

TOKENS: Dict[str, str] = {}  # profile -> a token of the module's emulator acting as that profile's user


@pytest.fixture(scope="module")
def moodle() -> Iterator[MoodleEmulator]:
    with MoodleEmulator(spec=SMALL) as emulator:  # its own token: the integration profile, the README's role
        TOKENS.update({"integration": emulator.token},
                      **{p: emulator.issue_token(p) for p in ("admin", "teacher", "declared")})
        yield emulator


def contents(moodle: MoodleEmulator, course_id: int, profile: str = "integration") -> List[Dict[str, Any]]:
    token = TOKENS[profile]
    body = [("wstoken", token), ("wsfunction", "core_course_get_contents"), ("moodlewsrestformat", "json"),
            *encode_params({"courseid": course_id})]
    answer = requests.post(f"{moodle.base_url}/webservice/rest/server.php", data=body, timeout=30).json()
    assert isinstance(answer, list), answer
    return answer


def listed(answer: List[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
    return {m["id"]: m for section in answer for m in section["modules"]}


def module(school: School, course_id: int, **where: Any) -> Module:
    hidden_numbers = {n for sid, n, _ in school.sections[course_id] if sid in school.hidden_sections}
    return next(m for m in school.modules[course_id] if m.section not in hidden_numbers
                and all(getattr(m, k) == v for k, v in where.items()))


def restricted(school: School, course_id: int, kind: str) -> Module:
    return next(m for m in school.modules[course_id] if m.availability and json.loads(m.availability)["c"][0]["type"] == kind)


def test_a_caller_without_viewhiddenactivities_does_not_get_a_hidden_activity(moodle: MoodleEmulator) -> None:
    """cm_info::update_user_visible(): !visible without moodle/course:viewhiddenactivities makes uservisible false,
    and with no availability info uservisibleoncoursepage is false too; get_course_contents then skips it ("Stop here
    if the module is not visible to the user on the course main page")."""
    s = moodle.school
    for cid in (2, 5):
        hidden = module(s, cid, visible=0)
        assert hidden.cmid not in listed(contents(moodle, cid))  # the README role: no viewhiddenactivities
        assert hidden.cmid not in listed(contents(moodle, cid, "declared"))  # the captured site's integration user


def test_a_caller_with_viewhiddenactivities_gets_it_with_visible_0(moodle: MoodleEmulator) -> None:
    """The same code with moodle/course:viewhiddenactivities (teacher, editingteacher, manager: lib/db/access.php):
    uservisible true and `visible` 0 sent as is ("user that can view hidden module should know about the
    visibility"); `availability` sent too ($CFG->enableavailability && ($canviewhidden || $canupdatecourse)).
    The teacher profile is a non-editing teacher in course 5 and an editing teacher in course 2."""
    s = moodle.school
    for profile, cid in (("teacher", 5), ("teacher", 2), ("admin", 2)):
        hidden = module(s, cid, visible=0)
        got = listed(contents(moodle, cid, profile))[hidden.cmid]
        assert (got["visible"], got["uservisible"], got["visibleoncoursepage"]) == (0, True, 1), profile
        assert "availability" in got and got["availability"] is None
        assert "availabilityinfo" not in got  # info::is_available: nothing to explain for an item without conditions


def test_a_stealth_activity_is_listed_as_available_but_not_on_the_course_page(moodle: MoodleEmulator) -> None:
    """cm_info::is_stealth(): visibleoncoursepage 0. uservisible stays true, so get_course_contents lists it for
    everyone; only `visibleoncoursepage` 0 says the course page does not (includestealthmodules moves it only for
    sections the user cannot see)."""
    s = moodle.school
    stealth = module(s, 3, visibleoncoursepage=0)
    for profile in ("integration", "admin"):
        got = listed(contents(moodle, 3, profile))[stealth.cmid]
        assert (got["visible"], got["uservisible"], got["visibleoncoursepage"]) == (1, True, 0), profile


def test_a_restricted_activity_carries_availability_for_whom_the_code_sends_it(moodle: MoodleEmulator) -> None:
    """A date restriction two weeks ahead (availability_date, shown: "showc" [true]). info::is_available() for the
    caller: unavailable, with the standalone description "Available from <date>" in availableinfo. Without
    moodle/course:ignoreavailabilityrestrictions uservisible is false, yet the activity is listed greyed out
    (update_user_visible: visibleoncoursepage and availableinfo); `availabilityinfo` goes to every caller who gets the
    activity, `availability` (the JSON) only with viewhiddenactivities or course:update."""
    s = moodle.school
    quiz = restricted(s, 2, "date")
    for profile, uservisible, sees_json in (("integration", False, False), ("teacher", True, True),
                                           ("admin", True, True)):
        got = listed(contents(moodle, 2, profile))[quiz.cmid]
        assert got["uservisible"] is uservisible, profile
        assert got["availabilityinfo"].startswith("Available from <strong>"), profile
        assert ("availability" in got) is sees_json, profile
        if sees_json:
            assert json.loads(got["availability"]) == json.loads(quiz.availability or "")


def test_a_completion_restriction_is_checked_for_the_caller(moodle: MoodleEmulator) -> None:
    """availability_completion: "The activity <name> is marked complete", for the caller, who has completed nothing;
    info::format_info() puts the activity's name in place of <AVAILABILITY_CMNAME_n/>."""
    s = moodle.school
    page = restricted(s, 4, "completion")
    target = next(m for m in s.modules[4] if m.cmid == json.loads(page.availability or "")["c"][0]["cm"])
    got = listed(contents(moodle, 4))[page.cmid]
    assert got["uservisible"] is False and "availability" not in got
    name = re.sub(r"<[^>]*>", "", target.name).replace("&", "&amp;")  # format_string, web-service filters off
    assert got["availabilityinfo"] == f"Not available unless: The activity <strong>{name}</strong> is marked complete"


def test_dates_of_an_assignment_and_a_quiz_are_the_callers_own(moodle: MoodleEmulator) -> None:
    """\\core\\activity_dates::get_dates_for_module($cm, $USER->id). mod/assign/classes/dates.php: "Opened:"
    (allowsubmissionsfromdate, past) and "Due:" (duedate) from cm->customdata, which mod_assign_cm_info_dynamic fills
    with the caller's own override: none for a token's user who is not a student, so a student's override never
    shows. mod/quiz/classes/dates.php: "Opens:"/"Opened:" (timeopen), "Closes:"/"Closed:" (timeclose). A page has no
    dates class: []."""
    s = moodle.school
    now = s.clock
    answer = listed(contents(moodle, 2))
    for a in s.assignments[2]:
        got = answer[a.cmid]
        assert got["dates"] == [
            {"label": "Opened:", "timestamp": a.allowsubmissionsfromdate, "dataid": "allowsubmissionsfromdate"},
            {"label": "Due:", "timestamp": a.duedate, "dataid": "duedate"}]
        assert json.loads(got["customdata"])["duedate"] == a.duedate  # the captured 4.5 site: a number
    assert any(aid in {a.id for a in s.assignments[2]} for aid, _ in s.user_overrides), "a student has an override"
    for quiz in [m for m in s.modules[2] if m.modname == "quiz" and m.cmid in answer]:
        want = []
        if quiz.timeopen:
            want.append({"label": "Opens:" if quiz.timeopen > now else "Opened:", "timestamp": quiz.timeopen,
                         "dataid": "timeopen"})
        if quiz.timeclose:
            want.append({"label": "Closes:" if quiz.timeclose > now else "Closed:", "timestamp": quiz.timeclose,
                         "dataid": "timeclose"})
        assert want and answer[quiz.cmid]["dates"] == want
    dated = [d for m in answer.values() if m["modname"] == "quiz" for d in m["dates"]]
    assert {"Opens:", "Closes:", "Closed:"} <= {d["label"] for d in dated}, "past and future quiz dates"
    assert all(m["dates"] == [] for m in answer.values() if m["modname"] in ("page", "forum", "resource", "url"))


def test_a_hidden_section_is_invisible_without_viewhiddensections(moodle: MoodleEmulator) -> None:
    """section_info::get_uservisible(): !visible without moodle/course:viewhiddensections (editingteacher, manager
    only); the course format's is_section_visible() then drops it (hiddensections 1: completely invisible), modules
    and all. Hiding the section hid its activity (course_update_section: visible 0, visibleold kept). The editing
    teacher and the admin get the section with visible 0 and the activity with visible 0."""
    s = moodle.school
    [(sid, number, _)] = [row for row in s.sections[2] if row[0] in s.hidden_sections]
    inside = next(m for m in s.modules[2] if m.section == number)
    for profile in ("integration", "declared"):
        answer = contents(moodle, 2, profile)
        assert sid not in {section["id"] for section in answer} and inside.cmid not in listed(answer), profile
    for profile in ("teacher", "admin"):
        answer = contents(moodle, 2, profile)
        [section] = [section for section in answer if section["id"] == sid]
        assert (section["visible"], section["uservisible"]) == (0, True), profile
        assert [(m["id"], m["visible"]) for m in section["modules"]] == [(inside.cmid, 0)], profile


@pytest.mark.parametrize("course_id", range(2, 2 + SMALL.courses))
def test_the_schools_outline_is_what_a_student_safe_reading_of_the_answer_keeps(moodle: MoodleEmulator,
                                                                                course_id: int) -> None:
    """School.outline / offline_hidden_cmids, derived from the school's data, against the answer to the README role:
    keep sections it may enter, and activities visible, on the course page, open to it and without a reason not to
    be; due dates from `dates` (duedate, timeclose)."""
    s = moodle.school
    got = []
    for section in contents(moodle, course_id):
        if not section["visible"] or not section["uservisible"] or section.get("availabilityinfo"):
            continue
        got.append((section["section"], [
            (m["id"], m["modname"], next((d["timestamp"] for d in m["dates"] if d["dataid"] in ("duedate", "timeclose")),
                                         None))
            for m in section["modules"] if m["visible"] and m["visibleoncoursepage"] and m["uservisible"]
            and not m.get("availabilityinfo") and not m.get("availability")]))
    want = [(number, [(cmid, modname, due) for cmid, _, modname, due in items])
            for number, _, items in s.outline(course_id)]
    assert got == want
    outlined = {cmid for _, _, items in s.outline(course_id) for cmid, *_ in items}
    assert outlined | s.offline_hidden_cmids(course_id) == {m.cmid for m in s.modules[course_id]}
    assert not outlined & s.offline_hidden_cmids(course_id)


def test_each_kind_of_closed_activity_is_in_the_small_school() -> None:
    """Where the generated school (edge cases on) puts them: see School._generate_closed_activities."""
    s = School(SMALL)
    kinds = {"hidden": set(), "stealth": set(), "date": set(), "completion": set(), "hidden section": set()}
    for cid, modules in s.modules.items():
        numbers = {n for sid, n, _ in s.sections[cid] if sid in s.hidden_sections}
        for m in modules:
            if m.section in numbers:
                kinds["hidden section"].add(cid)
            elif not m.visible:
                kinds["hidden"].add(cid)
            elif not m.visibleoncoursepage:
                kinds["stealth"].add(cid)
            elif m.availability:
                kinds[json.loads(m.availability)["c"][0]["type"]].add(cid)
    assert kinds == {"hidden": {2, 5, 8, 11}, "stealth": {3, 6, 9}, "date": {2, 6, 10}, "completion": {4, 8},
                     "hidden section": {2, 7}}


def test_an_activity_whose_view_capability_the_caller_lacks_is_not_listed(moodle: MoodleEmulator) -> None:
    """cm_info::update_user_visible(): is_user_access_restricted_by_capability() checks mod/<modname>:view where the
    module defines one, and clears availableinfo so the activity is hidden entirely. The role the captured 4.5 site's
    services declare ("declared") has mod/assign:view but not mod/quiz:view: no quiz is listed; pages, files and links
    come with the Authenticated user role (their db/access.php archetype 'user'); forums define no view capability."""
    s = moodle.school
    declared = listed(contents(moodle, 2, "declared"))
    integration = listed(contents(moodle, 2, "integration"))
    quizzes = {m.cmid for m in s.modules[2] if m.modname == "quiz"}
    assert quizzes and not quizzes & set(declared) and quizzes & set(integration)
    others = {m.cmid for m in s.modules[2] if m.modname in ("assign", "page", "forum", "url", "resource")}
    assert others & set(integration) == others & set(declared)
