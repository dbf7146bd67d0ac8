"""Client-side rate limiting, shared by every worker thread of one client.

Klaviyo counts requests per account in fixed windows of one second (burst) and one minute
(steady). A token bucket refilled at the steady rate can still put up to twice its capacity
into one fixed window, so each tier here is a sliding-window log instead: at most N requests in
*any* interval of the window's length, which implies at most N in every fixed window the server
may use, whatever its alignment. A 429 pauses every worker of that endpoint together, and each
worker resumes after its own random spread (up to a second), so they do not all fire at the
instant the pause ends and land on the throttled window again.

Klaviyo counts per account, not per process: cron lines a minute apart, `verify` after
`sync-all`, a `--wait` queue or `status` beside a sync all spend the same budget. So a limiter
given a database keeps its log of admissions (and the pauses a 429 asked for) in a small SQLite
file beside it, ``<db>.ratelimit``, and every process on that database admits a request only
if it fits the log all of them write, inside one write transaction (``BEGIN IMMEDIATE``, so two
processes cannot both take the last slot). Without a database the log is this process's memory.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RateLimitExceeded

log = logging.getLogger("klaviyo_sync")

# (burst per second, steady per minute), from Klaviyo's published tiers (klaviyo-api.md §6, §10):
# XL 350/3500, L 75/750, M 10/150, S 3/60, XS 1/15; reports 1/2 (and 225 a day, shared).
DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "events": (350, 3500),
    "event": (10, 150),
    "metrics": (10, 150),
    "metric-aggregates": (3, 60),
    "campaigns": (10, 150),
    "profiles": (75, 750),
    "profiles-predictive": (10, 150),  # with additional-fields[profile]=predictive_analytics
    "lists": (75, 750),
    "segments": (75, 750),
    "list-profiles": (75, 750),
    "segment-profiles": (75, 750),
    "profile-count": (1, 15),  # a list's or segment's profile_count
    "flows": (3, 60),
    "templates": (75, 750),
    "reports": (1, 2),  # campaign, flow, form and segment reports share one quota
    "accounts": (1, 15),  # GET /api/accounts: read once per run to check the account, and by sync-account
    "other": (3, 60),
}
# Quotas per day (Klaviyo: 225 report requests a day, campaign and flow reports assumed to share
# it, klaviyo-api.md §4.5). Counted over any 24 hours, which implies at most that many in every
# calendar day the server may count in.
DAILY_LIMITS: dict[str, int] = {"reports": 225}
DAY = 86400.0
# A wait longer than this for a daily quota is not waited out: the request fails with
# RateLimitExceeded, as a server's long Retry-After does (client.max_retry_wait).
MAX_QUOTA_WAIT = 120.0
ALIASES = {"campaign-values-reports": "reports"}
# Klaviyo's generic tiers, for streams declared with one (streams/declare.py): such a stream's
# paths get a bucket of their own, named after the stream (e.g. images=5/100 for --rate-limit).
TIERS = {"XL": (350, 3500), "L": (75, 750), "M": (10, 150), "S": (3, 60), "XS": (1, 15)}

_ENDPOINT_PATTERNS = [
    (re.compile(r"^/api/events/?$"), "events"),
    (re.compile(r"^/api/events/[^/]+/?$"), "event"),
    (re.compile(r"^/api/metrics(/[^/]+)?/?$"), "metrics"),
    (re.compile(r"^/api/metric-aggregates/?$"), "metric-aggregates"),
    (re.compile(r"^/api/campaign(s|-messages)(/.*)?$"), "campaigns"),
    (re.compile(r"^/api/profiles(/.*)?$"), "profiles"),
    (re.compile(r"^/api/lists/[^/]+/(relationships/)?profiles/?$"), "list-profiles"),
    (re.compile(r"^/api/segments/[^/]+/(relationships/)?profiles/?$"), "segment-profiles"),
    (re.compile(r"^/api/lists(/.*)?$"), "lists"),
    (re.compile(r"^/api/segments(/.*)?$"), "segments"),
    (re.compile(r"^/api/(flows|flow-actions|flow-messages)(/.*)?$"), "flows"),
    (re.compile(r"^/api/templates(/.*)?$"), "templates"),
    (re.compile(r"^/api/(campaign|flow|form|segment)-(values|series)-reports/?$"), "reports"),
    (re.compile(r"^/api/accounts(/.*)?$"), "accounts"),
]


def path_regex(path: str) -> str:
    """A declared path as a regular expression: "{id}" matches one path segment."""
    return re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))


def declare_bucket(name: str, paths, tier: str) -> None:
    """A bucket for a declared stream's paths ("{id}" matches one path segment) at a generic tier."""
    if name in DEFAULT_LIMITS and DEFAULT_LIMITS[name] != TIERS[tier]:
        raise ValueError(f"rate bucket {name!r} exists with other limits")
    DEFAULT_LIMITS[name] = TIERS[tier]
    for path in paths:
        pattern = re.compile("^" + path_regex(path) + "/?$")
        if all(p.pattern != pattern.pattern for p, _ in _ENDPOINT_PATTERNS):
            _ENDPOINT_PATTERNS.append((pattern, name))


def parse_limits(text: str) -> dict[str, tuple[int, int]]:
    """``events=100/1000,metrics=5/60``: per endpoint, requests per second / per minute."""
    limits: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = part.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if key not in DEFAULT_LIMITS:
            raise ValueError(f"unknown endpoint {key!r}: use one of {', '.join(DEFAULT_LIMITS)}")
        burst, _, steady = value.partition("/")
        try:
            pair = (int(burst), int(steady))
        except ValueError:
            raise ValueError(f"{part!r}: expected ENDPOINT=PER_SECOND/PER_MINUTE, e.g. events=100/1000") from None
        if min(pair) < 1:
            raise ValueError(f"{part!r}: limits must be at least 1")
        limits[key] = pair
    return limits


def endpoint_key(path: str, query: str = "") -> str:
    """The rate-limit bucket of a request: its path, and the query where an option changes the
    tier (``predictive_analytics`` on profiles, ``profile_count`` on a list or segment)."""
    for pattern, key in _ENDPOINT_PATTERNS:
        if pattern.match(path):
            break
    else:
        return "other"
    if key == "profiles" and "predictive_analytics" in query:
        return "profiles-predictive"
    if key in ("lists", "segments") and "profile_count" in query:
        return "profile-count"
    return key


# The server counts a request when it arrives, not when it left here: two requests a window
# apart on our clock can land within one window on the server's (measured against the fake: about
# 5 throttled answers per 40 metric-aggregate requests with exact 1 s / 60 s windows). A small
# margin on each window keeps the log honest at a cost of under 10% of a tier.
WINDOW_MARGIN = (0.1, 1.0)


@dataclass
class _Tier:
    limit: int
    period: float
    stamps: deque = field(default_factory=deque)

    def wait_needed(self, now: float) -> float:
        while self.stamps and self.stamps[0] <= now - self.period:
            self.stamps.popleft()
        if len(self.stamps) < self.limit:
            return 0.0
        return self.stamps[0] + self.period - now


class _MemoryLog:
    """This process's admissions, in memory (no database to share them through)."""

    shared = False

    def __init__(self):
        self._tiers: dict[str, list[_Tier]] = {}
        self._paused: dict[str, tuple[float, float]] = {}

    def admit(self, key: str, tiers: list[tuple[int, float]], now: float):
        """(0, token) if a request fits every tier (and is recorded), else (seconds to wait,
        None) and which tier (its period) is the one that is full."""
        logs = self._tiers.get(key)
        if logs is None:
            logs = self._tiers[key] = [_Tier(limit, period) for limit, period in tiers]
        waits = [(t.wait_needed(now), t.period) for t in logs]
        wait, period = max(waits)
        if wait > 0:
            return wait, period, None
        for t in logs:
            t.stamps.append(now)
        return 0.0, 0.0, now

    def refund(self, key: str, token) -> None:
        for t in self._tiers.get(key, ()):
            try:
                t.stamps.remove(token)
            except ValueError:  # already out of the window
                pass

    def pause(self, key: str, until: float, spread: float) -> None:
        if until > self._paused.get(key, (0.0, 0.0))[0]:
            self._paused[key] = (until, spread)

    def paused(self, key: str) -> tuple[float, float]:
        return self._paused.get(key, (0.0, 0.0))

    def close(self) -> None:
        pass


class _SharedLog:
    """Admissions and pauses of every process on one database, in ``<db>.ratelimit``.

    One admission is one short write transaction: ``BEGIN IMMEDIATE`` takes SQLite's write lock
    before the log is read, so two processes cannot both see the last free slot. The file holds
    times and endpoint names only (nothing secret); WAL and ``synchronous=OFF`` keep an admission
    at tens of microseconds (a log lost in a power cut only forgets the last minute's requests)."""

    shared = True
    PRUNE_EVERY = 500

    def __init__(self, path: Path):
        self.path = path
        # Owner-only like the database, and never through a symlink (whose target it would write).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
        self._conn = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout = 60000")
            self._set_up()
        except BaseException:
            self._conn.close()
            raise
        self._admitted = 0

    def _set_up(self, patience: float = 60.0) -> None:
        """WAL and the tables. When runs open a new log at the same moment (cron starting two
        syncs together), SQLite may answer one of them "database is locked" at once, without
        waiting out busy_timeout (seen on the switch to WAL). Waiting and trying again, for as
        long as busy_timeout would have waited, keeps that run on the shared budget instead of
        counting only its own requests."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = OFF")
                self._conn.executescript(
                    "CREATE TABLE IF NOT EXISTS admissions (key TEXT NOT NULL, at REAL NOT NULL);"
                    "CREATE INDEX IF NOT EXISTS admissions_key_at ON admissions (key, at);"
                    "CREATE TABLE IF NOT EXISTS pauses (key TEXT PRIMARY KEY, until REAL NOT NULL,"
                    " spread REAL NOT NULL);"
                )
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                time.sleep(0.01)

    def admit(self, key: str, tiers: list[tuple[int, float]], now: float):
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT until FROM pauses WHERE key = ?", (key,)).fetchone()
            if row and row[0] > now:
                c.execute("COMMIT")
                return min(row[0] - now, DAY), 0.0, None
            wait, full = 0.0, 0.0
            for limit, period in tiers:
                # The limit-th newest admission inside the window: a new request fits once it
                # has left the window. (A clock stepped back cannot make anyone wait longer
                # than one window.)
                row = c.execute(
                    "SELECT at FROM admissions WHERE key = ? AND at > ? ORDER BY at DESC "
                    "LIMIT 1 OFFSET ?", (key, now - period, limit - 1)).fetchone()
                if row:
                    w = min(row[0] + period - now, period)
                    if w > wait:
                        wait, full = w, period
            if wait > 0:
                c.execute("COMMIT")
                return wait, full, None
            token = c.execute("INSERT INTO admissions (key, at) VALUES (?, ?)", (key, now)).lastrowid
            self._admitted += 1
            if self._admitted % self.PRUNE_EVERY == 1:
                longest = max(p for _, p in tiers)
                c.execute("DELETE FROM admissions WHERE key = ? AND at <= ?", (key, now - longest))
                c.execute("DELETE FROM admissions WHERE key <> ? AND at <= ?", (key, now - DAY - 60))
            c.execute("COMMIT")
            return 0.0, 0.0, token
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def refund(self, key: str, token) -> None:
        self._conn.execute("DELETE FROM admissions WHERE rowid = ? AND key = ?", (token, key))

    def pause(self, key: str, until: float, spread: float) -> None:
        self._conn.execute(
            "INSERT INTO pauses (key, until, spread) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET until = excluded.until, spread = excluded.spread WHERE excluded.until > pauses.until",
            (key, until, spread))

    def paused(self, key: str) -> tuple[float, float]:
        row = self._conn.execute("SELECT until, spread FROM pauses WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else (0.0, 0.0)

    def close(self) -> None:
        self._conn.close()


def shared_log_path(db: str | os.PathLike | None) -> Path | None:
    """``<db>.ratelimit`` for a database file; None where there is no file to sit beside."""
    if db is None:
        return None
    text = str(db)
    if not text or text == ":memory:" or text.startswith("file:") or text.startswith("/dev/"):
        return None
    return Path(text + ".ratelimit")


class RateLimiter:
    """Per-endpoint sliding-window limits; ``acquire`` blocks until a request may go out.

    With ``database`` the log is shared with every other process using that database and the
    same ``server`` (the API's base URL; see the module's docstring); its clock is then the wall
    clock, the one clock all processes share."""

    def __init__(
        self,
        limits: dict[str, tuple[int, int]] | None = None,
        *,
        headroom: float = 0.9,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] = random.random,
        max_spread: float = 1.0,
        database: str | os.PathLike | None = None,
        server: str = "",
        daily: dict[str, int] | None = None,
        max_quota_wait: float = MAX_QUOTA_WAIT,
    ):
        self._limits = dict(DEFAULT_LIMITS)
        self._limits.update(limits or {})
        self._daily = dict(DAILY_LIMITS)
        self._daily.update(daily or {})
        self._headroom = headroom
        # time.sleep looked up at call time (not bound at import), so a patched sleep reaches it.
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self._lock = threading.Lock()
        self._rng = rng
        self._max_spread = max_spread
        self._max_quota_wait = max_quota_wait
        self._local = threading.local()  # this thread's last admission: (key, token)
        self.waited = 0.0
        # One log per API server: `demo` starts a new fake account on a new port each time.
        self._prefix = f"{server.rstrip('/')} " if server else ""
        # Opened at the first request, so a command that makes none leaves no file behind.
        self._shared_path = shared_log_path(database)
        self._opened: _MemoryLog | _SharedLog | None = None if self._shared_path else _MemoryLog()
        self._clock = clock or (time.time if self._shared_path else time.monotonic)

    @property
    def _log(self) -> _MemoryLog | _SharedLog:
        if self._opened is None:
            try:
                self._opened = _SharedLog(self._shared_path)
            except (sqlite3.Error, OSError) as exc:
                log.warning("cannot share the request budget through %s (%s): this run counts only "
                            "its own requests", self._shared_path, exc)
                self._opened = _MemoryLog()
        return self._opened

    @property
    def shared_path(self) -> Path | None:
        """The file the budget is shared through, or None (this process only)."""
        return self._shared_path

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.close()

    def _tiers_for(self, key: str) -> list[tuple[int, float]]:
        burst, steady = self._limits.get(key, self._limits["other"])
        tiers = [(self._budget(burst), 1.0 + WINDOW_MARGIN[0]), (self._budget(steady), 60.0 + WINDOW_MARGIN[1])]
        if key in self._daily:
            tiers.append((self._daily[key], DAY + WINDOW_MARGIN[1]))
        return tiers

    def budget(self, key: str) -> tuple[int, int]:
        """The requests per second and per minute this client allows itself for ``key``."""
        return tuple(limit for limit, _ in self._tiers_for(key)[:2])

    def _budget(self, limit: int) -> int:
        """Keep some headroom under large limits (other clients share the account's quota);
        a small limit such as 2/min is used exactly, or it would halve the rate."""
        if limit < 20:
            return limit
        return max(1, int(limit * self._headroom))

    def acquire(self, key: str) -> float:
        """Block until one request to ``key`` fits every tier; return the seconds waited.

        Raises RateLimitExceeded instead of waiting longer than ``max_quota_wait`` for a daily
        quota (reports: 225 a day) that this or another process has spent."""
        waited = 0.0
        tiers = self._tiers_for(key)
        while True:
            with self._lock:
                now = self._clock()
                until, spread = self._log.paused(self._prefix + key)
                wait = until - now
                if wait > 0:
                    # Held by a 429: come back after the pause plus this worker's own spread.
                    wait += self._rng() * spread
                else:
                    wait, period, token = self._log.admit(self._prefix + key, tiers, now)
                    if wait <= 0:
                        self._local.last = (key, token)
                        self.waited += waited
                        return waited
                    if period > 60 + WINDOW_MARGIN[1] and wait > self._max_quota_wait:
                        limit = next(lim for lim, p in tiers if p == period)
                        raise RateLimitExceeded(
                            f"{key}: the daily quota of {limit} requests is spent (by this or "
                            f"another run on this database in the last 24 hours); the next one "
                            f"is allowed in {wait / 3600:.1f} h", retry_after=wait)
            # A tiny floor keeps float rounding from spinning.
            wait = max(wait, 0.001)
            self._sleep(wait)
            waited += wait

    def refund(self, key: str) -> None:
        """Give back the slot this thread's last request to ``key`` took: the server refused it
        with a 429, so it did not count there. Keeping it would make a small budget (reports:
        2 a minute) wait a whole minute for a request the server never served."""
        last = getattr(self._local, "last", None)
        if last is None or last[0] != key:
            return
        self._local.last = None
        with self._lock:
            self._log.refund(self._prefix + key, last[1])

    def pause(self, key: str, seconds: float) -> None:
        """Hold every worker of this endpoint (in every process sharing the log) for ``seconds``
        (after a 429)."""
        with self._lock:
            until = self._clock() + seconds
            self._log.pause(self._prefix + key, until, min(self._max_spread, max(seconds, 0.0)))

    def paused_until(self, key: str) -> float:
        """The clock reading before which no request to ``key`` goes out (0 if not paused)."""
        with self._lock:
            return self._log.paused(self._prefix + key)[0]
