"""The tables Fivetran's Klaviyo connector writes, as Fivetran's `dbt_klaviyo` package (v1.4.1)
reads them (its ``get_*_columns`` macros and ``src_klaviyo.yml``), built from our tables: schema
``klaviyo`` of a DuckDB file, so the package runs unchanged with its default variables.

Where our store has no such value the column is NULL (dbt fills missing columns with NULL too).
``_fivetran_synced`` is the end of the last successful sync run for every row; ``_fivetran_deleted``
is true for a profile or flow deleted in Klaviyo.

Attribution: a conversion's ``property_attribution`` is a JSON object built from its row in
``event_attributions`` (the first by id when there are several), ``{"attributed_event_id": …,
"campaign_id": …, "campaign_message_id": …, "flow_id": …, "flow_message_id": …,
"flow_message_variation_id": …}``, or NULL; the package follows ``attributed_event_id`` to the
touch event and credits that event's ``campaign_id`` or ``flow_id``. A touch event (an opened
email, …) carries ``campaign_id`` / ``flow_id`` / ``flow_message_id`` from its ``$message`` (a
campaign or flow message we hold) or, failing that, from the attributions that point at it.
``property_value`` is ``$value`` as plain numeric text (SQLite's 15 significant digits).
"""

from __future__ import annotations

import sqlite3

from ..errors import UsageError
from . import Source, _q

SCHEMA = "klaviyo"


def _has(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone() is not None


_SYNCED = "(SELECT max(finished_at) FROM sync_runs WHERE status = 'ok')"


def _event(attributions: bool) -> tuple[str, list[tuple[str, str]], tuple[str, ...]]:
    msg = "CASE WHEN json_valid(e.properties) THEN json_extract(e.properties, '$.\"$message\"') END"
    if attributions:
        attribution = """(SELECT json_object('attributed_event_id', a.attributed_event_id,
                   'campaign_id', a.campaign_id, 'campaign_message_id', a.campaign_message_id,
                   'flow_id', a.flow_id, 'flow_message_id', a.flow_message_id,
                   'flow_message_variation_id', a.flow_message_variation_id)
                 FROM event_attributions a WHERE a.event_id = e.id ORDER BY a.id LIMIT 1)"""
        variation = "t.flow_message_variation_id"
        touch = "LEFT JOIN temp.klaviyo_export_touch t ON t.id = e.id"
        campaign, flow, flow_message = "t.campaign_id", "t.flow_id", "t.flow_message_id"
    else:
        attribution = variation = campaign = flow = flow_message = "NULL"
        touch = ""
    select = f"""
        SELECT 0 AS _fivetran_deleted, {_SYNCED} AS _fivetran_synced, {variation} AS _variation,
               coalesce(cm.campaign_id, {campaign}) AS campaign_id, e.datetime AS datetime,
               coalesce(fm.flow_id, {flow}) AS flow_id,
               coalesce(fm.id, {flow_message}) AS flow_message_id,
               e.id AS id, e.metric_id AS metric_id, e.profile_id AS person_id,
               e.datetime AS timestamp, m.name AS type, e.uuid AS uuid,
               {attribution} AS property_attribution,
               CASE WHEN e.value IS NOT NULL THEN CAST(e.value AS TEXT) END AS property_value,
               NULL AS propertyAttribution, NULL AS propertyValue
        FROM events e
        LEFT JOIN metrics m ON m.id = e.metric_id
        LEFT JOIN campaign_messages cm ON cm.id = {msg}
        LEFT JOIN flow_messages fm ON fm.id = {msg}
        {touch}"""
    columns = [("_fivetran_deleted", "boolean"), ("_fivetran_synced", "timestamp"), ("_variation", "text"),
               ("campaign_id", "text"), ("datetime", "timestamp"), ("flow_id", "text"),
               ("flow_message_id", "text"), ("id", "text"), ("metric_id", "text"), ("person_id", "text"),
               ("timestamp", "timestamp"), ("type", "text"), ("uuid", "text"),
               ("property_attribution", "text"), ("property_value", "text"),
               ("propertyAttribution", "text"), ("propertyValue", "text")]
    deps = ("events", "metrics", "campaign_messages", "flow_messages", "sync_runs") + \
        (("event_attributions",) if attributions else ())
    return select, columns, deps


def _loc(key: str) -> str:
    return f"CASE WHEN json_valid(p.location) THEN json_extract(p.location, '$.{key}') END"


PERSON = (f"""
    SELECT p.deleted_at IS NOT NULL AS _fivetran_deleted, {_SYNCED} AS _fivetran_synced,
           {_loc('address1')} AS address_1, {_loc('address2')} AS address_2, {_loc('city')} AS city,
           {_loc('country')} AS country, p.created AS created, p.email AS email,
           p.first_name AS first_name, p.id AS id, p.last_name AS last_name,
           {_loc('latitude')} AS latitude, {_loc('longitude')} AS longitude,
           p.organization AS organization, p.phone_number AS phone_number, {_loc('region')} AS region,
           {_loc('timezone')} AS timezone, p.title AS title, p.updated AS updated, {_loc('zip')} AS zip,
           p.last_event_date AS last_event_date
    FROM profiles p""",
    [("_fivetran_deleted", "boolean"), ("_fivetran_synced", "timestamp"), ("address_1", "text"),
     ("address_2", "text"), ("city", "text"), ("country", "text"), ("created", "timestamp"),
     ("email", "text"), ("first_name", "text"), ("id", "text"), ("last_name", "text"),
     ("latitude", "real"), ("longitude", "real"), ("organization", "text"), ("phone_number", "text"),
     ("region", "text"), ("timezone", "text"), ("title", "text"), ("updated", "timestamp"),
     ("zip", "text"), ("last_event_date", "timestamp")],
    ("profiles", "sync_runs"))

# campaign_type: our channel (email, sms, mobile_push); status: lower-case, as Fivetran's.
CAMPAIGN = (f"""
    SELECT 0 AS _fivetran_deleted, {_SYNCED} AS _fivetran_synced, c.channel AS campaign_type,
           c.created_at AS created, NULL AS email_template_id,
           (SELECT min(from_email) FROM campaign_messages WHERE campaign_id = c.id) AS from_email,
           (SELECT min(from_label) FROM campaign_messages WHERE campaign_id = c.id) AS from_name,
           c.id AS id, c.name AS name, c.send_time AS send_time,
           CASE WHEN c.status = 'Sent' THEN c.send_time END AS sent_at, lower(c.status) AS status,
           NULL AS status_id, c.status AS status_label, c.subject AS subject, c.updated_at AS updated,
           c.archived AS archived, c.scheduled_at AS scheduled
    FROM campaigns c""",
    [("_fivetran_deleted", "boolean"), ("_fivetran_synced", "timestamp"), ("campaign_type", "text"),
     ("created", "timestamp"), ("email_template_id", "text"), ("from_email", "text"),
     ("from_name", "text"), ("id", "text"), ("name", "text"), ("send_time", "timestamp"),
     ("sent_at", "timestamp"), ("status", "text"), ("status_id", "text"), ("status_label", "text"),
     ("subject", "text"), ("updated", "timestamp"), ("archived", "boolean"), ("scheduled", "timestamp")],
    ("campaigns", "campaign_messages", "sync_runs"))

FLOW = (f"""
    SELECT f.deleted_at IS NOT NULL AS _fivetran_deleted, {_SYNCED} AS _fivetran_synced,
           f.created AS created, f.id AS id, f.name AS name, f.status AS status, f.updated AS updated,
           f.archived AS archived, f.trigger_type AS trigger_type
    FROM flows f""",
    [("_fivetran_deleted", "boolean"), ("_fivetran_synced", "timestamp"), ("created", "timestamp"),
     ("id", "text"), ("name", "text"), ("status", "text"), ("updated", "timestamp"),
     ("archived", "boolean"), ("trigger_type", "text")],
    ("flows", "sync_runs"))

METRIC = (f"""
    SELECT 0 AS _fivetran_deleted, {_SYNCED} AS _fivetran_synced, m.created AS created, m.id AS id,
           m.integration_id AS integration_id, m.integration_category AS integration_category,
           m.integration_name AS integration_name, m.name AS name, m.updated AS updated
    FROM metrics m""",
    [("_fivetran_deleted", "boolean"), ("_fivetran_synced", "timestamp"), ("created", "timestamp"),
     ("id", "text"), ("integration_id", "text"), ("integration_category", "text"),
     ("integration_name", "text"), ("name", "text"), ("updated", "timestamp")],
    ("metrics", "sync_runs"))

INTEGRATION = (f"""
    SELECT 0 AS _fivetran_deleted, {_SYNCED} AS _fivetran_synced, integration_id AS id,
           min(integration_category) AS category, min(integration_name) AS name
    FROM metrics WHERE integration_id IS NOT NULL GROUP BY integration_id""",
    [("_fivetran_deleted", "boolean"), ("_fivetran_synced", "timestamp"), ("id", "text"),
     ("category", "text"), ("name", "text")],
    ("metrics", "sync_runs"))


def fivetran_sources(conn: sqlite3.Connection, wanted: list[str] | None) -> list[Source]:
    attributions = _has(conn, "event_attributions")
    if attributions:
        # The touch each attribution points at: which campaign or flow message it was.
        conn.execute("DROP TABLE IF EXISTS temp.klaviyo_export_touch")
        conn.execute("""CREATE TEMP TABLE klaviyo_export_touch AS
            SELECT attributed_event_id AS id, min(campaign_id) AS campaign_id, min(flow_id) AS flow_id,
                   min(flow_message_id) AS flow_message_id,
                   min(flow_message_variation_id) AS flow_message_variation_id
            FROM event_attributions WHERE attributed_event_id IS NOT NULL GROUP BY attributed_event_id""")
        conn.execute("CREATE UNIQUE INDEX temp.klaviyo_export_touch_id ON klaviyo_export_touch (id)")
    specs = {"event": _event(attributions), "person": PERSON, "campaign": CAMPAIGN, "flow": FLOW,
             "metric": METRIC, "integration": INTEGRATION}
    if wanted:
        unknown = [w for w in wanted if w not in specs]
        if unknown:
            raise UsageError(f"--tables: the fivetran schema has no table {', '.join(map(repr, unknown))} "
                             f"(it has: {', '.join(specs)})")
    out = []
    for name, (select, columns, deps) in specs.items():
        if wanted and name not in wanted:
            continue
        out.append(Source(name, f"SELECT * FROM ({select})", columns, deps=deps, schema=SCHEMA))
    return out


__all__ = ["fivetran_sources", "SCHEMA", "_q"]
