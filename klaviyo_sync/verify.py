"""verify: compare the local events, per metric and local day, with Klaviyo's own counts
(``POST /api/metric-aggregates``), and repair the hours that differ.

Both sides are bucketed the same way: a day is [local midnight, next local midnight) in the
chosen IANA zone, as UTC instants, so a 23- or 25-hour DST day is counted exactly. Locally that
is one indexed range count per metric and day on ``events(metric_id, datetime)``; on Klaviyo's
side one request per metric per window of at most 180 days with ``interval=day`` (its ``dates``
are the UTC instants of the local bucket starts, turned back into local dates here).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlite_utils import Database

from .client import KlaviyoClient
from .errors import ApiError, AuthError, UsageError
from .timeutil import VERIFY_MAX_DAYS, Window, iso, parse_datetime, parse_range

AGGREGATES_PATH = "/api/metric-aggregates"
MAX_WINDOW_DAYS = 180  # ~253 days at interval=day has worked [obs]; stay well inside
# Row statuses, snake_case as in every machine-readable field.
OK, MISSING, EXTRA, UNSETTLED, UNVERIFIABLE = ("ok", "missing_locally", "extra_locally", "unsettled",
                                               "unverifiable")
FIELDS = ["metric_id", "metric", "day", "local", "klaviyo", "difference", "status"]
REPAIR_FIELDS = ["local_before", "repaired"]


def zone_for(name: str) -> ZoneInfo:
    try:
        if not name or name != name.strip():
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone: unknown time zone {name!r} (an IANA name such as UTC or "
                         "America/New_York; case matters)") from None


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant of local midnight starting ``day`` (after a gap at midnight: its end)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


@dataclass
class Plan:
    zone: ZoneInfo
    days: list[date]  # settled and unsettled, oldest first; never today or later
    unsettled_from: date  # days on or after this one are unsettled
    metrics: list[tuple[str, str]]  # (id, name)


_ABSOLUTE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})?\s*$")


def plan_days(range_text: str, zone: ZoneInfo, now: datetime, settle: int) -> tuple[list[date], date]:
    """Local days of the range, without today and the future, and the first unsettled day.

    An absolute range (``2026-11-01..2026-11-20``) names local days in the zone; a relative one
    (``30d``) covers the local days from the one holding its start to yesterday."""
    try:
        window = parse_range(range_text, now, VERIFY_MAX_DAYS, " per run (split a longer check into several runs)")
    except ValueError as exc:
        raise UsageError(f"--range: {exc}") from None
    today = local_day(now, zone)
    yesterday = today - timedelta(days=1)
    m = _ABSOLUTE.match(range_text)
    if m:
        first = date.fromisoformat(m.group(1))
        last = date.fromisoformat(m.group(2)) if m.group(2) else yesterday
    else:
        first, last = local_day(window.start, zone), yesterday
    last = min(last, yesterday)
    if first > last:
        raise UsageError(f"--range {range_text.strip()!r} holds no whole day before today ({today} in {zone.key})")
    return [first + timedelta(days=k) for k in range((last - first).days + 1)], today - timedelta(days=settle)


def chunks(days: list[date], size: int = MAX_WINDOW_DAYS) -> list[list[date]]:
    return [days[k:k + size] for k in range(0, len(days), size)]


def aggregate_body(metric_id: str, start: datetime, end: datetime, zone: ZoneInfo, interval: str) -> dict:
    return {"data": {"type": "metric-aggregate", "attributes": {
        "metric_id": metric_id, "measurements": ["count"], "interval": interval,
        "timezone": zone.key,
        "filter": [f"greater-or-equal(datetime,{iso(start)})", f"less-than(datetime,{iso(end)})"],
    }}}


def fetch_counts(client: KlaviyoClient, metric_id: str, start: datetime, end: datetime, zone: ZoneInfo,
                 interval: str) -> dict[datetime, int]:
    """{UTC bucket start: Klaviyo's count} for [start, end); ``data: []`` means zeros."""
    doc = client.request("POST", AGGREGATES_PATH,
                         json_body=aggregate_body(metric_id, start, end, zone, interval), expect="object")
    attrs = (doc.get("data") or {}).get("attributes") or {}
    dates = [parse_datetime(d) for d in attrs.get("dates") or []]
    rows = attrs.get("data") or []
    values = rows[0].get("measurements", {}).get("count") if rows else None
    if values is None:
        values = [0] * len(dates)
    if len(values) != len(dates):
        raise ApiError(f"POST {AGGREGATES_PATH}: {len(values)} counts for {len(dates)} dates",
                       endpoint=AGGREGATES_PATH)
    return {d: int(v) for d, v in zip(dates, values)}


def local_count(db: Database, metric_id: str, start: datetime, end: datetime) -> int:
    return db.execute("SELECT count(*) FROM events WHERE metric_id = ? AND datetime >= ? AND datetime < ?",
                      [metric_id, iso(start), iso(end)]).fetchone()[0]


def classify(local: int, klaviyo: int | None, unsettled: bool) -> str:
    if klaviyo is None:
        return UNVERIFIABLE
    if unsettled:
        return UNSETTLED
    return OK if local == klaviyo else (MISSING if local < klaviyo else EXTRA)


@dataclass
class Outcome:
    rows: list[dict] = field(default_factory=list)
    unverifiable: dict[str, str] = field(default_factory=dict)  # metric id -> Klaviyo's reason
    not_asked: dict[str, str] = field(default_factory=dict)  # refused lately: metric id -> when (not asked)
    asked_again: dict[str, str] = field(default_factory=dict)  # refused before, asked again: id -> when
    requests: int = 0
    repaired_hours: list[tuple[datetime, datetime, list[str]]] = field(default_factory=list)

    def differing(self) -> list[dict]:
        return [r for r in self.rows if r["status"] in (MISSING, EXTRA)]


def check(client: KlaviyoClient, db: Database, plan: Plan, *, outcome: Outcome | None = None) -> Outcome:
    """One row per metric and day: local count, Klaviyo's, difference (local - Klaviyo), status."""
    out = outcome or Outcome()
    zone = plan.zone
    for metric_id, name in plan.metrics:
        theirs: dict[date, int] | None = {}
        if metric_id in out.not_asked:  # refused lately (unverifiable_metrics): not asked again yet
            out.unverifiable[metric_id] = f"Klaviyo refused to aggregate it at {out.not_asked[metric_id]}"
            theirs = None
        for part in chunks(plan.days) if theirs is not None else []:
            start, end = day_start(part[0], zone), day_start(part[-1] + timedelta(days=1), zone)
            try:
                counts = fetch_counts(client, metric_id, start, end, zone, "day")
            except AuthError as exc:
                if exc.status == 403:
                    raise AuthError(f"verify: permission denied: the API key lacks the metrics:read scope "
                                    f"({exc})", status=403, endpoint=AGGREGATES_PATH) from None
                raise
            except ApiError as exc:
                if exc.status != 400:
                    raise
                # Klaviyo does not aggregate custom metrics: not a failure, a metric we cannot check.
                out.unverifiable[metric_id] = str(exc)
                theirs = None
                break
            finally:
                out.requests += 1
            for instant, value in counts.items():
                d = local_day(instant, zone)
                theirs[d] = theirs.get(d, 0) + value
        for d in plan.days:
            local = local_count(db, metric_id, day_start(d, zone), day_start(d + timedelta(days=1), zone))
            klaviyo = None if theirs is None else theirs.get(d, 0)
            out.rows.append({
                "metric_id": metric_id, "metric": name, "day": d.isoformat(), "local": local,
                "klaviyo": klaviyo, "difference": None if klaviyo is None else local - klaviyo,
                "status": classify(local, klaviyo, d >= plan.unsettled_from),
            })
    return out


def differing_hours(client: KlaviyoClient, db: Database, metric_id: str, day: date,
                    zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The hours of a local day whose counts differ, from the same request with interval=hour."""
    start, end = day_start(day, zone), day_start(day + timedelta(days=1), zone)
    counts = fetch_counts(client, metric_id, start, end, zone, "hour")
    hours = []
    for instant in sorted(counts):
        h_start, h_end = max(instant, start), min(instant + timedelta(hours=1), end)
        if h_end > h_start and local_count(db, metric_id, h_start, h_end) != counts[instant]:
            hours.append((h_start, h_end))
    return hours


def repair_windows(hours: dict[tuple[datetime, datetime], set[str]]) -> list[tuple[Window, list[str]]]:
    """Hour windows to re-sync, adjacent hours with the same metrics merged into one window."""
    out: list[tuple[Window, list[str]]] = []
    for (a, b), metrics in sorted(hours.items()):
        ids = sorted(metrics)
        if out and out[-1][0].end == a and out[-1][1] == ids:
            out[-1] = (Window(out[-1][0].start, b, "repair"), ids)
        else:
            out.append((Window(a, b, "repair"), ids))
    return out


def repair(client: KlaviyoClient, db: Database, plan: Plan, outcome: Outcome,
           resync: Callable[[Window, list[str]], None]) -> Outcome:
    """Narrow each differing settled day to its hours, re-sync those (``resync(window,
    metric_ids)``, each its own run), then count those days again. Nothing is deleted."""
    zone = plan.zone
    hours: dict[tuple[datetime, datetime], set[str]] = {}
    for row in outcome.differing():
        day = date.fromisoformat(row["day"])
        found = differing_hours(client, db, row["metric_id"], day, zone)
        outcome.requests += 1
        for h in found:
            hours.setdefault(h, set()).add(row["metric_id"])
    for window, metric_ids in repair_windows(hours):
        resync(window, metric_ids)
        outcome.repaired_hours.append((window.start, window.end, metric_ids))
    touched = {(m, local_day(a, zone).isoformat()) for (a, _), ms in hours.items() for m in ms}
    for row in outcome.rows:
        row["local_before"] = row["local"]
        row["repaired"] = (row["metric_id"], row["day"]) in touched
        if row["repaired"] or row["status"] in (MISSING, EXTRA):
            d = date.fromisoformat(row["day"])
            row["local"] = local_count(db, row["metric_id"], day_start(d, zone),
                                       day_start(d + timedelta(days=1), zone))
            row["difference"] = row["local"] - row["klaviyo"]
            row["status"] = classify(row["local"], row["klaviyo"], d >= plan.unsettled_from)
    return outcome


def save_results(db: Database, run_id: int, zone: ZoneInfo, rows: list[dict], checked_at: datetime) -> None:
    with db.atomic():
        db.conn.executemany(
            "INSERT OR REPLACE INTO verify_results (run_id, metric_id, metric, day, timezone, local, klaviyo, "
            "difference, status, local_before, repaired, checked_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(run_id, r["metric_id"], r["metric"], r["day"], zone.key, r["local"], r["klaviyo"],
              r["difference"], r["status"], r.get("local_before", r["local"]), int(bool(r.get("repaired"))),
              iso(checked_at)) for r in rows])


RETRY_UNVERIFIABLE_DAYS = 7  # how long a metric Klaviyo refused to aggregate is not asked again


def plan_unverifiable(db: Database, plan: Plan, now: datetime, retry: bool, outcome: Outcome) -> None:
    """Metrics of the plan that Klaviyo refused to aggregate: not asked again (``not_asked``) if
    refused within RETRY_UNVERIFIABLE_DAYS days, else (or with ``retry``) asked again (``asked_again``)."""
    due = iso(now - timedelta(days=RETRY_UNVERIFIABLE_DAYS))
    wanted = {metric_id for metric_id, _ in plan.metrics}
    for metric_id, refused_at in db.execute("SELECT metric_id, refused_at FROM unverifiable_metrics"):
        if metric_id in wanted:
            ask = retry or not refused_at or refused_at <= due
            (outcome.asked_again if ask else outcome.not_asked)[metric_id] = refused_at or ""


def remember_unverifiable(db: Database, plan: Plan, outcome: Outcome, now: datetime) -> None:
    """Remember the metrics Klaviyo refused this time (with when); forget those it aggregated."""
    names = dict(plan.metrics)
    asked = [m for m in names if m not in outcome.not_asked]
    with db.atomic():
        for metric_id in asked:
            if metric_id in outcome.unverifiable:
                db.execute(
                    "INSERT INTO unverifiable_metrics (metric_id, metric, reason, first_refused_at, refused_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(metric_id) DO UPDATE SET metric = excluded.metric, "
                    "reason = excluded.reason, refused_at = excluded.refused_at",
                    [metric_id, names[metric_id], outcome.unverifiable[metric_id], iso(now), iso(now)])
            else:
                db.execute("DELETE FROM unverifiable_metrics WHERE metric_id = ?", [metric_id])


def last_verify(db: Database) -> dict | None:
    """The latest verify run that stored results: when, the range and how far off the copy was."""
    row = db.execute("SELECT max(run_id) FROM verify_results").fetchone()
    if not row or row[0] is None:
        return None
    run_id = row[0]
    r = db.execute(
        """SELECT min(checked_at), min(day), max(day), min(timezone), count(DISTINCT metric_id),
                  sum(status IN ('missing_locally', 'extra_locally')),
                  coalesce(sum(CASE WHEN status = 'missing_locally' THEN -difference END), 0),
                  coalesce(sum(CASE WHEN status = 'extra_locally' THEN difference END), 0),
                  sum(status = 'unsettled'), count(DISTINCT CASE WHEN status = 'unverifiable' THEN metric_id END),
                  sum(repaired)
           FROM verify_results WHERE run_id = ?""", [run_id]).fetchone()
    keys = ["checked_at", "first_day", "last_day", "timezone", "metrics", "days_differ",
            "events_missing_locally", "events_extra_locally", "unsettled_days", "unverifiable_metrics",
            "repaired_days"]
    return {"run_id": run_id, **dict(zip(keys, r))}
