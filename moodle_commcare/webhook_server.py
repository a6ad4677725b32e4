"""The receiver for Moodle's local_webhooks plugin (github.com/valentineus/moodle-webhooks): an ASGI app.

What the plugin sends, from its code (lib.php `local_webhooks_send_request`; the same in classes/events.php
`send` and classes/task/process_events_task.php of other releases): for each event a service subscribed to,
Moodle's own event data (`$event->get_data()`: eventname, component, action, target, objectid, crud, edulevel,
contextid, contextlevel, contextinstanceid, userid, courseid, relateduserid, anonymous, other, timecreated;
ids sometimes as strings) with `host` (the site's host name), `token` (the shared secret typed into the
service's form) and `extra` (the form's free text) added, POSTed as `json_encode($event)` through Moodle's
curl with the header `Content-Type: application/<type>`, where the form (classes/service_form.php,
classes/editform.php) offers `json` and `x-www-form-urlencoded`. The body is JSON whichever label it wears, so
the Content-Type is not looked at: the body is read as JSON either way. The token travels in the body, never
in a header. The plugin sends once: it logs the answer's status line as a `response_answer` event
(locallib.php `local_webhooks_events::response_answer`, "Error sending request" when there was none) and
never retries. (The repository's unreleased rewrite, classes/task/notify.php, posts the fields as a PHP array
instead, which curl sends as multipart form data under the configured JSON label: that loses `other` and is
refused here with 400, as not JSON.)

So the answers: an event we understood gets 200 whether it is kept or not (a refusal would only fill the
site's logs, since nothing is ever sent again); a refused request gets the status that says why, and never
echoes the body or says which part of the token was wrong. Each check runs before anything is stored, so a
refused request changes nothing in the store. The plugin calls us from the Moodle request that raised the
event (or from its cron task), so the answer must be quick: one SQLite commit.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Union

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from moodle_commcare.webhook_store import EventStore

log = logging.getLogger(__name__)

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
WINDOW_SECONDS = 60.0
MAX_TRACKED_IPS = 10_000  # the rate limiter forgets idle sources past this many


class _TooLarge(Exception):
    pass


class _RateLimiter:
    """At most `per_minute` requests from one source IP in any 60 seconds (a sliding window)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: Dict[str, Deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, ip: str) -> Optional[int]:
        """None, and the request counted; or the seconds to wait before the next one would be let in."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > MAX_TRACKED_IPS:
                self._forget_idle(now)
            times = self._seen.setdefault(ip, deque())
            while times and times[0] <= now - WINDOW_SECONDS:
                times.popleft()
            if len(times) >= self.per_minute:
                return max(1, math.ceil(times[0] + WINDOW_SECONDS - now))
            times.append(now)
            return None

    def _forget_idle(self, now: float) -> None:
        for ip in [ip for ip, times in self._seen.items() if not times or times[-1] <= now - WINDOW_SECONDS]:
            del self._seen[ip]


def _networks(allow_ips: Sequence[str]) -> List[IPNetwork]:
    """Addresses and CIDRs ("10.0.0.5", "10.0.0.0/24", "::1"); a bad one raises ValueError at start."""
    return [ipaddress.ip_network(str(entry).strip(), strict=False) for entry in allow_ips]


def _allowed(ip: str, networks: List[IPNetwork]) -> bool:
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack socket is 10.0.0.5
    return any(address in network for network in networks)


def _refuse(status: int, error: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"accepted": False, "error": error}, status_code=status, headers=headers)


def _no_constants(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")  # json.loads would take NaN and Infinity


def make_app(store: EventStore, token: str, *, is_relevant: Callable[[Dict[str, Any]], Optional[str]],
             allow_ips: Sequence[str] = (), max_body_bytes: int = 65536, rate_per_minute: int = 600,
             on_accepted: Optional[Callable[[], None]] = None) -> Starlette:
    """The receiver: POST / (or /moodle) takes one event from the plugin; GET /health says the store's counts.

    `is_relevant(event)` is None for an event to keep, else the reason it is dropped (counted in the store).
    `on_accepted()` is called after each event is stored (to wake whatever uses them); its failure is logged,
    the event stays accepted."""
    if not token:
        raise ValueError("the webhook receiver needs a token: the shared secret set in the plugin's service form")
    if max_body_bytes <= 0:
        raise ValueError("max_body_bytes must be positive")
    expected = token.encode("utf-8")
    networks = _networks(allow_ips)
    limiter = _RateLimiter(rate_per_minute)
    refused: Counter[int] = Counter()  # this process's refusals by status, for /health (never kept)

    def source_of(request: Request) -> str:
        return request.client.host if request.client else ""

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_body_bytes:
            raise _TooLarge  # said up front: not one byte read
        body = bytearray()
        async for chunk in request.stream():  # chunked or lying: counted as it arrives, never past the limit
            body.extend(chunk)
            if len(body) > max_body_bytes:
                raise _TooLarge
        return bytes(body)

    async def receive_event(request: Request) -> Response:
        ip = source_of(request)
        if not _allowed(ip, networks):
            refused[403] += 1
            return _refuse(403, "forbidden")
        wait = limiter.retry_after(ip)
        if wait is not None:
            refused[429] += 1
            return _refuse(429, "too many requests", {"Retry-After": str(wait)})
        try:
            raw = await read_body(request)
        except _TooLarge:
            refused[413] += 1
            return _refuse(413, "request body too large", {"Connection": "close"})
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        try:
            event = json.loads(raw, parse_constant=_no_constants)  # bytes: UTF-8/16/32 as JSON allows
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            refused[400] += 1
            return _refuse(400, "expected a JSON object")
        sent = event.get("token")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode("utf-8"), expected):
            refused[401] += 1
            return _refuse(401, "unauthorized")
        reason = is_relevant(event)
        if reason is not None:
            await run_in_threadpool(store.count_ignored, reason)
            return JSONResponse({"accepted": False})
        try:
            await run_in_threadpool(store.add, event, ip)
        except Exception:  # disk full, the file gone...: not stored, and said so (the plugin only logs it)
            log.exception("webhook receiver: could not store an event")
            return _refuse(503, "could not store the event")
        if on_accepted is not None:
            try:
                on_accepted()
            except Exception:
                log.exception("webhook receiver: on_accepted failed (the event is stored)")
        return JSONResponse({"accepted": True})

    async def health(request: Request) -> Response:
        wait = limiter.retry_after(source_of(request))
        if wait is not None:
            refused[429] += 1
            return _refuse(429, "too many requests", {"Retry-After": str(wait)})
        counts = await run_in_threadpool(store.counts)
        oldest = await run_in_threadpool(store.oldest_pending_received_at)
        return JSONResponse({"status": "ok", "events": counts,
                             "oldest_pending_age_seconds": None if oldest is None else round(time.time() - oldest, 1),
                             "refused_since_start": {str(status): n for status, n in sorted(refused.items())}})

    routes = [Route("/", receive_event, methods=["POST"]), Route("/moodle", receive_event, methods=["POST"]),
              Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes)


def uvicorn_config(app: Any, host: str, port: int, trusted_proxies: Sequence[str] = ()) -> Any:
    """How uvicorn serves the receiver: logs at warning, no access log (nothing of a request is written
    anywhere), no Server header. The source IP is the peer's: uvicorn's X-Forwarded-For handling (on by default,
    trusting 127.0.0.1) is off unless `trusted_proxies` names the reverse proxies whose header is believed."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          proxy_headers=bool(trusted_proxies),
                          forwarded_allow_ips=list(trusted_proxies) if trusted_proxies else None,
                          server_header=False)


def serve(store: EventStore, token: str, host: str, port: int, *, trusted_proxies: Sequence[str] = (),
          **limits: Any) -> None:
    """Run the receiver with uvicorn until interrupted (SIGINT/SIGTERM). `limits` go to make_app
    (`is_relevant` is required)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(make_app(store, token, **limits), host, port, trusted_proxies)).run()
