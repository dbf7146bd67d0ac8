"""Events, scaling: how many fetcher threads to run, from what the run measures."""

from __future__ import annotations

import logging
import math

log = logging.getLogger("klaviyo_sync")

START_WORKERS = 2  # fetchers at first: against a fast API more only share the GIL (2 cores)
BUSY_FETCHERS = 2  # fetchers reading and decoding at once that keep the CPU busy (the read gate)
TICK_SECONDS = 0.5
MIN_REQUESTS = 4  # answers a tick needs before its latency is trusted
GROW_WAIT_SHARE = 0.5  # kept for callers of the former doubling rule
GROW_MIN_GAIN = 1.15
# A page's time in a fetcher besides waiting for its answer (reading, decoding, rows, the writer),
# assumed for the first count when the API's latency was measured before the run (the account
# check): 2 * (latency + 15 ms) / 15 ms, e.g. 3 fetchers at 5 ms, 16 at 100 ms, 32 at 300 ms.
CPU_HINT = 0.015


class Autoscale:
    """How many fetchers to run, from what the run measures (the tool cannot know in advance
    whether the API answers in 5 ms or 300 ms). Little's law: to keep ``BUSY_FETCHERS`` pages
    being read and decoded at every moment, while each request also spends ``latency`` seconds
    waiting for its answer, a run needs ``BUSY_FETCHERS * (latency + cpu) / cpu`` fetchers,
    where ``cpu`` is the rest of a fetcher's time per page (reading, decoding, rows, waiting for
    the writer). It starts with ``START_WORKERS``, or with what the latency measured before the
    run suggests (``latency_hint``: the account check's answer time, with ``CPU_HINT``). Each
    tick (half a second) measures both over the last tick and grows the
    fetchers to that count at once, up to ``limit`` (--workers); it never shrinks (a fetcher
    waiting on the network costs no CPU). A fast API keeps 2-3 fetchers; after an account check
    that took 100 ms a run starts with 16, after 300 ms with 32."""

    def __init__(self, limit: int, now: float, network_wait: float, requests: int = 0,
                 latency_hint: float | None = None):
        self.limit = limit
        self.target = min(START_WORKERS, limit)
        if latency_hint:  # the API's answer time, measured before the run: no need to wait a tick
            self.target = max(self.target, self._wanted(latency_hint, CPU_HINT))
        self.frozen = self.target >= limit
        self._last = (now, network_wait, 0, requests)
        self.timeline: list[tuple[float, int]] = [(0.0, self.target)]
        self._t0 = now

    def tick(self, now: float, events: int, network_wait: float, active: int, requests: int | None = None) -> int:
        t0, w0, e0, r0 = self._last
        dt = now - t0
        if self.frozen or dt < TICK_SECONDS or active < 1:
            return self.target
        if requests is None:  # a caller that counts no requests: one a page of 1,000 events
            requests = r0 + max(1, round((events - e0) / 1000))
        answered = requests - r0
        if answered < MIN_REQUESTS:
            return self.target
        self._last = (now, network_wait, events, requests)
        rate = (events - e0) / dt
        latency = (network_wait - w0) / answered  # seconds a request waits for its answer
        per_page = active * dt / answered  # a fetcher's seconds per page, all in
        cpu = max(per_page - latency, 0.001)
        wanted = max(self.target, self._wanted(latency, cpu))
        log.info("events: %d fetchers, %.0f events/s, %.0f ms a request waiting for its answer, "
                 "%.0f ms a page besides: %d fetchers wanted", active, rate, 1000 * latency, 1000 * cpu, wanted)
        if wanted != self.target:
            self.target = wanted
            self.timeline.append((round(now - self._t0, 2), wanted))
        self.frozen = self.target >= self.limit
        return self.target

    def _wanted(self, latency: float, cpu: float) -> int:
        """Little's law, up to ``limit``."""
        return min(self.limit, math.ceil(round(BUSY_FETCHERS * (latency + cpu) / cpu, 6)))
