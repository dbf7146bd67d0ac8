"""The analyst's customer commands: customers, customer, rfm, cohorts and deliverability.

Database only (no API request, no key). Each answers with a rule of ``analytics.py`` (the same
SQL the views of the database are made of), filtered to the range and metric asked for.
"""

import sys
from typing import Annotated, Optional

import typer

from .. import analytics, output, queries
from .. import db as store
from ..errors import UsageError
from ..streams.campaigns import DEFAULT_CONVERSION_METRIC
from ..timeutil import RANGE_FORMS, Window, iso, parse_range
from .base import PROG, ChartFormatOpt, RowsFormatOpt, Settings, _parse, app, check_format, common

MetricOpt = Annotated[str, typer.Option("--metric", metavar="NAME_OR_ID",
                                        help="The conversion metric (name or id).")]
ConvRangeOpt = Annotated[Optional[str], typer.Option(
    "--range", metavar="RANGE", help=f"Conversions in this range: {RANGE_FORMS}.")]


def open_database(settings: Settings):
    """The database the analytics commands read (all of customers.py and analytics.py); a
    missing file is a usage error (exit 2)."""
    if not settings.db.exists():
        raise UsageError(f"no database at {settings.db}: run sync-events first (or pass --db)")
    return store.open_db(settings.db)


def resolve_metric(database, metric: str) -> str | None:
    """The metric's id; None when no metric is stored at all (an empty database answers with
    no rows). A name or id the database does not know is a usage error (exit 2). Every analytics
    command (also attribution and conversion-lag) resolves --metric here."""
    found = database.execute("SELECT id FROM metrics WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
                             [metric, metric, metric]).fetchone()
    if found:
        return found[0]
    names = [r[0] for r in database.execute("SELECT name FROM metrics ORDER BY name")]
    if not names:
        return None
    raise UsageError(f"--metric: no metric {metric!r} in the database (known: {', '.join(names)})")


def _range_where(window: Window | None) -> tuple[str, list]:
    if window is None:
        return "e.metric_id = ?", []
    # The unary + keeps SQLite from reading the range through events(metric_id, datetime) and each
    # conversion from the table: the metric's entries of the covering index (EVENT_INDEXES, per
    # profile) are read instead (measured, 5,000,000 events: `rfm` 365 days 1.9 -> 1.0 s CPU).
    return "e.metric_id = ? AND +e.datetime >= ? AND +e.datetime < ?", [iso(window.start), iso(window.end)]


def _write(rows: list[dict], fmt: str, columns, title: str, fields: list[str]) -> None:
    kind = output.resolve_format(fmt)
    if kind == "csv" and not rows:  # the header still names every key a row would have
        print(",".join(fields))
        return
    output.write_rows(rows, kind, columns, title=title)


# -- customers ---------------------------------------------------------------------------------
CUSTOMER_FIELDS = ["profile_id", "email", "orders", "revenue", "first_order", "last_order",
                   "attributed_revenue", "organic_revenue"]
CUSTOMER_SORTS = {"revenue": "revenue DESC, orders DESC, profile_id",
                  "orders": "orders DESC, revenue DESC, profile_id",
                  "last_order": "last_order DESC, profile_id"}
CUSTOMER_TABLE = [
    ("email", "Email", "text"), ("orders", "Orders", "int"), ("revenue", "Revenue", "money"),
    ("first_order", "First (UTC)", "text"), ("last_order", "Last (UTC)", "text"),
    ("attributed_revenue", "Attributed", "money"), ("organic_revenue", "Organic", "money"),
]


@app.command("customers")
@common
def customers_cmd(
    settings: Settings,
    range_: ConvRangeOpt = None,
    top: Annotated[int, typer.Option("--top", min=0, help="How many customers (0: everyone).")] = 50,
    sort: Annotated[str, typer.Option("--sort", help="revenue, orders or last_order.")] = "revenue",
    metric: MetricOpt = DEFAULT_CONVERSION_METRIC,
    fmt: RowsFormatOpt = "auto",
) -> None:
    """Customers (profiles with at least one conversion) with their orders and revenue, attributed
    and organic, best first (database only; without --range: every stored conversion).

    Example: klaviyo-sync customers --range 90d --top 10
    """
    window = _parse(parse_range, range_, "--range") if range_ else None
    check_format(fmt)
    if sort not in CUSTOMER_SORTS:
        raise UsageError(f"--sort: {sort!r} is not one of {', '.join(CUSTOMER_SORTS)}")
    database = open_database(settings)
    try:
        metric_id = resolve_metric(database, metric)
        rows: list[dict] = []
        if metric_id is not None:
            where, params = _range_where(window)
            sql = (f"SELECT {', '.join(CUSTOMER_FIELDS)} FROM ({analytics.customers_sql(where)}) "
                   f"ORDER BY {CUSTOMER_SORTS[sort]}" + (" LIMIT ?" if top else ""))
            rows = queries.dict_rows(database.execute(sql, [metric_id, *params, *([top] if top else [])]))
    finally:
        database.close()
    span = f"{iso(window.start)} .. {iso(window.end)}" if window else "all stored conversions"
    _write(rows, fmt, CUSTOMER_TABLE, f"Customers by {sort} ({metric}), {span}", CUSTOMER_FIELDS)


# -- customer ----------------------------------------------------------------------------------
TIMELINE_FIELDS = ["event_id", "datetime", "metric", "value", "conversion", "attributed_event_id",
                   "campaign_id", "campaign_name", "flow_id", "flow_name", "message_id", "message_name",
                   "channel"]
TIMELINE_TABLE = [
    ("datetime", "When (UTC)", "text"), ("metric", "Event", "text"), ("value", "Value", "money"),
    ("campaign_name", "Campaign", "text"), ("flow_name", "Flow", "text"),
    ("message_name", "Message", "text"), ("channel", "Channel", "text"),
]


def find_profile(database, who: str) -> tuple[str, str | None]:
    """(profile id, email) of an email (exact, then ignoring case) or a profile id."""
    row = (database.execute("SELECT id, email FROM profiles WHERE id = ?", [who]).fetchone()
           or database.execute("SELECT id, email FROM profiles WHERE email = ? ORDER BY id LIMIT 1", [who]).fetchone()
           or database.execute("SELECT id, email FROM profiles WHERE lower(email) = lower(?) ORDER BY id LIMIT 1",
                               [who]).fetchone())
    if row:
        return row[0], row[1]
    # An event may point at a profile that was never stored itself.
    if database.execute("SELECT 1 FROM events WHERE profile_id = ? LIMIT 1", [who]).fetchone():
        return who, None
    raise UsageError(f"no profile with the email or id {who!r} in the database")


@app.command("customer")
@common
def customer_cmd(
    settings: Settings,
    who: Annotated[str, typer.Argument(metavar="EMAIL_OR_ID", help="The person's email or profile id.")],
    metric: MetricOpt = DEFAULT_CONVERSION_METRIC,
    fmt: RowsFormatOpt = "auto",
) -> None:
    """One person's timeline: every stored event, oldest first, each conversion with the campaign
    or flow message Klaviyo attributed it to (database only).

    Example: klaviyo-sync customer ada@example.com
    """
    check_format(fmt)
    database = open_database(settings)
    try:
        metric_id = resolve_metric(database, metric)
        profile_id, email = find_profile(database, who)
        sql = (f"SELECT *, metric_id IS ? AS conversion FROM ({analytics.timeline_sql('e.profile_id = ?')}) "
               "ORDER BY datetime, event_id")
        rows = queries.dict_rows(database.execute(sql, [metric_id, profile_id]))
    finally:
        database.close()
    for row in rows:
        row["conversion"] = bool(row["conversion"])
    rows = [{k: row[k] for k in TIMELINE_FIELDS} for row in rows]
    orders = [r for r in rows if r["conversion"]]
    revenue = round(sum(r["value"] or 0 for r in orders), 2)
    _write(rows, fmt, TIMELINE_TABLE,
           f"{email or profile_id} ({profile_id}): {len(rows)} events, {len(orders)} {metric}, {revenue:,.2f} revenue",
           TIMELINE_FIELDS)


# -- rfm ---------------------------------------------------------------------------------------
RFM_GROUP_TABLE = [
    ("group", "Group", "text"), ("customers", "Customers", "int"), ("share", "Share", "rate"),
    ("revenue", "Revenue", "money"), ("avg_orders", "Avg orders", "seconds"),
    ("avg_recency_days", "Avg days since", "seconds"),
]
RFM_CUSTOMER_FIELDS = ["profile_id", "email", "rfm_group", "rfm_score", "recency_days", "frequency",
                       "monetary", "recency_score", "frequency_score", "monetary_score", "last_order"]
RFM_CUSTOMER_TABLE = [
    ("email", "Email", "text"), ("rfm_score", "RFM", "text"), ("recency_days", "Days since", "int"),
    ("frequency", "Orders", "int"), ("monetary", "Revenue", "money"), ("last_order", "Last (UTC)", "text"),
]


def _group_name(value: str) -> str:
    for name in analytics.RFM_GROUPS:
        if name.lower() == value.strip().lower():
            return name
    raise UsageError(f"--group: {value!r} is not one of {', '.join(analytics.RFM_GROUPS)}")


@app.command("rfm")
@common
def rfm_cmd(
    settings: Settings,
    range_: Annotated[str, typer.Option("--range", metavar="RANGE",
                                        help=f"Conversions in this range: {RANGE_FORMS}.")] = "365d",
    group: Annotated[Optional[str], typer.Option("--group", metavar="NAME",
                                                 help="List this group's customers instead.")] = None,
    metric: MetricOpt = DEFAULT_CONVERSION_METRIC,
    fmt: RowsFormatOpt = "auto",
) -> None:
    """Recency, frequency and monetary scores (1-3) of the range's customers in Klaviyo's six RFM
    groups: customers and revenue per group, or with --group the group's customers.

    Example: klaviyo-sync rfm --range 365d --group "At risk" --format csv
    """
    window = _parse(parse_range, range_, "--range")
    check_format(fmt)
    name = _group_name(group) if group is not None else None
    database = open_database(settings)
    try:
        metric_id = resolve_metric(database, metric)
        rows: list[dict] = []
        if metric_id is not None:
            where, params = _range_where(window)
            rfm = analytics.rfm_sql(where, "?")
            params = [iso(window.end), metric_id, *params]
            if name is not None:
                rows = queries.dict_rows(database.execute(
                    f"SELECT {', '.join(RFM_CUSTOMER_FIELDS)} FROM ({rfm}) WHERE rfm_group = ? "
                    "ORDER BY monetary DESC, profile_id", [*params, name]))
            else:
                found = {r["rfm_group"]: r for r in queries.dict_rows(database.execute(
                    f"SELECT * FROM ({analytics.rfm_groups_sql(rfm)})", params))}
                total = sum(r["customers"] for r in found.values())
                # Every group, in Klaviyo's order, zeros included, once there are customers.
                rows = [{"group": g, "customers": found.get(g, {}).get("customers", 0),
                         "share": round(found[g]["customers"] / total, 4) if g in found else 0.0,
                         "revenue": found.get(g, {}).get("revenue", 0.0),
                         "avg_orders": found.get(g, {}).get("avg_orders"),
                         "avg_recency_days": found.get(g, {}).get("avg_recency_days")}
                        for g in analytics.RFM_GROUPS] if total else []
    finally:
        database.close()
    span = f"{iso(window.start)} .. {iso(window.end)}"
    if name is not None:
        for row in rows:
            row["rfm_score"] = str(row["rfm_score"])
        _write(rows, fmt, RFM_CUSTOMER_TABLE, f"RFM group {name} ({metric}), {span}", RFM_CUSTOMER_FIELDS)
    else:
        _write(rows, fmt, RFM_GROUP_TABLE, f"RFM groups ({metric}), {span}", [c[0] for c in RFM_GROUP_TABLE])


# -- cohorts -----------------------------------------------------------------------------------
def _month_back(month: str, n: int) -> str:
    y, m = int(month[:4]), int(month[5:7])
    k = y * 12 + (m - 1) - n
    return f"{k // 12:04d}-{k % 12 + 1:02d}"


COHORT_COLUMNS = [("cohort", "Cohort", "text"), ("cohort_size", "Cohort size", "int"),
                  ("months_after", "Months after", "int"), ("month", "Month", "text"),
                  ("customers", "Customers", "int"), ("share", "Share", "rate")]


@app.command("cohorts")
@common
def cohorts_cmd(
    settings: Settings,
    by: Annotated[str, typer.Option("--by", help="month (the only grain so far).")] = "month",
    months: Annotated[int, typer.Option("--months", min=1, max=120,
                                        help="How many cohorts, up to the month of the latest conversion.")] = 12,
    metric: MetricOpt = DEFAULT_CONVERSION_METRIC,
    fmt: ChartFormatOpt = "auto",
) -> None:
    """Customers by the month of their first conversion, and the share of each cohort converting
    again in each later month: a grid on a terminal, one row per cohort and month in JSON/CSV,
    with --format chart a bar per cohort for its share converting again the next month.

    Example: klaviyo-sync cohorts --months 6
    """
    check_format(fmt, output.CHART_FORMATS)
    if by != "month":
        raise UsageError(f"--by: {by!r} is not one of month")
    database = open_database(settings)
    try:
        metric_id = resolve_metric(database, metric)
        rows: list[dict] = []
        if metric_id is not None:
            latest = database.execute("SELECT max(datetime) FROM events WHERE metric_id = ? AND profile_id IS NOT NULL",
                                      [metric_id]).fetchone()[0]
            if latest:
                first = _month_back(latest[:7], months - 1)
                rows = queries.dict_rows(database.execute(
                    f"SELECT cohort, cohort_size, months_after, month, customers, share "
                    f"FROM ({analytics.cohorts_sql('e.metric_id = ?')}) WHERE cohort >= ? "
                    "ORDER BY cohort, months_after", [metric_id, first]))
    finally:
        database.close()
    kind = output.resolve_format(fmt)
    title = f"Cohorts ({metric})"
    if kind == "chart":
        # One bar per cohort: the share of it converting again the month after its first (no
        # bar for the latest cohort, whose next month has not come).
        nxt = {r["cohort"]: r["share"] for r in rows if r["months_after"] == 1}
        bars = [{"cohort": c, "share": nxt.get(c)} for c in dict.fromkeys(r["cohort"] for r in rows)]
        output.write_rows(bars, "chart", [("cohort", "Cohort", "text"),
                                          ("share", "Converting again the next month", "rate")],
                          title=title, chart=("cohort", "share"))
        return
    if kind != "table":
        _write(rows, kind, COHORT_COLUMNS, title, [c[0] for c in COHORT_COLUMNS])
        return
    width = max([r["months_after"] for r in rows], default=0)
    grid: dict[str, dict] = {}
    for r in rows:
        line = grid.setdefault(r["cohort"], {"cohort": r["cohort"], "cohort_size": r["cohort_size"]})
        if r["months_after"]:
            line[f"m{r['months_after']}"] = r["share"]
    columns = [("cohort", "Cohort", "text"), ("cohort_size", "Customers", "int")]
    columns += [(f"m{k}", f"+{k}", "rate") for k in range(1, width + 1)]
    output.write_table(list(grid.values()), columns, title)


# -- deliverability ----------------------------------------------------------------------------
DELIVERABILITY_TABLE = [
    ("parent_name", "Campaign / flow", "text"), ("message_name", "Message", "text"),
    ("channel", "Channel", "text"), ("delivered", "Delivered", "int"),
    ("open", "Open", "text"), ("click", "Click", "text"), ("bounce", "Bounce", "text"),
    ("unsubscribe", "Unsubscribe", "text"), ("spam_complaint", "Spam", "text"),
]


def _with_bands(row: dict) -> dict:
    """A table row: each rate as a percentage followed by its band."""
    shown = dict(row)
    for rate in analytics.BANDS:
        key = rate[: -len("_rate")]
        value, band = row[rate], row[f"{key}_band"]
        shown[key] = "" if value is None else f"{value * 100:.{1 if key in ('open', 'click') else 2}f}%" + (
            f" {band}" if band else "")
    return shown


DELIVERABILITY_FIELDS = [
    "source", "parent_id", "parent_name", "message_id", "message_name", "channel", "first_send", "last_send",
    "recipients", "delivered", "opens_unique", "clicks_unique", "bounced", "unsubscribes", "spam_complaints",
    *analytics.BANDS, *(rate.replace("_rate", "_band") for rate in analytics.BANDS)]


@app.command("deliverability")
@common
def deliverability_cmd(
    settings: Settings,
    range_: Annotated[Optional[str], typer.Option(
        "--range", metavar="RANGE",
        help=f"Campaigns sent and flow days in this range (default 90d): {RANGE_FORMS}.")] = None,
    last: Annotated[Optional[int], typer.Option("--last", min=1, metavar="N",
                                                help="The last N campaigns sent instead (no flows).")] = None,
    fmt: RowsFormatOpt = "auto",
) -> None:
    """Open, click, bounce, unsubscribe and spam-complaint rates per campaign and flow message,
    each email rate with Klaviyo's band (great, proficient, room for improvement, critical),
    from the stored statistics (database only).

    Example: klaviyo-sync deliverability --last 3
    """
    if range_ is not None and last is not None:
        raise UsageError("--range and --last exclude each other")
    window = _parse(parse_range, range_ or "90d", "--range") if last is None else None
    check_format(fmt)
    database = open_database(settings)
    try:
        if window is not None:
            first, final = queries.day_bounds(window)
            sql = analytics.deliverability_sql("c.send_time >= ? AND c.send_time < ?", "s.day >= ? AND s.day <= ?")
            params = [iso(window.start), iso(window.end), first, final]
        else:
            sql = analytics.deliverability_sql(
                "c.id IN (SELECT id FROM campaigns WHERE send_time IS NOT NULL AND id IN "
                "(SELECT campaign_id FROM campaign_stats WHERE campaign_message_id != '') "
                "ORDER BY send_time DESC, id LIMIT ?)", "0")
            params = [last]
        rows = queries.dict_rows(database.execute(
            f"SELECT * FROM ({sql}) ORDER BY source, last_send DESC, parent_name, message_id", params))
    finally:
        database.close()
    title = (f"Deliverability of the last {last} campaign(s)" if window is None else
             f"Deliverability: campaigns sent {iso(window.start)} .. {iso(window.end)}, "
             f"flow days {first} .. {final}")
    if output.resolve_format(fmt) == "table":
        rows = [_with_bands(r) for r in rows]
    _write(rows, fmt, DELIVERABILITY_TABLE, title, DELIVERABILITY_FIELDS)
    if not rows and not settings.quiet:
        print(f"{PROG}: no statistics stored for this range: run sync-campaigns and sync-flows", file=sys.stderr)
