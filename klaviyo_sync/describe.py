"""What each table and column of the database means, for tools that show it (Datasette's
metadata.json, with the canned queries and dashboard of dashboard.py): ``datasette_metadata``
walks the actual schema of a database and attaches these descriptions, so a column added by a
migration shows up even before it is described here (tests/test_describe.py fails until it is)."""

from __future__ import annotations

from sqlite_utils import Database

from . import dashboard

TITLE = "Klaviyo (klaviyo-sync)"

TABLES: dict[str, str] = {
    "metrics": "Every metric (event type) of the account, e.g. Placed Order, Opened Email.",
    "profiles": "The profiles that events point at (customers and subscribers).",
    "events": "Every event synced, once each (primary key: Klaviyo's event id).",
    "campaigns": "Campaigns of every channel, archived ones too.",
    "campaign_messages": "The messages of each campaign (one per channel variant).",
    "campaign_stats": "Performance of each campaign message, from Klaviyo's campaign values report. "
                      "A campaign the report had nothing for has one row with empty statistics "
                      "and campaign_message_id = ''.",
    "sync_runs": "One row per klaviyo-sync run: what it did, how long it took, how it ended.",
    "sync_state": "High-water marks: every event before events.mark is stored.",
    "flows": "Every flow (automation) of the account, archived and deleted ones too.",
    "flow_actions": "The actions (steps) of each flow: sends, delays, splits.",
    "flow_messages": "The messages sent by flow actions.",
    "templates": "Email templates.",
    "flow_stats_daily": "Performance of each flow message per day of the account's time zone (sync-account; "
                        "UTC when unknown), from Klaviyo's flow series report. "
                        "Days a message sent nothing have no row.",
    "flow_stats_days": "Which days' flow statistics were read, for which conversion metric, and when.",
    "flow_message_daily": "Per-day flow statistics with the flow's and the message's names.",
    "lists": "Lists of the account.",
    "segments": "Segments of the account.",
    "list_members": "Which profiles are members of which list.",
    "segment_members": "Which profiles are members of which segment.",
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
    "event_attributions": "Klaviyo's attribution of events (GET /api/events?include=attributions): which campaign "
                          "or flow message, through which touch (attributed event), earned the event. Written with "
                          "the event; an event without a row is organic (or was synced before attributions were kept).",
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
_STATS = {
    "recipients": "Recipients of the message.",
    "delivered": "Messages delivered.",
    "delivery_rate": "delivered / recipients (a fraction 0-1).",
    "opens": "Opens, counting repeats.",
    "opens_unique": "Recipients who opened.",
    "open_rate": "opens_unique / delivered (a fraction 0-1).",
    "clicks": "Clicks, counting repeats.",
    "clicks_unique": "Recipients who clicked.",
    "click_rate": "clicks_unique / delivered (a fraction 0-1).",
    "conversions": "Conversions (the conversion metric's events) attributed to the message.",
    "conversion_uniques": "Recipients who converted.",
    "conversion_rate": "conversion_uniques / delivered (a fraction 0-1).",
    "conversion_value": "Revenue attributed to the message.",
    "unsubscribes": "Unsubscribes.",
    "unsubscribe_rate": "Unsubscribe rate (a fraction 0-1).",
    "bounced": "Bounces (email).",
    "bounce_rate": "bounced / recipients (a fraction 0-1).",
    "spam_complaints": "Spam complaints.",
    "spam_complaint_rate": "spam_complaints / delivered (a fraction 0-1).",
}

COLUMNS: dict[str, dict[str, str]] = {
    "metrics": {
        "name": "The metric's name, e.g. Placed Order.",
        "integration_id": "The integration that sends it (id).",
        "integration_key": "The integration's key, e.g. shopify.",
        "integration_name": "The integration's name.",
        "integration_category": "The integration's category.",
        "attributes": "Every attribute as Klaviyo returned it (JSON).",
    },
    "profiles": {
        "email": "Email address.", "phone_number": "Phone number (E.164).",
        "external_id": "Your own id for the profile, if set.", "first_name": "First name.",
        "last_name": "Last name.", "organization": "Organization.", "locale": "Locale, e.g. en-US.",
        "title": "Job title.", "image": "Image URL.",
        "last_event_date": "When the profile's latest event happened (UTC).",
        "location": "Address and coordinates (JSON).", "properties": "Custom properties (JSON).",
        "email_consent": "SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED (sync-profiles).",
        "email_can_receive": "1 if email marketing can reach the profile.",
        "email_suppression": "Suppression reasons, comma-separated, e.g. HARD_BOUNCE.",
        "email_consent_at": "When email consent was given or changed (UTC).",
        "sms_consent": "SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED.",
        "sms_can_receive": "1 if SMS marketing can reach the profile.",
        "sms_consent_at": "When SMS consent was given or changed (UTC).",
        "push_consent": "SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED.",
        "push_can_receive": "1 if push can reach the profile.",
        "subscriptions": "Subscriptions as Klaviyo returned them (JSON).",
        "predictive_analytics": "Predictive analytics (JSON, with --predictive).",
        "deleted_at": "Set when the profile was deleted in Klaviyo (UTC).",
    },
    "events": {
        "metric_id": "The metric (event type): metrics.id.",
        "profile_id": "The profile: profiles.id (NULL when the event has none).",
        "datetime": "When the event happened (UTC, YYYY-MM-DDTHH:MM:SSZ).",
        "timestamp": "The same instant in epoch seconds.",
        "uuid": "Klaviyo's event UUID.",
        "value": "The event's value (event_properties $value), e.g. an order's revenue.",
        "properties": "The event's properties (JSON).",
    },
    "campaigns": {
        "name": "Campaign name.", "channel": "email, sms or mobile_push.",
        "status": "Klaviyo's status, e.g. Sent, Draft.", "archived": "1 if archived, else 0.",
        "send_time": "When it was sent (UTC): send_time, else its messages' earliest send time.",
        "scheduled_at": "When it was scheduled (UTC).", "send_strategy": "How it is sent (JSON).",
        "subject": "Subject of its first message.", "label": "Label of its first message.",
        "attributes": "Every attribute as Klaviyo returned it (JSON).",
    },
    "campaign_messages": {
        "campaign_id": "The campaign: campaigns.id.", "channel": "email, sms or mobile_push.",
        "label": "Message label.", "subject": "Email subject.", "preview_text": "Email preview text.",
        "from_email": "Sender address.", "from_label": "Sender name.", "body": "SMS or push body.",
        "send_time": "Earliest send time (UTC).", "send_times": "Every send time (JSON).",
        "definition": "The message definition as Klaviyo returned it (JSON).",
    },
    "campaign_stats": {
        "campaign_id": "The campaign: campaigns.id.",
        "campaign_message_id": "The message: campaign_messages.id ('' on an empty row).",
        "send_channel": "The report's channel: email, sms, push-notification.",
        **_STATS,
        "conversion_metric_id": "The metric counted as a conversion: metrics.id.",
        "timeframe_start": "Start of the report timeframe asked for (UTC).",
        "timeframe_end": "End of the report timeframe asked for (UTC).",
        "fetched_at": "When these statistics were fetched (UTC).",
    },
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

COLUMNS["flows"] = {
    "name": "Flow name.", "status": "draft, manual or live.", "archived": "1 if archived, else 0.",
    "trigger_type": "What starts the flow, e.g. Added to List, Metric.",
    "deleted_at": "Set when the flow left the account (UTC).",
    "definition_updated": "The flow's `updated` its definition was read at.",
    "entry_action_id": "The first action: flow_actions.id.",
    "triggers": "Its triggers (JSON).", "profile_filter": "Who may enter (JSON).",
    "reentry_criteria": "When a profile may enter again (JSON).",
}
COLUMNS["flow_actions"] = {
    "flow_id": "The flow: flows.id.",
    "type": "send-email, send-sms, time-delay, conditional-split, ...",
    "status": "The action's status.",
    "position": "Order in a walk from the entry action, true branch first.",
    "next_action_ids": "The actions that follow (JSON).",
    "delay_value": "A time delay's amount.", "delay_unit": "A time delay's unit.",
    "delay_seconds": "A time delay in seconds.", "definition": "The action as Klaviyo returned it (JSON).",
}
COLUMNS["flow_messages"] = {
    "flow_id": "The flow: flows.id.", "flow_action_id": "The action that sends it: flow_actions.id.",
    "channel": "email or sms.", "name": "Message name.", "subject": "Email subject.",
    "preview_text": "Email preview text.", "from_email": "Sender address.", "from_label": "Sender name.",
    "template_id": "The email template: templates.id.", "body": "SMS body.",
    "definition": "The message as Klaviyo returned it (JSON).",
}
COLUMNS["templates"] = {
    "name": "Template name.", "editor_type": "How it was built, e.g. CODE, SYSTEM_DRAGGABLE.",
    "html": "HTML (NULL with --no-html).", "text": "Plain text (NULL with --no-html).",
    "amp": "AMP HTML (NULL with --no-html).",
}
COLUMNS["flow_stats_daily"] = {
    "flow_id": "The flow: flows.id.", "flow_message_id": "The message: flow_messages.id.",
    "day": "The day, YYYY-MM-DD, in the account's time zone (the account table; UTC when unknown).",
    "send_channel": "email or sms.", **_STATS,
    "conversion_metric_id": "The metric counted as a conversion: metrics.id.",
    "fetched_at": "When these statistics were fetched (UTC).",
}
COLUMNS["flow_stats_days"] = {
    "flow_id": "The flow: flows.id.", "day": "The day, YYYY-MM-DD, in the account's time zone.",
    "conversion_metric_id": "The conversion metric it was read for: metrics.id.",
    "fetched_at": "When that day was read (UTC).",
}

COLUMNS["lists"] = {
    "name": "List name.", "opt_in_process": "single_opt_in or double_opt_in.",
    "profile_count": "Members, as Klaviyo counted them.", "profile_count_at": "When it was counted (UTC).",
}
COLUMNS["segments"] = {
    "name": "Segment name.", "definition": "Its conditions (JSON).", "is_active": "1 if active.",
    "is_processing": "1 while Klaviyo is (re)computing it.", "is_starred": "1 if starred.",
    "profile_count": "Members, as Klaviyo counted them.", "profile_count_at": "When it was counted (UTC).",
}
COLUMNS["list_members"] = {"list_id": "The list: lists.id.", "profile_id": "The profile: profiles.id.",
                           "joined_group_at": "When the profile most recently joined (UTC)."}
COLUMNS["segment_members"] = {"segment_id": "The segment: segments.id.", "profile_id": "The profile: profiles.id.",
                              "joined_group_at": "When the profile most recently joined (UTC)."}
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

_ATTRIBUTION = {
    "event_id": "The attributed event (events.id), e.g. a Placed Order.",
    "attributed_event_id": "The touch that earned it (events.id): the opened or clicked email, the clicked or "
                           "received SMS, the opened push. May not be stored (outside the synced window).",
    "campaign_id": "The campaign credited (campaigns.id); empty for a flow.",
    "campaign_message_id": "The campaign message credited (campaign_messages.id).",
    "flow_id": "The flow credited (flows.id); empty for a campaign.",
    "flow_message_id": "The flow message credited (flow_messages.id).",
    "flow_message_variation_id": "The flow message's A/B variation credited, when Klaviyo names one.",
}
COLUMNS["event_attributions"] = {"id": "Klaviyo's attribution id (primary key).", **_ATTRIBUTION}
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


def _declared() -> None:
    """Declared streams describe their own tables (klaviyo_sync/streams/)."""
    from .streams import declarations  # the streams import describe's neighbours: import them late

    for decl in declarations():
        for spec in decl.tables:
            TABLES[spec.name] = spec.description
            COLUMNS[spec.name] = spec.descriptions()


_declared()

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
TABLES.setdefault("event_attributions", "Klaviyo's attribution of an event (a conversion) to the campaign or flow "
                                        "message that earned it, kept by sync-events.")
COLUMNS.setdefault("event_attributions", {
    "event_id": "The attributed event (the conversion): events.id.",
    "attributed_event_id": "The touch it is attributed to (an open, click or receipt): events.id.",
    "campaign_id": "The campaign: campaigns.id.", "campaign_message_id": "The campaign message: campaign_messages.id.",
    "flow_id": "The flow: flows.id.", "flow_message_id": "The flow message: flow_messages.id.",
    "flow_message_variation_id": "The flow message's A/B variation.",
})
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
