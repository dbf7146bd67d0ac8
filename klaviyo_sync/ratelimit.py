"""Client-side rate limiting, shared by every worker thread of one client.

Klaviyo counts requests per account in fixed windows of one second (burst) and one minute
(steady). A token bucket refilled at the steady rate can still put up to twice its capacity
into one fixed window, so each tier here is a sliding-window log instead: at most N requests in
*any* interval of the window's length, which implies at most N in every fixed window the server
may use, whatever its alignment. A 429 pauses every worker of that endpoint together, and each
worker resumes after its own random spread (up to a second), so they do not all fire at the
instant the pause ends and land on the throttled window again.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

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
    "reports": (1, 2),  # campaign and flow values/series reports share one quota
    "accounts": (1, 15),  # GET /api/accounts: read once per run to check the account
    "other": (3, 60),
}
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
    (re.compile(r"^/api/(campaign|flow)-(values|series)-reports/?$"), "reports"),
    (re.compile(r"^/api/accounts(/.*)?$"), "accounts"),
]


def declare_bucket(name: str, paths, tier: str) -> None:
    """A bucket for a declared stream's paths ("{id}" matches one path segment) at a generic tier."""
    if name in DEFAULT_LIMITS and DEFAULT_LIMITS[name] != TIERS[tier]:
        raise ValueError(f"rate bucket {name!r} exists with other limits")
    DEFAULT_LIMITS[name] = TIERS[tier]
    for path in paths:
        pattern = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "/?$")
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


class RateLimiter:
    """Per-endpoint sliding-window limits; ``acquire`` blocks until a request may go out."""

    def __init__(
        self,
        limits: dict[str, tuple[int, int]] | None = None,
        *,
        headroom: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        max_spread: float = 1.0,
    ):
        self._limits = dict(DEFAULT_LIMITS)
        self._limits.update(limits or {})
        self._headroom = headroom
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tiers: dict[str, list[_Tier]] = {}
        self._paused_until: dict[str, float] = {}
        self._spread: dict[str, float] = {}
        self._rng = rng
        self._max_spread = max_spread
        self._local = threading.local()  # this thread's last admission: (key, instant)
        self.waited = 0.0

    def _tiers_for(self, key: str) -> list[_Tier]:
        tiers = self._tiers.get(key)
        if tiers is None:
            burst, steady = self._limits.get(key, self._limits["other"])
            tiers = [_Tier(self._budget(burst), 1.0 + WINDOW_MARGIN[0]),
                     _Tier(self._budget(steady), 60.0 + WINDOW_MARGIN[1])]
            self._tiers[key] = tiers
        return tiers

    def budget(self, key: str) -> tuple[int, int]:
        """The requests per second and per minute this client allows itself for ``key``."""
        return tuple(t.limit for t in self._tiers_for(key))

    def _budget(self, limit: int) -> int:
        """Keep some headroom under large limits (other clients share the account's quota);
        a small limit such as 2/min is used exactly, or it would halve the rate."""
        if limit < 20:
            return limit
        return max(1, int(limit * self._headroom))

    def acquire(self, key: str) -> float:
        """Block until one request to ``key`` fits every tier; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._paused_until.get(key, 0.0) - now
                if wait > 0:
                    # Held by a 429: come back after the pause plus this worker's own spread.
                    wait += self._rng() * self._spread.get(key, 0.0)
                else:
                    tiers = self._tiers_for(key)
                    wait = max(t.wait_needed(now) for t in tiers)
                    if wait <= 0:
                        for t in tiers:
                            t.stamps.append(now)
                        self._local.last = (key, now)
                        self.waited += waited
                        return waited
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
            for t in self._tiers_for(key):
                try:
                    t.stamps.remove(last[1])
                except ValueError:  # already out of the window
                    pass

    def pause(self, key: str, seconds: float) -> None:
        """Hold every worker of this endpoint for ``seconds`` (after a 429)."""
        with self._lock:
            until = self._clock() + seconds
            if until > self._paused_until.get(key, 0.0):
                self._paused_until[key] = until
                self._spread[key] = min(self._max_spread, max(seconds, 0.0))

    def paused_until(self, key: str) -> float:
        """The clock reading before which no request to ``key`` goes out (0 if not paused)."""
        with self._lock:
            return self._paused_until.get(key, 0.0)
