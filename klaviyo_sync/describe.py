"""What each table and column of the database means, for tools that show it (Datasette's
metadata.json, with the canned queries and dashboard of dashboard.py): ``datasette_metadata``
walks the actual schema of a database and attaches these descriptions, so a column added by a
migration shows up even before it is described (tests/test_describe.py fails until it is).

A stream's tables are described by its declaration (klaviyo_sync/streams/, ``TableSpec`` and
``Column``); this module holds the descriptions of what belongs to no stream: the bookkeeping
tables (sync_runs, sync_state, verify's) and the views, each once."""

from __future__ import annotations

from sqlite_utils import Database

from . import dashboard
from .streams.attributions import ATTRIBUTIONS_SPEC

TITLE = "Klaviyo (klaviyo-sync)"

TABLES: dict[str, str] = {
    "sync_runs": "One row per klaviyo-sync run: what it did, how long it took, how it ended.",
    "sync_state": "High-water marks: every event before events.mark is stored.",
    "flow_message_daily": "Per-day flow statistics with the flow's and the message's names.",
    "verify_results": "One row per metric, day and verify run: local counts against Klaviyo's.",
    "unverifiable_metrics": "Metrics Klaviyo refused to aggregate (custom ones): verify asks again only "
                            "7 days after the last refusal, or with --retry-unverifiable.",
    "email_subscribers": "Live profiles with an email who are subscribed to email marketing and can receive it.",
    "list_growth": "Per list and day: members who joined that day and the running total.",
    "profile_lists": "Each profile's email with its lists.",
    "event_details": "Events with their metric's name and their profile's email.",
    "campaign_performance": "One row per campaign with its statistics summed over its messages.",
    "suppressions": ("Who may not be emailed or texted, and why: one row per profile and channel Klaviyo will not "
                     "send marketing to (global exclusions, as Fivetran and Airbyte call them; from sync-profiles)."),
    "attributed_conversions": "Every event with Klaviyo's stored attribution (one per event: of several, the one "
                              "whose touch is latest, then the smallest id); the attribution columns are empty for "
                              "an organic event. `attribution --model klaviyo`, `customers`, `customer`, "
                              "customer_summary and customer_timeline read it.",
    "session_touches": "Opened or clicked emails and clicked SMS that carry a stored campaign or flow message "
                       "($message, $flow): the touches that start a session in dbt_klaviyo's model.",
    "session_attributed_conversions": "Every event attributed by dbt_klaviyo's session model: the latest session "
                                      "touch of its profile at or before it, if at most 120 hours old (24 for an "
                                      "SMS); a newer touch starts a new session. `attribution --model session` runs "
                                      "its rule restricted to the metric and range.",
    "conversion_lag": "Attributed events of either model (model column) with the time from their touch to them "
                      "and its hour bucket. `conversion-lag` runs its rule restricted to the metric and range.",
}

_COMMON = {
    "id": "Klaviyo's id (primary key).",
    "created": "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ).",
    "updated": "When it last changed in Klaviyo (UTC).",
    "created_at": "When Klaviyo created it (UTC).",
    "updated_at": "When it last changed in Klaviyo (UTC).",
}

COLUMNS: dict[str, dict[str, str]] = {
    "sync_runs": {
        "id": "Run number.", "command": "The command, e.g. sync-events.",
        "arguments": "Its arguments (JSON; never the API key).",
        "started_at": "Start (UTC).", "finished_at": "End (UTC).",
        "status": "running, ok, partial, skipped (an optional sync-all step the key has no scope for), failed, interrupted or abandoned.",
        "window_start": "Start of the window synced (UTC).", "window_end": "End of the window (UTC).",
        "rows_written": "Rows inserted or changed per table (JSON).", "pages": "Pages read.",
        "requests": "HTTP requests made.", "retries": "Retries.",
        "rate_limit_wait_s": "Seconds spent waiting on rate limits.", "seconds": "Duration.",
        "error": "The error, redacted (failed or partial runs).",
    },
    "sync_state": {
        "key": "events.mark, or events.mark:metric=... for --metric runs; attributions.covered: the windows "
               "(JSON [start, end) pairs) whose events were fetched with their attributions.",
        "value": "The mark (UTC): every event before it is stored.",
        "updated_at": "When the mark last moved (UTC).",
    },
}

COLUMNS["verify_results"] = {
    "run_id": "The verify run: sync_runs.id.", "metric_id": "metrics.id.", "metric": "The metric's name.",
    "day": "The day checked, YYYY-MM-DD in timezone.", "timezone": "The time zone the days are in.",
    "local": "Events of that metric and day in this database.",
    "klaviyo": "Klaviyo's count (metric-aggregates); NULL: unverifiable.",
    "difference": "local - klaviyo.",
    "status": "ok, missing_locally, extra_locally, unsettled or unverifiable.",
    "local_before": "With --repair: the local count before repairing.",
    "repaired": "1 if --repair refetched the day.", "checked_at": "When it was checked (UTC).",
}
COLUMNS["unverifiable_metrics"] = {
    "metric_id": "metrics.id.", "metric": "The metric's name.", "reason": "Klaviyo's answer (the 400's detail).",
    "first_refused_at": "When Klaviyo first refused it (UTC).",
    "refused_at": "When Klaviyo last refused it (UTC): asked again 7 days later.",
}
COLUMNS["list_growth"] = {"list_id": "The list: lists.id.", "list": "The list's name.",
                          "joined": "Members who joined that day.", "members": "Running total of members."}
COLUMNS["profile_lists"] = {"list_id": "The list: lists.id.", "list": "The list's name.",
                            "joined_group_at": "When the profile most recently joined (UTC)."}
COLUMNS["email_subscribers"] = {}
COLUMNS["flow_message_daily"] = {"flow_name": "The flow's name (flows.name).",
                                 "message_name": "The message's name (flow_messages.name)."}
COLUMNS["event_details"] = {"metric": "The metric's name (metrics.name).",
                            "email": "The profile's email (profiles.email)."}
COLUMNS["suppressions"] = {
    "profile_id": "The profile (profiles.id).", "channel": "email or sms.",
    "address": "The email address or phone number that may not be messaged.",
    "reason": "Why: the email suppression (HARD_BOUNCE, SPAM_COMPLAINT, USER_SUPPRESSED ...) or else the "
              "consent (UNSUBSCRIBED, NEVER_SUBSCRIBED).",
    "consent": "The channel's consent: SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED.",
    "consent_at": "When that consent was given or changed (UTC).",
}
COLUMNS["campaign_performance"] = {
    "stats_fetched_at": "When its statistics were fetched (UTC); empty if never.",
    "recipients": "Recipients, summed over the campaign's messages.",
    "open_rate": "Recomputed from the sums: opens_unique / delivered.",
    "click_rate": "Recomputed from the sums: clicks_unique / delivered.",
    "conversion_rate": "Recomputed from the sums: conversion_uniques / delivered.",
}

# The views of attributed events describe the attribution columns as event_attributions does.
_ATTRIBUTION = {k: v for k, v in ATTRIBUTIONS_SPEC.descriptions().items() if k != "id"}
_CONVERSION = {
    **_ATTRIBUTION,
    "event_id": "The event (events.id).",
    "attributed_event_id": "The touch that earned it (events.id); empty when organic.",
    "metric_name": "The event's metric (metrics.name).",
    "day": "The event's UTC day, YYYY-MM-DD.",
    "value": "The event's $value (revenue), 0 when it has none.",
    "touch_datetime": "When the touch happened (UTC); empty when organic or the touch is not stored.",
    "message_id": "The campaign or flow message credited.",
    "channel": "The credited message's channel: email, sms or mobile_push; empty when organic.",
}
COLUMNS["attributed_conversions"] = dict(_CONVERSION)
COLUMNS["session_attributed_conversions"] = {
    **_CONVERSION, "flow_message_variation_id": "Always empty: the session model does not know variations."}
COLUMNS["session_touches"] = {
    "event_id": "The touch (events.id).", "metric_name": "Opened Email, Clicked Email or Clicked SMS.",
    "channel": "email or sms.", "campaign_id": "The campaign its $message names (campaigns.id).",
    "campaign_message_id": "The campaign message its $message names.",
    "flow_id": "The flow of its $message, or its $flow.", "flow_message_id": "The flow message its $message names."}
COLUMNS["conversion_lag"] = {
    **_CONVERSION, "model": "klaviyo (stored attribution) or session (dbt_klaviyo's session model).",
    "lag_seconds": "Seconds from the touch to the event; empty when the touch is not stored.",
    "lag_bucket": "The hour bucket of the lag: 0-1h, 1-2h, 2-4h, 4-8h, 8-12h, 12-24h, 24-48h, 48-72h, "
                  "72-96h, 96-120h or 120h+; empty when the touch is not stored."}


# Tables that are bookkeeping, not data: left out of the metadata (Datasette shows them anyway).
INTERNAL = {"_sqlite_migrations"}


def column_description(table: str, column: str) -> str | None:
    return COLUMNS.get(table, {}).get(column) or _COMMON.get(column)


def datasette_metadata(db: Database, name: str) -> dict:
    """Datasette's metadata.json for this database (``name``: Datasette's name for it, the file
    name without .db): a title, and a description for every table, view and column it has."""
    tables: dict[str, dict] = {}
    names = [t for t in db.table_names() if t not in INTERNAL and not t.startswith("sqlite_")]
    for table in names + db.view_names():
        columns = {}
        source = db[table] if table in names else db.view(table)
        for col in source.columns:
            text = column_description(table, col.name)
            if text is None and table not in names:  # a view: the column's meaning in a table
                text = next(filter(None, (column_description(t, col.name)
                                          for t in ("events", "profiles", "campaigns", "campaign_stats",
                                                    "flows", "flow_messages", "flow_stats_daily"))), None)
            if text is not None:
                columns[col.name] = text
        entry: dict = {}
        if table in TABLES:
            entry["description"] = TABLES[table]
        if columns:
            entry["columns"] = columns
        tables[table] = entry
    charts = dashboard.available(db)  # canned queries and charts for what this database has
    return {"title": TITLE,
            "description": "A copy of a Klaviyo account made by klaviyo-sync. Datetimes are UTC text.",
            "databases": {name: {"tables": tables, "queries": dashboard.canned_queries(charts)}},
            "plugins": {"datasette-dashboards": dashboard.dashboard(charts, name)}}


def undescribed(db: Database) -> list[str]:
    """``table.column`` of every table column without a description."""
    missing = []
    for name in db.table_names():
        if name in INTERNAL or name.startswith("sqlite_"):
            continue
        if name not in TABLES:
            missing.append(name)
        missing += [f"{name}.{c.name}" for c in db[name].columns if column_description(name, c.name) is None]
    return missing


# -- the analytics views (migration m008_analytics; their rules: klaviyo_sync/analytics.py) ---------
TABLES.update({
    "customer_summary": "One row per conversion metric (Placed Order, and the metrics the stored statistics were "
                        "read for) and profile with at least one of its events: what `customers` answers.",
    "customer_rfm": "Recency, frequency and monetary scores (1-3) and Klaviyo's RFM group of each customer of the "
                    "last 365 days, per conversion metric: what `rfm --range 365d` answers.",
    "cohort_retention": "Per conversion metric, cohort (month of a customer's first conversion) and month after it: "
                        "the cohort's size and how many converted again that month: what `cohorts` answers.",
    "message_deliverability": "Per campaign message and flow message (all stored days): open, click, bounce, "
                              "unsubscribe and spam-complaint rates with Klaviyo's band for email.",
    "customer_timeline": "Every event of a profile with its metric and, for an attributed conversion, the campaign or "
                         "flow and message that earned it: what `customer` answers.",
})
_BAND = "Klaviyo's band for email: great, proficient, room for improvement or critical (NULL for SMS and push)."
COLUMNS.update({
    "customer_summary": {
        "metric": "The conversion metric's name.", "metric_id": "The conversion metric: metrics.id.",
        "orders": "Conversions (events of the metric).", "revenue": "Their value summed (events.value, $value).",
        "first_order": "The first conversion (UTC).", "last_order": "The latest conversion (UTC).",
        "attributed_revenue": "Revenue of the conversions attributed_conversions credits to a campaign or flow message.",
        "organic_revenue": "Revenue of the others: revenue - attributed_revenue.",
    },
    "customer_rfm": {
        "metric": "The conversion metric's name.", "metric_id": "The conversion metric: metrics.id.",
        "recency_days": "Whole days from the last conversion to now.", "frequency": "Conversions in the last 365 days.",
        "monetary": "Their revenue.", "last_order": "The latest conversion (UTC).",
        "recency_score": "1-3: fewer days scores higher; 1 + floor(3 * (rank - 1) / customers), ties share a rank.",
        "frequency_score": "1-3: more conversions scores higher (same cut).",
        "monetary_score": "1-3: more revenue scores higher (same cut).",
        "rfm_score": "recency, frequency and monetary scores as one number, e.g. 321.",
        "rfm_group": "Champions, Loyal, Recent, Needs attention, At risk or Inactive.",
    },
    "cohort_retention": {
        "metric": "The conversion metric's name.", "metric_id": "The conversion metric: metrics.id.",
        "cohort": "The UTC month (YYYY-MM) of the customers' first conversion.",
        "months_after": "Months after the cohort's month (0: the cohort's own month).",
        "month": "That month, YYYY-MM.", "cohort_size": "Customers in the cohort.",
        "customers": "Of them, how many converted in that month (month 0: all).",
        "share": "customers / cohort_size (a fraction 0-1).",
    },
    "message_deliverability": {
        "source": "campaign or flow.", "parent_id": "The campaign or flow: campaigns.id or flows.id.",
        "parent_name": "The campaign's or flow's name.", "message_id": "campaign_messages.id or flow_messages.id.",
        "message_name": "The message's label or name.", "channel": "email, sms or mobile_push.",
        "first_send": "A campaign's send time; a flow message's first day with statistics.",
        "last_send": "A campaign's send time; a flow message's last day with statistics.",
        "open_band": _BAND, "click_band": _BAND, "bounce_band": _BAND, "unsubscribe_band": _BAND,
        "spam_complaint_band": _BAND,
        "unsubscribe_rate": "unsubscribes / delivered (a fraction 0-1).",
    },
    "customer_timeline": {
        "event_id": "The event: events.id.", "metric": "The event's metric (metrics.name).",
        "attributed_event_id": "The touch Klaviyo attributed the conversion to: events.id.",
        "campaign_name": "The campaign's name.", "flow_name": "The flow's name.",
        "message_id": "The campaign or flow message: campaign_messages.id or flow_messages.id.",
        "message_name": "The message's label or name.", "channel": "The message's channel: email, sms or mobile_push.",
    },
})


def _declared() -> None:
    """Declared streams describe their own tables (klaviyo_sync/streams/: each ``Column`` next to
    the declaration that owns the table); this module describes only what no stream owns (the
    bookkeeping tables and the views). A table described in both places is an error."""
    from .streams import declarations  # the streams import describe's neighbours: import them late

    for decl in declarations():
        for spec in decl.tables:
            if spec.name in TABLES or spec.name in COLUMNS:
                raise ValueError(f"{spec.name} is described by {decl.command}'s declaration: not in describe.py")
            TABLES[spec.name] = spec.description
            COLUMNS[spec.name] = spec.descriptions()


_declared()
