"""Reads of the attribution rules (db.m007_attributions) for `attribution` and `conversion-lag`.

The rules (which touch earns which event) live in db.py only: Klaviyo's model is the view
attributed_conversions, the session model the template its view is made of
(db.session_conversions_sql), run here restricted to the metric and range before its window
pass. These are thin queries that group their rows over a range of whole UTC days, counting
each conversion on its own datetime.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlite_utils import Database

from .db import LAG_BUCKETS, SESSION_EMAIL_HOURS, SESSION_SMS_HOURS, is_attributed, lag_sql, session_conversions_sql
from .queries import dict_rows
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
_ATTRIBUTED = is_attributed("v")
_RANGE = "v.metric_id = :metric AND v.datetime >= :lo AND v.datetime < :hi"


def _source(model: str, lo: str) -> tuple[str, dict]:
    """The rows of ``model`` for the :metric in [:lo, :hi), as an SQL source aliased ``v``, and
    its extra parameters. The session model considers the touches from its longest window
    before the range on (an older touch has expired by the range's first second)."""
    if model == "klaviyo":
        return "attributed_conversions", {}
    back = datetime.strptime(lo, "%Y-%m-%dT%H:%M:%SZ") - timedelta(hours=max(SESSION_EMAIL_HOURS, SESSION_SMS_HOURS))
    sql = session_conversions_sql("e.metric_id = :metric AND e.datetime >= :lo AND e.datetime < :hi",
                                  "t.datetime >= :touch_lo AND t.datetime < :hi")
    return f"({sql})", {"touch_lo": back.strftime("%Y-%m-%dT%H:%M:%SZ")}


def day_range(window: Window) -> tuple[str, str, str, str]:
    """(first day, last day, lo, hi): the whole UTC days a range touches, and their bounds as
    stored datetimes [lo, hi)."""
    first = window.start.date()
    last = (window.end - timedelta(seconds=1)).date()
    return first.isoformat(), last.isoformat(), f"{first.isoformat()}T00:00:00Z", \
        f"{(last + timedelta(days=1)).isoformat()}T00:00:00Z"


def attribution(db: Database, window: Window, metric_id: str | None, by: str, model: str) -> list[dict]:
    """Conversions and revenue of ``metric_id`` per group over the range's whole UTC days; with a
    ``group: None`` row (not for ``by='day'``) holding the rest, so the rows add up to every
    conversion event of the range."""
    first, last, lo, hi = day_range(window)
    view, extra = _source(model, lo)
    where = _RANGE
    params = {"metric": metric_id, "lo": lo, "hi": hi, **extra}
    totals = "count(*) AS conversions, round(coalesce(sum(v.value), 0), 2) AS revenue"
    if by == "day":
        sql = f"""SELECT v.day AS "group", v.day AS name, {totals},
                         sum({_ATTRIBUTED}) AS attributed_conversions,
                         round(coalesce(sum(CASE WHEN {_ATTRIBUTED} THEN v.value END), 0), 2) AS attributed_revenue
                  FROM {view} v WHERE {where} GROUP BY v.day"""
        got = {r["group"]: r for r in dict_rows(db.execute(sql, params))}
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
    rows = dict_rows(db.execute(sql, params))
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
    view, extra = _source(model, lo)
    params = {"metric": metric_id, "lo": lo, "hi": hi, **extra}
    # One pass over the range's rows (materialized once): every conversion counted, and the
    # attributed ones per bucket of hours (lag_sql, the rule of the conversion_lag view).
    got, total, attributed = {}, 0, 0
    for part, bucket, n, value in db.execute(
            f"""WITH r AS MATERIALIZED (SELECT v.* FROM {view} v WHERE {_RANGE})
                SELECT 'all', NULL, count(*), coalesce(sum({is_attributed("r")}), 0) FROM r
                UNION ALL
                SELECT 'bucket', l.lag_bucket, count(*), round(coalesce(sum(l.value), 0), 2)
                FROM ({lag_sql(model, "r")}) l GROUP BY l.lag_bucket""", params):
        if part == "all":
            total, attributed = n, value
        else:
            got[bucket] = {"conversions": n, "revenue": value}
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
