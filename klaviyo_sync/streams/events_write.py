"""Events, writing: the tables a page lands in, the high-water mark's key, the wait for the
next page, and the index rebuild around a backfill. One writer (the calling thread) commits."""

from __future__ import annotations

import contextlib
import queue

from sqlite_utils import Database

from .. import db as store
from ..timeutil import parse_datetime
from .attributions import write_attributions
from .engine import SyncResult, Table
from .events_fetch import _DONE, EventSlice, _Rows
from .metrics import METRICS_TABLE

EVENTS_MARK = "events.mark"
MAX_PAGES_PER_COMMIT = 8
MAX_SECONDS_PER_COMMIT = 0.5

EVENTS_TABLE = Table("events", tuple(store.EVENT_COLUMNS), immutable=True)  # events never change
# Profiles as events include them: the base columns only (consent comes from sync-profiles and is
# left alone), never over a newer version of the same profile, never over a deleted one (tombstone).
EVENT_PROFILES_TABLE = Table("profiles", tuple(store.PROFILE_COLUMNS), newer="updated", tombstone="deleted_at")
METRIC_UPSERT = METRICS_TABLE.upsert
PROFILE_UPSERT = EVENT_PROFILES_TABLE.upsert
EVENT_UPSERT = EVENTS_TABLE.upsert


def mark_key(metric_ids: list[str] | None) -> str:
    return EVENTS_MARK if not metric_ids else f"{EVENTS_MARK}:metric={','.join(sorted(metric_ids))}"


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


def apply_page(db: Database, result: SyncResult, s: EventSlice, item) -> None:
    """Write one item of the fetchers' queue (inside the caller's transaction): a page's rows,
    profiles and metrics first so its joins are whole when it lands; or a slice's end."""
    if item is _DONE:
        s.complete = True
        s.done_until = s.end
        return
    rows: _Rows = item
    result.add_rows("metrics", store.write_rows(db, METRIC_UPSERT, rows.metrics))
    result.add_rows("profiles", store.write_rows(db, PROFILE_UPSERT, rows.profiles))
    result.add_rows("events", store.write_rows(db, EVENT_UPSERT, rows.events))
    result.add_rows("attributions", write_attributions(db, rows.attributed, rows.attributions))
    result.pages += 1
    result.extra["events_seen"] = result.extra.get("events_seen", 0) + len(rows.events)
    if rows.dropped:
        result.extra["dropped_outside_window"] = result.extra.get("dropped_outside_window", 0) + rows.dropped
    if rows.last_datetime:
        s.done_until = max(s.done_until, parse_datetime(rows.last_datetime))
