"""sync-campaigns and the analyst's campaigns command."""

import sys
from datetime import timedelta
from typing import Annotated, Optional

import typer

from .. import db as store
from .. import errors, output, queries
from ..errors import UsageError
from ..streams.campaigns import CHANNELS, sync_campaigns
from ..timeutil import (
    RANGE_FORMS,
    Window,
    humanize_age,
    iso,
    parse_datetime,
    parse_duration,
    parse_range,
    report_range,
    utcnow,
)
from .base import (
    ConversionOpt,
    RowsFormatOpt,
    check_format,
    PROG,
    Settings,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    _parse,
    _report,
    app,
    common,
    recorded_run,
)

ChannelOpt = Annotated[Optional[list[str]], typer.Option("--channel", help="email, sms or mobile_push (repeatable; default: all).")]
RangeOpt = Annotated[str, typer.Option("--range", metavar="RANGE", help=f"Send-time range: {RANGE_FORMS}.")]
StatsMaxAgeOpt = Annotated[str, typer.Option("--stats-max-age", help="Refetch statistics older than this.")]
TagOpt = Annotated[Optional[str], typer.Option("--tag", metavar="NAME", help="Only those carrying this tag (sync-tags).")]


def _channels(values: list[str] | None) -> list[str]:
    chosen = []
    for value in values or []:
        if value not in CHANNELS:
            raise UsageError(f"--channel: {value!r} is not one of {', '.join(CHANNELS)}")
        if value not in chosen:
            chosen.append(value)
    return chosen or list(CHANNELS)


def _campaign_sync(settings: Settings, window: Window, channels: list[str], stats: bool,
                   conversion_metric: str | None, stats_max_age: timedelta, wait: float) -> dict:
    client = settings.client()
    arguments = {"range": window.label, "channel": channels, "stats": stats,
                 "conversion_metric": conversion_metric, "base_url": settings.base_url}
    with recorded_run(settings, "sync-campaigns", arguments, wait) as run:
        run["client"] = client
        sync_campaigns(client, run["db"], window, channels=channels, stats=stats,
                       conversion_metric=conversion_metric, stats_max_age=stats_max_age, result=run["result"])
    return run


@app.command("sync-campaigns")
@common
def sync_campaigns_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    channel: ChannelOpt = None,
    stats: Annotated[bool, typer.Option("--stats/--no-stats", help="Fetch performance statistics.")] = True,
    conversion_metric: ConversionOpt = None,
    stats_max_age: StatsMaxAgeOpt = "6h",
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Sync campaigns of every channel (archived too) with their messages, and the statistics
    of those sent in --range."""
    _check_summary_format(fmt)
    window = _parse(report_range, range_, "--range")
    max_age = _parse(parse_duration, stats_max_age, "--stats-max-age")
    run = _campaign_sync(settings, window, _channels(channel), stats, conversion_metric, max_age, wait)
    _report(settings, run, fmt)


@app.command("campaigns")
@common
def campaigns_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    channel: ChannelOpt = None,
    fmt: RowsFormatOpt = "auto",
    refresh: Annotated[bool, typer.Option("--refresh", help="Fetch from the API first, even if the database has data.")] = False,
    no_stats: Annotated[bool, typer.Option("--no-stats", help="Do not fetch statistics when going to the API.")] = False,
    conversion_metric: ConversionOpt = None,
    stats_max_age: StatsMaxAgeOpt = "6h",
    wait: WaitOpt = 0.0,
    tag: TagOpt = None,
) -> None:
    """Campaigns sent in a range with their performance, newest first: from the local database,
    or from the API when the database has none for that range.

    Example: klaviyo-sync campaigns --range 30d
    """
    window = _parse(report_range, range_, "--range")
    check_format(fmt)
    max_age = _parse(parse_duration, stats_max_age, "--stats-max-age")
    channels = _channels(channel)
    tagged = None if tag is None else queries.tagged(settings.db, "campaign", tag)
    rows: list[dict] = []
    if not refresh and settings.db.exists():
        database = store.open_db(settings.db)
        try:
            rows = queries.campaigns_in_range(database, window, channels)
            synced = queries.last_run_finished(database, "sync-campaigns")
        finally:
            database.close()
        if rows and not settings.quiet:
            age = f"synced {humanize_age((utcnow() - parse_datetime(synced)).total_seconds())} ago" if synced else "sync time unknown"
            missing = sum(1 for r in rows if r["stats_fetched_at"] is None)
            gap = f"; statistics missing for {missing}" if missing else ""
            print(f"{len(rows)} campaign(s) from the local database ({age}{gap}); --refresh fetches from the API",
                  file=sys.stderr)
    partial = None
    if refresh or not rows:
        run = _campaign_sync(settings, window, channels, not no_stats, conversion_metric, max_age, wait)
        partial = run["result"].partial
        database = store.open_db(settings.db)
        try:
            rows = queries.campaigns_in_range(database, window, channels)
        finally:
            database.close()
        if not settings.quiet:
            print(f"{len(rows)} campaign(s) fetched from the API", file=sys.stderr)
    kind = output.resolve_format(fmt)
    if tagged is not None:
        rows = [r for r in rows if r["id"] in tagged]
    output.write_rows(rows, kind, queries.CAMPAIGN_TABLE,
                      title=f"Campaigns sent {iso(window.start)} .. {iso(window.end)}"
                      + (f" tagged {tag}" if tag is not None else ""))
    if partial:
        print(f"{PROG}: warning: {partial}", file=sys.stderr)
        raise typer.Exit(errors.PARTIAL)
