"""The Moodle emulator's tool_mobile_call_external_functions and PHP's max_input_vars, over real HTTP.

What a real site does (admin/tool/mobile/classes/external.php call_external_functions; emulators/moodle/batch.py):
each sub-call answers as the single call would, `data` and `exception` are JSON text, the batch stops at the first
failing sub-call, a function outside the token's service fails inside the batch, and the batch function itself is in
no service until an admin adds it. PHP drops input variables past max_input_vars without telling the client.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from emulators.moodle import MoodleEmulator
from emulators.moodle.api import BATCH_FUNCTION
from pipelines.moodle.params import encode_params

from .conftest import SMALL

USERS_COURSES = "core_enrol_get_users_courses"
COMPLETION = "core_completion_get_activities_completion_status"
ERROR_KEYS = {"message", "errorcode", "link", "moreinfourl"}  # get_exception_info, debuginfo/backtrace/a unset


@pytest.fixture(scope="module")
def moodle() -> Iterator[MoodleEmulator]:
    with MoodleEmulator(spec=SMALL, batch_function=True) as emulator:
        yield emulator


def _server(moodle: MoodleEmulator) -> str:
    return f"{moodle.base_url}/webservice/rest/server.php"


def _call(moodle: MoodleEmulator, function: str, settings: Optional[Dict[str, str]] = None,
          token: Optional[str] = None, **params: Any) -> Any:
    body = [("wstoken", token or moodle.token), ("wsfunction", function), ("moodlewsrestformat", "json"),
            *sorted((settings or {}).items()), *encode_params(params)]
    return requests.post(_server(moodle), data=body, timeout=30).json()


def _batch(moodle: MoodleEmulator, calls: List[Tuple[str, Dict[str, Any]]], token: Optional[str] = None,
           **per_request: Any) -> Any:
    """requests[i][function], requests[i][arguments] (JSON text) and any per-request setting* for all."""
    reqs = [{"function": f, "arguments": json.dumps(a), **per_request} for f, a in calls]
    return _call(moodle, BATCH_FUNCTION, token=token, requests=reqs)


def _students(moodle: MoodleEmulator, n: int) -> List[Tuple[int, int]]:
    """(course id, user id) of n students, each in a different course where possible."""
    school, out, seen = moodle.school, [], set()
    for cid in sorted(school.enrolments):
        for uid, e in sorted(school.enrolments[cid].items()):
            if e.role == "student" and uid not in seen:
                out.append((cid, uid))
                seen.add(uid)
                break
        if len(out) == n:
            return out
    raise AssertionError("not enough students")


def _data(response: Dict[str, Any]) -> Any:
    assert response["error"] is False and "exception" not in response, response
    assert isinstance(response["data"], str), "data is JSON text inside the JSON answer"
    return json.loads(response["data"])


def _exception(response: Dict[str, Any]) -> Dict[str, Any]:
    assert response["error"] is True and "data" not in response, response
    assert isinstance(response["exception"], str), "exception is JSON text inside the JSON answer"
    out = json.loads(response["exception"])
    assert isinstance(out, dict)
    return out


def test_each_sub_call_answers_as_the_single_call(moodle: MoodleEmulator) -> None:
    pairs = _students(moodle, 4)
    calls: List[Tuple[str, Dict[str, Any]]] = []
    for cid, uid in pairs:
        calls += [(USERS_COURSES, {"userid": uid}), (COMPLETION, {"courseid": cid, "userid": uid})]
    singles = [_call(moodle, f, **a) for f, a in calls]
    assert all("exception" not in s for s in singles), singles
    assert any(s["statuses"] for s in singles[1::2]), "completion answers with statuses, not only empty ones"
    moodle.reset_counts()
    answer = _batch(moodle, calls)
    assert set(answer) == {"responses"} and len(answer["responses"]) == len(calls)
    assert [_data(r) for r in answer["responses"]] == singles
    # one HTTP request, counted under the batch function; the sub-calls counted apart
    assert dict(moodle.requests) == {BATCH_FUNCTION: 1}
    assert dict(moodle.batched) == {USERS_COURSES: 4, COMPLETION: 4}
    assert dict(moodle.calls) == {USERS_COURSES: 4, COMPLETION: 4}


def test_data_is_php_json_text(moodle: MoodleEmulator) -> None:
    """json_encode with no flags: slashes escaped, no spaces."""
    answer = _batch(moodle, [("core_webservice_get_site_info", {})])
    text = answer["responses"][0]["data"]
    assert "https:\\/\\/moodle.demo-academy.example" in text and ", " not in text and '": ' not in text
    assert json.loads(text)["siteurl"] == "https://moodle.demo-academy.example"


def test_a_failing_sub_call_stops_the_batch(moodle: MoodleEmulator) -> None:
    (c1, u1), (c2, u2), (c3, u3) = _students(moodle, 3)
    missing = max(moodle.school.courses) + 100
    calls = [(COMPLETION, {"courseid": c1, "userid": u1}), (USERS_COURSES, {"userid": u2}),
             (COMPLETION, {"courseid": missing, "userid": u3}), (COMPLETION, {"courseid": c3, "userid": u3}),
             (USERS_COURSES, {"userid": u1})]
    single_error = _call(moodle, COMPLETION, courseid=missing, userid=u3)
    assert single_error["errorcode"] == "invalidrecord", single_error
    moodle.reset_counts()
    responses = _batch(moodle, calls)["responses"]
    assert len(responses) == 3, "nothing after the failing sub-call"
    assert _data(responses[0]) == _call(moodle, *calls[0][:1], **calls[0][1])
    assert _data(responses[1]) == _call(moodle, *calls[1][:1], **calls[1][1])
    exception = _exception(responses[2])
    assert set(exception) == ERROR_KEYS, "get_exception_info's fields, not the REST error body's"
    assert (exception["errorcode"], exception["message"]) == (single_error["errorcode"], single_error["message"])
    assert exception["link"] == "https://moodle.demo-academy.example/"
    assert exception["moreinfourl"] == "https://docs.moodle.org/405/en/error/moodle/invalidrecord"
    assert moodle.batched == {COMPLETION: 2, USERS_COURSES: 1}, "the two after it never ran"


def test_a_sub_call_the_caller_may_not_make_fails_as_the_single_call() -> None:
    """Each sub-call checks its own capabilities: completion of another user needs report/progress:view."""
    with MoodleEmulator(spec=SMALL, batch_function=True) as moodle:
        moodle.prohibit("report/progress:view")
        (cid, uid), = _students(moodle, 1)
        single = _call(moodle, COMPLETION, courseid=cid, userid=uid)
        assert (single["errorcode"], single["message"]) == (
            "nopermissions", "Sorry, but you do not currently have permissions to do that (View activity completion "
            "reports).")
        responses = _batch(moodle, [(USERS_COURSES, {"userid": uid}), (COMPLETION, {"courseid": cid, "userid": uid}),
                                    (USERS_COURSES, {"userid": uid})])["responses"]
        assert len(responses) == 2
        assert _data(responses[0]) == _call(moodle, USERS_COURSES, userid=uid)
        exception = _exception(responses[1])
        assert {k: exception[k] for k in ("errorcode", "message")} == {k: single[k] for k in ("errorcode", "message")}
        # required_capability_exception's link is its context's URL
        assert exception["link"] == f"https://moodle.demo-academy.example/course/view.php?id={cid}"
        assert exception["moreinfourl"] == "https://docs.moodle.org/405/en/error/moodle/nopermissions"


def test_a_function_outside_the_service_fails_inside_the_batch() -> None:
    with MoodleEmulator(spec=SMALL, batch_function=True) as moodle:
        (cid, uid), = _students(moodle, 1)
        moodle.remove_function(COMPLETION)
        single = _call(moodle, COMPLETION, courseid=cid, userid=uid)
        assert (single["exception"], single["errorcode"]) == ("webservice_access_exception", "accessexception")
        responses = _batch(moodle, [(USERS_COURSES, {"userid": uid}), (COMPLETION, {"courseid": cid, "userid": uid}),
                                    (USERS_COURSES, {"userid": uid})])["responses"]
        assert len(responses) == 2 and _data(responses[0]) == _call(moodle, USERS_COURSES, userid=uid)
        # external.php: the access exception the batch builds itself, errorcode and module only
        assert _exception(responses[1]) == {"errorcode": "accessexception", "module": "webservice"}
        # an unknown function is not in the service either (a single call says invalidrecord instead)
        assert _call(moodle, "core_no_such_function")["errorcode"] == "invalidrecord"
        responses = _batch(moodle, [("core_no_such_function", {})])["responses"]
        assert [_exception(r) for r in responses] == [{"errorcode": "accessexception", "module": "webservice"}]


def test_the_batch_function_is_in_no_service_by_default() -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        (cid, uid), = _students(moodle, 1)
        info = _call(moodle, "core_webservice_get_site_info")
        assert BATCH_FUNCTION not in {f["name"] for f in info["functions"]}
        answer = _batch(moodle, [(COMPLETION, {"courseid": cid, "userid": uid})])
        moodle.remove_function(USERS_COURSES)
        assert answer == _call(moodle, USERS_COURSES, userid=uid), "as any function outside the service"
        # ../shared/moodle-real-4.5/errors/function_not_in_service.json
        assert answer == {"exception": "webservice_access_exception", "errorcode": "accessexception",
                          "message": "Access control exception"}
        assert moodle.batched == {}, "no sub-call ran"
        moodle.add_function(BATCH_FUNCTION)
        info = _call(moodle, "core_webservice_get_site_info")
        assert BATCH_FUNCTION in {f["name"] for f in info["functions"]}
        assert len(_batch(moodle, [(COMPLETION, {"courseid": cid, "userid": uid})])["responses"]) == 1


def test_per_request_settings_are_the_single_calls_moodlewssettings(moodle: MoodleEmulator) -> None:
    calls = [("core_webservice_get_site_info", {}), ("core_course_get_courses", {})]
    for lang, raw in (("fr", "1"), ("sw", "0"), ("", "1")):
        responses = _batch(moodle, calls, settinglang=lang, settingraw=raw)["responses"]
        settings = {"moodlewssettingraw": raw, **({"moodlewssettinglang": lang} if lang else {})}
        assert [_data(r) for r in responses] == [_call(moodle, f, settings, **a) for f, a in calls]
    assert _data(_batch(moodle, calls[:1], settinglang="fr")["responses"][0])["lang"] == "fr"
    # without settinglang, the sub-call speaks the language the batch call itself was made in
    body = [("wstoken", moodle.token), ("wsfunction", BATCH_FUNCTION), ("moodlewsrestformat", "json"),
            ("moodlewssettinglang", "sw"), *encode_params({"requests": [{"function": "core_webservice_get_site_info"}]})]
    answer = requests.post(_server(moodle), data=body, timeout=30).json()
    assert _data(answer["responses"][0])["lang"] == "sw"


def test_bad_requests_fail_the_whole_batch_before_any_sub_call(moodle: MoodleEmulator) -> None:
    """validate_parameters first: a language not installed (PARAM_LANG cleans it to '', and validate_param refuses a
    changed value), or a settingraw other than 0/1, fails the call with invalidparameter."""
    (cid, uid), = _students(moodle, 1)
    moodle.reset_counts()
    for bad in ({"settinglang": "xx"}, {"settingraw": "true"}):
        reqs = [{"function": USERS_COURSES, "arguments": json.dumps({"userid": uid})},
                {"function": USERS_COURSES, "arguments": json.dumps({"userid": uid}), **bad}]
        answer = _call(moodle, BATCH_FUNCTION, requests=reqs)
        assert answer["errorcode"] == "invalidparameter" and "responses" not in answer, answer
    assert moodle.batched == {}


def test_a_batch_pays_the_latency_once() -> None:
    with MoodleEmulator(spec=SMALL, batch_function=True, latency=0.15) as moodle:
        calls = [(USERS_COURSES, {"userid": uid}) for _, uid in _students(moodle, 6)]
        started = time.monotonic()
        responses = _batch(moodle, calls)["responses"]
        batched = time.monotonic() - started
        started = time.monotonic()
        singles = [_call(moodle, f, **a) for f, a in calls]
        single = time.monotonic() - started
        assert [_data(r) for r in responses] == singles
        assert 0.15 <= batched < 0.3 <= 0.9 <= single, (batched, single)
        assert moodle.batched == {USERS_COURSES: 6} and moodle.requests[USERS_COURSES] == 6


def test_max_input_vars_cuts_a_batch_short_without_a_word() -> None:
    """PHP's $_POST keeps max_input_vars + 1 variables (main/php_variables.c add_post_vars registers, then counts):
    with 20, the three of wstoken/wsfunction/moodlewsrestformat leave 18, six requests of three variables."""
    with MoodleEmulator(spec=SMALL, batch_function=True, max_input_vars=20) as moodle:
        moodle.keep_log = True
        calls = [(USERS_COURSES, {"userid": uid}) for _, uid in _students(moodle, 10)]
        responses = _batch(moodle, calls, settingraw="0")["responses"]
        assert len(responses) == 6 and all(r["error"] is False for r in responses), "the tail lost, no error"
        assert [_data(r) for r in responses] == [_call(moodle, f, **a) for f, a in calls[:6]]
        assert moodle.request_log[0]["vars"] == 33 and moodle.request_log[0]["kept"] == 21
        # cut inside a request: its function came through, its arguments did not, so it runs with '{}' and fails
        responses = _batch(moodle, calls)["responses"]  # two variables a request: 18 = 9 requests
        assert len(responses) == 9 and all(r["error"] is False for r in responses)
        # four variables a request, arguments last: 18 = 4 requests and the function and settings of a fifth
        reqs = [{"function": f, "settingraw": "0", "settingfilter": "0", "arguments": json.dumps(a)} for f, a in calls]
        responses = _call(moodle, BATCH_FUNCTION, requests=reqs)["responses"]
        assert len(responses) == 5 and [r["error"] for r in responses] == [False] * 4 + [True]
        assert _exception(responses[-1])["errorcode"] == "invalidparameter"


def test_max_input_vars_cuts_a_single_call_too() -> None:
    with MoodleEmulator(spec=SMALL, max_input_vars=20) as small, MoodleEmulator(spec=SMALL) as full:
        ids = sorted(small.school.users)[:30]
        # POST: 3 + field + 30 values, 21 kept: 17 values reach the function
        cut = _call(small, "core_user_get_users_by_field", field="id", values=ids)
        assert [u["id"] for u in cut] == [u["id"] for u in _call(full, "core_user_get_users_by_field", field="id",
                                                                  values=ids[:17])]
        assert len(cut) < len(_call(full, "core_user_get_users_by_field", field="id", values=ids))
        # GET: the query string keeps exactly max_input_vars: 16 values
        query = [("wstoken", small.token), ("wsfunction", "core_user_get_users_by_field"),
                 ("moodlewsrestformat", "json"), *encode_params({"field": "id", "values": ids})]
        got = requests.get(_server(small), params=query, timeout=30).json()
        assert [u["id"] for u in got] == [u["id"] for u in _call(full, "core_user_get_users_by_field", field="id",
                                                                  values=ids[:16])]
