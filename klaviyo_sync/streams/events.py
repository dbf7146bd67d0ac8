"""Events: the parallel time-slice engine. Fetcher threads read slices of the window, one
writer (the calling thread) commits pages together with the high-water mark. It is kept apart
from the generic stream engine because its speed depends on this shape (see README,
Performance).

The pieces live along their seams: ``events_fetch`` (slices, queries, a page's rows),
``events_write`` (tables, the mark's key, index rebuilds) and ``autoscale`` (how many fetchers);
this module runs them together. Their names stay importable from here."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient, Page
from ..timeutil import Window, floor_second, iso, parse_datetime, utcnow
from .autoscale import GROW_MIN_GAIN, GROW_WAIT_SHARE, START_WORKERS, TICK_SECONDS, _Autoscale  # noqa: F401
from .declare import EVENTS_READ, Declaration, declare
from .engine import SyncResult
from .events_fetch import (  # noqa: F401
    _DONE, EVENT_FIELDS, EVENT_PAGE_SIZE, PROFILE_FIELDS, EventSlice, _page_rows, _Rows, _SeenCache, _Stop,
    contiguous_mark, events_params, limit_malloc_arenas, plan_slices,
)
from .events_write import (  # noqa: F401
    EVENT_PROFILES_TABLE, EVENT_UPSERT, EVENTS_MARK, EVENTS_TABLE, MAX_PAGES_PER_COMMIT, MAX_SECONDS_PER_COMMIT,
    METRIC_UPSERT, PAGES_QUEUED, PROFILE_UPSERT, _event_indexes, _next_page, mark_key,
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
    (``_Autoscale``). ``advance_mark=False``
    (a repair of a past hour, see verify.py) writes the events and touches no mark."""
    result = SyncResult.begin(result, ["events", "profiles", "metrics"], window)
    slices = plan_slices(window, workers, metric_ids)
    key = mark_key(metric_ids)
    stored = store.get_state(db, key)
    stored_mark = parse_datetime(stored) if stored else None
    # The mark only moves forward, and only when this window joins the covered span.
    may_advance = advance_mark and (stored_mark is None or window.start <= stored_mark)

    work: queue.Queue = queue.Queue()
    for s in slices:
        work.put(s)
    # Bounded: at most a few pages wait for the writer, so memory grows neither with the window
    # nor with --workers.
    pages: queue.Queue = queue.Queue(maxsize=PAGES_QUEUED)
    stop = threading.Event()
    seen = _SeenCache()

    def put(item) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stop

    def fetcher() -> None:
        try:
            while not stop.is_set():
                try:
                    s = work.get_nowait()
                except queue.Empty:
                    return
                start, end = iso(s.start), iso(s.end)

                def hand_over(page: Page, s=s, start=start, end=end) -> None:
                    # Runs under the client's read gate: a fetcher that must wait for the
                    # writer holds the gate, so the others leave their answers unread on the
                    # socket and memory stays bounded however many workers and profiles.
                    put((s, _page_rows(page, start, end, seen)))

                for _ in client.paginate("/api/events", events_params(s, page_size), transform=hand_over):
                    if stop.is_set():
                        raise _Stop
                put((s, _DONE))
        except _Stop:
            pass
        except BaseException as exc:  # handed to the writer, which raises it
            try:
                put((None, exc))
            except _Stop:
                pass
        finally:
            try:
                put((None, None))  # this fetcher is finished
            except _Stop:
                pass

    limit_malloc_arenas()
    started = time.monotonic()
    scale = _Autoscale(max(1, min(workers, len(slices))), started, client.stats.network_wait_s)
    threads: list[threading.Thread] = []
    running = 0

    def start_fetchers(count: int) -> None:
        nonlocal running
        while len(threads) < count:
            t = threading.Thread(target=fetcher, name=f"fetch-{len(threads)}", daemon=True)
            threads.append(t)
            running += 1
            t.start()

    total_seconds = max((window.end - window.start).total_seconds(), 1.0)
    failure: BaseException | None = None

    def apply(s: EventSlice, item) -> None:
        if item is _DONE:
            s.complete = True
            s.done_until = s.end
            return
        # Profiles and metrics first, so the page's joins are whole when it lands.
        result.add_rows("metrics", store.write_rows(db, METRIC_UPSERT, item.metrics))
        result.add_rows("profiles", store.write_rows(db, PROFILE_UPSERT, item.profiles))
        result.add_rows("events", store.write_rows(db, EVENT_UPSERT, item.events))
        result.pages += 1
        result.extra["events_seen"] = result.extra.get("events_seen", 0) + len(item.events)
        if item.dropped:
            result.extra["dropped_outside_window"] = result.extra.get("dropped_outside_window", 0) + item.dropped
        if item.last_datetime:
            s.done_until = max(s.done_until, parse_datetime(item.last_datetime))

    with _event_indexes(db):  # before the fetchers start: a failure here leaves no thread behind
        start_fetchers(scale.target)
        try:
            while running and failure is None:
                # Up to 8 pages, or what arrives within half a second, share one transaction: each
                # commit costs a WAL sync, and the mark still advances with every commit. Pages are
                # written as they arrive, so the writer holds one page at a time.
                s, item = _next_page(pages)
                deadline = time.monotonic() + MAX_SECONDS_PER_COMMIT
                written = 0
                with db.atomic():
                    while True:
                        if s is None:
                            if item is None:
                                running -= 1
                            elif failure is None:
                                failure = item
                        else:
                            apply(s, item)
                            written += 1
                        s = item = None
                        wait = deadline - time.monotonic()
                        if written >= MAX_PAGES_PER_COMMIT or failure is not None or not running or wait <= 0:
                            break
                        try:
                            s, item = pages.get(timeout=wait)
                        except queue.Empty:
                            break
                    mark = contiguous_mark(slices, window.start)
                    if may_advance and (stored_mark is None or mark > stored_mark):
                        store.set_state(db, key, iso(mark))
                        stored_mark = mark
                if not scale.frozen and failure is None:
                    start_fetchers(scale.tick(time.monotonic(), result.extra.get("events_seen", 0),
                                              client.stats.network_wait_s, running))
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
            stop.set()
            # Fetchers see the stop between pages; one stuck in a slow request is a daemon thread
            # and must not hold the process (and the lock) for the read timeout: wait 2 s in all.
            deadline = time.monotonic() + 2.0
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
    result.extra["slices"] = len(slices)
    result.extra["workers"] = len(threads)
    result.extra["max_workers"] = workers
    result.extra["mark"] = iso(stored_mark) if stored_mark else None
    return result


def resume_window(db: Database, metric_ids: list[str] | None, overlap: timedelta, now: datetime,
                  first_run: timedelta = timedelta(hours=24)) -> Window:
    stored = store.get_state(db, mark_key(metric_ids))
    if stored:
        start = min(parse_datetime(stored), now) - overlap
        return Window(start, now, "resume")
    return Window(now - first_run, now, "first run")


DEFAULT_WORKERS = 12  # measured: see README, Performance


def _sync_all_events(client: KlaviyoClient, db: Database, result: SyncResult) -> None:
    """Events resume from the stored mark (24 hours back on a first run)."""
    window = resume_window(db, None, timedelta(hours=1), floor_second(utcnow()))
    sync_events(client, db, window, workers=DEFAULT_WORKERS, result=result)


SYNC_EVENTS = declare(Declaration(
    command="sync-events", help="", scope=EVENTS_READ, tier="events", paths=("/api/events",),
    run=_sync_all_events, sync_all=30, core=True,
    arguments={"resume": True, "overlap": "1h", "workers": DEFAULT_WORKERS},
))
