"""The Moodle emulator sends events as the local_webhooks plugin does: real HTTP to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest

from emulators.moodle import MoodleEmulator, SchoolSpec
from emulators.moodle.webhooks import USER_OTHER, WebhookService

SPEC = SchoolSpec(seed=11, categories=2, courses=4, students=30, enrolments_per_student=1.5, grade_items=2,
                  activities=4, assignments=1, sections=2)
FIELDS = ["eventname", "component", "action", "target", "objecttable", "objectid", "crud", "edulevel", "contextid",
          "contextlevel", "contextinstanceid", "userid", "courseid", "relateduserid", "anonymous", "other",
          "timecreated", "host", "token", "extra"]


class Receiver:
    """A tiny webhook endpoint: keeps each POST's headers and raw body."""

    def __init__(self, port: int = 0) -> None:
        self.posts: List[Tuple[Dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/moodle-hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> List[Dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]

    def named(self, short: str) -> List[Dict[str, Any]]:
        return [e for e in self.events() if e["eventname"].endswith("\\" + short)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def moodle() -> Iterator[MoodleEmulator]:
    with MoodleEmulator(spec=SPEC) as emulator:
        yield emulator


def call(moodle: MoodleEmulator, function: str, **params: Any) -> Any:
    query = urlencode({"wstoken": moodle.token, "wsfunction": function, "moodlewsrestformat": "json", **params})
    with urlopen(f"{moodle.base_url}/webservice/rest/server.php", data=query.encode()) as answer:
        return json.loads(answer.read())


def graded_pair(moodle: MoodleEmulator) -> Tuple[int, int, Any]:
    s = moodle.school
    cid = next(c for c in sorted(s.grade_items) if any(i.itemtype == "mod" for i in s.grade_items[c])
               and s.students_of(c, True))
    uid = s.students_of(cid, True)[0]
    item = next(i for i in s.grade_items[cid] if i.itemtype == "mod")
    return cid, uid, item


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_grade_arrives_as_user_graded_with_the_plugin_body(moodle: MoodleEmulator) -> None:
    cid, uid, item = graded_pair(moodle)
    teacher = moodle.school.teacher_of(cid)
    with receiving() as receiver:
        sender = moodle.add_webhook(WebhookService(receiver.url, token="s3cret", extra="district/7",
                                                   events={"\\core\\event\\user_graded"}))
        moodle.school.set_grade(cid, uid, item.id, 42.5)
        assert sender.flush(10)
        headers, raw = receiver.posts[0]
    assert headers["content-type"] == "application/json"
    assert b'"district\\/7"' in raw and b"\\\\core\\\\event\\\\user_graded" in raw  # PHP json_encode: "\/", "\\"
    first = json.loads(raw)
    assert list(first) == FIELDS
    assert first["token"] == "s3cret" and first["extra"] == "district/7"
    assert first["host"] == "moodle.demo-academy.example"
    assert (first["component"], first["action"], first["target"], first["crud"], first["edulevel"]) == (
        "core", "graded", "user", "u", 1)
    assert first["objecttable"] == "grade_grades" and first["contextlevel"] == 50
    assert first["courseid"] == str(cid) and first["contextinstanceid"] == str(cid)  # the context record's strings
    assert str(first["relateduserid"]) == str(uid) and first["userid"] == teacher and first["anonymous"] == 0
    assert first["other"] == {"itemid": first["other"]["itemid"], "overridden": False, "finalgrade": 42.5}
    assert str(first["other"]["itemid"]) == str(item.id)
    # the course total followed the item (grade_category::aggregate_grades): a user_graded of its own
    events = receiver.events()
    total = next(i for i in moodle.school.grade_items[cid] if i.itemtype == "course")
    assert [str(e["other"]["itemid"]) for e in events][-1] == str(total.id)
    assert events[-1]["other"]["finalgrade"] == moodle.school.course_total(cid, uid)[0]

    # the change shows where the connector reads it, dated when the event happened
    report = call(moodle, "gradereport_user_get_grade_items", courseid=cid, userid=uid)
    row = next(r for r in report["usergrades"][0]["gradeitems"] if r["id"] == item.id)
    assert row["graderaw"] == 42.5 and row["gradedategraded"] == first["timecreated"]


def test_who_graded_and_how_decides_whose_access_moves(moodle: MoodleEmulator) -> None:
    s = moodle.school
    cid, uid, item = graded_pair(moodle)
    teacher = s.teacher_of(cid)
    with receiving() as receiver:
        sender = moodle.add_webhook(WebhookService(receiver.url, token="t", events={"\\core\\event\\user_graded"}))
        before = s.enrolments[cid][teacher].lastcourseaccess
        s.set_grade(cid, uid, item.id, 10.0, via="webservice")
        assert s.enrolments[cid][teacher].lastcourseaccess == before, "a web-service call logs no access"
        s.set_grade(cid, uid, item.id, 11.0, via="cron")
        assert s.enrolments[cid][teacher].lastcourseaccess == before
        s.set_grade(cid, uid, item.id, 12.0)  # the grader report: require_login() logs the teacher's visit
        assert s.enrolments[cid][teacher].lastcourseaccess > before
        s.set_grade(cid, uid, item.id, 12.0)  # the same value: nothing written, nothing triggered
        assert sender.flush(10)
    items = [e for e in receiver.events() if str(e["other"]["itemid"]) == str(item.id)]
    assert [(e["userid"], e["other"]["finalgrade"]) for e in items] == [(teacher, 10.0), (USER_OTHER, 11.0),
                                                                       (teacher, 12.0)]
    enrolled = call(moodle, "core_enrol_get_enrolled_users", courseid=cid)
    assert next(u for u in enrolled if u["id"] == teacher)["lastcourseaccess"] == s.enrolments[cid][teacher].lastcourseaccess


def test_enrolment_events_and_what_the_next_extract_sees(moodle: MoodleEmulator) -> None:
    s = moodle.school
    cid = sorted(s.courses)[0]
    newcomer = next(u for u in sorted(s.users) if u >= 3 + SPEC.courses and u not in s.enrolments[cid]
                    and u not in s.service_users.values())
    with receiving() as receiver:
        sender = moodle.add_webhook(WebhookService(receiver.url, token="t"))  # every event
        s.enrol(cid, newcomer, "student")
        assert newcomer in {u["id"] for u in call(moodle, "core_enrol_get_enrolled_users", courseid=cid)}
        s.suspend_enrolment(cid, newcomer)
        s.suspend_enrolment(cid, newcomer)  # already suspended: no change, no event
        s.unenrol(cid, newcomer)
        assert sender.flush(10)
    names = [e["eventname"].rsplit("\\", 1)[1] for e in receiver.events()]
    assert names == ["user_enrolment_created", "role_assigned", "user_enrolment_updated", "role_unassigned",
                     "user_enrolment_deleted"]
    created, assigned, updated, unassigned, deleted = receiver.events()
    assert (created["crud"], created["objecttable"], created["courseid"], created["relateduserid"]) == (
        "c", "user_enrolments", str(cid), newcomer)
    assert created["other"] == {"enrol": "manual"} and created["userid"] == 2
    assert (assigned["objectid"], assigned["objecttable"], assigned["relateduserid"]) == (5, "role", newcomer)
    assert assigned["other"]["component"] == "" and assigned["other"]["itemid"] == 0
    assert updated["relateduserid"] == str(newcomer) and updated["other"] == {"enrol": "manual"}
    assert (unassigned["crud"], unassigned["objectid"], unassigned["relateduserid"]) == ("d", "5", str(newcomer))
    row = deleted["other"]["userenrolment"]
    assert deleted["other"]["enrol"] == "manual" and row["lastenrol"] is True and row["status"] == "1"
    assert row["userid"] == str(newcomer) and row["courseid"] == str(cid) and row["id"] == deleted["objectid"]
    assert newcomer not in {u["id"] for u in call(moodle, "core_enrol_get_enrolled_users", courseid=cid)}


def test_profile_completion_and_submission_events(moodle: MoodleEmulator) -> None:
    s = moodle.school
    cid, a = next((c, rows[0]) for c, rows in sorted(s.assignments.items())
                  if rows and not rows[0].teamsubmission and s.courses[c].enablecompletion)
    uid = next(u for u in s.students_of(cid, True) if s.submission(a, u) is None
               and s.completion(next(m for m in s.modules[cid] if m.cmid == a.cmid), u)[0] == 0)
    other = next(m for m in s.modules[cid] if m.completion and m.cmid != a.cmid and s.completion(m, uid)[0] == 0)
    with receiving() as receiver:
        sender = moodle.add_webhook(WebhookService(receiver.url, token="t"))
        s.update_profile(uid, city="Mombasa")
        s.complete_activity(cid, uid, other.cmid)
        s.submit(a.id, uid, text="my essay / draft one")
        assert sender.flush(10)
    profile, completed, uploaded, created, submit_completion, submitted = receiver.events()
    assert profile["eventname"] == "\\core\\event\\user_updated"
    assert (profile["objectid"], profile["relateduserid"], profile["contextlevel"], profile["courseid"]) == (
        str(uid), str(uid), 30, 0)
    assert completed["eventname"] == "\\core\\event\\course_module_completion_updated"
    assert (completed["contextlevel"], completed["contextinstanceid"], completed["courseid"]) == (
        70, str(other.cmid), str(cid))
    assert completed["other"] == {"relateduserid": uid, "overrideby": None, "completionstate": 1}
    assert uploaded["eventname"] == "\\assignsubmission_onlinetext\\event\\assessable_uploaded"
    assert uploaded["other"]["content"] == "my essay / draft one"
    assert created["eventname"] == "\\assignsubmission_onlinetext\\event\\submission_created"
    assert created["other"]["submissionstatus"] == "submitted" and created["other"]["onlinetextwordcount"] == 5
    assert created["relateduserid"] == str(uid) and created["contextinstanceid"] == str(a.cmid)
    assert submit_completion["contextinstanceid"] == str(a.cmid)  # completionsubmit
    assert submitted["eventname"] == "\\mod_assign\\event\\assessable_submitted"
    assert submitted["other"] == {"submission_editable": True} and submitted["relateduserid"] is None
    assert submitted["objectid"] == created["other"]["submissionid"]

    [user] = call(moodle, "core_user_get_users_by_field", field="id", **{"values[0]": uid})
    assert user["city"] == "Mombasa"
    statuses = call(moodle, "core_completion_get_activities_completion_status", courseid=cid, userid=uid)["statuses"]
    assert {st["cmid"]: st["state"] for st in statuses}[other.cmid] == 1
    subs = call(moodle, "mod_assign_get_submissions", **{"assignmentids[0]": a.id})["assignments"][0]["submissions"]
    assert next(x for x in subs if x["userid"] == uid)["timemodified"] == submitted["timecreated"]


def test_only_selected_events_are_sent(moodle: MoodleEmulator) -> None:
    cid, uid, item = graded_pair(moodle)
    with receiving() as grades, receiving() as profiles:
        sender = moodle.add_webhook(WebhookService(grades.url, token="g", events={"\\core\\event\\user_graded"}))
        moodle.add_webhook(WebhookService(profiles.url, token="p", events={"\\core\\event\\user_updated"},
                                          content_type="application/x-www-form-urlencoded"))
        moodle.add_webhook(WebhookService(profiles.url, token="off", enabled=False))
        moodle.school.update_profile(uid, phone1="+254 700 000 002")
        moodle.school.set_grade(cid, uid, item.id, 7.0)
        assert sender.flush(10)
    assert {e["eventname"] for e in grades.events()} == {"\\core\\event\\user_graded"}
    assert [e["eventname"] for e in profiles.events()] == ["\\core\\event\\user_updated"]
    assert profiles.events()[0]["token"] == "p"
    assert profiles.posts[0][0]["content-type"] == "application/x-www-form-urlencoded"


def test_a_receiver_that_is_down_loses_the_event_and_moodle_carries_on(moodle: MoodleEmulator) -> None:
    cid, uid, item = graded_pair(moodle)
    port = free_port()
    with receiving() as alive:
        sender = moodle.add_webhook(WebhookService(f"http://127.0.0.1:{port}/hook", token="down",
                                                   events={"\\core\\event\\user_graded"}))
        moodle.add_webhook(WebhookService(alive.url, token="up", events={"\\core\\event\\user_graded"}))
        moodle.school.set_grade(cid, uid, item.id, 33.0)
        assert sender.flush(10)
        lost = [d for d in sender.deliveries if d.url.endswith(f":{port}/hook")]
        assert lost and all(d.error and d.status is None for d in lost)
        assert alive.events() and all(e["token"] == "up" for e in alive.events())
        # the receiver comes back: nothing is retried, only new events arrive
        late = Receiver(port)
        try:
            moodle.school.set_grade(cid, uid, item.id, 34.0)
            assert sender.flush(10)
            assert [e["other"]["finalgrade"] for e in late.events()
                    if str(e["other"]["itemid"]) == str(item.id)] == [34.0]
        finally:
            late.close()
    report = call(moodle, "gradereport_user_get_grade_items", courseid=cid, userid=uid)
    assert next(r for r in report["usergrades"][0]["gradeitems"] if r["id"] == item.id)["graderaw"] == 34.0
