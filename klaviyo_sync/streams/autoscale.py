"""Events, scaling: how many fetcher threads to run, from what the run measures."""

from __future__ import annotations

import logging

log = logging.getLogger("klaviyo_sync")

START_WORKERS = 2  # fetchers at first: against a fast API more only share the GIL (2 cores)
GROW_WAIT_SHARE = 0.5  # grow while fetchers spend at least half their time waiting for answers
GROW_MIN_GAIN = 1.15  # ... and the last step raised the event rate at least this much
TICK_SECONDS = 1.0


class Autoscale:
    """How many fetchers to run, from what the run measures (the tool cannot know in advance
    whether the API answers in 5 ms or 300 ms): start with ``START_WORKERS``; once a second,
    if the fetchers spent most of their time waiting for answers (latency-bound), double them,
    up to ``limit`` (--workers); stop growing for good once a step did not raise the event
    rate. A CPU-bound run (fast API) keeps two fetchers; a latency-bound one reaches the
    limit in a few seconds."""

    def __init__(self, limit: int, now: float, network_wait: float):
        self.limit = limit
        self.target = min(START_WORKERS, limit)
        self.frozen = self.target >= limit
        self._last = (now, network_wait, 0)
        self._rate_before_step: float | None = None

    def tick(self, now: float, events: int, network_wait: float, active: int) -> int:
        t0, w0, e0 = self._last
        dt = now - t0
        if self.frozen or dt < TICK_SECONDS or active < 1:
            return self.target
        rate = (events - e0) / dt
        share = (network_wait - w0) / (active * dt)
        self._last = (now, network_wait, events)
        log.info("events: %d fetchers, %.0f events/s, %.0f%% of their time waiting for answers",
                 active, rate, 100 * share)
        if self._rate_before_step is not None and rate < self._rate_before_step * GROW_MIN_GAIN:
            self.frozen = True  # more fetchers did not help: the CPU (or the API's limit) is the bound
            return self.target
        self._rate_before_step = None
        if share >= GROW_WAIT_SHARE:
            self._rate_before_step = rate
            self.target = min(self.limit, self.target * 2)
            self.frozen = self.target >= self.limit
        return self.target

