"""The Moodle emulator answers each caller in the shapes a real Moodle 4.5 did.

tests/fixtures/moodle_real_45_shapes.json holds the shape (keys always present, keys ever present, error bodies)
of what a real 4.5 site answered the site admin, the capture's integration user (`declared` here) and a teacher
(../shared/moodle-real-4.5; fixtures/make_moodle_real_shapes.py derives it). The emulator runs with the same site
settings (Moodle's defaults) and must show each caller no key the real site withheld from them, and every key the
real site always showed, except keys that exist only when the record has a value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from emulators.moodle import MoodleEmulator
from emulators.moodle.site import SiteConfig
from pipelines.moodle.params import encode_params

from .conftest import SMALL

SHAPES = json.loads((Path(__file__).parent / "fixtures" / "moodle_real_45_shapes.json").read_text())

# present only when the record holds a value (user/lib.php sets them if non-empty), or data the capture's site had
# and the emulated school does not (course custom fields, a course summary file area), or the reverse
DATA_DEPENDENT = {
    "phone1", "phone2", "address", "department", "institution", "idnumber", "groups", "enrolledcourses", "customfields",
    "description", "descriptionformat", "hiddensections", "contents", "contentsinfo", "completiondata", "url", "progress",
    "completed", "lastaccess", "preferences", "interests", "weightraw", "weightformatted", "status", "cmid",
    "timezone", "city", "country",
    "availabilityinfo",  # get_course_contents: only for a section or activity the caller may not enter (the capture had none)
}
# fields of the real answers the emulator does not produce because the connector never reads them
NOT_EMULATED = {"branded", "purpose", "groupmode", "component", "itemid", "usersessionscount", "hiddensections",
                "userprivateaccesskey"}


def _call(moodle: MoodleEmulator, function: str, **params: Any) -> Any:
    body = [("wstoken", moodle.token), ("wsfunction", function), ("moodlewsrestformat", "json"), *encode_params(params)]
    return requests.post(f"{moodle.base_url}/webservice/rest/server.php", data=body, timeout=30).json()


def _records(function: str, where: str, answer: Any) -> List[Dict[str, Any]]:
    if function == "gradereport_user_get_grade_items":
        items = [i for u in answer["usergrades"] for i in u["gradeitems"]]
        return {"usergrades": answer["usergrades"], "gradeitems.mod": [i for i in items if i["itemtype"] == "mod"],
                "gradeitems.course": [i for i in items if i["itemtype"] == "course"]}[where]
    if function == "mod_assign_get_submissions":
        return [s for a in answer["assignments"] for s in a["submissions"]]
    if function == "mod_assign_get_assignments":
        return {"assignments": [a for c in answer["courses"] for a in c["assignments"]],
                "warnings": answer["warnings"]}[where]
    if function == "core_completion_get_activities_completion_status":
        return answer["statuses"]
    if function == "core_course_get_contents":
        return {"sections": answer, "modules": [m for s in answer for m in s["modules"]]}[where]
    if isinstance(answer, list):
        return [a for a in answer if a.get("id") != 1]
    return [answer]


def _params(moodle: MoodleEmulator, function: str) -> Dict[str, Any]:
    """The calls of the capture, on the emulated school: course 2 (taught by the teacher profile), its students."""
    s = moodle.school
    students = s.students_of(2, only_active=True)
    return {
        "core_enrol_get_enrolled_users": {"courseid": 2},
        "core_user_get_users_by_field": {"field": "id", "values": students[:2]},
        "gradereport_user_get_grade_items": {"courseid": 2, "userid": 0},
        "core_enrol_get_users_courses": {"userid": students[0]},
        "core_completion_get_activities_completion_status": {"courseid": 2, "userid": students[0]},
        "core_course_get_contents": {"courseid": 2},
        "mod_assign_get_assignments": {"courseids": [2, 3]},
        "mod_assign_get_submissions": {"assignmentids": [a.id for c in (2, 3) for a in s.assignments[c]]},
    }.get(function, {})


CASES = [(profile, key) for profile, shapes in SHAPES["callers"].items() for key in shapes]


@pytest.mark.parametrize("profile, key", CASES, ids=[f"{p}:{k}" for p, k in CASES])
def test_each_caller_sees_the_keys_a_real_moodle_showed_them(profile: str, key: str) -> None:
    function, where = key.split(":")
    shape = SHAPES["callers"][profile][key]
    with MoodleEmulator(spec=SMALL, profile=profile, site=SiteConfig()) as moodle:
        answer = _call(moodle, function, **_params(moodle, function))
    assert not (isinstance(answer, dict) and "exception" in answer), answer
    records = _records(function, where, answer)
    assert records, f"the emulator answered {key} with nothing to compare"
    ever = set().union(*map(set, records))
    always = set.intersection(*map(set, records))
    withheld = ever - set(shape["ever"]) - DATA_DEPENDENT
    assert not withheld, f"{profile} gets {sorted(withheld)} from {function}; the real site withheld them"
    missing = set(shape["always"]) - always - DATA_DEPENDENT - NOT_EMULATED
    assert not missing, f"{profile} always got {sorted(missing)} from {function} on the real site"


@pytest.mark.parametrize("key", sorted(SHAPES["errors"]))
def test_errors_have_the_real_bodies(key: str) -> None:
    real = SHAPES["errors"][key]
    with MoodleEmulator(spec=SMALL, profile=key.split(":")[0] if ":" in key else "integration", site=SiteConfig()) as moodle:
        if key == "invalidtoken":
            moodle.revoke_token()
            got = _call(moodle, "core_webservice_get_site_info")
        elif key == "function_not_in_service":
            moodle.remove_function("core_course_get_contents")
            got = _call(moodle, "core_course_get_contents", courseid=2)
        elif key == "enrolled_users.no_such_course":
            got = _call(moodle, "core_enrol_get_enrolled_users", courseid=99999)
        elif key.startswith("token."):  # login/token.php: a wrong password; a student asking for a token
            moodle.services.add("connector")
            student = key == "token.cannotcreatetoken"
            got = requests.post(f"{moodle.base_url}/login/token.php", timeout=30, data={
                "username": "student1" if student else "wsuser", "password": "Demo-Passw0rd!" if student else "wrong",
                "service": "connector"}).json()
        else:  # teacher:core_course_get_courses: refused at the first course the teacher may not enter
            assert key == "teacher:core_course_get_courses", key
            foreign = min(c for c in moodle.school.courses if c not in moodle.school.roles_of(3))
            got = _call(moodle, "core_course_get_courses", options={"ids": [foreign]})
    assert {k: got.get(k) for k in real} == real
