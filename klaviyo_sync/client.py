"""The Klaviyo API client: one Session, one retried request function, a page generator.

It prints nothing. Every failure becomes an ``ApiError`` (or a subclass) whose message names
the endpoint and carries the API's own ``errors[].detail``, never the key.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import gc
import ipaddress
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from . import __version__, timeutil
from .errors import ApiError, AuthError, RateLimitExceeded, UnsafeLinkError, redact
from .ratelimit import RateLimiter, endpoint_key

try:  # A faster decoder when present; the standard library otherwise.
    import orjson

    _loads: Callable[[bytes], object] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

log = logging.getLogger("klaviyo_sync")

DEFAULT_BASE_URL = "https://a.klaviyo.com"
# The revision of the OpenAPI spec this tool was written against (../shared/klaviyo-openapi).
DEFAULT_REVISION = "2026-07-15"
# The oldest revision whose spec declares every request this tool builds (older ones declare no
# page[size] on lists, segments and templates, which a strict server rejects): older is refused.
OLDEST_REVISION = "2026-04-15"
REVISION_WARN_DAYS = 548  # ~18 months; Klaviyo retires a revision about two years after its date
JSONAPI = "application/vnd.api+json"
# The overall deadline of one request, connect to last byte (KLAVIYO_REQUEST_DEADLINE): the
# slowest real answer (a 1,000-event page, a report) takes seconds; 120 s leaves a wide margin.
DEFAULT_DEADLINE = 120.0
# The largest answer read for one request: Klaviyo's largest pages (1,000 events with included
# profiles, 100 profiles with predictive analytics) are a few MB; a 100 MB answer would cost
# ~7x its size in memory once decoded.
MAX_BODY_BYTES = 50 * 2**20


@dataclass
class Page:
    data: list
    included: list
    url: str
    next_url: str | None


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    rate_limit_wait_s: float = 0.0
    throttle_wait_s: float = 0.0
    network_wait_s: float = 0.0  # sending requests and waiting for their answers' headers
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer_time(self) -> float | None:
        """Mean seconds a request waited for its answer, None before any."""
        return self.network_wait_s / self.requests if self.requests else None

    def add(self, **kw: float) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "rate_limit_wait_s": round(self.rate_limit_wait_s + self.throttle_wait_s, 3),
        }


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, detail: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.rate_limited = rate_limited


def revision_age_warning(revision: str, today: date | None = None) -> str | None:
    """A warning when the revision is older than ~18 months (Klaviyo retires them after ~2 years)."""
    try:
        rev_date = date.fromisoformat(revision.split(".")[0])
    except ValueError:
        return None
    if rev_date < date.fromisoformat(OLDEST_REVISION):
        return None  # refused with exit 2 instead (check_revision): one line, not two
    age = ((today or timeutil.today()) - rev_date).days
    if age > REVISION_WARN_DAYS:
        return (
            f"warning: API revision {revision} is {age // 30} months old; Klaviyo retires revisions "
            "about two years after their date: upgrade klaviyo-sync or pass a newer --revision"
        )
    return None


def check_revision(revision: str) -> str:
    """The revision if the requests this tool builds conform to it, else ValueError (exit 2)."""
    day, dot, suffix = revision.partition(".")
    try:
        parsed = date.fromisoformat(day)
        if len(day) != 10 or (dot and suffix != "pre"):
            raise ValueError
    except ValueError:
        raise ValueError(f"--revision: invalid revision {revision!r}: expected a date such as "
                         f"{DEFAULT_REVISION} (optionally with .pre)") from None
    if parsed < date.fromisoformat(OLDEST_REVISION):
        raise ValueError(f"--revision: revision {revision} is not supported: the requests this tool "
                         f"builds conform to revision {OLDEST_REVISION} and later (default {DEFAULT_REVISION})")
    return revision


def _error_detail(resp: requests.Response, body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        parts = []
        for err in body["errors"]:
            if isinstance(err, dict):
                text = err.get("detail") or err.get("title") or err.get("code")
                if text:
                    parts.append(str(text))
        if parts:
            return "; ".join(parts)
    return resp.reason or f"HTTP {resp.status_code}"


class _RetryBudget:
    """What one request may still spend on retries.

    Two budgets, not one: real failures (5xx, dropped connections, timeouts, truncated bodies,
    a 429 that does not say when to come back) count against ``max_attempts``; a 429 with
    ``Retry-After`` is the server scheduling us, not a failure, so it costs no attempt and is
    bounded by the total time waited instead (``max_rate_limit_wait``). tenacity asks for the
    wait and the stop decision separately (in an order that differs between versions), so each
    attempt's decision is taken once and remembered."""

    def __init__(self, client: "KlaviyoClient"):
        self.client = client
        self.failures = 0
        self.rate_waited = 0.0
        self.rate_limit_exhausted = False
        self._decided: dict[int, tuple[float, bool, float]] = {}

    def decide(self, state: RetryCallState) -> tuple[float, bool, float]:
        """(seconds tenacity sleeps, give up?, seconds the endpoint is paused for a 429)."""
        n = state.attempt_number
        if n in self._decided:
            return self._decided[n]
        c = self.client
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.rate_limited and exc.retry_after is not None:
            wait = exc.retry_after
            # At least a second is charged, so a server answering "Retry-After: 0" for ever
            # cannot keep a request retrying for ever.
            charge = max(wait, 1.0)
            give_up = self.rate_waited + charge > c.max_rate_limit_wait
            self.rate_limit_exhausted = give_up
            if not give_up:
                self.rate_waited += charge
            # tenacity itself does not sleep: the limiter's pause does (with a per-worker spread).
            decision = (0.0, give_up, wait)
        else:
            self.failures += 1
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                wait = exc.retry_after
            else:
                # Exponential backoff with full jitter on the upper half.
                ceiling = min(c.backoff_max, c.backoff_base * 2 ** (self.failures - 1))
                wait = ceiling * (0.5 + random.random() / 2)
            decision = (wait, self.failures >= c.max_attempts, 0.0)
        self._decided[n] = decision
        return decision


class KlaviyoClient:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        revision: str = DEFAULT_REVISION,
        timeout: tuple[float, float] = (10.0, 60.0),
        deadline: float = DEFAULT_DEADLINE,
        max_body: int = MAX_BODY_BYTES,
        allow_http: bool = False,
        max_attempts: int = 6,
        max_retry_wait: float = 120.0,
        max_rate_limit_wait: float = 300.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        limiter: RateLimiter | None = None,
        pool_size: int = 16,
        concurrent_reads: int = 2,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        # Looked up at call time, so tests can patch time.sleep for the CLI.
        sleep = sleep or (lambda seconds: time.sleep(seconds))
        clock = clock or (lambda: time.monotonic())
        if not api_key:
            raise ValueError("an API key is required")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"invalid base URL {base_url!r}: expected e.g. https://a.klaviyo.com")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the base URL holds credentials (user:password@): the API key is the only "
                             "credential sent; remove them from KLAVIYO_BASE_URL / --base-url")
        if parts.scheme == "http" and not allow_http and not _loopback(parts.hostname or ""):
            raise ValueError(f"the base URL {base_url!r} is plain http:// to a host that is not this machine: "
                             "the API key would cross the network unencrypted (use https://, or pass "
                             "--allow-http for a trusted proxy)")
        self._origin = (parts.scheme, parts.netloc.lower())
        self.revision = check_revision(revision)
        self.timeout = timeout
        self.deadline = deadline
        self.max_body = max_body
        self.max_attempts = max_attempts
        self.max_retry_wait = max_retry_wait
        self.max_rate_limit_wait = max_rate_limit_wait
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limiter = limiter or RateLimiter(clock=clock, sleep=sleep)
        self.stats = ClientStats()
        # Seconds the API took to answer a request before this client made any (the run's account
        # check, made by a client of its own): how many events fetchers to start with (autoscale.py).
        self.latency_hint: float | None = None
        self._sleep = sleep
        self._read_gate = threading.BoundedSemaphore(concurrent_reads)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        # Pools that tell the request's watchdog which connection it uses (see _Watch).
        adapter.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # The key goes on each request after the host check, never on the Session itself.
        self.session.headers.update(
            {"revision": revision, "Accept": JSONAPI, "User-Agent": f"klaviyo-sync/{__version__}"}
        )

    # -- URLs ---------------------------------------------------------------------------------
    def url_for(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def check_origin(self, url: str) -> str:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise UnsafeLinkError(
                f"refusing to follow a link to {parts.scheme}://{parts.netloc}: it is not the "
                f"configured API host {self.base_url}, and the API key would be sent there",
                endpoint=parts.path,
            )
        return parts.path

    # -- one request, retried -----------------------------------------------------------------
    def request(self, method: str, path_or_url: str, *, params: dict | None = None,
                json_body: dict | None = None, parse: Callable[[dict], object] | None = None,
                expect: str = "data", decode: Callable[[bytes], object] | None = None):
        """One request, retried; returns the decoded body, or ``parse(body)`` computed while
        the body is the only copy in memory.

        ``expect`` is the shape of the answer's ``data``: "object" (a single resource or a
        report), "list" (a page of a list endpoint) or "data" (either). A 200 without it is a malformed answer,
        retried like a truncated body and then an ApiError (exit 3): never read as "nothing"."""
        url = self.url_for(path_or_url)
        path = self.check_origin(url)
        key = endpoint_key(path, urlsplit(url).query + "&" + urlencode(params or {}))
        label = f"{method} {path}"
        budget = _RetryBudget(self)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait, _, rate_wait = budget.decide(state)
            self.stats.add(retries=1)
            if isinstance(exc, _Retryable) and exc.rate_limited:
                self.limiter.refund(key)  # refused, so not counted by the server either
            if rate_wait:
                # The server scheduled us: hold every worker of this endpoint for that long;
                # each resumes after its own random spread, so they do not all fire at once.
                # (The time is counted where it is spent: in the limiter's acquire.)
                self.limiter.pause(key, rate_wait)
            elif isinstance(exc, _Retryable) and exc.rate_limited:
                self.stats.add(rate_limit_wait_s=wait)
                self.limiter.pause(key, wait)
            log.info("%s: retrying after %s", label, getattr(exc, "detail", exc))

        retrying = Retrying(
            stop=lambda state: budget.decide(state)[1],
            retry=retry_if_exception_type(_Retryable),
            wait=lambda state: budget.decide(state)[0],
            sleep=lambda seconds: self._sleep(seconds) if seconds > 0 else None,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._send_once, method, url, params, json_body, key, label, parse, expect, decode)
        except _Retryable as exc:
            if budget.rate_limit_exhausted:
                raise ApiError(
                    f"{label} still rate limited after waiting {budget.rate_waited:.0f} s in all "
                    f"(at most {self.max_rate_limit_wait:.0f} s per request): {exc.detail}", endpoint=path
                ) from None
            raise ApiError(
                f"{label} failed after {self.max_attempts} attempts: {exc.detail}", endpoint=path
            ) from None

    def _send_once(self, method: str, url: str, params: dict | None, json_body: dict | None, key: str,
                   label: str, parse: Callable[[dict], object] | None, expect: str = "data",
                   decode: Callable[[bytes], object] | None = None):
        waited = self.limiter.acquire(key)
        if waited:
            self.stats.add(throttle_wait_s=waited)
        headers = {"Authorization": f"Klaviyo-API-Key {self._api_key}"}
        data = None
        if json_body is not None:
            headers["Content-Type"] = JSONAPI
            data = json.dumps(json_body)
        self.stats.add(requests=1)
        watch = _Watch(self.deadline)
        _current.watch = watch
        try:
            sent = time.monotonic()
            resp = self.session.request(
                method, url, params=params, data=data, headers=headers,
                timeout=self.timeout, allow_redirects=False, stream=True,
            )
            self.stats.add(network_wait_s=time.monotonic() - sent)
            # Waiting for an answer costs nothing, holding a decoded page costs megabytes: any
            # number of workers may wait on the network, but only a few read, decode and parse
            # at once, so memory does not grow with --workers.
            with self._read_gate:
                # One read of the whole body: resp.content would take 10 KB chunks, each a
                # round through the GIL that the writer thread is waiting for. A body whose
                # length is announced (and not compressed) is read as one buffer; read(amt)
                # copies it once more (urllib3's buffer): 0.6 instead of 0.37 ms of CPU for a
                # 2 MB events page with attributions.
                content = resp.raw.read(None if _announced(resp, self.max_body) else self.max_body + 1,
                                        decode_content=True)  # a dropped connection raises here
                if len(content) > self.max_body:
                    resp.close()
                    raise ApiError(f"{label}: the answer is larger than {self.max_body // 2**20} MB, the most "
                                   "this tool reads for one page (a malformed answer)", endpoint=urlsplit(url).path)
                with gc_paused():
                    body = self._checked_body(resp, content, url, label, decode)
                    del content
                    _check_data(body, expect, resp.status_code)
                    if parse is None:
                        return body
                    item = parse(body)
                    del body  # freed here, by reference count, before the collector resumes
                return item
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError) as exc:
            if not watch.expired:
                raise self._send_error(exc, label) from None
            raise _Retryable(f"no complete answer within the {self.deadline:g} s deadline per request") from None
        finally:
            watch.stop()
            _current.watch = None

    def _send_error(self, exc: BaseException, label: str) -> Exception:
        try:
            raise exc
        except requests.exceptions.Timeout as exc:
            return _Retryable(f"timed out ({type(exc).__name__})")
        except urllib3.exceptions.ReadTimeoutError as exc:
            return _Retryable(f"timed out ({type(exc).__name__})")
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError,
                http.client.HTTPException, ConnectionError) as exc:
            return _Retryable(f"connection error ({type(exc).__name__})")
        except requests.exceptions.RequestException as exc:
            return ApiError(f"{label}: {redact(str(exc), self._api_key)}")
        except OSError as exc:
            return _Retryable(f"connection error ({type(exc).__name__})")

    def _checked_body(self, resp: requests.Response, content: bytes, url: str, label: str,
                      decode: Callable[[bytes], object] | None = None) -> dict:
        """The decoded JSON object of a 2xx answer; anything else raises the matching error.
        ``decode`` replaces the JSON decoder (it must raise ValueError on invalid JSON)."""
        status = resp.status_code
        ctype = resp.headers.get("Content-Type", "")
        body = _decode(content, ctype, decode)
        if body is _INVALID:
            body = None
            if status < 300:
                raise _Retryable(f"HTTP {status} with a truncated or non-JSON body ({len(content)} bytes)")
        if status < 300:
            if not isinstance(body, dict):
                raise _Retryable(f"HTTP {status} with an empty or non-object JSON body")
            return body
        if status == 429:
            self.stats.add(rate_limited=1)
            retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.max_retry_wait:
                raise RateLimitExceeded(
                    f"{label}: rate limit or quota reached; the API asks to wait {int(retry_after)} s, "
                    f"more than the {int(self.max_retry_wait)} s this tool waits",
                    retry_after=retry_after, endpoint=urlsplit(url).path,
                )
            detail = redact(_error_detail(resp, body), self._api_key)
            raise _Retryable(f"HTTP 429: {detail}", retry_after=retry_after, rate_limited=True)
        if status >= 500:
            raise _Retryable(f"HTTP {status}: {redact(_error_detail(resp, body), self._api_key)}")
        path = urlsplit(url).path
        if status in (401, 403) and "html" in ctype:
            challenge = resp.headers.get("cf-mitigated")
            raise ApiError(
                f"{label}: HTTP {status} with an HTML body (a proxy or bot challenge answered, "
                f"not the Klaviyo API{'; cf-mitigated: ' + challenge if challenge else ''})",
                status=status, endpoint=path,
            )
        detail = redact(_error_detail(resp, body), self._api_key)
        if status == 401:
            raise AuthError(f"{label}: HTTP 401, the API key was rejected: {detail} (check KLAVIYO_API_KEY)", status=status, endpoint=path)
        if status == 403:
            raise AuthError(f"{label}: HTTP 403, permission denied: {detail} (the key may lack a read scope)", status=status, endpoint=path)
        raise ApiError(f"{label}: HTTP {status}: {detail}", status=status, endpoint=path)

    # -- paging ---------------------------------------------------------------------------
    def paginate(self, path: str, params: dict | None = None,
                 transform: Callable[[Page], object] | None = None,
                 decode: Callable[[bytes], object] | None = None) -> Iterator:
        """Yield every page, following ``links.next`` exactly as returned until it is absent.

        With ``transform``, yield ``transform(page)`` instead, computed under the read gate so
        that a decoded page never outlives its transformation. ``decode`` (bytes -> the body)
        replaces the JSON decoder, e.g. with a typed one that skips what no row keeps."""
        url: str | None = self.url_for(path)
        first = True
        seen: set[str] = set()  # every page URL read in this pass: a cursor seen twice is a loop
        while url:
            parse = functools.partial(self._parse_page, url, transform)
            item, next_url = self.request("GET", url, params=params if first else None, parse=parse, decode=decode,
                                          expect="list")
            first = False
            if next_url is not None:
                if next_url in seen or next_url == url:
                    raise ApiError(f"GET {urlsplit(url).path}: links.next points back at a page already "
                                   "read in this pass (a cursor loop): the answer is malformed",
                                   endpoint=urlsplit(url).path)
                seen.add(url)
            url = next_url
            yield item
            del item

    @staticmethod
    def check_cursor(seen: set, url: str) -> None:
        """Raise when ``url`` (a links.next) was already followed in this pass: a cursor loop."""
        if url in seen:
            path = urlsplit(url).path
            raise ApiError(f"{path}: links.next points back at a page already read in this pass "
                           "(a cursor loop): the answer is malformed", endpoint=path)
        seen.add(url)

    def _parse_page(self, url: str, transform: Callable[[Page], object] | None, body: dict) -> tuple:
        page = self._page(body, url)
        return (transform(page) if transform else page), page.next_url

    def _page(self, body: dict, url: str) -> Page:
        data = body["data"]  # a list: checked by request(expect="list")
        next_url = (body.get("links") or {}).get("next") or None
        if next_url:
            next_url = urljoin(url, next_url)  # absolute in practice; a relative one is resolved
            self.check_origin(next_url)  # refuse before the key could be sent
        return Page(data=data, included=body.get("included") or [], url=url, next_url=next_url)

    def close(self) -> None:
        self.session.close()


_INVALID = object()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
_current = threading.local()


class _Watch:
    """The overall deadline of one request (connect, headers and body together): a read timeout
    restarts with every byte, so a server trickling a byte every few seconds would hold a run
    (and its lock) for ever. When the deadline passes, the request's socket is shut down, which
    ends the blocked read at once; the attempt then counts as a failure and is retried."""

    def __init__(self, seconds: float):
        self.expired = False
        self._stopped = False
        self.conn = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, conn) -> None:
        with self._lock:
            self.conn = conn
            if self.expired:
                _shutdown(conn)

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:  # the answer was read in time; the connection may be reused
                return
            self.expired = True
            if self.conn is not None:
                _shutdown(self.conn)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._timer.cancel()


def _shutdown(conn) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(conn)
        return conn


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(conn)
        return conn


def _check_data(body: dict, expect: str, status: int) -> None:
    """A 200 whose ``data`` is missing, null or of the wrong shape is malformed: retried, never
    read as an empty page (which would tombstone every profile on a --full pass)."""
    if status == 204 or expect is None:
        return
    data = body.get("data")
    if expect == "list" and not isinstance(data, list):
        raise _Retryable(f"HTTP {status} without a data array (data: {_shape(data, 'data' in body)})")
    if expect == "data" and not isinstance(data, (dict, list)):
        raise _Retryable(f"HTTP {status} without data (data: {_shape(data, 'data' in body)})")
    if expect == "object" and not isinstance(data, dict):
        raise _Retryable(f"HTTP {status} without a data object (data: {_shape(data, 'data' in body)})")


def _shape(value: object, present: bool) -> str:
    if not present:
        return "missing"
    return "null" if value is None else type(value).__name__
_gc_lock = threading.Lock()
_gc_holders = 0


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while a page is decoded and turned into rows.

    A decoded page is ~50,000 dicts and lists: the collector would run dozens of times during
    one orjson.loads and walk the page each time (measured: 20 ms a 1.2 MB page instead of
    8 ms). Nothing decoded holds a cycle, so reference counting frees it all; the collector
    is only postponed. Nested and concurrent uses are counted: the last one out resumes it,
    and a collector the program had disabled stays disabled."""
    global _gc_holders
    with _gc_lock:
        if _gc_holders == 0:
            _gc_paused_state[0] = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_paused_state[0]:
                gc.enable()


_gc_paused_state = [True]


def loads_json(content: bytes) -> object:
    """The JSON decoder this client uses (raises ValueError on invalid JSON)."""
    return _loads(content)


def _announced(resp: requests.Response, limit: int) -> bool:
    """Whether the answer announces a length of at most ``limit`` bytes and is not compressed:
    it can then be read whole, and never holds more than that (a shorter body raises)."""
    length = resp.headers.get("Content-Length", "")
    return (length.isdigit() and int(length) <= limit
            and resp.headers.get("Content-Encoding", "identity").strip().lower() == "identity")


def _decode(content: bytes, ctype: str, decode: Callable[[bytes], object] | None = None) -> object:
    """The JSON body, None for an empty or HTML one, _INVALID for one that does not parse."""
    if not content or "html" in ctype:
        return None
    try:
        return (decode or _loads)(content)
    except ValueError:
        return _INVALID


def _parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait: ``Retry-After`` as seconds, or as an HTTP date (RFC 9110)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
