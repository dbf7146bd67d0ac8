"""Reads of the attribution views (db.m007_attributions) for `attribution` and `conversion-lag`.

The rules (which touch earns which event) live in the views only; these are thin queries that
group their rows over a range of whole UTC days, counting each conversion on its own datetime.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlite_utils import Database

from .db import LAG_BUCKETS
from .timeutil import Window

MODELS = {"klaviyo": "attributed_conversions", "session": "session_attributed_conversions"}
GROUPINGS = ("campaign", "flow", "message", "channel", "day")
# The name of the row that holds what is not attributed to a group of that kind.
NULL_NAMES = {
    "campaign": "not attributed to a campaign (organic or a flow)",
    "flow": "not attributed to a flow (organic or a campaign)",
    "message": "not attributed to a message (organic)",
    "channel": "not attributed (organic)",
}
# The keys each grouping adds after group, name, conversions, revenue.
EXTRA = {"campaign": ("channel", "send_time"), "flow": (), "message": ("kind", "parent_id", "channel"),
         "channel": ()}
ATTRIBUTION_TABLE = [
    ("group", "Group", "text"), ("name", "Name", "text"), ("conversions", "Conversions", "int"),
    ("revenue", "Revenue", "money"),
]
ATTRIBUTION_DAY_TABLE = ATTRIBUTION_TABLE + [
    ("attributed_conversions", "Attributed", "int"), ("attributed_revenue", "Attributed revenue", "money"),
]
LAG_TABLE = [
    ("bucket", "Hours after the touch", "text"), ("conversions", "Conversions", "int"),
    ("revenue", "Revenue", "money"), ("share", "Share", "rate"),
]
_ATTRIBUTED = "coalesce(v.campaign_id, v.flow_id, v.message_id) IS NOT NULL"


def day_range(window: Window) -> tuple[str, str, str, str]:
    """(first day, last day, lo, hi): the whole UTC days a range touches, and their bounds as
    stored datetimes [lo, hi)."""
    first = window.start.date()
    last = (window.end - timedelta(seconds=1)).date()
    return first.isoformat(), last.isoformat(), f"{first.isoformat()}T00:00:00Z", \
        f"{(last + timedelta(days=1)).isoformat()}T00:00:00Z"


def _rows(cursor) -> list[dict]:
    cols = [c[0] for c in cursor.description]
    return [dict(zip(cols, r)) for r in cursor.fetchall()]


def attribution(db: Database, window: Window, metric_id: str | None, by: str, model: str) -> list[dict]:
    """Conversions and revenue of ``metric_id`` per group over the range's whole UTC days; with a
    ``group: None`` row (not for ``by='day'``) holding the rest, so the rows add up to every
    conversion event of the range."""
    view = MODELS[model]
    first, last, lo, hi = day_range(window)
    where = "v.metric_id = ? AND v.datetime >= ? AND v.datetime < ?"
    params = [metric_id, lo, hi]
    totals = "count(*) AS conversions, round(coalesce(sum(v.value), 0), 2) AS revenue"
    if by == "day":
        sql = f"""SELECT v.day AS "group", v.day AS name, {totals},
                         sum({_ATTRIBUTED}) AS attributed_conversions,
                         round(coalesce(sum(CASE WHEN {_ATTRIBUTED} THEN v.value END), 0), 2) AS attributed_revenue
                  FROM {view} v WHERE {where} GROUP BY v.day"""
        got = {r["group"]: r for r in _rows(db.execute(sql, params))}
        rows = []
        d, end = date.fromisoformat(first), date.fromisoformat(last)
        while d <= end:
            key = d.isoformat()
            rows.append(got.get(key) or {"group": key, "name": key, "conversions": 0, "revenue": 0.0,
                                         "attributed_conversions": 0, "attributed_revenue": 0.0})
            d += timedelta(days=1)
        return rows
    if by == "campaign":
        sql = f"""SELECT v.campaign_id AS "group", coalesce(c.name, v.campaign_id) AS name, {totals},
                         c.channel, c.send_time
                  FROM {view} v LEFT JOIN campaigns c ON c.id = v.campaign_id
                  WHERE {where} GROUP BY v.campaign_id"""
    elif by == "flow":
        sql = f"""SELECT v.flow_id AS "group", coalesce(f.name, v.flow_id) AS name, {totals}
                  FROM {view} v LEFT JOIN flows f ON f.id = v.flow_id
                  WHERE {where} GROUP BY v.flow_id"""
    elif by == "message":
        sql = f"""SELECT v.message_id AS "group", coalesce(cm.label, fm.name, v.message_id) AS name, {totals},
                         CASE WHEN v.message_id IS NULL THEN NULL
                              WHEN max(v.campaign_message_id) IS NOT NULL THEN 'campaign' ELSE 'flow' END AS kind,
                         coalesce(max(v.campaign_id), max(v.flow_id)) AS parent_id, max(v.channel) AS channel
                  FROM {view} v
                  LEFT JOIN campaign_messages cm ON cm.id = v.message_id
                  LEFT JOIN flow_messages fm ON fm.id = v.message_id
                  WHERE {where} GROUP BY v.message_id"""
    elif by == "channel":
        sql = f"""SELECT v.channel AS "group", v.channel AS name, {totals}
                  FROM {view} v WHERE {where} GROUP BY v.channel"""
    else:
        raise ValueError(by)
    rows = _rows(db.execute(sql, params))
    groups = [r for r in rows if r["group"] is not None]
    groups.sort(key=lambda r: (-r["revenue"], -r["conversions"], r["group"]))
    null = next((r for r in rows if r["group"] is None), None)
    if null is None:
        null = {"group": None, "name": None, "conversions": 0, "revenue": 0.0, **dict.fromkeys(EXTRA[by])}
    null["name"] = NULL_NAMES[by]
    return groups + [null]


def conversion_lag(db: Database, window: Window, metric_id: str | None, model: str) -> tuple[list[dict], dict]:
    """Attributed conversions of the range per bucket of hours between the touch and the
    conversion (every bucket, zeros included), and {attributed, touch_not_stored, organic}."""
    first, last, lo, hi = day_range(window)
    got = {r["lag_bucket"]: r for r in _rows(db.execute(
        """SELECT lag_bucket, count(*) AS conversions, round(coalesce(sum(value), 0), 2) AS revenue
           FROM conversion_lag WHERE model = ? AND metric_id = ? AND datetime >= ? AND datetime < ?
           GROUP BY lag_bucket""", [model, metric_id, lo, hi]))}
    view = MODELS[model]
    total, attributed = db.execute(
        f"SELECT count(*), coalesce(sum({_ATTRIBUTED}), 0) FROM {view} v "
        "WHERE v.metric_id = ? AND v.datetime >= ? AND v.datetime < ?", [metric_id, lo, hi]).fetchone()
    known = sum(r["conversions"] for k, r in got.items() if k is not None)
    rows = []
    for a, b in LAG_BUCKETS:
        label = f"{a}-{b}h" if b is not None else f"{a}h+"
        r = got.get(label, {"conversions": 0, "revenue": 0.0})
        rows.append({"bucket": label, "from_hours": a, "to_hours": b, "conversions": r["conversions"],
                     "revenue": r["revenue"], "share": r["conversions"] / known if known else 0.0})
    counts = {"conversions": total, "attributed": attributed,
              "touch_not_stored": got.get(None, {"conversions": 0})["conversions"], "organic": total - attributed}
    return rows, counts
