"""Events, fetching: the window cut into slices, the query of a slice, and a page turned into
rows (in the fetcher threads, so the writer only writes)."""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..client import KlaviyoClient, Page
from ..db import to_json
from ..timeutil import Window, iso
from ..transform import event_row, metric_row, profile_row
from .attributions import attributed_event_ids, attribution_rows
from .metrics import METRIC_FIELDS

EVENT_FIELDS = "datetime,event_properties,timestamp,uuid"
PROFILE_FIELDS = ("email,phone_number,external_id,first_name,last_name,organization,locale,title,"
                  "image,created,updated,last_event_date,location,properties")
EVENT_PAGE_SIZE = 1000


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
    # and(...): the form Klaviyo's filtering documentation gives for several conditions.
    conditions = [f"greater-or-equal(datetime,{iso(s.start)})", f"less-than(datetime,{iso(s.end)})"]
    if s.metric_id:
        conditions.append(f'equals(metric_id,"{s.metric_id}")')
    return {
        "filter": f"and({','.join(conditions)})",
        "include": "metric,profile,attributions",
        "fields[event]": EVENT_FIELDS,
        "fields[profile]": PROFILE_FIELDS,
        "fields[metric]": METRIC_FIELDS,
        "page[size]": str(page_size),
        "sort": "datetime",
    }


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


class SeenCache:
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


def _page_rows(page: Page, start: str, end: str, seen: SeenCache) -> _Rows:
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


_DONE = object()  # a slice's last page was handed over


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


PAGES_QUEUED = 4  # pages waiting for the writer, at most


class Fetchers:
    """The fetcher threads of one run. Each takes slices off a work queue, pages through its
    slice and hands each page's rows to the writer through ``pages``, a bounded queue (so
    memory grows neither with the window nor with the number of fetchers). An item of
    ``pages`` is ``(slice, rows)``, ``(slice, _DONE)`` when a slice is complete, ``(None, exc)``
    when a fetcher failed (the writer raises it) and ``(None, None)`` when a fetcher ended."""

    def __init__(self, client: KlaviyoClient, slices: list[EventSlice], page_size: int = EVENT_PAGE_SIZE):
        self.client = client
        self.page_size = page_size
        self.work: queue.Queue = queue.Queue()
        for s in slices:
            self.work.put(s)
        self.pages: queue.Queue = queue.Queue(maxsize=PAGES_QUEUED)
        self.stopping = threading.Event()
        self.seen = SeenCache()
        self.threads: list[threading.Thread] = []
        self.running = 0  # started and not yet ended (the writer counts the ends)

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stop

    def _fetch(self) -> None:
        put = self._put
        try:
            while not self.stopping.is_set():
                try:
                    s = self.work.get_nowait()
                except queue.Empty:
                    return
                start, end = iso(s.start), iso(s.end)

                def hand_over(page: Page, s=s, start=start, end=end) -> None:
                    # Runs under the client's read gate: a fetcher that must wait for the
                    # writer holds the gate, so the others leave their answers unread on the
                    # socket and memory stays bounded however many workers and profiles.
                    put((s, _page_rows(page, start, end, self.seen)))

                for _ in self.client.paginate("/api/events", events_params(s, self.page_size), transform=hand_over):
                    if self.stopping.is_set():
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

    def start(self, count: int) -> None:
        """Run ``count`` fetchers in all (more are started, none stopped)."""
        while len(self.threads) < count:
            t = threading.Thread(target=self._fetch, name=f"fetch-{len(self.threads)}", daemon=True)
            self.threads.append(t)
            self.running += 1
            t.start()

    def stop(self, grace: float = 2.0) -> None:
        """Fetchers see the stop between pages; one stuck in a slow request is a daemon thread
        and must not hold the process (and the lock) for the read timeout: wait ``grace`` s in all."""
        self.stopping.set()
        deadline = time.monotonic() + grace
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
