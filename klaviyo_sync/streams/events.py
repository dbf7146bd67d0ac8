"""Events: the parallel time-slice engine. Fetcher threads read slices of the window, one
writer (the calling thread) commits pages together with the high-water mark. It is kept apart
from the generic stream engine because its speed depends on this shape (see README,
Performance).

The pieces live along their seams: ``events_fetch`` (slices, queries, a page's rows),
``events_write`` (tables, the mark's key, index rebuilds) and ``autoscale`` (how many fetchers);
this module runs them together: ``Fetchers`` (threads feeding a bounded queue), the writer loop
below (``apply_page`` per page, a commit per batch with the mark), ``Autoscale`` (more
fetchers while they wait on the network). Their names stay importable from here."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient
from ..timeutil import Window, floor_second, iso, parse_datetime, utcnow
from .attributions import ATTRIBUTIONS_SPEC, add_covered
from .autoscale import BUSY_FETCHERS, GROW_MIN_GAIN, GROW_WAIT_SHARE, START_WORKERS, TICK_SECONDS, Autoscale  # noqa: F401
from .declare import EVENTS_READ, INTEGER, REAL, TEXT, Column, Declaration, TableSpec, declare
from .engine import SyncResult
from .events_fetch import (  # noqa: F401
    _DONE, EVENT_FIELDS, EVENT_PAGE_SIZE, PAGES_QUEUED, PROFILE_FIELDS, EventSlice, Fetchers, _page_rows, _Rows,
    SeenCache, _Stop, contiguous_mark, events_params, limit_malloc_arenas, plan_slices,
)
from .metrics import METRIC_FIELDS, METRICS_TABLE  # noqa: F401 - the events query asks for these
from .events_write import (  # noqa: F401
    EVENT_PROFILES_TABLE, EVENT_UPSERT, EVENTS_MARK, EVENTS_TABLE, MAX_PAGES_PER_COMMIT, MAX_SECONDS_PER_COMMIT,
    METRIC_UPSERT, PROFILE_UPSERT, _event_indexes, _next_page, apply_page, mark_key, get_page,
)


def sync_events(
    client: KlaviyoClient,
    db: Database,
    window: Window,
    *,
    metric_ids: list[str] | None = None,
    workers: int = 1,
    page_size: int = EVENT_PAGE_SIZE,
    on_progress: Callable[[dict], None] | None = None,
    result: SyncResult | None = None,
    advance_mark: bool = True,
) -> SyncResult:
    """Fetch every event with ``start <= datetime < end``; fetchers run in threads, one writer
    (this thread) commits each page together with the high-water mark. ``workers`` is the most
    fetchers it runs: it starts with two and adds more while they wait on the network
    (``Autoscale``). ``advance_mark=False``
    (a repair of a past hour, see verify.py) writes the events and touches no mark."""
    result = SyncResult.begin(result, ["events", "profiles", "metrics", "attributions"], window)
    slices = plan_slices(window, workers, metric_ids)
    planned = len(slices)  # the fetchers may split some at the end of the run (events_fetch._split)
    key = mark_key(metric_ids)
    stored = store.get_state(db, key)
    stored_mark = parse_datetime(stored) if stored else None
    # The mark only moves forward, and only when this window joins the covered span.
    may_advance = advance_mark and (stored_mark is None or window.start <= stored_mark)

    limit_malloc_arenas()
    fetchers = Fetchers(client, slices, page_size)
    started = time.monotonic()
    stats = client.stats
    scale = Autoscale(max(1, min(workers, len(slices))), started, stats.network_wait_s, stats.requests,
                      latency_hint=stats.answer_time() or client.latency_hint)
    total_seconds = max((window.end - window.start).total_seconds(), 1.0)
    failure: BaseException | None = None

    with _event_indexes(db):  # before the fetchers start: a failure here leaves no thread behind
        fetchers.start(scale.target)
        try:
            while fetchers.running and failure is None:
                # Up to 8 pages, or what arrives within half a second, share one transaction: each
                # commit costs a WAL sync, and the mark still advances with every commit. Pages are
                # written as they arrive, so the writer holds one page at a time.
                s, item = _next_page(fetchers.pages)
                deadline = time.monotonic() + MAX_SECONDS_PER_COMMIT
                written = 0
                with db.atomic():
                    while True:
                        if s is None:
                            if item is None:
                                fetchers.running -= 1
                            elif failure is None:
                                failure = item
                        else:
                            apply_page(db, result, s, item)
                            written += 1
                        s = item = None
                        wait = deadline - time.monotonic()
                        if (written >= MAX_PAGES_PER_COMMIT or failure is not None or not fetchers.running
                                or wait <= 0):
                            break
                        try:
                            s, item = get_page(fetchers.pages, wait)
                        except queue.Empty:
                            break
                    mark = contiguous_mark(slices, window.start)
                    if may_advance and (stored_mark is None or mark > stored_mark):
                        store.set_state(db, key, iso(mark))
                        stored_mark = mark
                    if not metric_ids and mark > window.start:  # fetched with their attributions
                        add_covered(db, iso(window.start), iso(mark))
                if not scale.frozen and failure is None:
                    fetchers.start(scale.tick(time.monotonic(), result.extra.get("events_seen", 0),
                                              client.stats.network_wait_s, fetchers.running,
                                              client.stats.requests))
                if on_progress:
                    covered = sum((x.done_until - x.start).total_seconds() for x in slices)
                    covered /= total_seconds * (len(metric_ids) if metric_ids else 1)
                    on_progress({
                        "events": result.extra.get("events_seen", 0),
                        "pages": result.pages,
                        "covered": min(covered, 1.0),
                        "elapsed": time.monotonic() - started,
                    })
            if failure is not None:
                raise failure
        finally:
            fetchers.stop()
    result.extra["slices"] = planned
    if fetchers.splits:
        result.extra["slices_split"] = fetchers.splits
    result.extra["workers"] = len(fetchers.threads)
    result.extra["max_workers"] = workers
    # When the fetcher count changed: [seconds into the run, fetchers] (see autoscale.py).
    result.extra["fetchers_over_time"] = [list(step) for step in scale.timeline]
    result.extra["mark"] = iso(stored_mark) if stored_mark else None
    return result


def resume_window(db: Database, metric_ids: list[str] | None, overlap: timedelta, now: datetime,
                  first_run: timedelta = timedelta(hours=24)) -> Window:
    stored = store.get_state(db, mark_key(metric_ids))
    if stored:
        start = min(parse_datetime(stored), now) - overlap
        return Window(start, now, "resume")
    return Window(now - first_run, now, "first run")


DEFAULT_WORKERS = 32  # the most fetchers; at 300 ms a request a run needs about 30. Measured: see README, Performance


def _sync_all_events(client: KlaviyoClient, db: Database, result: SyncResult) -> None:
    """Events resume from the stored mark (24 hours back on a first run)."""
    window = resume_window(db, None, timedelta(hours=1), floor_second(utcnow()))
    sync_events(client, db, window, workers=DEFAULT_WORKERS, result=result)


EVENTS_SPEC = TableSpec("events", "Every event synced, once each (primary key: Klaviyo's event id).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("metric_id", TEXT, "The metric (event type): metrics.id."),
    Column("profile_id", TEXT, "The profile: profiles.id (NULL when the event has none)."),
    Column("datetime", TEXT, "When the event happened (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("timestamp", INTEGER, "The same instant in epoch seconds."),
    Column("uuid", TEXT, "Klaviyo's event UUID."),
    Column("value", REAL, "The event's value (event_properties $value), e.g. an order's revenue."),
    Column("properties", TEXT, "The event's properties (JSON)."),
))

SYNC_EVENTS = declare(Declaration(
    command="sync-events", help="", scope=EVENTS_READ, tier="events", paths=("/api/events",),
    tables=(EVENTS_SPEC, ATTRIBUTIONS_SPEC),
    run=_sync_all_events, sync_all=30, core=True,
    arguments={"resume": True, "overlap": "1h", "workers": DEFAULT_WORKERS},
))
