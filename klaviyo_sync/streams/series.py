"""Daily series reports (forms, segments), counted in the account's days.

Klaviyo reads a report's custom timeframe in the account's time zone ("offset is ignored and the
company timezone is used"), so a day of a series report is a day of that zone. ``report_zone``
is the zone the ``account`` table holds (``sync-account``), or UTC with a warning when it is
unknown. A timeframe is sent as local wall-clock times *with the zone's offset*, so both
readings (the offset honoured, or ignored and the zone used) are the same instants.

The report endpoints share one quota (225 a day, 2 a minute) with the campaign and flow
reports: a spent quota raises ``RateLimitExceeded``, which ``sync_series`` turns into a partial run
(exit 6) keeping every day already stored. A (thing, day) row is read again until it was read a
day after the day ended in the account's zone (``SETTLE``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlite_utils import Database

from ..client import KlaviyoClient
from ..errors import ApiError, RateLimitExceeded
from ..timeutil import Window, iso
from .engine import SyncResult, Table



def _warn(text: str) -> None:
    print(f"klaviyo-sync: warning: {text}", file=sys.stderr)

BATCH = 100  # an any(...) filter takes at most 100 ids
SERIES_MAX_DAYS = 60  # a daily series may span at most 60 days
SETTLE = timedelta(days=1)
# In sync-all (hourly under cron), a day still settling is read again once it was read this long
# ago, not on every run (as flows.py does for flow days): the report quota (2 a minute, 225 a
# day, shared by four reports) is not spent on figures read minutes ago. The commands themselves
# (sync-forms, sync-segment-growth) read such days on every run.
SYNC_ALL_MAX_AGE = timedelta(hours=6)


def report_zone(db: Database | None, *, warn: bool = True) -> ZoneInfo:
    """The account's time zone from the ``account`` table (sync-account), or UTC (with a
    warning) when it is unknown (or there is no database yet: ``db`` None)."""
    name = None
    if db is not None and db["account"].exists():
        row = db.execute("SELECT timezone FROM account ORDER BY id LIMIT 1").fetchone()
        name = row[0] if row else None
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            if warn:
                _warn(f"the account's time zone {name!r} is unknown here: counting Klaviyo's days in UTC")
            return ZoneInfo("UTC")
    if warn:
        _warn("the account's time zone is unknown (run sync-account; scope accounts:read): "
              "counting Klaviyo's days in UTC")
    return ZoneInfo("UTC")


def local_days(window: Window, zone: ZoneInfo, now: datetime, *, earliest: date | None = None) -> list[date]:
    """The days (in ``zone``) a range touches, up to today there (and from ``earliest``)."""
    last = min(window.end - timedelta(seconds=1), now).astimezone(zone).date()
    first = window.start.astimezone(zone).date()
    if earliest is not None:
        first = max(first, earliest)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the day ``day`` of ``zone`` ends."""
    nxt = day + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(timezone.utc)


def local_iso(day: date, zone: ZoneInfo, hour: int = 0, minute: int = 0, second: int = 0) -> str:
    """Wall-clock ``day`` at the given time in ``zone``, with that moment's offset."""
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone).isoformat()


def timeframe(first: date, last: date, zone: ZoneInfo) -> dict:
    """Whole days first..last of ``zone`` (both ends inclusive), read alike whether a server
    honours the offset or reads the wall-clock time in the account's zone."""
    return {"start": local_iso(first, zone), "end": local_iso(last, zone, 23, 59, 59)}


def days_needed(db: Database, table: str, id_column: str, ids: Sequence[str], days: list[date],
                zone: ZoneInfo, now: datetime, max_age: timedelta = timedelta(0)) -> dict[str, list[date]]:
    """{id: days of ``days`` not stored, or read before the day had settled and more than
    ``max_age`` ago}."""
    if not days or not ids:
        return {}
    have = {(r[0], r[1]): r[2] for r in db.execute(
        f'SELECT "{id_column}", day, fetched_at FROM "{table}" WHERE day >= ? AND day <= ?',
        [days[0].isoformat(), days[-1].isoformat()])}
    settled = {d: iso(day_end(d, zone) + SETTLE) for d in days}
    stale = iso(now - max_age)
    out: dict[str, list[date]] = {}
    for i in ids:
        need = [d for d in days if (f := have.get((i, d.isoformat()))) is None or (f < settled[d] and f < stale)]
        if need:
            out[i] = need
    return out


def plan(needed: dict[str, list[date]]) -> list[tuple[list[str], date, date]]:
    """(ids <= 100, first day, last day <= 60 days on): ids needing the same span share requests."""
    by_span: dict[tuple[date, date], list[str]] = {}
    for key, days in sorted(needed.items()):
        by_span.setdefault((days[0], days[-1]), []).append(key)
    out = []
    for (lo, hi), ids in sorted(by_span.items()):
        for i in range(0, len(ids), BATCH):
            start = lo
            while start <= hi:
                end = min(hi, start + timedelta(days=SERIES_MAX_DAYS - 1))
                out.append((ids[i:i + BATCH], start, end))
                start = end + timedelta(days=1)
    return out


def any_filter(field: str, ids: Sequence[str]) -> str:
    return f"any({field},[{','.join(f'{chr(34)}{i}{chr(34)}' for i in ids)}])"


def fetch_series(client: KlaviyoClient, path: str, body: dict, span: int) -> tuple[list[dict], int]:
    """(results, number of days) of a daily series report, its ``links.next`` followed. The
    i-th value of a series is the i-th day of the timeframe; a series of another length is a
    malformed answer."""
    url: str | None = path
    results: list[dict] = []
    date_times: list = []
    seen: set[str] = set()
    while url:
        resp = client.request("POST", url, json_body=body, expect="object")
        attrs = (resp.get("data") or {}).get("attributes") or {}
        results.extend(attrs.get("results") or [])
        date_times = attrs.get("date_times") or date_times
        url = (resp.get("links") or {}).get("next")
        if url:
            client.check_origin(url)
            client.check_cursor(seen, url)
    if len(date_times) != span:
        raise ApiError(f"POST {path}: {len(date_times)} date_times for a {span}-day timeframe "
                       "(a malformed answer)", endpoint=path)
    return results, span


@dataclass(frozen=True)
class SeriesReport:
    """One daily series report, declared: where it is posted, what it counts per what, and what a
    spent quota leaves behind (the ``result.extra`` key and the partial line, with ``{missing}``
    and ``{of}``: the id-days not read and how many ids they belong to)."""

    path: str  # e.g. /api/form-series-reports
    type: str  # the request's type, e.g. form-series-report
    table: Table  # (id_column, day, *statistics, timezone, fetched_at)
    id_column: str  # the filter's and the grouping's field, e.g. form_id
    statistics: Sequence[str]
    missing_key: str
    partial: str
    group_by: bool = False  # send group_by [id_column] (the form report wants it; the segment one groups by itself)

    def body(self, ids: list[str], timeframe: dict) -> dict:
        """One request: the statistics of up to 100 ids for a timeframe, daily."""
        attributes = {"statistics": list(self.statistics), "timeframe": timeframe, "interval": "daily"}
        if self.group_by:
            attributes["group_by"] = [self.id_column]
        attributes["filter"] = any_filter(self.id_column, ids)
        return {"data": {"type": self.type, "attributes": attributes}}


def sync_series(client: KlaviyoClient, db: Database, result: SyncResult, report: SeriesReport, *,
                ids: Sequence[str], days: list[date], zone: ZoneInfo, now: datetime,
                max_age: timedelta = timedelta(0)) -> None:
    """Read the (id, day) pairs not stored, or not settled and read more than ``max_age`` ago,
    and replace them, one transaction a request. Every (id, day) of a request gets a row: an id the report leaves out had nothing
    (zeros). A spent report quota keeps what was read and makes the run partial."""
    try:
        _read_series(client, db, result, report, ids, days, zone, now, max_age)
    except RateLimitExceeded as exc:
        left = days_needed(db, report.table.name, report.id_column, ids, days, zone, now, max_age)
        missing = sum(len(v) for v in left.values())
        result.extra[report.missing_key] = missing
        result.partial = f"{report.partial.format(missing=missing, of=len(left))}: {exc}"


def _read_series(client: KlaviyoClient, db: Database, result: SyncResult, report: SeriesReport,
                 ids: Sequence[str], days: list[date], zone: ZoneInfo, now: datetime, max_age: timedelta) -> None:
    table, id_column, statistics, group = report.table, report.id_column, report.statistics, report.id_column
    fetched_at = iso(now)
    with db.atomic():  # days of another zone (the account's changed, or was unknown): read again
        gone = db.execute(f'DELETE FROM "{table.name}" WHERE timezone IS NOT ?', [zone.key]).rowcount
    if gone:
        result.extra["rows_of_another_zone_dropped"] = gone
    requests = plan(days_needed(db, table.name, id_column, ids, days, zone, now, max_age))
    result.extra["report_requests_planned"] = result.extra.get("report_requests_planned", 0) + len(requests)
    for batch, first, last in requests:
        span = (last - first).days + 1
        results, _ = fetch_series(client, report.path, report.body(batch, timeframe(first, last, zone)), span)
        series = {}
        for r in results:
            key = (r.get("groupings") or {}).get(group)
            if key in batch:
                series[key] = r.get("statistics") or {}
        rows = []
        for key in batch:
            st = series.get(key, {})
            for i in range(span):
                day = (first + timedelta(days=i)).isoformat()
                values = [value_at(st.get(s), i) for s in statistics]
                rows.append((key, day, *[0 if v is None else v for v in values], zone.key, fetched_at))
        with db.atomic():
            result.add_rows(table.name, table.write(db, rows))
        result.extra["report_requests"] = result.extra.get("report_requests", 0) + 1


def value_at(values, i: int):
    """The i-th day's value of a report series (None past its end or when it is not a list)."""
    return values[i] if isinstance(values, list) and i < len(values) else None
