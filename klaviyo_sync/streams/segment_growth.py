"""Segment growth: how many members each segment had at the end of each day, and how many joined
and left, from the daily segment series report. Its own optional ``sync-all`` step (not part of
the core ``sync-segments``): it spends the report quota shared with campaign, flow and form
reports, so it can be chosen (``--only`` / ``--skip``) apart from the members. Klaviyo holds no
data before 2023-06-01: earlier days are never asked for."""

from __future__ import annotations

from datetime import date, datetime

from sqlite_utils import Database

from ..client import KlaviyoClient
from ..timeutil import Window, parse_range, utcnow
from .declare import INTEGER, SEGMENTS_READ, TEXT, Column, Declaration, TableSpec, declare
from .engine import SyncResult
from .series import SeriesReport, local_days, report_zone, sync_series

DATA_FROM = date(2023, 6, 1)
STAT_NAMES = ["total_members", "members_added", "members_removed", "net_members_changed"]
GROWTH_TABLE = TableSpec(
    "segment_growth_daily",
    "Each segment's size and change per day of the account's time zone (sync-segment-growth).",
    (Column("segment_id", TEXT, "The segment (segments.id)."),
     Column("day", TEXT, "The day (YYYY-MM-DD) in the account's time zone (the timezone column)."),
     Column("total_members", INTEGER, "Members at the end of the day."),
     Column("members_added", INTEGER, "Profiles that joined the segment that day."),
     Column("members_removed", INTEGER, "Profiles that left the segment that day."),
     Column("net_members_changed", INTEGER, "members_added - members_removed."),
     Column("timezone", TEXT, "The IANA time zone the day is counted in (the account's)."),
     Column("fetched_at", TEXT, "When the report was read (UTC); a day is read again until it settled.")),
    key=("segment_id", "day"))


GROWTH_REPORT = SeriesReport(
    path="/api/segment-series-reports", type="segment-series-report", table=GROWTH_TABLE.table,
    id_column="segment_id", statistics=STAT_NAMES, missing_key="growth_missing_segment_days",
    partial="segment growth is missing for {missing} segment-day(s) of {of} segment(s)")


def sync_segment_growth(client: KlaviyoClient, db: Database, window: Window, *, now: datetime | None = None,
                        result: SyncResult | None = None) -> SyncResult:
    """Daily growth of every stored segment (run sync-segments first) for the days of
    ``window`` from 2023-06-01 on, in the account's time zone."""
    now = now or utcnow()
    result = SyncResult.begin(result, ["segment_growth_daily"], window)
    zone = report_zone(db)
    result.extra["timezone"] = zone.key
    days = local_days(window, zone, now, earliest=DATA_FROM)
    segments = [r[0] for r in db.execute("SELECT id FROM segments ORDER BY id")] if db["segments"].exists() else []
    result.extra["segments"] = len(segments)
    with db.atomic():  # segments deleted from the account lose their growth
        db.execute("DELETE FROM segment_growth_daily WHERE segment_id NOT IN (SELECT id FROM segments)")
    sync_series(client, db, result, GROWTH_REPORT, ids=segments, days=days, zone=zone, now=now)
    return result


SYNC_SEGMENT_GROWTH = declare(Declaration(
    command="sync-segment-growth", help="", scope=SEGMENTS_READ, tier="reports",
    paths=("/api/segment-series-reports",), tables=(GROWTH_TABLE,),
    run=lambda client, db, result: sync_segment_growth(client, db, parse_range("30d"), result=result),
    sync_all=94, arguments={"range": "30d"},
))
