"""Events, writing: the tables a page lands in, the high-water mark's key, the wait for the
next page, and the index rebuild around a backfill. One writer (the calling thread) commits."""

from __future__ import annotations

import contextlib
import queue
import time

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


POLL_S = 0.002  # the writer's wait between looks at an empty queue


def mark_key(metric_ids: list[str] | None) -> str:
    return EVENTS_MARK if not metric_ids else f"{EVENTS_MARK}:metric={','.join(sorted(metric_ids))}"


def _next_page(pages: queue.Queue):
    """The next page, however long it takes (see ``get_page``)."""
    while True:
        try:
            return get_page(pages, 0.2)
        except queue.Empty:
            continue


def get_page(pages: queue.Queue, timeout: float):
    """``pages.get(timeout=...)`` for the main thread, safe against signals.

    Ctrl-C and SIGTERM run their Python handlers only in the main thread, and only when it runs
    bytecode, so the writer never blocks in one endless get(). Nor does it wait inside
    ``Queue.get``: its ``Condition.wait`` releases the queue's lock before entering its
    ``try``, and an exception raised by a signal handler between the two leaves ``Queue.get``
    releasing a lock it no longer holds (found under load: SIGTERM ended a run with
    "RuntimeError: release unlocked lock" and exit 1 instead of 143). ``get_nowait`` never
    waits on the condition, and ``time.sleep`` is interrupted cleanly."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pages.get_nowait()
        except queue.Empty:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(POLL_S, left))


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
    inserted = store.write_rows(db, EVENT_UPSERT, rows.events)
    result.add_rows("events", inserted)
    # Attributions are stored only here, with their events: when every event of the page is new
    # to the database (a backfill), none has stored attributions to replace, so no look-up.
    replaced = () if inserted == len(rows.events) else rows.attributed
    result.add_rows("attributions", write_attributions(db, replaced, rows.attributions))
    result.pages += 1
    result.extra["events_seen"] = result.extra.get("events_seen", 0) + len(rows.events)
    if rows.dropped:
        result.extra["dropped_outside_window"] = result.extra.get("dropped_outside_window", 0) + rows.dropped
    if rows.last_datetime:
        s.done_until = max(s.done_until, parse_datetime(rows.last_datetime))
