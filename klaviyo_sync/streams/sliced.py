"""Parallel slices of one cursor stream (profiles): a long read split into ranges of the cursor
field, each following its own cursor chain in a fetcher thread, while the caller (the writer)
commits pages with a mark that never passes a range not yet finished.

A run reads its first page exactly as a sequential run would (``op(field, mark - lookback)``,
sorted by the field): when little changed that one request is the whole run. Only when that
page has a next page is the rest, from the first page's newest value to ten minutes before the
run's start, cut into ranges ``[lo, hi)`` (``greater-than(field, lo - 1 s)`` and
``less-than(field, hi)``: the values are whole seconds) of about three pages each by the first
page's density (at most ``4 x workers``), plus one open range from there on, where whatever
changes meanwhile lands, read last (so a full pass sees a profile that moved there). A range whose first pages show it holds many more is split again
while a fetcher has nothing to take, so an account whose profiles all changed last week is not
read by one fetcher. The mark after each page is the instant below which every range is
complete (``contiguous_mark``), so a run killed at any moment resumes from there, like events.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..client import KlaviyoClient, Page
from ..timeutil import iso, normalize_iso, parse_datetime, utcnow

SLICES_PER_WORKER = 4
SPLIT_MIN_PAGES = 4
PAGES_PER_SLICE = 3  # planned ranges hold about this many pages, by the first page's density
# The bounded ranges end this long before the run's start: a profile changed during the run gets
# the server's "now" as its `updated`, which lands in the open range even if the server's clock
# is a few minutes behind ours, never in a bounded range that may already be finished.
CLOCK_MARGIN = timedelta(minutes=10)  # split a range only when it seems to hold at least this many pages more
PAGES_QUEUED = 8


@dataclass
class Slice:
    lo: datetime
    hi: datetime | None  # None: open-ended (the last range)
    done_until: str  # newest cursor value on its committed pages (ISO), or lo
    complete: bool = False
    newest: str | None = None  # newest cursor value seen in the range


def contiguous_mark(slices: list[Slice], start: str) -> str:
    """The cursor value below which every range is complete."""
    mark = start
    for s in sorted(slices, key=lambda s: s.lo):
        if not s.complete:
            return max(mark, s.done_until)
        mark = max(mark, s.newest or s.done_until)
    return mark


def _page_values(field: str, page: Page) -> list[str]:
    return [v for v in (normalize_iso((r.get("attributes") or {}).get(field)) for r in page.data) if v]


class SlicedPages:
    """Iterate ``(page, mark)``: every page of the stream's read from ``since`` (None: from the
    beginning), and the mark that may be committed with it."""

    def __init__(self, client: KlaviyoClient, path: str, stream, partition: tuple[str, ...],
                 since: str | None, workers: int, now: datetime | None = None):
        self.client, self.path, self.stream, self.partition = client, path, stream, partition
        self.since = since
        self.workers = max(1, workers)
        self.end = (now or utcnow()).replace(microsecond=0) - CLOCK_MARGIN
        self.field = stream.cursor.field
        self.slices: list[Slice] = []
        self.lock = threading.Lock()
        self.work: queue.Queue = queue.Queue()
        self.pages: queue.Queue = queue.Queue(maxsize=PAGES_QUEUED)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.requests_split = 0

    # -- the query of one range ---------------------------------------------------------------
    def _params(self, lo: datetime, hi: datetime | None) -> dict:
        params = self.stream.query(self.partition, iso(lo - self.stream.cursor.lookback))
        if hi is not None:
            flt = params["filter"]
            cond = f"less-than({self.field},{iso(hi)})"
            params["filter"] = f"and({flt[4:-1]},{cond})" if flt.startswith("and(") else f"and({flt},{cond})"
        return params

    # -- fetchers -------------------------------------------------------------------------------
    def _put(self, item) -> None:
        put_or_stop(self.pages, item, self.stopping)

    def _maybe_split(self, s: Slice, page: Page, values: list[str]) -> datetime | None:
        """Cut the rest of ``s`` in two when a fetcher would otherwise have nothing to take;
        returns where the fetcher's own part now ends, or None (no split)."""
        if s.hi is None or not self.work.empty() or len(values) < 2:
            return None
        first, last = parse_datetime(min(values)), parse_datetime(max(values))
        rest = (s.hi - last).total_seconds()
        per_second = len(page.data) / max((last - first).total_seconds(), 1.0)
        if rest < 2 or per_second * rest < SPLIT_MIN_PAGES * len(page.data):
            return None
        mid = (last + timedelta(seconds=rest / 2)).replace(microsecond=0)
        if not last < mid < s.hi:
            return None
        with self.lock:
            new = Slice(mid, s.hi, iso(mid))
            s.hi = mid
            self.slices.append(new)
        self.work.put(new)
        self.requests_split += 1
        return mid

    def _fetch(self) -> None:
        run_fetcher(self.work, self.stopping, self._put, self._read_range, lambda exc: (None, exc, None),
                    (None, None, None))

    def _read_range(self, s: Slice) -> None:
        lo = s.lo
        while True:
            restarted = False
            for page in self.client.paginate(self.path, self._params(lo, s.hi)):
                if self.stopping.is_set():
                    raise _Stop
                values = _page_values(self.field, page)
                self._put((s, page, values))
                if page.next_url and values:
                    mid = self._maybe_split(s, page, values)
                    if mid is not None:  # go on from the newest value seen, up to mid
                        lo = parse_datetime(max(values))
                        restarted = True
                        break
            if not restarted:
                break
        self._put((s, None, None))

    # -- the caller's side ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Page, str | None]]:
        first_params = self.stream.query(self.partition, self.since)
        pages = self.client.paginate(self.path, first_params)
        page = next(pages, None)
        if page is None:
            return
        values = _page_values(self.field, page)
        newest = max(values, default=None)
        more = page.next_url is not None
        pages.close()
        if not more or newest is None or self.workers < 2:
            yield page, None
            if more:  # no value to cut at (or one fetcher): read on sequentially
                yield from ((p, None) for p in self.client.paginate(page.next_url))
            return
        start = parse_datetime(newest)
        yield page, newest
        # As many ranges as the first page's density suggests pages left, a few pages each
        # (a small account is not read in 32 near-empty requests), at most 4 per worker.
        span = max((start - parse_datetime(min(values))).total_seconds(), 1.0)
        pages_left = len(page.data) / span * max((self.end - start).total_seconds(), 0.0) / max(len(page.data), 1)
        self._plan(start, max(1, min(SLICES_PER_WORKER * self.workers, math.ceil(pages_left / PAGES_PER_SLICE))))
        yield from self._run(newest)

    def _plan(self, start: datetime, count: int) -> None:
        end = max(self.end, start)
        if end > start:
            count = max(1, min(count, int((end - start).total_seconds())))
            bounds = [(start + (end - start) * i / count).replace(microsecond=0) for i in range(count)] + [end]
            for a, b in zip(bounds, bounds[1:]):
                if b > a:
                    self.slices.append(Slice(a, b, iso(a)))
        for s in self.slices:
            self.work.put(s)
        # The open range is read last, by the caller's thread, once every bounded range is done:
        # a profile changed during the run moves into it, so a full pass still sees it (a pass
        # that missed it would take it for deleted).
        self.open = Slice(end, None, iso(end))
        self.slices.append(self.open)

    def _run(self, start_mark: str) -> Iterator[tuple[Page, str]]:
        for _ in range(min(self.workers, self.work.qsize())):
            t = threading.Thread(target=self._fetch, name=f"slice-{len(self.threads)}", daemon=True)
            self.threads.append(t)
            t.start()
        running = len(self.threads)
        try:
            while running:
                try:
                    s, page, values = self.pages.get(timeout=0.2)  # short steps: signals reach the main thread
                except queue.Empty:
                    continue
                if s is None:
                    if page is None:
                        running -= 1
                        continue
                    raise page
                with self.lock:
                    if page is None:
                        s.complete = True
                    else:
                        if values:
                            top = max(values)
                            s.done_until = max(s.done_until, top)
                            s.newest = max(s.newest or top, top)
                    mark = contiguous_mark(self.slices, start_mark)
                yield page, mark
            s = self.open
            for page in self.client.paginate(self.path, self._params(s.lo, None)):
                values = _page_values(self.field, page)
                with self.lock:
                    if values:
                        top = max(values)
                        s.done_until = max(s.done_until, top)
                        s.newest = max(s.newest or top, top)
                    mark = contiguous_mark(self.slices, start_mark)
                yield page, mark
            with self.lock:
                s.complete = True
                mark = contiguous_mark(self.slices, start_mark)
            yield None, mark
        finally:
            self.stopping.set()
            for t in self.threads:
                t.join(timeout=2.0)


class _Stop(Exception):
    """Raised in a fetcher thread when the run is stopping: it ends without handing over more."""


def put_or_stop(pages: queue.Queue, item, stopping: threading.Event) -> None:
    """Hand ``item`` to the writer through the bounded queue ``pages``; a fetcher blocked on a
    full queue looks at ``stopping`` every 0.2 s and raises ``_Stop`` once it is set (the
    fetchers of sliced reads and of events share this)."""
    while not stopping.is_set():
        try:
            pages.put(item, timeout=0.2)
            return
        except queue.Full:
            continue
    raise _Stop


def run_fetcher(work: queue.Queue, stopping: threading.Event, put: Callable[[object], None],
                read: Callable[[object], None], failed: Callable[[BaseException], object], ended: object,
                idle: Callable[[], bool] | None = None) -> None:
    """A fetcher thread (of sliced reads and of events): ``read`` each piece of work taken off
    ``work`` until none is left (with ``idle``: until it says none may come; it waits for
    some, then says whether to look again) or the run stops; an exception is handed to the
    writer as ``failed(exc)`` (the writer raises it), and the thread's end as ``ended``."""
    try:
        while not stopping.is_set():
            try:
                item = work.get_nowait()
            except queue.Empty:
                if idle is None or not idle():
                    return
                continue
            read(item)
    except _Stop:
        pass
    except BaseException as exc:  # handed to the writer, which raises it
        try:
            put(failed(exc))
        except _Stop:
            pass
    finally:
        try:
            put(ended)  # this fetcher is finished
        except _Stop:
            pass


def pages_of(client: KlaviyoClient, path: str, stream, partition: tuple[str, ...], since: str | None,
             workers: int = 1) -> Iterator[tuple[Page | None, str | None]]:
    """``(page, mark)`` of one pass: sequential (mark None: the caller's newest value) with one
    worker or no cursor, else in parallel ranges (``SlicedPages``; a ``None`` page means a range
    finished and only the mark moves)."""
    if workers > 1 and stream.cursor is not None:
        return iter(SlicedPages(client, path, stream, partition, since, workers))
    return ((page, None) for page in client.paginate(path, stream.query(partition, since)))
