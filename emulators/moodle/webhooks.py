"""Moodle events and the local_webhooks plugin (valentineus/moodle-webhooks) that POSTs them to a service.

An event is Moodle's `\\core\\event\\base::get_data()` array: the 17 keys of `base::$fields`, in that order
(lib/classes/event/base.php: eventname, component, action, target, objecttable, objectid, crud, edulevel,
contextid, contextlevel, contextinstanceid, userid, courseid, relateduserid, anonymous, other, timecreated).
The plugin's handler (classes/handler.php `events()`, observing "*" in db/events.php) sends it to every enabled
service that selected the event's name; `local_webhooks_send_request()` (lib.php) adds `host` (the host of
$CFG->wwwroot), `token` and `extra` (the service's `other` field), and POSTs `json_encode($event)` with the header
`Content-Type: application/<type>` through Moodle's curl class. The response is only logged (the plugin's own
`response_answer` event): a failed POST is not retried, the event is lost.

The plugin posts during the request that triggered the event (an `internal` observer); the emulator posts from
one background thread instead, in the order the events happened, so its own answers are not slowed by a slow or
dead receiver. `WebhookSender.flush()` waits until every queued event was tried.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

# lib/accesslib.php (CONTEXT_*): the context levels events carry in contextlevel
CONTEXT_SYSTEM, CONTEXT_USER, CONTEXT_COURSE, CONTEXT_MODULE = 10, 30, 50, 70
# lib/classes/event/base.php: LEVEL_OTHER, LEVEL_TEACHING, LEVEL_PARTICIPATING (edulevel) and USER_OTHER, the userid
# "to use when actor is not an actual user but system, cli or cron"
LEVEL_OTHER, LEVEL_TEACHING, LEVEL_PARTICIPATING = 0, 1, 2
USER_OTHER = -1

# Context ids: Moodle numbers contexts as it creates them; here only their being distinct and stable matters. The
# system context is id 1 (created at install); module contexts are 5000 + cmid, as core_course_get_contents answers
# (api.py); course and user contexts take ranges of their own.
SYSTEM_CONTEXT_ID = 1


Context = Tuple[int, int, int, Optional[int]]  # (contextid, contextlevel, instanceid, the course it lies in)


def course_context(course_id: int) -> Context:
    return 90_000_000 + course_id, CONTEXT_COURSE, course_id, course_id


def user_context(user_id: int) -> Context:
    return 100_000_000 + user_id, CONTEXT_USER, user_id, None


def module_context(cmid: int, course_id: int) -> Context:
    return 5000 + cmid, CONTEXT_MODULE, cmid, course_id


def moodle_event(eventname: str, *, crud: str, edulevel: int, objecttable: Optional[str], objectid: Any,
                 context: Context, userid: int, timecreated: int, courseid: Any = None,
                 relateduserid: Any = None, other: Any = None, anonymous: int = 0) -> Dict[str, Any]:
    """`get_data()` of an event as `base::create()` fills it (lib/classes/event/base.php).

    component and target/action come from the class name (`\\component\\event\\target_action`, split at the last
    underscore). contextid and contextlevel are ints (context::__construct casts them) while contextinstanceid is the
    context record's instanceid, a string from the database. courseid, when the caller passes none, is the course
    context's instanceid (a string too), or 0 outside a course. An event in a user context without a relateduserid
    key gets the context's user.
    """
    parts = eventname.strip("\\").split("\\")
    component, name = parts[0], parts[2]
    target, action = name[: name.rindex("_")], name[name.rindex("_") + 1:]
    contextid, contextlevel, instanceid, course = context
    if courseid is None:  # $coursecontext->instanceid of context::get_course_context(false), else 0
        courseid = str(course) if course is not None else 0
    if relateduserid is None and contextlevel == CONTEXT_USER:
        relateduserid = instanceid
    return {
        "eventname": eventname, "component": component, "action": action, "target": target,
        "objecttable": objecttable, "objectid": objectid, "crud": crud, "edulevel": edulevel,
        "contextid": contextid, "contextlevel": contextlevel, "contextinstanceid": str(instanceid),
        "userid": userid, "courseid": courseid, "relateduserid": relateduserid, "anonymous": anonymous,
        "other": other, "timecreated": timecreated,
    }


def php_json_encode(value: Any) -> str:
    """PHP's `json_encode()` with no flags: non-ASCII as \\uXXXX, "/" escaped as "\\/", no spaces. Python writes
    floats as PHP 7.1+ does (serialize_precision -1: 85.0 stays 85.0)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


@dataclass
class WebhookService:
    """A row of local_webhooks_service: where to POST, with which token, for which events.

    `events` are event names as Moodle writes them ("\\\\core\\\\event\\\\user_graded"); None selects every event
    (the plugin's form lists every event of the site, report_eventlist). `extra` is the service's free "other"
    field, sent as `extra`; `content_type` the header sent (the plugin's `type`, "json" in `application/json`).
    `enabled` is the service's `enable` flag: a disabled service gets nothing.
    """

    url: str
    token: str
    events: Optional[Set[str]] = None
    content_type: str = "application/json"
    extra: str = ""
    enabled: bool = True

    def wants(self, eventname: str) -> bool:
        # classes/handler.php: boolval($callback->enable) && !empty($callback->events[$data["eventname"]])
        return self.enabled and (self.events is None or eventname in self.events)


@dataclass
class Delivery:
    """One POST the sender made: the answer's status, or the error that lost the event."""

    url: str
    eventname: str
    body: bytes
    status: Optional[int] = None
    error: Optional[str] = None


@dataclass
class WebhookSender:
    """Posts events for the services added to it, one at a time from a daemon thread, in the order triggered."""

    host: str  # parse_url($CFG->wwwroot)["host"]
    timeout: float = 10.0  # the emulator's own bound on a stuck receiver (the plugin sets none of its own)
    services: List[WebhookService] = field(default_factory=list)
    deliveries: List[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: Deque[Tuple[WebhookService, str, bytes]] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    def add(self, service: WebhookService) -> None:
        with self._cond:
            self.services.append(service)

    def notify(self, event: Dict[str, Any]) -> None:
        """The plugin's observer: queue the event for every service that selected it."""
        with self._cond:
            for service in self.services:
                if not service.wants(event["eventname"]):
                    continue
                # lib.php local_webhooks_send_request(): host, token and extra are added to the event's data
                body = dict(event, host=self.host, token=service.token, extra=service.extra)
                self._queue.append((service, event["eventname"], php_json_encode(body).encode("utf-8")))
                self._pending += 1
            if self._pending and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="moodle-webhooks", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was posted (or lost); False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                service, eventname, body = self._queue.popleft()
            delivery = self._post(service, eventname, body)
            with self._cond:
                self.deliveries.append(delivery)
                self._pending -= 1
                self._cond.notify_all()

    def _post(self, service: WebhookService, eventname: str, body: bytes) -> Delivery:
        # lib.php: $curl->setHeader(array("Content-Type: application/" . $record->type)); $curl->post($record->url,
        # json_encode($event)); the answer is only logged, never retried
        delivery = Delivery(service.url, eventname, body)
        url = urlsplit(service.url)
        conn_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = conn_class(url.hostname or "", url.port, timeout=self.timeout)
        try:
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            conn.request("POST", path, body=body, headers={"Content-Type": service.content_type})
            response = conn.getresponse()
            response.read()
            delivery.status = response.status
        except (OSError, http.client.HTTPException) as err:
            delivery.error = f"{type(err).__name__}: {err}"
        finally:
            conn.close()
        return delivery
