"""sync-campaigns and the analyst's campaigns command."""

from datetime import timedelta
from typing import Annotated, Optional

import typer

from .. import db as store
from .. import output, queries
from ..errors import UsageError
from ..streams.campaigns import CHANNELS, sync_campaigns
from ..timeutil import (
    RANGE_FORMS,
    Window,
    iso,
    parse_duration,
    report_range,
)
from .base import (
    ConversionOpt,
    RowsFormatOpt,
    check_format,
    Settings,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    _parse,
    _report,
    app,
    common,
    exit_if_partial,
    local_or_api,
    recorded_run,
    sync_age,
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

    def read(warn: bool) -> tuple:
        database = store.open_db(settings.db)
        try:
            rows = queries.campaigns_in_range(database, window, channels)
        finally:
            database.close()
        return bool(rows), rows, None

    def note(rows: list) -> str:
        missing = sum(1 for r in rows if r["stats_fetched_at"] is None)
        return f" ({sync_age(settings, 'sync-campaigns')}{f'; statistics missing for {missing}' if missing else ''})"

    rows, _, partial = local_or_api(
        settings, refresh, read,
        lambda: _campaign_sync(settings, window, channels, not no_stats, conversion_metric, max_age, wait),
        "campaign(s)", note)
    kind = output.resolve_format(fmt)
    if tagged is not None:
        rows = [r for r in rows if r["id"] in tagged]
    output.write_rows(rows, kind, queries.CAMPAIGN_TABLE,
                      title=f"Campaigns sent {iso(window.start)} .. {iso(window.end)}"
                      + (f" tagged {tag}" if tag is not None else ""))
    exit_if_partial(partial)
