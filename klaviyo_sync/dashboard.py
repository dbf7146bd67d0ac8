"""Canned queries and a dashboard for Datasette, written into the metadata by
``datasette-metadata``: revenue by day, attribution by campaign and by flow, cohorts and
deliverability. Each query is written only when the database has the table or view it reads
(with the columns it reads), so an older database gets the charts it can draw.

The dashboard is for the ``datasette-dashboards`` plugin (Vega-Lite charts, bundled with the
plugin: nothing is loaded from the internet). Datasette 0.64/0.65 read both from metadata.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlite_utils import Database

SLUG = "klaviyo"
# The order metric the revenue queries count, as `revenue` does by default.
ORDER_METRIC = "Placed Order"
# Revenue over the last 90 days of stored events (relative to the data, not the clock, so a
# copy read later still shows its days).
_LAST_90_DAYS = "e.datetime >= (SELECT date(max(datetime), '-89 days') FROM events)"


@dataclass
class Chart:
    slug: str
    title: str
    description: str
    sql: str
    needs: dict[str, set[str]]  # table or view -> the columns the query reads
    library: str = "vega-lite"
    display: dict = field(default_factory=dict)


def _bars_by_name(name_field: str, title: str) -> dict:
    """Horizontal bars, most revenue on top."""
    return {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "y": {"field": name_field, "type": "nominal", "sort": "-x", "title": title,
                  "axis": {"labelLimit": 300}},
            "x": {"field": "revenue", "type": "quantitative", "title": "Attributed revenue"},
            "tooltip": [{"field": name_field, "type": "nominal"},
                        {"field": "conversions", "type": "quantitative"},
                        {"field": "revenue", "type": "quantitative", "format": ",.2f"}],
        },
    }


# SVG (not canvas): each bar carries an aria-label with its numbers, which screen readers (and
# the browser test) read.
_SVG = {"usermeta": {"embedOptions": {"renderer": "svg", "actions": False}}}

CHARTS = [
    Chart("revenue-by-day", "Revenue by day",
          f"{ORDER_METRIC} orders and their revenue per UTC day (events), the last 90 days of stored events.",
          "SELECT substr(e.datetime, 1, 10) AS day, count(*) AS orders, round(sum(e.value), 2) AS revenue\n"
          "FROM events e JOIN metrics m ON m.id = e.metric_id\n"
          f"WHERE m.name = '{ORDER_METRIC}' AND {_LAST_90_DAYS}\n"
          "GROUP BY day ORDER BY day",
          {"events": {"datetime", "value", "metric_id"}, "metrics": {"id", "name"}},
          display={**_SVG,
                   "mark": {"type": "bar", "tooltip": True},
                   "encoding": {
                       "x": {"field": "day", "type": "ordinal", "title": "Day (UTC)",
                             "axis": {"labelAngle": -45, "labelOverlap": True}},
                       "y": {"field": "revenue", "type": "quantitative", "title": "Revenue"},
                       "tooltip": [{"field": "day", "type": "ordinal"},
                                   {"field": "orders", "type": "quantitative"},
                                   {"field": "revenue", "type": "quantitative", "format": ",.2f"}],
                   }}),
    Chart("attribution-by-campaign", "Attributed revenue by campaign",
          "Conversions attributed to each campaign and their value (the 25 campaigns with the most); "
          "a campaign is named with its send day, as names repeat.",
          "SELECT coalesce(c.name, a.campaign_id) || coalesce(' (' || substr(c.send_time, 1, 10) || ')', '')\n"
          "         AS campaign, count(*) AS conversions,\n"
          "       round(sum(a.value), 2) AS revenue\n"
          "FROM attributed_conversions a LEFT JOIN campaigns c ON c.id = a.campaign_id\n"
          "WHERE a.campaign_id IS NOT NULL\n"
          "GROUP BY a.campaign_id ORDER BY revenue DESC LIMIT 25",
          {"attributed_conversions": {"campaign_id", "value"}, "campaigns": {"id", "name", "send_time"}},
          display={**_SVG, **_bars_by_name("campaign", "Campaign")}),
    Chart("attribution-by-flow", "Attributed revenue by flow",
          "Conversions attributed to each flow and their value (the 25 flows with the most).",
          "SELECT coalesce(f.name, a.flow_id) AS flow, count(*) AS conversions,\n"
          "       round(sum(a.value), 2) AS revenue\n"
          "FROM attributed_conversions a LEFT JOIN flows f ON f.id = a.flow_id\n"
          "WHERE a.flow_id IS NOT NULL\n"
          "GROUP BY a.flow_id ORDER BY revenue DESC LIMIT 25",
          {"attributed_conversions": {"flow_id", "value"}, "flows": {"id", "name"}},
          display={**_SVG, **_bars_by_name("flow", "Flow")}),
    Chart("cohorts", "Cohort retention", "The cohort_retention view.",
          "SELECT * FROM cohort_retention", {"cohort_retention": set()}, library="table"),
    Chart("deliverability", "Deliverability by message", "The message_deliverability view.",
          "SELECT * FROM message_deliverability LIMIT 200", {"message_deliverability": set()}, library="table"),
    Chart("customers", "Customers", "The customer_summary view.",
          "SELECT * FROM customer_summary LIMIT 200", {"customer_summary": set()}, library="table"),
]
# Charts the dashboard shows (customers is a canned query only: a long table, not a picture).
ON_DASHBOARD = ("revenue-by-day", "attribution-by-campaign", "attribution-by-flow", "cohorts", "deliverability")


def available(db: Database) -> list[Chart]:
    """The charts whose tables and views exist with the columns they read."""
    columns: dict[str, set[str]] = {}
    for name in db.table_names():
        columns[name] = {c.name for c in db[name].columns}
    for name in db.view_names():
        columns[name] = {c.name for c in db.view(name).columns}
    return [c for c in CHARTS if all(t in columns and cols <= columns[t] for t, cols in c.needs.items())]


def canned_queries(charts: list[Chart]) -> dict:
    return {c.slug.replace("-", "_"): {"title": c.title, "description": c.description, "sql": c.sql}
            for c in charts}


def dashboard(charts: list[Chart], database: str) -> dict:
    """The datasette-dashboards plugin's configuration: one dashboard, the revenue chart across
    the top, the others two by two."""
    shown = [c for c in charts if c.slug in ON_DASHBOARD]
    layout, rest = [], [c.slug for c in shown]
    if "revenue-by-day" in rest:
        rest.remove("revenue-by-day")
        layout.append(["revenue-by-day", "revenue-by-day"])
    for i in range(0, len(rest), 2):
        pair = rest[i:i + 2]
        layout.append(pair if len(pair) == 2 else pair * 2)
    chart_config = {}
    for c in shown:
        entry = {"title": c.title, "db": database, "query": c.sql, "library": c.library}
        if c.display:
            entry["display"] = c.display
        chart_config[c.slug] = entry
    return {SLUG: {"title": "Klaviyo", "description": "Revenue, attribution, cohorts and deliverability, "
                                                       "from the copy klaviyo-sync keeps.",
                   "layout": layout, "charts": chart_config}}
