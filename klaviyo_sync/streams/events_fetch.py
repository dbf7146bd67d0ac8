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
from typing import Any

import msgspec
import orjson

from ..client import KlaviyoClient, Page, loads_json
from ..db import to_json
from ..timeutil import Window, iso, parse_datetime
from ..transform import event_row, event_tuple, metric_row, profile_row
from .attributions import attributed_event_ids, attribution_rows
from .metrics import METRIC_FIELDS
from .sliced import _Stop, put_or_stop, run_fetcher

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
        return self._fresh(key, fingerprint)

    def fresh_raw(self, key: str, attributes: bytes) -> bool:
        """``fresh`` of a resource whose attributes are still the JSON text they came as."""
        return self._fresh(key, hash(bytes(attributes)))

    def _fresh(self, key: str, fingerprint: int) -> bool:
        if self._seen.get(key) == fingerprint:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen[key] = fingerprint
        return True


def _page_rows(page: Page, start: str, end: str, seen: SeenCache) -> _Rows:
    """Rows of one page. An event outside [start, end) would break "none outside the window"
    and the mark's promise, so it is dropped even if a server sends one."""
    if (page.data and page.data[0].__class__ is _Event) or (page.included and page.included[0].__class__ is _Included):
        return _typed_page_rows(page, start, end, seen)
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


# -- a page decoded into only what becomes rows ----------------------------------------------
# Half of an events page with its attributions is links (two URLs per relationship of every
# event and attribution) that no row keeps. Decoded into these types, they are skipped while
# parsing instead of becoming Python strings; attributes that are stored as they come (event
# properties, a profile's or metric's attributes) stay raw JSON until needed: a profile the
# run has already stored with the same attributes is never decoded at all. Measured, a
# 1,000-event page with ~450 attributions: 15 ms in orjson.loads, ~3 ms here (see README,
# Performance). A page these types do not fit (another shape than Klaviyo's) is decoded as
# plain JSON and takes ``_page_rows``' general path, so the rows are the same either way.
# gc=False: they hold no cycles, and untracked they cost the cyclic collector nothing (a page
# with ~450 attributions is ~10,000 of them: 10% less decoding time).
class _Id(msgspec.Struct, gc=False):
    id: Any = None


class _Ref(msgspec.Struct, gc=False):
    data: _Id | None = None  # a to-one relationship: its ``links`` are skipped


class _Refs(msgspec.Struct, gc=False):
    data: list[msgspec.Raw] | None = None  # a to-many relationship (only whether it came is read)


class _EventRelationships(msgspec.Struct, gc=False):
    profile: _Ref | None = None
    metric: _Ref | None = None
    attributions: _Refs | None = None


class _EventAttributes(msgspec.Struct, gc=False):
    datetime: Any = None
    timestamp: Any = None
    uuid: Any = None
    event_properties: msgspec.Raw = msgspec.Raw()


class _Event(msgspec.Struct, gc=False):
    id: Any
    attributes: _EventAttributes | None = None
    relationships: _EventRelationships | None = None


class _AttributionRelationships(msgspec.Struct, rename="kebab", gc=False):  # ATTRIBUTION_RELATIONSHIPS, in order
    event: _Ref | None = None
    attributed_event: _Ref | None = None
    campaign: _Ref | None = None
    campaign_message: _Ref | None = None
    flow: _Ref | None = None
    flow_message: _Ref | None = None
    flow_message_variation: _Ref | None = None


class _Included(msgspec.Struct, gc=False):
    id: Any  # required, as _page_rows' general path requires it
    type: Any = None
    attributes: msgspec.Raw = msgspec.Raw()
    relationships: _AttributionRelationships | None = None  # an attribution's; others' are skipped


class _Links(msgspec.Struct, gc=False):
    next: Any = None


class _EventsPage(msgspec.Struct, gc=False):
    data: list[_Event]
    included: list[_Included] | None = None
    links: _Links | None = None


_PAGE_DECODER = msgspec.json.Decoder(_EventsPage)


def decode_events_page(content: bytes) -> object:
    """An events page as ``KlaviyoClient.paginate(decode=...)`` wants it: the typed page above,
    or, for any other answer (an error body, another shape, invalid JSON), what plain JSON
    decoding makes of it."""
    try:
        page = _PAGE_DECODER.decode(content)
    except msgspec.DecodeError:
        return loads_json(content)
    return {"data": page.data, "included": page.included or [],
            "links": {"next": page.links.next} if page.links is not None else None}


def _raw_json(raw: msgspec.Raw):
    return orjson.loads(memoryview(raw)) if raw else None


def _typed_page_rows(page: Page, start: str, end: str, seen: SeenCache) -> _Rows:
    """``_page_rows`` of a page decoded by ``decode_events_page``: the same rows."""
    events, attributed = [], []
    for e in page.data:
        a, r = e.attributes, e.relationships
        metric = profile = None
        if r is not None:
            if r.metric is not None and r.metric.data is not None:
                metric = r.metric.data.id
            if r.profile is not None and r.profile.data is not None:
                profile = r.profile.data.id
        if a is None:
            row = event_tuple(e.id, None, None, None, None, metric, profile)
        else:
            row = event_tuple(e.id, _raw_json(a.event_properties), a.datetime, a.timestamp, a.uuid, metric, profile)
        when = row[3]
        if when is None or not start <= when < end:
            continue
        events.append(row)
        if r is not None and r.attributions is not None and r.attributions.data is not None:
            attributed.append(e.id)
    profiles, metrics, attributions = [], [], []
    kept = None
    for inc in page.included:
        kind = inc.type
        if kind == "attribution":
            # The row's ids read attribute by attribute (ATTRIBUTION_COLUMNS order): ~450 a
            # page, where a generic walk over the relationships cost a third more.
            rel = inc.relationships
            if rel is None or not inc.id or (x := rel.event) is None or (x := x.data) is None or not (eid := x.id):
                continue
            if kept is None:
                kept = {e[0] for e in events}
            if eid in kept:
                attributions.append((
                    inc.id, eid,
                    None if (x := rel.attributed_event) is None or (x := x.data) is None else x.id,
                    None if (x := rel.campaign) is None or (x := x.data) is None else x.id,
                    None if (x := rel.campaign_message) is None or (x := x.data) is None else x.id,
                    None if (x := rel.flow) is None or (x := x.data) is None else x.id,
                    None if (x := rel.flow_message) is None or (x := x.data) is None else x.id,
                    None if (x := rel.flow_message_variation) is None or (x := x.data) is None else x.id))
        elif kind == "profile" or kind == "metric":
            if seen.fresh_raw(f"{kind}:{inc.id}", inc.attributes):
                resource = {"id": inc.id, "attributes": _raw_json(inc.attributes)}
                (profiles if kind == "profile" else metrics).append(
                    profile_row(resource) if kind == "profile" else metric_row(resource))
    last = max((e[3] for e in events), default=None)
    return _Rows(events, profiles, metrics, last, len(page.data) - len(events), attributions, attributed)


_DONE = object()  # a slice's last page was handed over


MMAP_THRESHOLD = 1024 * 1024  # bytes: a block this large or larger is mapped on its own


@functools.cache
def limit_malloc_arenas(arenas: int = 2) -> None:
    """Keep glibc's heap from growing with --workers and with the length of the run.

    glibc gives each thread its own malloc arena and keeps each arena's high-water mark,
    so peak memory would grow with --workers (measured: +5 MB a worker). Two arenas keep it
    flat. And glibc raises its mmap threshold to the size of any mapped block that is freed:
    after the first 2 MB answer body, every body and decode buffer came from the arenas
    instead, between longer-lived small blocks, and freed space in the middle of an arena is
    never returned (measured, a backfill of 5,000,000 events: the arenas held 12-21 MB free
    while paging, growing with the run; with a fixed threshold 1-3 MB, and a peak RSS of
    112 MB instead of 131).
    A fixed threshold maps each large block on its own and unmaps it when it is freed. Must
    run before the worker threads start; a no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (setting it turns the adjustment off)
    except (OSError, AttributeError):
        pass


PAGES_QUEUED = 4  # pages waiting for the writer, at most
SPLIT_MIN_PAGES = 1.5  # a slice's rest is split only when it seems to hold more pages than this
IDLE_WAIT_S = 0.5  # the longest an idle fetcher waits before it looks for a slice again (a split wakes it)


class Fetchers:
    """The fetcher threads of one run. Each takes slices off a work queue, pages through its
    slice and hands each page's rows to the writer through ``pages``, a bounded queue (so
    memory grows neither with the window nor with the number of fetchers). At the end of a
    run, a fetcher with no slice left waits while others read, and a long slice is split for
    it (``_split``), so the run does not end with one fetcher paging alone through a busy hour. An item of
    ``pages`` is ``(slice, rows)``, ``(slice, _DONE)`` when a slice is complete, ``(None, exc)``
    when a fetcher failed (the writer raises it) and ``(None, None)`` when a fetcher ended."""

    def __init__(self, client: KlaviyoClient, slices: list[EventSlice], page_size: int = EVENT_PAGE_SIZE):
        self.client = client
        self.page_size = page_size
        self.slices = slices  # the run's, which the writer reads: a split appends its halves
        self.work: queue.Queue = queue.Queue()
        for s in slices:
            self.work.put(s)
        self.pages: queue.Queue = queue.Queue(maxsize=PAGES_QUEUED)
        self.stopping = threading.Event()
        self.seen = SeenCache()
        self.threads: list[threading.Thread] = []
        self.running = 0  # started and not yet ended (the writer counts the ends)
        self.waiting = 0  # fetchers with no slice, waiting for a split
        self.splits = 0
        self._turn = threading.Condition()  # waiting, and a split's halves or a slice's end

    def _put(self, item) -> None:
        put_or_stop(self.pages, item, self.stopping)

    def _fetch(self) -> None:
        run_fetcher(self.work, self.stopping, self._put, self._read_slice, lambda exc: (None, exc), (None, None),
                    idle=self._idle)

    def _idle(self) -> bool:
        """A fetcher found no slice: whether to look again. While another still reads one (a
        slice taken off ``work`` is unfinished until read), that one may split it for this
        fetcher (``_split``): wait for that, or for the last slice's end."""
        with self._turn:
            if not self.work.unfinished_tasks:
                return False
            self.waiting += 1
            self._turn.wait(IDLE_WAIT_S)
            self.waiting -= 1
            return True

    def _read_slice(self, s: EventSlice) -> None:
        try:
            self._read_pages(s)
        finally:
            with self._turn:
                self.work.task_done()  # after a split's halves were queued: never 0 before all are read
                self._turn.notify_all()

    def _read_pages(self, s: EventSlice) -> None:
        put = self._put
        start, end = iso(s.start), iso(s.end)
        read = 0  # pages

        def hand_over(page: Page):
            # Runs under the client's read gate: a fetcher that must wait for the
            # writer holds the gate, so the others leave their answers unread on the
            # socket and memory stays bounded however many workers and profiles.
            nonlocal read
            rows = _page_rows(page, start, end, self.seen)
            put((s, rows))
            read += 1
            return rows.last_datetime if page.next_url else None

        pages = self.client.paginate("/api/events", events_params(s, self.page_size), transform=hand_over,
                                     decode=decode_events_page)
        try:
            for last in pages:
                if self.stopping.is_set():
                    raise _Stop
                if last is not None and self.waiting and self.work.empty() and self._split(s, last, read):
                    break
        finally:
            pages.close()
        put((s, _DONE))

    def _split(self, s: EventSlice, last: str, pages: int) -> bool:
        """At the end of a run, when a fetcher has no slice left to start, hand the rest of a long
        slice to it instead of paging through it alone: this slice ends where its last page
        did (every event before that instant was on its pages), and the rest, from that instant
        (its events on the last page are read again, and stored once), becomes two new slices.
        Only when the rest seems to hold more than a page and a half, by this slice's pages so far."""
        upto = parse_datetime(last).replace(microsecond=0)
        if not s.start < upto < s.end:
            return False
        rest = (s.end - upto).total_seconds()
        if pages * rest / max((upto - s.start).total_seconds(), 1.0) < SPLIT_MIN_PAGES:
            return False
        middle = (upto + (s.end - upto) / 2).replace(microsecond=0)
        if not upto < middle < s.end:
            return False
        with self._turn:
            halves = [EventSlice(len(self.slices), upto, middle, s.metric_id),
                      EventSlice(len(self.slices) + 1, middle, s.end, s.metric_id)]
            # In the run's slices before this one's end reaches the writer: the mark never
            # counts this slice complete without the halves that now hold the rest.
            self.slices.extend(halves)
            s.end = upto
            self.splits += 1
            for half in halves:
                self.work.put(half)
            self._turn.notify(len(halves))
        return True

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
        with self._turn:
            self._turn.notify_all()  # an idle fetcher sees the stop at once
        deadline = time.monotonic() + grace
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
