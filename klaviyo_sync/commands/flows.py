"""sync-flows, sync-flow-stats, sync-templates, and the analyst's flows and revenue commands."""

import sys
from datetime import date, datetime
from typing import Annotated, Optional

import typer

from .. import db as store
from .. import output, queries
from ..errors import UsageError
from ..streams.campaigns import DEFAULT_CONVERSION_METRIC
from ..streams.flows import sync_flow_stats, sync_flows, sync_templates
from ..streams.series import report_zone
from ..timeutil import RANGE_FORMS, Window, parse_range, report_range
from .base import (PROG, ChartFormatOpt, ConversionOpt, RowsFormatOpt, Settings, SummaryFormatOpt, WaitOpt,
                   _check_summary_format, _parse, _report, app, check_format, common, exit_if_partial, local_or_api, sync_age,
                   recorded_run)

RangeOpt = Annotated[str, typer.Option("--range", metavar="RANGE",
                                       help=f"Send days (whole days of the account's time zone): {RANGE_FORMS}.")]
REVENUE_NOTE = ("note: attributed revenue follows the send date and each report's attribution window "
                "(an order may count for a campaign and a flow, or for neither), so campaigns + flows "
                "need not add up to the orders' revenue")


def _flow_sync(settings: Settings, window: Window | None, stats: bool, conversion_metric: str | None,
               wait: float, command: str = "sync-flows") -> dict:
    client = settings.client()
    arguments = {"range": window.label if window else None, "stats": stats,
                 "conversion_metric": conversion_metric, "base_url": settings.base_url}
    with recorded_run(settings, command, arguments, wait) as run:
        run["client"] = client
        if command == "sync-flows":
            sync_flows(client, run["db"], result=run["result"])
        if stats and window is not None:
            sync_flow_stats(client, run["db"], window, conversion_metric=conversion_metric, result=run["result"])
    return run


@app.command("sync-flows")
@common
def sync_flows_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    stats: Annotated[bool, typer.Option("--stats/--no-stats", help="Fetch per-day flow statistics for --range.")] = True,
    conversion_metric: ConversionOpt = None,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Sync every flow (archived too), the definition (actions, messages) of each flow that
    changed, and per-day statistics of the days of --range not read since they settled."""
    _check_summary_format(fmt)
    window = _parse(report_range, range_, "--range")
    _report(settings, _flow_sync(settings, window, stats, conversion_metric, wait), fmt)


@app.command("sync-flow-stats")
@common
def sync_flow_stats_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    conversion_metric: ConversionOpt = None,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Per-day flow statistics only (for flows already synced by sync-flows)."""
    _check_summary_format(fmt)
    window = _parse(report_range, range_, "--range")
    _report(settings, _flow_sync(settings, window, True, conversion_metric, wait, command="sync-flow-stats"), fmt)


@app.command("sync-templates")
@common
def sync_templates_cmd(
    settings: Settings,
    no_html: Annotated[bool, typer.Option("--no-html", help="Leave the html, text and amp bodies out.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Read every template, not only those updated since the last run.")] = False,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Sync email templates, incrementally on `updated`."""
    _check_summary_format(fmt)
    client = settings.client()
    with recorded_run(settings, "sync-templates", {"html": not no_html, "full": full,
                                                    "base_url": settings.base_url}, wait) as run:
        run["client"] = client
        sync_templates(client, run["db"], html=not no_html, full=full, result=run["result"])
    _report(settings, run, fmt)


def _query_flows(settings: Settings, window: Window, by: str, warn: bool = False) -> tuple[bool, list[dict], object]:
    """(covered, rows, zone): the days are the account's (flow_stats_daily's zone)."""
    database = store.open_db(settings.db)
    try:
        zone = report_zone(database, warn=warn and not settings.quiet)
        rows = queries.flows_in_range(database, window, by, zone)
        for row in rows:
            row["timezone"] = zone.key
        return queries.flow_stats_cover(database, window, zone), rows, zone
    finally:
        database.close()


@app.command("flows")
@common
def flows_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    by: Annotated[str, typer.Option("--by", help="flow (one row per flow) or message.")] = "flow",
    fmt: RowsFormatOpt = "auto",
    refresh: Annotated[bool, typer.Option("--refresh", help="Fetch from the API first, even if the database has data.")] = False,
    conversion_metric: ConversionOpt = None,
    wait: WaitOpt = 0.0,
    tag: Annotated[Optional[str], typer.Option("--tag", metavar="NAME",
                                               help="Only flows carrying this tag (sync-tags).")] = None,
) -> None:
    """Flows that sent in a range with their performance, most revenue first: from the local
    database, or from the API when the database has no flow statistics for that range.

    Example: klaviyo-sync flows --range 30d --by message
    """
    window = _parse(report_range, range_, "--range")
    check_format(fmt)
    if by not in ("flow", "message"):
        raise UsageError(f"--by: {by!r} is not one of flow, message")
    tagged = None if tag is None else queries.tagged(settings.db, "flow", tag)

    rows, zone, partial = local_or_api(settings, refresh, lambda warn: _query_flows(settings, window, by, warn=warn),
                                       lambda: _flow_sync(settings, window, True, conversion_metric, wait),
                                       f"{by}(s)", lambda rows: f" ({sync_age(settings, 'sync-flows')})")
    first, last = queries.day_bounds(window, zone)
    if tagged is not None:
        rows = [r for r in rows if r["flow_id" if by == "message" else "id"] in tagged]
    output.write_rows(rows, output.resolve_format(fmt),
                      queries.FLOW_MESSAGE_TABLE if by == "message" else queries.FLOW_TABLE,
                      title=f"Flows that sent {first} .. {last} ({zone.key} days)" + (f" tagged {tag}" if tag else ""))
    exit_if_partial(partial)


@app.command("revenue")
@common
def revenue_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    by: Annotated[Optional[str], typer.Option("--by", help="day or channel (default: one total row).")] = None,
    fmt: ChartFormatOpt = "auto",
    metric: Annotated[str, typer.Option("--metric", metavar="NAME_OR_ID", help="The order metric of the events.")] = DEFAULT_CONVERSION_METRIC,
) -> None:
    """Order revenue from the events next to the revenue attributed to campaigns and flows
    (database only; run sync-events, sync-campaigns and sync-flows first).

    Example: klaviyo-sync revenue --range 30d --by day --format chart
    """
    window = _parse(parse_range, range_, "--range")
    check_format(fmt, output.CHART_FORMATS)
    if by not in (None, "day", "channel"):
        raise UsageError(f"--by: {by!r} is not one of day, channel")
    if fmt == "chart" and by != "day":
        raise UsageError("--format chart draws revenue over time: add --by day")
    if not settings.db.exists():
        raise UsageError(f"no database at {settings.db}: run sync-events, sync-campaigns and sync-flows first")
    database = store.open_db(settings.db)
    try:
        found = database.execute("SELECT id FROM metrics WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
                                 [metric, metric, metric]).fetchone()
        metric_id = found[0] if found else None
        zone = report_zone(database, warn=not settings.quiet)
        rows = queries.revenue(database, window, metric_id, by, zone)
        for row in rows:
            row["timezone"] = zone.key
        first, last = queries.day_bounds(window, zone)
        lo = queries.iso(datetime(*date.fromisoformat(first).timetuple()[:3], tzinfo=zone))
        needs = []
        if metric_id is None or not database.execute(
                "SELECT 1 FROM events WHERE metric_id = ? LIMIT 1", [metric_id]).fetchone():
            needs.append(f"sync-events (no {metric!r} events stored)")
        if not database.execute("SELECT 1 FROM campaign_stats LIMIT 1").fetchone():
            needs.append("sync-campaigns (no campaign statistics stored)")
        if not queries.flow_stats_cover(database, window, zone):
            needs.append("sync-flows (no flow statistics for this range)")
        events_from = database.execute("SELECT min(datetime) FROM events WHERE metric_id = ?", [metric_id]).fetchone()[0]
    finally:
        database.close()
    output.write_rows(rows, output.resolve_format(fmt),
                      queries.REVENUE_CHANNEL_TABLE if by == "channel" else queries.REVENUE_TABLE,
                      title=f"Revenue {first} .. {last} ({zone.key} days)", chart=("period", "revenue"))
    if not settings.quiet:
        for need in needs:
            print(f"{PROG}: missing data: run {need}", file=sys.stderr)
        if events_from and events_from > lo:
            print(f"{PROG}: events are stored from {events_from} only: orders before that are not counted",
                  file=sys.stderr)
        print(REVENUE_NOTE, file=sys.stderr)
