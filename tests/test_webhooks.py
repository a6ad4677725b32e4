"""Moodle events to CommCare cases within a batch: the receiver stores, the micro-batcher re-reads what the events
name and exports what changed. Through real HTTP: the plugin's POSTs, Moodle's web services, CommCare's importer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import requests

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from moodle_commcare.demo import OWNERS
from moodle_commcare.sync import run_sync
from moodle_commcare.warehouse import Warehouse
from moodle_commcare.webhook_batcher import MicroBatcher
from moodle_commcare.webhook_events import is_relevant

from .conftest import SMALL
from .export_support import assert_store_matches_marts
from .oracle import VARS
from .test_webhook_receiver import TOKEN, Receiver, running


def options(moodle: MoodleEmulator, hq: CommCareEmulator, tmp_path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    return (dict(base_url=moodle.base_url, token=moodle.token, allow_insecure_http=True, backoff_factor=0.01,
                 max_attempts=2),
            dict(base_url=hq.base_url, project=hq.domain, username=hq.username, api_key=hq.api_key,
                 allow_insecure_http=True, out_dir=tmp_path / "out", poll_interval=0.01))


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[Any]:
    """Both emulators, a warehouse after its first sync, the receiver and a micro-batcher running."""
    with MoodleEmulator(spec=SMALL) as moodle, CommCareEmulator(owners=OWNERS | {"owner-default"}) as hq:
        wh = Warehouse.of(tmp_path / "m.duckdb")
        moodle_options, commcare_options = options(moodle, hq, tmp_path)
        with wh.run_lock("sync"):
            first = run_sync(wh, skip_check=True, publish=False, dbt_vars=VARS, moodle_options=moodle_options,
                             commcare_options=commcare_options)
        assert first.exit_code == 0, first.error
        with running(tmp_path, is_relevant=is_relevant, rate_per_minute=1_000_000) as receiver:
            batcher = MicroBatcher(wh, receiver.store, window=0.5, retry_after=1.0, dbt_vars=VARS,
                                   moodle_options=moodle_options, commcare_options=commcare_options)
            stop = threading.Event()
            worker = threading.Thread(target=batcher.run_forever, args=(stop,), kwargs={"poll": 0.05}, daemon=True)
            worker.start()
            try:
                yield moodle, hq, wh, receiver, batcher
            finally:
                stop.set()
                worker.join(120)


def plugin_post(receiver: Receiver, event: Dict[str, Any]) -> requests.Response:
    """As local_webhooks' lib.php sends it: the event's data, plus host, token and extra, JSON in the body."""
    return receiver.post({**event, "host": "moodle.demo-academy.example", "token": TOKEN, "extra": ""})


def settled(receiver: Receiver, batcher: MicroBatcher, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = receiver.store.counts()
        if not counts.get("pending") and not counts.get("taken"):
            return
        time.sleep(0.1)
    raise AssertionError(f"events still pending: {receiver.store.counts()}; batches {batcher.results}")


def test_a_grade_event_updates_the_case(synced: Any) -> None:
    """A grade written through the web services (no access time moves, so no scheduled run would see it before a
    full refresh) reaches
    the student's enrolment case through one event, for a few Moodle requests."""
    moodle, hq, wh, receiver, batcher = synced
    school = moodle.school
    course = next(c for c in sorted(school.enrolments) if any(i.itemtype == "mod" for i in school.grade_items[c])
                  and school.students_of(c, True))
    student = school.students_of(course, True)[0]
    item = next(i for i in school.grade_items[course] if i.itemtype == "mod")
    before = {ext: dict(c.properties) for ext, c in hq.by_external_id("course_enrolment").items()}
    school.set_grade(course, student, item.id, item.grademin + 0.25, via="webservice")
    moodle.reset_counts()
    answer = plugin_post(receiver, {"eventname": "\\core\\event\\user_graded", "component": "core",
                                    "action": "graded", "target": "user", "objectid": "901", "crud": "u",
                                    "contextinstanceid": str(course), "contextlevel": 50, "userid": "2",
                                    "courseid": str(course), "relateduserid": str(student), "other": None,
                                    "timecreated": int(time.time())})
    assert answer.status_code == 200 and answer.json() == {"accepted": True}
    settled(receiver, batcher)
    [batch] = batcher.results
    assert batch.done and batch.courses == [course] and batch.events == 1, batch
    assert 0 < batch.requests <= 40, f"a handful of requests, never a full extract ({batch.requests})"
    assert batch.requests == sum(moodle.requests.values())
    after = hq.by_external_id("course_enrolment")
    changed = [ext for ext, case in after.items() if before.get(ext) != dict(case.properties)]
    assert changed and all(ext.endswith(f"-{student}-{course}") or str(student) in ext for ext in changed), changed
    assert_store_matches_marts(hq, wh.path)
    assert [r["summary"]["batch_id"] for r in wh.recent_runs("webhooks")] == [batch.batch_id]


def test_a_burst_of_5000_enrolment_events_is_a_few_batches(synced: Any) -> None:
    moodle, hq, wh, receiver, batcher = synced
    school = moodle.school
    pairs = [(c, u) for c in sorted(school.enrolments) for u in sorted(school.enrolments[c])]
    events = [{"eventname": "\\core\\event\\user_enrolment_updated", "objectid": str(i), "courseid": str(c),
               "relateduserid": str(u), "contextlevel": 50, "contextinstanceid": str(c), "crud": "u"}
              for i, (c, u) in enumerate(pairs * (5000 // len(pairs) + 1))][:5000]
    session = requests.Session()

    def post(event: Dict[str, Any]) -> int:
        return session.post(receiver.url + "/", json={**event, "token": TOKEN}, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, events))
    assert statuses.count(200) == 5000
    settled(receiver, batcher, timeout=300)
    assert sum(b.events for b in batcher.results) == 5000
    assert 1 <= len(batcher.results) <= 5, [(b.events, b.seconds) for b in batcher.results]
    assert all(b.done for b in batcher.results)
    assert not hq.duplicates()


def test_an_event_about_a_course_outside_the_sync_is_left_to_the_scheduled_sync(synced: Any) -> None:
    moodle, hq, wh, receiver, batcher = synced
    moodle.reset_counts()
    assert plugin_post(receiver, {"eventname": "\\core\\event\\user_graded", "courseid": "999",
                                  "relateduserid": "5"}).json() == {"accepted": True}
    settled(receiver, batcher)
    [batch] = batcher.results
    assert batch.done and batch.courses == [] and sum(moodle.requests.values()) == 0


def test_serve_webhooks_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    from .cli_support import cli

    run = cli("serve-webhooks", "--warehouse", str(tmp_path / "m.duckdb"), env={"MOODLE_COMMCARE_WEBHOOK_TOKEN": "short"})
    assert run.returncode == 2 and "MOODLE_COMMCARE_WEBHOOK_TOKEN" in " ".join(run.stderr.split())


def test_a_teacher_grading_in_moodle_reaches_the_case_through_the_plugins_post(synced: Any) -> None:
    """The emulator posts as local_webhooks does (emulators/moodle/webhooks.py): a grade entered in the gradebook
    becomes the enrolment case's new grade, confirmed by CommCare, within one batch."""
    from emulators.moodle.webhooks import WebhookService

    moodle, hq, wh, receiver, batcher = synced
    sender = moodle.add_webhook(WebhookService(receiver.url + "/", TOKEN, events={"\\core\\event\\user_graded"}))
    school = moodle.school
    course = next(c for c in sorted(school.enrolments) if any(i.itemtype == "mod" for i in school.grade_items[c])
                  and school.students_of(c, True))
    student = school.students_of(course, True)[-1]
    item = next(i for i in school.grade_items[course] if i.itemtype == "mod")
    before = {ext: dict(c.properties) for ext, c in hq.by_external_id("course_enrolment").items()}
    school.set_grade(course, student, item.id, item.grademax - 0.5, via="web")
    assert sender.flush(10) and all(d.status == 200 for d in sender.deliveries), sender.deliveries
    settled(receiver, batcher)
    assert all(b.done for b in batcher.results) and {c for b in batcher.results for c in b.courses} == {course}
    changed = [ext for ext, case in hq.by_external_id("course_enrolment").items() if before.get(ext) != dict(case.properties)]
    assert changed and all(str(student) in ext for ext in changed), changed
    assert_store_matches_marts(hq, wh.path)
