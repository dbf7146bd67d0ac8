"""HTTP hosting of the fake: server thread, request pipeline, routing, scopes, faults, rate limits.

``FakeServer`` is the part of ``FakeKlaviyo`` that knows nothing about resources.  Each request
goes: fault knobs (``html_403_every``, ``rate_limit_every``, ``server_error_every``) -> auth and
``revision`` -> route table (404 unknown path, 405 wrong method) -> scope (403) -> rate tier (with
``enforce_limits``) and the daily report quota -> the resource's handler -> ``drop_every`` /
``truncate_every`` on the way out.  Every request is logged (``request_log()``).

Routes are data: each resource mixin lists its ``Route``s in ``ROUTES`` and the composed class
concatenates them (see ``account.py``).
"""

from __future__ import annotations

import collections
import http.server
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from .data import dumps
from .errors import ApiError, error_body, not_found
from .jsonapi import JSONAPI, page_links

FAKE_API_KEY = "pk_fake_0123456789abcdef0123456789"


class _Ctx:
    __slots__ = ("method", "path", "npath", "query", "headers", "body", "params", "pairs",
                 "base")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, owner):
        self.owner = owner
        self.conns: set = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):  # never print tracebacks
        pass

    def close_all(self):
        with self.conns_lock:
            conns = list(self.conns)
            self.conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _BaseHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-klaviyo/1.0"
    sys_version = ""
    timeout = 120

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, format, *args):  # silence
        pass

    def _read_body(self) -> bytes:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        return self.rfile.read(n) if n > 0 else b""

    def _write(self, status: int, ctype: str | None, body: bytes, extra=(), cut: int | None = None):
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        head = [f"HTTP/1.1 {status} {reason}", f"Server: {self.server_version}",
                f"Date: {self.date_time_string()}"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head.append(f"Content-Length: {len(body)}")
        for k, v in extra:
            head.append(f"{k}: {v}")
        if cut is not None:
            self.close_connection = True  # a mid-body drop does not announce itself
        elif self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        data += body if cut is None else body[:cut]
        self.wfile.write(data)
        if cut is not None:
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(_BaseHandler):
    def _do(self):
        try:
            self.server.owner._serve(self)
        except (ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True
        except Exception:  # pragma: no cover - last resort, keep the server alive
            self.close_connection = True
            try:
                self._write(500, JSONAPI, error_body(500, "error", "A server error occurred.",
                                                      "Internal error in the fake."))
            except Exception:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do


class _Hosted:
    """Start/stop of a server thread on 127.0.0.1, shared by the fake API and the sink."""

    _handler: type
    host: str
    port: int

    def start(self):
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self._handler, self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        released = getattr(self, "_released", None)
        if released is not None:  # parked requests must not outlive the server
            released.set()
        srv = self._server
        if srv is None:
            return
        self._server = None
        try:
            srv.shutdown()
        finally:
            srv.server_close()
            srv.close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


# The revisions Klaviyo has published (shared/klaviyo-api.md section 8 and Klaviyo's changelog):
# a date-shaped revision that is not one of them gets 400 ``invalid``, as from Klaviyo.
REVISIONS = (
    "2023-01-24", "2023-02-22", "2023-06-15", "2023-07-15", "2023-08-15", "2023-09-15",
    "2023-10-15", "2023-12-15", "2024-02-15", "2024-05-15", "2024-06-15", "2024-07-15",
    "2024-10-15", "2025-01-15", "2025-04-15", "2025-07-15", "2025-10-15", "2026-01-15",
    "2026-04-15", "2026-07-15", "2026-10-15",
)


# rate tier -> (burst per 1 s, steady per 60 s).  L/M/S/XS are the generic tiers of
# shared/klaviyo-api.md section 10, for the resource families still to come. Klaviyo counts each
# endpoint against its own limit ("the sizes apply to the different limits for endpoints, not
# accounts"): a route at a generic tier has a bucket of its own (``Route.bucket``), while the
# named tiers are one bucket each (``reports``: campaign, flow, form and segment reports share
# one quota; ``campaigns``: campaigns and their messages).
RATE_LIMITS = {
    "events": (350, 3500),
    "event": (10, 150),
    "metrics": (10, 150),
    "campaigns": (10, 150),
    "reports": (1, 2),
    "XL": (350, 3500),
    "L": (75, 750),
    "M": (10, 150),
    "S": (3, 60),
    "XS": (1, 15),
}


# Every read scope a Klaviyo private key can hold; ``FakeServer.scopes = None`` grants them all.
ALL_SCOPES = frozenset({
    "accounts:read", "campaigns:read", "catalogs:read", "coupon-codes:read", "coupons:read", "events:read",
    "flows:read", "forms:read", "images:read", "lists:read", "metrics:read", "profiles:read",
    "push-tokens:read", "reviews:read", "segments:read", "tags:read", "templates:read",
})

_PARAM = re.compile(r"\{(\w+)\}")
GENERIC_TIERS = frozenset({"XL", "L", "M", "S", "XS"})


def endpoint_bucket(tier: str, endpoint: str) -> str:
    """``"S /api/tags"`` for an endpoint at a generic tier; a named tier is its own bucket."""
    return f"{tier} {endpoint}" if tier in GENERIC_TIERS else tier


@dataclass(frozen=True)
class Route:
    """One endpoint: ``Route("GET", "/api/events/{id}", "_h_event", tier="event", scope="events:read")``.

    ``handler`` names a method of the composed fake; it is called as ``handler(ctx, *path_params)``
    (one positional argument per ``{name}`` segment, in order) and returns
    ``(status, body bytes, extra headers)`` or raises ``ApiError``.  ``tier`` is a key of
    ``RATE_LIMITS`` (checked when ``enforce_limits`` is on); ``scope`` is the scope, or tuple of
    scopes, the key must hold; ``daily`` counts the request against ``report_daily_quota``.
    A trailing slash on the request path is ignored.
    """

    method: str
    pattern: str
    handler: str
    tier: str
    scope: str | tuple[str, ...]
    daily: bool = False

    def __post_init__(self):
        if self.tier not in RATE_LIMITS:
            raise ValueError(f"unknown rate tier {self.tier!r} in {self}")
        for s in self.scopes:
            if s not in ALL_SCOPES:
                raise ValueError(f"unknown scope {s!r} in {self}")

    @property
    def scopes(self) -> tuple[str, ...]:
        return (self.scope,) if isinstance(self.scope, str) else tuple(self.scope)

    @property
    def bucket(self) -> str:
        """The rate bucket this route counts against (see RATE_LIMITS)."""
        return endpoint_bucket(self.tier, self.pattern)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.strip("/").split("/"))

    def match(self, segs: list[str]) -> list[str] | None:
        """Path parameters if ``segs`` (the path split on "/") fits the pattern, else None."""
        mine = self.segments
        if len(mine) != len(segs):
            return None
        args = []
        for want, got in zip(mine, segs):
            if _PARAM.fullmatch(want):
                args.append(got)
            elif want != got:
                return None
        return args


class FakeServer(_Hosted):
    """Hosting, pipeline and knobs of the fake; the resource mixins supply ``ROUTES`` and handlers."""

    _handler = _Handler
    ROUTES: tuple[Route, ...] = ()

    def _init_server(self, *, api_key, scopes, host, port):
        self.api_key = api_key
        self.scopes = None if scopes is None else set(scopes)
        self.host = host
        self.port = port

        # knobs
        self.latency = 0.0
        self.rate_limit_every = 0
        self.retry_after = 1
        self.server_error_every = 0
        self.drop_every = 0
        self.truncate_every = 0
        self.html_403_every = 0
        self.next_link_base = None
        # malformed answers: ``bad_body`` (bytes) replaces every 200 body on paths starting
        # with ``bad_body_path`` (e.g. b'{"data": null}' or b'{}'); ``cursor_loop`` = "self"
        # makes links.next of ``cursor_loop_path`` point at the page itself, "back" makes every
        # later page's links.next point at the first page (A -> B -> A).
        self.bad_body = None
        self.bad_body_path = "/api/"
        self.cursor_loop = None
        self.cursor_loop_path = "/api/"
        self._loop_first: dict[str, str] = {}
        self.enforce_limits = False
        self.report_daily_quota = 225
        # hold_after = N: answer N requests, then park every later one until release() (or
        # stop()). Tests use it to stop a client mid-run at a known point instead of racing a
        # clock; ``held`` says how many requests are parked.
        self.hold_after = None
        self.held = 0
        self._released = threading.Event()

        # observations
        self.requests: list[dict] = []
        self.throttled = 0
        self._lock = threading.Lock()
        self._n = 0
        self._by_path: dict[str, int] = {}
        self._windows: dict[str, list] = {}
        self._report_times: collections.deque = collections.deque()

        self._server = None
        self._thread = None
        self.base_url = None

    def release(self) -> None:
        """Answer the requests parked by ``hold_after``, and every later one."""
        self._released.set()

    # ------------------------------------------------------------------ scopes
    def revoke_scope(self, *scopes: str) -> None:
        """Take scopes away from the key: requests to routes needing them get a JSON 403."""
        for s in scopes:
            if s not in ALL_SCOPES:
                raise ValueError(f"unknown scope {s!r}")
        granted = set(ALL_SCOPES) if self.scopes is None else set(self.scopes)
        self.scopes = granted - set(scopes)

    def grant_scope(self, *scopes: str) -> None:
        for s in scopes:
            if s not in ALL_SCOPES:
                raise ValueError(f"unknown scope {s!r}")
        if self.scopes is not None:
            self.scopes = set(self.scopes) | set(scopes)

    def _check_scopes(self, route: Route):
        if self.scopes is None:
            return
        missing = [s for s in route.scopes if s not in self.scopes]
        if missing:
            raise ApiError(403, "permission_denied",
                           "You do not have permission to perform this action.",
                           f"This API key is missing required scopes: {', '.join(missing)}",
                           {"pointer": "/data/"}, links={})

    # ------------------------------------------------------------------ observations
    def count(self, path_prefix: str = "/api/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].startswith(path_prefix))

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self._n, "throttled": self.throttled,
                    "by_path": dict(self._by_path)}

    def request_log(self) -> list[dict]:
        """A copy of every request answered so far: method, path, query, status,
        authorization, revision, body (the request body as text, None if empty; oldest first)."""
        with self._lock:
            return [dict(r) for r in self.requests]

    # ------------------------------------------------------------------ request pipeline
    def _every(self, every, n) -> bool:
        return bool(every) and every > 0 and n % every == 0

    def _serve(self, h: _BaseHandler):
        method = h.command
        parts = urlsplit(h.path)
        path, query = parts.path, parts.query
        body = h._read_body()
        npath = path.rstrip("/") or "/"
        if npath == "/_fake/stats":
            h._write(200, "application/json", dumps(self.stats()).encode())
            return
        auth = h.headers.get("Authorization")
        revision = h.headers.get("revision")
        with self._lock:
            self._n += 1
            n = self._n
            hold = self.hold_after is not None and n > self.hold_after and not self._released.is_set()
            if hold:
                self.held += 1
        if hold:
            self._released.wait()
        if self.latency:
            time.sleep(self.latency)

        extra: list = []
        ctype = JSONAPI
        cut = None
        if self._every(self.html_403_every, n):
            status = 403
            ctype = "text/html; charset=UTF-8"
            extra = [("cf-mitigated", "challenge"), ("Cache-Control", "no-store")]
            payload = (b"<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>"
                       b"</head><body><noscript>Enable JavaScript and cookies to continue"
                       b"</noscript></body></html>")
        elif self._every(self.rate_limit_every, n):
            ra = self.retry_after
            status, payload = 429, self._throttle_body(ra if ra is not None else 1)
            if ra is not None:
                extra = [("Retry-After", str(ra))]
            with self._lock:
                self.throttled += 1
        elif self._every(self.server_error_every, n):
            status = 503
            payload = error_body(503, "service_unavailable", "Service unavailable.",
                                  "The service is temporarily unavailable. Please try again later.")
        else:
            ctx = _Ctx()
            ctx.method, ctx.path, ctx.npath, ctx.query = method, path, npath, query
            ctx.headers, ctx.body = h.headers, body
            ctx.base = self.base_url
            try:
                status, payload, extra = self._route(ctx, auth, revision)
            except ApiError as e:
                status, payload, extra = e.status, e.body(), list(e.headers)
                if status == 429:
                    with self._lock:
                        self.throttled += 1
            except Exception as e:  # never let a bug kill the connection silently
                status = 500
                payload = error_body(500, "error", "A server error occurred.",
                                      f"Internal error in the fake: {type(e).__name__}: {e}")
            if status == 200:
                payload = self._malformed(path, h.path, payload)
            if self._every(self.drop_every, n):
                cut = max(0, len(payload) // 2 - 1) if len(payload) > 1 else 0
            elif self._every(self.truncate_every, n) and status == 200:
                payload = payload[: len(payload) // 2]

        rec = {"method": method, "path": path, "query": query, "status": status,
               "authorization": auth, "revision": revision,
               "body": body.decode("utf-8", "replace") if body else None}
        with self._lock:
            self.requests.append(rec)
            self._by_path[path] = self._by_path.get(path, 0) + 1
        h._write(status, ctype, payload, extra, cut)

    def _malformed(self, path: str, full: str, payload: bytes) -> bytes:
        if self.bad_body is not None and path.startswith(self.bad_body_path):
            return self.bad_body
        if self.cursor_loop and path.startswith(self.cursor_loop_path):
            doc = json.loads(payload)
            links = doc.get("links") or {}
            first = self._loop_first.setdefault(path, self.base_url + full)
            if self.cursor_loop == "self":
                links["next"] = self.base_url + full
            elif links.get("next") is None or "page%5Bcursor%5D" in full or "page[cursor]" in full:
                links["next"] = first
            doc["links"] = links
            return dumps(doc).encode()
        return payload

    @staticmethod
    def _throttle_body(seconds: int) -> bytes:
        unit = "second" if seconds == 1 else "seconds"
        return error_body(429, "throttled", "Request was throttled.",
                           f"Request was throttled. Expected available in {seconds} {unit}.",
                           {"pointer": "/data/"},
                           links={"type": "https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling"})

    def _check_limits(self, bucket: str):
        """Count a request in ``bucket`` (a RATE_LIMITS tier, or ``endpoint_bucket``'s "TIER path"),
        or raise Klaviyo's 429 when its burst or steady window is full."""
        burst, steady = RATE_LIMITS[bucket.partition(" ")[0]]
        now = time.monotonic()
        with self._lock:
            wins = self._windows.get(bucket)
            if wins is None:
                wins = self._windows[bucket] = [[now, 0], [now, 0]]
            wait = 0
            for win, limit, length in ((wins[0], burst, 1.0), (wins[1], steady, 60.0)):
                if now >= win[0] + length:
                    win[0], win[1] = now, 0
                if win[1] >= limit:
                    wait = max(wait, max(1, math.ceil(win[0] + length - now)))
            if wait:
                raise ApiError(429, "throttled", "Request was throttled.",
                               f"Request was throttled. Expected available in {wait} "
                               f"second{'s' if wait != 1 else ''}.",
                               {"pointer": "/data/"}, headers=[("Retry-After", str(wait))])
            wins[0][1] += 1
            wins[1][1] += 1

    def _check_daily(self):
        """The daily report quota, counted over any 24 hours (as the client counts it): never
        reset by midnight, so a run that crosses one is refused exactly as one that does not."""
        t = time.time()
        with self._lock:
            times = self._report_times
            while times and times[0] <= t - 86400:
                times.popleft()
            if len(times) >= self.report_daily_quota:
                wait = max(1, math.ceil(times[0] + 86400 - t)) if times else 86400
                raise ApiError(429, "throttled", "Request was throttled.",
                               f"Request was throttled. Expected available in {wait} seconds.",
                               {"pointer": "/data/"}, headers=[("Retry-After", str(wait))])
            times.append(t)

    def _route(self, ctx: _Ctx, auth, revision):
        if auth != f"Klaviyo-API-Key {self.api_key}":
            raise ApiError(401, "not_authenticated",
                           "Authentication credentials were not provided.",
                           "Missing or invalid private key.", {"pointer": "/data/"})
        if not revision:
            raise ApiError(400, "invalid", "Invalid input.",
                           "The 'revision' header is required.", {"parameter": "revision"})
        rev_date, dot, suffix = revision.partition(".")
        # Klaviyo accepts its published revisions (optionally ``.pre``), not any date.
        if rev_date not in REVISIONS or (dot and suffix != "pre"):
            raise ApiError(400, "invalid", "Invalid input.",
                           f"Invalid revision '{revision}'. Use one of the published revisions, "
                           f"e.g. {REVISIONS[-1]}.", {"parameter": "revision"})

        segs = ctx.npath.split("/")[1:]
        found = None
        path_known = False
        for r in self.ROUTES:
            args = r.match(segs)
            if args is None:
                continue
            path_known = True
            if r.method == ctx.method:
                found = r, args
                break
        if found is None:
            if path_known:
                raise ApiError(405, "method_not_allowed", "Method not allowed.",
                               f'Method "{ctx.method}" not allowed.', {"pointer": "/data/"})
            raise not_found(f"Unknown path {ctx.path}")
        route, args = found
        self._check_scopes(route)
        if self.enforce_limits:
            self._check_limits(route.bucket)
        if route.daily:
            self._check_daily()
        return getattr(self, route.handler)(ctx, *args)

    def _links(self, ctx: _Ctx, next_cursor, prev_cursor) -> dict:
        return page_links(ctx, self.base_url, self.next_link_base, next_cursor, prev_cursor)


# --------------------------------------------------------------------------- recording sink


class _RecHandler(_BaseHandler):
    def _do(self):
        owner = self.server.owner
        try:
            body = self._read_body()  # noqa: F841
            parts = urlsplit(self.path)
            rec = {"method": self.command, "path": parts.path, "query": parts.query,
                   "status": 200, "authorization": self.headers.get("Authorization"),
                   "revision": self.headers.get("revision")}
            with owner._lock:
                owner.requests.append(rec)
            url = f"{owner.base_url}{self.path}"
            payload = dumps({"data": [], "links": {"self": url, "next": None}}).encode()
            self._write(200, JSONAPI, payload)
        except Exception:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do


class RecordingServer(_Hosted):
    """Answers every request with an empty JSON:API page and records it.

    Used as "another host" in tests: ``.requests`` shows whether any request
    (and which Authorization header) reached it.
    """

    _handler = _RecHandler

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self.port = port
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.base_url = None

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].startswith(path_prefix))

    def request_log(self) -> list[dict]:
        """A copy of every request received: method, path, query, status, authorization, revision."""
        with self._lock:
            return [dict(r) for r in self.requests]
