"""Klaviyo's attribution of events (``GET /api/events?include=attributions``): rows for the
``event_attributions`` table, written by the events writer in the same transaction as the
page's events, and the record of which event windows were fetched with their attributions
(a database synced before attributions existed has none: `status` says so)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlite_utils import Database

from .. import db as store
from ..timeutil import iso, parse_datetime
from .declare import TEXT, Column, TableSpec

COVERED_KEY = "attributions.covered"
ATTRIBUTIONS_SPEC = TableSpec("event_attributions", "Klaviyo's attribution of events (GET "
    "/api/events?include=attributions): which campaign or flow message, through which touch (attributed event), "
    "earned the event. Written with the event; an event without a row is organic (or was synced before "
    "attributions were kept).", (
    Column("id", TEXT, "Klaviyo's attribution id (primary key)."),
    Column("event_id", TEXT, "The attributed event (events.id), e.g. a Placed Order."),
    Column("attributed_event_id", TEXT, "The touch that earned it (events.id): the opened or clicked email, the "
           "clicked or received SMS, the opened push. May not be stored (outside the synced window)."),
    Column("campaign_id", TEXT, "The campaign credited (campaigns.id); empty for a flow."),
    Column("campaign_message_id", TEXT, "The campaign message credited (campaign_messages.id)."),
    Column("flow_id", TEXT, "The flow credited (flows.id); empty for a campaign."),
    Column("flow_message_id", TEXT, "The flow message credited (flow_messages.id)."),
    Column("flow_message_variation_id", TEXT, "The flow message's A/B variation credited, when Klaviyo names one."),
))
ATTRIBUTION_UPSERT = store.upsert_sql("event_attributions", store.ATTRIBUTION_COLUMNS)
# The relationships of an attribution resource that make its row, in ATTRIBUTION_COLUMNS order.
ATTRIBUTION_RELATIONSHIPS = ("event", "attributed-event", "campaign", "campaign-message", "flow", "flow-message",
                             "flow-message-variation")


def attribution_rows(included: Iterable[dict]) -> list[tuple]:
    """Rows (in ATTRIBUTION_COLUMNS order) of the ``attribution`` resources of a page."""
    rows = []
    for r in included:
        if r.get("type") != "attribution" or not r.get("id"):
            continue
        rel = r.get("relationships") or {}
        ids = []
        for name in ATTRIBUTION_RELATIONSHIPS:
            data = (rel.get(name) or {}).get("data")
            ids.append(data.get("id") if isinstance(data, dict) else None)
        if ids[0]:
            rows.append((r["id"], *ids))
    return rows


def attributed_event_ids(events: Iterable[dict]) -> list[str]:
    """Ids of the events whose ``relationships.attributions`` came with the page (their stored
    attributions are replaced by the page's: Klaviyo revises attribution for a few days)."""
    out = []
    for e in events:
        rel = (e.get("relationships") or {}).get("attributions")
        if isinstance(rel, dict) and isinstance(rel.get("data"), list):
            out.append(e["id"])
    return out


def write_attributions(db: Database, event_ids: Sequence[str], rows: Sequence[tuple]) -> int:
    """Replace the attributions of these events with ``rows``; return the rows written. Runs in
    the caller's transaction (the one that writes the events)."""
    if event_ids:
        keep = {r[0] for r in rows}
        # One indexed query per page, always the same SQL (an IN list of the page's length would
        # fill the statement cache with a new statement per length).
        stale = [(r[0],) for r in db.execute(
            "SELECT id FROM event_attributions WHERE event_id IN (SELECT value FROM json_each(?))",
            [json.dumps(list(event_ids))]) if r[0] not in keep]
        if stale:
            db.conn.executemany("DELETE FROM event_attributions WHERE id = ?", stale)
    return store.write_rows(db, ATTRIBUTION_UPSERT, rows) if rows else 0


# -- which windows were fetched with attributions ---------------------------------------------
def covered(db: Database) -> list[list[str]]:
    """The [start, end) windows (ISO UTC) whose events were fetched with their attributions, merged."""
    raw = store.get_state(db, COVERED_KEY)
    return json.loads(raw) if raw else []


def add_covered(db: Database, start: str, end: str) -> None:
    """Record that every event in [start, end) was fetched with its attributions."""
    spans = sorted([*covered(db), [start, end]])
    merged: list[list[str]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    store.set_state(db, COVERED_KEY, json.dumps(merged))


def uncovered_events(db: Database, count: bool = True) -> dict | None:
    """Stored events outside every covered window (synced before attributions were kept):
    {events, first, last}, or None when there are none. Counts by datetime ranges (indexed);
    without ``count`` only first and last are looked up (two index seeks per gap, not a scan of
    it: 0.6 s of CPU for 5,000,000 uncovered events) and ``events`` is None."""
    gaps, lo = [], None
    for a, b in covered(db):
        gaps.append((lo, a))
        lo = b
    gaps.append((lo, None))
    n, first, last = 0, None, None
    for a, b in gaps:
        where = " AND ".join(w for w, v in (("datetime >= ?", a), ("datetime < ?", b)) if v is not None) or "1"
        params = [v for v in (a, b) if v is not None]
        if count:
            c, f, la = db.execute(f"SELECT count(*), min(datetime), max(datetime) FROM events WHERE {where}",
                                  params).fetchone()
        else:  # min() and max() alone, each in its own query, are index seeks
            f = db.execute(f"SELECT min(datetime) FROM events WHERE {where}", params).fetchone()[0]
            la = db.execute(f"SELECT max(datetime) FROM events WHERE {where}", params).fetchone()[0]
            c = 1 if f is not None else 0
        if c:
            n += c
            first = f if first is None else min(first, f)
            last = la if last is None else max(last, la)
    return {"events": n if count else None, "first": first, "last": last} if n else None


def refill_args(missing: dict) -> str:
    """``--since FIRST --until LAST+1s``: the sync-events window that re-fetches these events
    (upserted unchanged) with their attributions."""
    until = parse_datetime(missing["last"]) + timedelta(seconds=1)
    return f"--since {missing['first']} --until {iso(until)}"
