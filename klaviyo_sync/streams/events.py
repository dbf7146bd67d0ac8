"""Events: the parallel time-slice engine. Fetcher threads read slices of the window, one
writer (the calling thread) commits pages together with the high-water mark. It is kept apart
from the generic stream engine because its speed depends on this shape (see README,
Performance)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient, Page
from ..db import to_json
from ..timeutil import Window, iso, parse_datetime
from ..transform import event_row, metric_row, profile_row
from .attributions import add_covered, attributed_event_ids, attribution_rows, write_attributions
from .engine import SyncResult, Table
from .metrics import METRIC_FIELDS, METRICS_TABLE

EVENT_FIELDS = "datetime,event_properties,timestamp,uuid"
PROFILE_FIELDS = ("email,phone_number,external_id,first_name,last_name,organization,locale,title,"
                  "image,created,updated,last_event_date,location,properties")
EVENT_PAGE_SIZE = 1000
EVENTS_MARK = "events.mark"
MAX_PAGES_PER_COMMIT = 8
PAGES_QUEUED = 4
MAX_SECONDS_PER_COMMIT = 0.5

EVENTS_TABLE = Table("events", tuple(store.EVENT_COLUMNS), immutable=True)  # events never change
# Profiles as events include them: the base columns only (consent comes from sync-profiles and is
# left alone), never over a newer version of the same profile, never over a deleted one (tombstone).
EVENT_PROFILES_TABLE = Table("profiles", tuple(store.PROFILE_COLUMNS), newer="updated", tombstone="deleted_at")
METRIC_UPSERT = METRICS_TABLE.upsert
PROFILE_UPSERT = EVENT_PROFILES_TABLE.upsert
EVENT_UPSERT = EVENTS_TABLE.upsert


@dataclass
class EventSlice:
    index: int
    start: datetime
    end: datetime
    metric_id: str | None = None
    done_until: datetime | None = None  # every event of the slice before this instant is committed
    complete: bool = False

    def __post_init__(self) -> None:
        if self.done_until is None:
            self.done_until = self.start


def plan_slices(window: Window, workers: int, metric_ids: list[str] | None = None,
                min_width: timedelta = timedelta(minutes=15)) -> list[EventSlice]:
    """Split [start, end) into contiguous half-open slices, per metric when narrowed.

    More slices than workers keeps workers busy when events are unevenly spread; a floor on the
    width keeps a short hourly window from costing many near-empty requests.
    """
    total = window.end - window.start
    count = max(1, min(workers * 4 if workers > 1 else 1, int(total / min_width) or 1))
    bounds = [window.start + total * i / count for i in range(count)] + [window.end]
    # Whole seconds: the API filter takes whole seconds, and slices must meet exactly.
    bounds = [b.replace(microsecond=0) for b in bounds]
    slices = []
    for metric_id in metric_ids or [None]:
        for a, b in zip(bounds, bounds[1:]):
            if b > a:
                slices.append(EventSlice(len(slices), a, b, metric_id))
    return slices


def contiguous_mark(slices: list[EventSlice], start: datetime) -> datetime:
    """The instant below which every slice is complete (for each metric chain, the minimum)."""
    marks = []
    for metric_id in {s.metric_id for s in slices}:
        mark = start
        for s in sorted((s for s in slices if s.metric_id == metric_id), key=lambda s: s.start):
            if s.complete:
                mark = s.end
                continue
            mark = max(mark, s.done_until)
            break
        marks.append(mark)
    return min(marks) if marks else start


def events_params(s: EventSlice, page_size: int = EVENT_PAGE_SIZE) -> dict:
    flt = f"greater-or-equal(datetime,{iso(s.start)}),less-than(datetime,{iso(s.end)})"
    if s.metric_id:
        flt += f',equals(metric_id,"{s.metric_id}")'
    return {
        "filter": flt,
        "include": "metric,profile,attributions",
        "fields[event]": EVENT_FIELDS,
        "fields[profile]": PROFILE_FIELDS,
        "fields[metric]": METRIC_FIELDS,
        "page[size]": str(page_size),
        "sort": "datetime",
    }


def mark_key(metric_ids: list[str] | None) -> str:
    return EVENTS_MARK if not metric_ids else f"{EVENTS_MARK}:metric={','.join(sorted(metric_ids))}"


@dataclass
class _Rows:
    """A page turned into rows, ready for the writer."""

    events: list
    profiles: list
    metrics: list
    last_datetime: str | None
    dropped: int = 0
    attributions: list = ()  # event_attributions rows, and the events they replace (attributions.py)
    attributed: list = ()


class _SeenCache:
    """Fingerprints of the profiles and metrics this run has already handed to the writer.

    Busy pages repeat the same profiles page after page; an unchanged one needs no new row.
    It keeps a 64-bit hash, not the attributes, and at most ``limit`` entries (about 8 MB), so
    a large account cannot grow it; a miss only costs a no-op upsert. A skipped profile went
    out with an earlier page, which commits before or with this one in a completed run; a run
    killed in between leaves it to the next run, which fetches that earlier page again because
    the mark never passes a page that did not commit.
    """

    def __init__(self, limit: int = 50_000):
        self.limit = limit
        self._seen: dict[str, int] = {}

    def fresh(self, resource: dict) -> bool:
        key = f"{resource.get('type')}:{resource['id']}"
        fingerprint = hash(to_json(resource.get("attributes")))
        if self._seen.get(key) == fingerprint:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen[key] = fingerprint
        return True


def _page_rows(page: Page, start: str, end: str, seen: _SeenCache) -> _Rows:
    """Rows of one page. An event outside [start, end) would break "none outside the window"
    and the mark's promise, so it is dropped even if a server sends one."""
    events = [row for row in map(event_row, page.data) if row[3] is not None and start <= row[3] < end]
    profiles, metrics = [], []
    for inc in page.included:
        kind = inc.get("type")
        if kind == "profile":
            if seen.fresh(inc):
                profiles.append(profile_row(inc))
        elif kind == "metric":
            if seen.fresh(inc):
                metrics.append(metric_row(inc))
    last = max((e[3] for e in events), default=None)
    kept = {e[0] for e in events}
    attributions = [r for r in attribution_rows(page.included) if r[1] in kept]
    attributed = [i for i in attributed_event_ids(page.data) if i in kept]
    return _Rows(events, profiles, metrics, last, len(page.data) - len(events), attributions, attributed)


_DONE = object()
log = logging.getLogger("klaviyo_sync")


def _next_page(pages: queue.Queue):
    """The next page, waiting in short steps: Ctrl-C and SIGTERM run their Python handlers
    only in the main thread, and only when it runs bytecode. The kernel may deliver the signal
    to a fetcher thread; a main thread blocked in one endless get() would then never see it
    while the fetchers wait on the network (found: a SIGINT ignored for 30 s under load)."""
    while True:
        try:
            return pages.get(timeout=0.2)
        except queue.Empty:
            continue


@contextlib.contextmanager
def _event_indexes(db: Database):
    """A backfill into an empty events table runs without the secondary indexes and builds
    each once at the end (one sort instead of a B-tree insert per row). Any other run first
    makes sure they exist, which also repairs a backfill that was killed before its end."""
    empty = db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
    with db.atomic():
        (store.drop_event_indexes if empty else store.ensure_event_indexes)(db)
    if not empty:
        yield
        return
    try:
        yield
    except BaseException:
        try:
            with db.atomic():
                store.ensure_event_indexes(db)
        except Exception:  # noqa: S110 - the first error is the one to report; the next run rebuilds
            pass
        raise
    with db.atomic():
        store.ensure_event_indexes(db)


@functools.cache
def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena and keeps each arena's high-water mark,
    so peak memory would grow with --workers (measured: +5 MB a worker). Two arenas keep it
    flat. Must run before the worker threads start; a no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


class _Stop(Exception):
    pass


START_WORKERS = 2  # fetchers at first: against a fast API more only share the GIL (2 cores)
GROW_WAIT_SHARE = 0.5  # grow while fetchers spend at least half their time waiting for answers
GROW_MIN_GAIN = 1.15  # ... and the last step raised the event rate at least this much
TICK_SECONDS = 1.0


class _Autoscale:
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
    result = SyncResult.begin(result, ["events", "profiles", "metrics", "attributions"], window)
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
        result.add_rows("attributions", write_attributions(db, item.attributed, item.attributions))
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
                    if not metric_ids and mark > window.start:  # fetched with their attributions
                        add_covered(db, iso(window.start), iso(mark))
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
