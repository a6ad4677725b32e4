"""The Moodle webhook receiver (webhook_server.py) and its store (webhook_store.py), through real HTTP on
127.0.0.1: what the local_webhooks plugin sends is kept, durably, before the 200; what is refused changes
nothing; a receiver killed mid-burst loses no event it answered 200 for."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
import uvicorn

from moodle_commcare.webhook_server import make_app, uvicorn_config
from moodle_commcare.webhook_store import BatchError, EventStore, events_path

TOKEN = "s3cret-shared-token"
MARKER = "PRIVATE-MARKER-7f3a"  # put in bodies: no answer may echo it


def stand_in_is_relevant(event: Dict[str, Any]) -> Optional[str]:
    """Until webhook_events.is_relevant: grades and enrolments matter, anything else is unknown."""
    name = str(event.get("eventname") or "").lstrip("\\")
    if not name:
        return "no eventname"
    return None if name in ("core\\event\\user_graded", "core\\event\\user_enrolment_created") else "unknown event"


def moodle_event(objectid: int = 41, eventname: str = "\\core\\event\\user_graded", **extra: Any) -> Dict[str, Any]:
    """What lib.php local_webhooks_send_request sends: get_data() plus host, token and extra (ids as strings)."""
    event: Dict[str, Any] = {
        "eventname": eventname, "component": "core", "action": "graded", "target": "user",
        "objecttable": "grade_grades", "objectid": str(objectid), "crud": "u", "edulevel": 2, "contextid": 31,
        "contextlevel": 50, "contextinstanceid": "7", "userid": "2", "courseid": "7", "relateduserid": "58",
        "anonymous": 0, "other": {"itemid": 12, "overridden": False, "finalgrade": 81.5},
        "timecreated": 1712345678, "host": "moodle.school.example", "token": TOKEN, "extra": MARKER}
    event.update(extra)
    return event


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Receiver:
    def __init__(self, store: EventStore, url: str, port: int, accepted: List[int]) -> None:
        self.store, self.url, self.port, self.accepted_calls = store, url, port, accepted

    def post(self, body: Any, path: str = "/", content_type: str = "application/json", **kw: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.url + path, data=data, headers={"Content-Type": content_type}, timeout=10, **kw)

    def snapshot(self) -> Tuple[Dict[str, int], List[Any]]:
        return self.store.counts(), self.store.pending()


@contextmanager
def running(tmp_path: Path, trusted_proxies: Tuple[str, ...] = (), **options: Any) -> Iterator[Receiver]:
    """The app under uvicorn in a thread, configured as serve() does, on a socket bound here (no port race)."""
    store = EventStore(tmp_path / "m.events.sqlite")
    accepted: List[int] = []
    options.setdefault("is_relevant", stand_in_is_relevant)
    app = make_app(store, TOKEN, on_accepted=lambda: accepted.append(1), **options)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, trusted_proxies))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Receiver(store, f"http://127.0.0.1:{port}", port, accepted)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with running(tmp_path) as r:
        yield r


def assert_no_leak(response: requests.Response) -> None:
    assert MARKER not in response.text and TOKEN not in response.text
    assert "token" not in response.text.lower().replace("unauthorized", "")


# -- what is kept ------------------------------------------------------------------------------------------


def test_an_event_the_cases_use_is_stored_before_the_200(receiver: Receiver) -> None:
    answer = receiver.post(moodle_event(objectid=41))
    assert answer.status_code == 200 and answer.json() == {"accepted": True}
    [stored] = receiver.store.pending()
    assert stored.event == {k: v for k, v in moodle_event(objectid=41).items() if k != "token"}  # all but the token
    assert stored.received_at == pytest.approx(time.time(), abs=30)
    assert receiver.accepted_calls == [1]
    counts = receiver.store.counts()
    assert counts["pending"] == 1 and counts["ignored"] == 0


def test_the_plugins_other_content_type_still_carries_json_and_the_alias_path_works(receiver: Receiver) -> None:
    # the service form's "x-www-form-urlencoded" only changes the header: lib.php json_encodes the body anyway
    answer = receiver.post(moodle_event(objectid=1), content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 200 and answer.json() == {"accepted": True}
    answer = receiver.post(moodle_event(objectid=2), path="/moodle")
    assert answer.status_code == 200 and answer.json() == {"accepted": True}
    assert [e.event["objectid"] for e in receiver.store.pending()] == ["1", "2"]


def test_an_event_the_cases_do_not_use_is_counted_not_kept(receiver: Receiver) -> None:
    answer = receiver.post(moodle_event(eventname="\\core\\event\\course_viewed"))
    assert answer.status_code == 200 and answer.json() == {"accepted": False}
    receiver.post(moodle_event(eventname="\\mod_forum\\event\\post_created"))
    receiver.post(moodle_event(eventname=""))
    counts = receiver.store.counts()
    assert counts["pending"] == 0 and receiver.store.pending() == []
    assert counts["ignored"] == 3 and counts["ignored: unknown event"] == 2 and counts["ignored: no eventname"] == 1
    assert receiver.accepted_calls == []


def test_health_says_the_counts_and_nothing_of_the_events(receiver: Receiver) -> None:
    receiver.post(moodle_event(objectid=5))
    receiver.post(moodle_event(eventname="\\core\\event\\course_viewed"))
    receiver.post({"token": "wrong"})
    answer = requests.get(receiver.url + "/health", timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["events"]["pending"] == 1 and body["events"]["ignored: unknown event"] == 1
    assert body["refused_since_start"] == {"401": 1}
    assert 0 <= body["oldest_pending_age_seconds"] < 30
    assert "user_graded" not in answer.text and MARKER not in answer.text and "moodle.school" not in answer.text


# -- what is refused, and changes nothing ------------------------------------------------------------------


@contextmanager
def unchanged(receiver: Receiver) -> Iterator[None]:
    before = receiver.snapshot()
    yield
    assert receiver.snapshot() == before
    assert receiver.accepted_calls == []


def test_only_post_on_the_event_paths(receiver: Receiver) -> None:
    with unchanged(receiver):
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/moodle"):
                answer = requests.request(method, receiver.url + path, data=json.dumps(moodle_event()), timeout=10)
                assert answer.status_code == 405, (method, path)
                assert_no_leak(answer)
        assert requests.post(receiver.url + "/health", data=json.dumps(moodle_event()), timeout=10).status_code == 405
        assert receiver.post(moodle_event(), path="/elsewhere").status_code == 404


def test_a_wrong_or_missing_token_is_401_and_says_no_more(receiver: Receiver) -> None:
    with unchanged(receiver):
        bodies = [moodle_event(token="s3cret-shared-tokeX"), moodle_event(token=TOKEN[:-1]), moodle_event(token=""),
                  {k: v for k, v in moodle_event().items() if k != "token"}, moodle_event(token=None),
                  moodle_event(token=12345), moodle_event(token=[TOKEN]), moodle_event(token=TOKEN + " ")]
        answers = [receiver.post(body) for body in bodies]
        assert [a.status_code for a in answers] == [401] * len(bodies)
        assert len({a.text for a in answers}) == 1  # the same words whatever was wrong
        for answer in answers:
            assert_no_leak(answer)
        # a token in a header (not where the plugin puts it) is not one
        body = {k: v for k, v in moodle_event().items() if k != "token"}
        answer = requests.post(receiver.url, data=json.dumps(body),
                               headers={"X-Token": TOKEN, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 401


def test_a_body_that_is_not_a_json_object_is_400(receiver: Receiver) -> None:
    with unchanged(receiver):
        bodies: List[Any] = [b"", b"not json " + MARKER.encode(), b"{\"token\": \"" + TOKEN.encode() + b"\"",
                             json.dumps([moodle_event()]), json.dumps("a string"), b"null", b"42",
                             b"\xff\xfe\x00garbage", b"{\"token\": NaN}", b"[" * 50_000 + b"]" * 10_000]
        for body in bodies:
            answer = receiver.post(body)
            assert answer.status_code == 400, body[:40]
            assert_no_leak(answer)
        # the repository's unreleased rewrite (classes/task/notify.php) would post form fields: not an event here
        form = "&".join(f"{k}={v}" for k, v in moodle_event().items())
        assert receiver.post(form, content_type="application/x-www-form-urlencoded").status_code == 400
        multipart = requests.post(receiver.url, files={"eventname": (None, "\\core\\event\\user_graded")},
                                  data={"token": TOKEN}, timeout=10)
        assert multipart.status_code == 400


def raw_request(port: int, head: bytes, body: bytes) -> Tuple[int, bytes]:
    """Send bytes as they are (a declared length, a chunked body) and read the status line and the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the receiver may answer and close before the rest arrives
        data = b""
        try:
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    return int(data.split(b" ", 2)[1]), data


def test_a_body_over_the_limit_is_413_and_is_not_read_past_it(tmp_path: Path) -> None:
    with running(tmp_path, max_body_bytes=1000) as receiver, unchanged(receiver):
        event = moodle_event(padding="x" * 2000)
        body = json.dumps(event).encode()
        # declared up front: refused on the header, the body never read
        head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        status, answer = raw_request(receiver.port, head, body[:100])
        assert status == 413 and MARKER.encode() not in answer
        # declared as a huge body that never comes
        status, _ = raw_request(receiver.port, head.replace(b"%d" % len(body), b"10000000000"), b"")
        assert status == 413
        # chunked, no length said: counted while it streams
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 300]), body[i:i + 300]) for i in range(0, len(body), 300))
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        status, answer = raw_request(receiver.port, head, chunks + b"0\r\n\r\n")
        assert status == 413 and MARKER.encode() not in answer
        assert receiver.post(body).status_code == 413
    # at the limit exactly, it is read
    with running(tmp_path / "b", max_body_bytes=len(json.dumps(moodle_event()).encode())) as receiver:
        assert receiver.post(moodle_event()).status_code == 200


def test_a_source_outside_the_allowed_addresses_is_403(tmp_path: Path) -> None:
    with running(tmp_path, allow_ips=["10.0.0.0/8", "192.168.4.17"]) as receiver, unchanged(receiver):
        answer = receiver.post(moodle_event())
        assert answer.status_code == 403
        assert_no_leak(answer)
        # X-Forwarded-For is not believed unless serve() is told of a proxy
        answer = requests.post(receiver.url, data=json.dumps(moodle_event()),
                               headers={"X-Forwarded-For": "10.1.2.3"}, timeout=10)
        assert answer.status_code == 403
    with running(tmp_path / "b", allow_ips=["10.0.0.0/8", "127.0.0.0/8"]) as receiver:
        assert receiver.post(moodle_event()).status_code == 200
    # behind a reverse proxy serve() was told of, the address it forwards is the source
    with running(tmp_path / "c", trusted_proxies=("127.0.0.1",), allow_ips=["10.0.0.0/8"]) as receiver:
        assert receiver.post(moodle_event()).status_code == 403
        answer = requests.post(receiver.url, data=json.dumps(moodle_event()),
                               headers={"X-Forwarded-For": "10.1.2.3"}, timeout=10)
        assert answer.status_code == 200
        assert receiver.store.counts()["pending"] == 1


def test_too_many_requests_from_one_source_is_429_with_retry_after(tmp_path: Path) -> None:
    with running(tmp_path, rate_per_minute=3) as receiver:
        for n in range(3):
            assert receiver.post(moodle_event(objectid=n)).status_code == 200
        with unchanged_after_accepted(receiver):
            answer = receiver.post(moodle_event(objectid=99))
            assert answer.status_code == 429
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
            assert_no_leak(answer)
        assert [e.event["objectid"] for e in receiver.store.pending()] == ["0", "1", "2"]


@contextmanager
def unchanged_after_accepted(receiver: Receiver) -> Iterator[None]:
    before, calls = receiver.snapshot(), list(receiver.accepted_calls)
    yield
    assert receiver.snapshot() == before and receiver.accepted_calls == calls


def test_the_receiver_needs_a_token() -> None:
    with pytest.raises(ValueError):
        make_app(EventStore.__new__(EventStore), "", is_relevant=stand_in_is_relevant)


# -- the store ---------------------------------------------------------------------------------------------


def test_events_live_beside_the_warehouse() -> None:
    assert events_path(Path("/data/moodle.duckdb")) == Path("/data/moodle.events.sqlite")


def test_batches_take_finish_and_release(tmp_path: Path) -> None:
    with EventStore(tmp_path / "e.sqlite") as store:
        ids = [store.add(moodle_event(objectid=n), "10.0.0.5") for n in range(5)]
        assert store.oldest_pending_received_at() is not None
        store.take("b1", ids[:2])
        assert [e.id for e in store.pending()] == ids[2:]
        with pytest.raises(BatchError):
            store.take("b2", ids[1:3])  # one is b1's: none taken
        assert [e.id for e in store.pending()] == ids[2:]
        store.take("b2", ids[2:4])
        store.finish("b1")
        store.release("b2")
        assert [e.id for e in store.pending()] == ids[1 + 1:]
        assert store.counts() == {"pending": 3, "taken": 0, "done": 2, "ignored": 0}
        with pytest.raises(BatchError):
            store.finish("b1")  # already finished
        with pytest.raises(BatchError):
            store.take("b1", ids[4:])
        assert store.prune_done(older_than_seconds=-1) == 2
        assert store.counts()["done"] == 0


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from moodle_commcare.webhook_store import EventStore
    store = EventStore(Path(sys.argv[1]))
    store.take("held", [e.id for e in store.pending()][:2])
    print("taken", flush=True)
    time.sleep(600)
""")


def test_a_batch_whose_process_was_killed_goes_back_to_pending_and_a_live_one_stays(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    with EventStore(path) as store:
        for n in range(3):
            store.add(moodle_event(objectid=n), "10.0.0.5")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"taken"
        with EventStore(path) as other:  # the holder is alive: its batch is left alone
            assert other.counts()["taken"] == 2 and len(other.pending()) == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    with EventStore(path) as after:
        assert after.counts()["taken"] == 0
        assert [e.event["objectid"] for e in after.pending()] == ["0", "1", "2"]
        assert list((tmp_path / "e.sqlite.owners").iterdir()) == []


def test_writers_in_several_threads_and_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    writer = ("import sys; from pathlib import Path; from moodle_commcare.webhook_store import EventStore\n"
              "s = EventStore(Path(sys.argv[1]))\n"
              "[s.add({'objectid': f'{sys.argv[2]}-{n}'}, 'p') for n in range(100)]")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(path), f"p{i}"]) for i in range(3)]
    with EventStore(path) as store, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: store.add({"objectid": f"t-{n}"}, "t"), range(200)))
        assert [p.wait(60) for p in procs] == [0, 0, 0]
        ids = [e.event["objectid"] for e in store.pending()]
    assert len(ids) == len(set(ids)) == 500


# -- killed mid-burst --------------------------------------------------------------------------------------


SERVE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from moodle_commcare.webhook_server import serve
    from moodle_commcare.webhook_store import EventStore
    serve(EventStore(Path(sys.argv[1])), sys.argv[2], "127.0.0.1", int(sys.argv[3]),
          is_relevant=lambda event: None, rate_per_minute=1_000_000)
""")


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


def start_receiver(path: Path) -> Tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path), TOKEN, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.05)


def test_a_receiver_killed_mid_burst_loses_no_accepted_event(tmp_path: Path) -> None:
    path = tmp_path / "m.events.sqlite"
    proc, url = start_receiver(path)
    accepted: List[str] = []
    failed: List[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def sender(worker: int) -> None:
        session = requests.Session()
        for n in range(400):
            marker = f"w{worker}-{n}"
            try:
                answer = session.post(url, data=json.dumps(moodle_event(objectid=worker * 1000 + n, extra=marker)),
                                      headers={"Content-Type": "application/json"}, timeout=10)
                ok = answer.status_code == 200 and answer.json() == {"accepted": True}
            except (requests.RequestException, ValueError):  # refused, reset, cut mid-answer
                ok = False
            with lock:
                (accepted if ok else failed).append(marker)
                if len(accepted) >= 150:
                    enough.set()

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    assert enough.wait(60), "the burst did not get going"
    proc.send_signal(signal.SIGKILL)  # mid-burst: requests in flight, commits maybe half done
    proc.wait(10)
    for thread in threads:
        thread.join(120)
    assert proc.returncode == -signal.SIGKILL
    assert failed, "the kill came after the burst"

    with EventStore(path) as store:
        events = store.pending()
        counts = store.counts()
    stored = [e.event["extra"] for e in events]
    for e in events:  # every stored event is whole, its token left out
        assert "token" not in e.event and e.event == {k: v for k, v in moodle_event(
            objectid=int(e.event["objectid"]), extra=e.event["extra"]).items() if k != "token"}
    assert len(stored) == len(set(stored)), "an event stored twice"
    missing = set(accepted) - set(stored)
    assert not missing, f"{len(missing)} events answered 200 are not in the store"
    assert set(stored) <= set(accepted) | set(failed)
    assert counts["pending"] == len(stored)
    print(f"accepted {len(accepted)}, failed {len(failed)}, stored {len(stored)} "
          f"({len(set(stored) - set(accepted))} stored whose answer was lost)")


def test_serve_starts_and_answers(tmp_path: Path) -> None:
    proc, url = start_receiver(tmp_path / "s.events.sqlite")
    try:
        answer = requests.post(url, data=json.dumps(moodle_event()), timeout=10)
        assert answer.status_code == 200 and answer.json() == {"accepted": True}
        assert requests.post(url, data=json.dumps(moodle_event(token="no")), timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    # no access log, and nothing of a request anywhere in what it printed
    assert MARKER.encode() not in out and b"POST" not in out, out.decode()

