"""The analyst's attribution commands: `attribution` and `conversion-lag` (database only)."""

import sys
from typing import Annotated

import typer

from .. import attribution as queries
from .. import output
from ..errors import UsageError
from ..streams.attributions import refill_args, uncovered_events
from ..timeutil import RANGE_FORMS, Window, parse_range
from .customers import open_database, resolve_metric
from .base import PROG, ChartFormatOpt, RowsFormatOpt, Settings, _parse, app, check_format, common

DEFAULT_METRIC = "Placed Order"
RangeOpt = Annotated[str, typer.Option("--range", metavar="RANGE",
                                       help=f"Conversions in these whole UTC days: {RANGE_FORMS}.")]
MetricOpt = Annotated[str, typer.Option("--metric", metavar="NAME_OR_ID",
                                        help="The conversion metric; revenue is its events' $value.")]
ModelOpt = Annotated[str, typer.Option("--model", help="klaviyo (Klaviyo's stored attribution) or session "
                                                       "(dbt_klaviyo's session model).")]
NOTE = ("note: conversions are counted on their own datetime (Klaviyo's reports credit the send date), "
        "so these totals need not match the campaign and flow reports of the same range")


def _open(settings: Settings, metric: str, model: str, window_text: str, fmt: str, formats=output.FORMATS):
    window = _parse(parse_range, window_text, "--range")
    check_format(fmt, formats)
    if model not in queries.MODELS:
        raise UsageError(f"--model: {model!r} is not one of {', '.join(queries.MODELS)}")
    database = open_database(settings)
    try:
        metric_id = resolve_metric(database, metric)
    except UsageError:
        database.close()
        raise
    return database, window, metric_id


def _notes(settings: Settings, database, window: Window, metric_id: str | None, model: str,
           attributed: bool) -> None:
    if settings.quiet:
        return
    if metric_id is None:
        print(f"{PROG}: missing data: no metrics stored: run sync-events", file=sys.stderr)
        return
    _, _, lo, hi = queries.day_range(window)
    if model == "klaviyo":
        gap = uncovered_events(database, count=False)
        if gap and gap["first"] < hi and gap["last"] >= lo:
            print(f"{PROG}: note: events from {gap['first']} to {gap['last']} were synced before attributions were "
                  f"kept and count as organic: run sync-events {refill_args(gap)} to fill them in", file=sys.stderr)
    # Whether any touch exists is asked only of an answer with nothing attributed: when none
    # does, the view looks at every stored open and click (1.5 s of CPU at 5,000,000 events).
    elif not attributed and not database.execute("SELECT 1 FROM session_touches LIMIT 1").fetchone():
        print(f"{PROG}: note: no opened or clicked email or clicked SMS carries a stored campaign or flow "
              "message: run sync-campaigns and sync-flows", file=sys.stderr)


@app.command("attribution")
@common
def attribution_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    by: Annotated[str, typer.Option("--by", help="campaign, flow, message, channel or day.")] = "campaign",
    model: ModelOpt = "klaviyo",
    metric: MetricOpt = DEFAULT_METRIC,
    fmt: ChartFormatOpt = "auto",
) -> None:
    """Conversions and revenue per campaign, flow, message, channel or day, from the attribution
    of each conversion event (database only). A row with an empty group holds the rest
    (organic, or the other kind of message), so the rows add up to every conversion.
    --by day --format chart draws the attributed revenue per day.

    Example: klaviyo-sync attribution --range 30d --by channel
    """
    if by not in queries.GROUPINGS:
        raise UsageError(f"--by: {by!r} is not one of {', '.join(queries.GROUPINGS)}")
    if fmt == "chart" and by != "day":
        raise UsageError("--format chart draws attributed revenue over time: add --by day")
    database, window, metric_id = _open(settings, metric, model, range_, fmt, output.CHART_FORMATS)
    try:
        rows = queries.attribution(database, window, metric_id, by, model)
        first, last, _, _ = queries.day_range(window)
        attributed = any(r["attributed_conversions"] for r in rows) if by == "day" else \
            any(r["conversions"] for r in rows if r["group"] is not None)
        _notes(settings, database, window, metric_id, model, attributed)
    finally:
        database.close()
    output.write_rows(rows, output.resolve_format(fmt),
                      queries.ATTRIBUTION_DAY_TABLE if by == "day" else queries.ATTRIBUTION_TABLE,
                      title=f"{metric} by {by}, {model} model, {first} .. {last} (UTC days)",
                      chart=("group", "attributed_revenue"))
    if not settings.quiet:
        print(NOTE, file=sys.stderr)


@app.command("conversion-lag")
@common
def conversion_lag_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    model: ModelOpt = "klaviyo",
    metric: MetricOpt = DEFAULT_METRIC,
    fmt: RowsFormatOpt = "auto",
) -> None:
    """How long after the attributed touch (the opened or clicked message) people convert: the
    range's attributed conversions per bucket of hours (database only).

    Example: klaviyo-sync conversion-lag --range 30d
    """
    database, window, metric_id = _open(settings, metric, model, range_, fmt)
    try:
        rows, counts = queries.conversion_lag(database, window, metric_id, model)
        first, last, _, _ = queries.day_range(window)
        _notes(settings, database, window, metric_id, model, counts["attributed"] > 0)
    finally:
        database.close()
    output.write_rows(rows, output.resolve_format(fmt), queries.LAG_TABLE,
                      title=f"{metric}: hours from the attributed touch, {model} model, {first} .. {last} (UTC days)")
    if not settings.quiet:
        stored = counts["attributed"] - counts["touch_not_stored"]
        print(f"{counts['conversions']:,} conversions: {counts['attributed']:,} attributed "
              f"({stored:,} in the buckets; {counts['touch_not_stored']:,} whose touch is not stored, e.g. "
              f"before the synced events), {counts['organic']:,} organic", file=sys.stderr)
