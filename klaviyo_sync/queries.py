"""Read-only questions the CLI asks the database: campaigns for a range, and the status report."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from .timeutil import Window, iso, parse_datetime

CAMPAIGN_FIELDS = [
    "id", "name", "channel", "status", "archived", "send_time", "subject", "label",
    "recipients", "delivered", "opens", "opens_unique", "open_rate", "clicks", "clicks_unique",
    "click_rate", "conversions", "conversion_rate", "conversion_value", "unsubscribes",
    "bounced", "spam_complaints", "stats_fetched_at",
]
# (key, heading, kind) for the terminal table.
CAMPAIGN_TABLE = [
    ("send_time", "Sent (UTC)", "text"), ("name", "Campaign", "text"), ("channel", "Channel", "text"),
    ("recipients", "Recipients", "int"), ("open_rate", "Open rate", "rate"),
    ("click_rate", "Click rate", "rate"), ("conversions", "Conversions", "int"),
    ("conversion_value", "Revenue", "money"), ("unsubscribes", "Unsubs", "int"),
]


def data_tables(db: Database) -> list[str]:
    """Every table of the schema in creation order (new families' tables included), without
    SQLite's and the migration bookkeeping's own."""
    return [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT IN ('_sqlite_migrations', 'sync_state') ORDER BY rowid").fetchall()]


def campaigns_in_range(db: Database, window: Window, channels: list[str] | None = None) -> list[dict]:
    """Campaigns sent in [start, end), newest first, with their statistics."""
    sql = f"SELECT {', '.join(CAMPAIGN_FIELDS)} FROM campaign_performance WHERE send_time >= ? AND send_time < ?"
    params: list = [iso(window.start), iso(window.end)]
    if channels:
        sql += f" AND channel IN ({','.join('?' for _ in channels)})"
        params += channels
    sql += " ORDER BY send_time DESC, id"
    rows = []
    for r in db.execute(sql, params).fetchall():
        row = dict(zip(CAMPAIGN_FIELDS, r))
        row["archived"] = None if row["archived"] is None else bool(row["archived"])
        rows.append(row)
    return rows


def last_run_finished(db: Database, command: str) -> str | None:
    row = db.execute(
        "SELECT max(finished_at) FROM sync_runs WHERE command = ? AND status IN ('ok', 'partial')", [command]
    ).fetchone()
    return row[0] if row else None


def status_report(db: Database, now: datetime, runs: int = 10) -> dict:
    counts = {t: db.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in data_tables(db)}
    marks = {k: v for k, v in db.execute("SELECT key, value FROM sync_state ORDER BY key").fetchall()}
    last = {}
    for (command,) in db.execute("SELECT DISTINCT command FROM sync_runs ORDER BY command").fetchall():
        finished = last_run_finished(db, command)
        last[command] = {
            "last_success": finished,
            "age_s": int((now - parse_datetime(finished)).total_seconds()) if finished else None,
        }
    cols = ["id", "command", "status", "started_at", "finished_at", "window_start", "window_end",
            "rows_written", "pages", "requests", "retries", "rate_limit_wait_s", "seconds", "error"]
    recent = []
    for r in db.execute(f"SELECT {', '.join(cols)} FROM sync_runs ORDER BY id DESC LIMIT ?", [runs]).fetchall():
        row = dict(zip(cols, r))
        row["rows_written"] = json.loads(row["rows_written"]) if row["rows_written"] else {}
        recent.append(row)
    account = marks.pop("account.id", None)  # the account this database holds: not a mark
    return {"account": account, "tables": counts, "marks": marks, "last_success": last, "runs": recent}


def events_per_day(db: Database, today: date, days: int = 14) -> list[dict]:
    """Events stored per UTC day for the ``days`` days ending with ``today``, days without events
    included (0)."""
    first = today - timedelta(days=days - 1)
    counts = dict(db.execute(
        "SELECT substr(datetime, 1, 10), count(*) FROM events WHERE datetime >= ? AND datetime < ? GROUP BY 1",
        [f"{first.isoformat()}T00:00:00Z", f"{(today + timedelta(days=1)).isoformat()}T00:00:00Z"]).fetchall())
    return [{"day": d, "events": counts.get(d, 0)}
            for d in ((first + timedelta(days=i)).isoformat() for i in range(days))]


def stale_commands(report: dict, max_age: timedelta, commands: list[str] | None = None) -> list[str]:
    """Sync commands whose last success is older than max_age. Without ``commands``, every
    command that has ever run; a named command that never ran at all is stale too."""
    stale = []
    checked = commands or list(report["last_success"])
    for command in checked:
        info = report["last_success"].get(command, {"age_s": None, "last_success": None})
        if info["age_s"] is None:
            stale.append(f"{command} (never succeeded)")
        elif info["age_s"] > max_age.total_seconds():
            stale.append(f"{command} (last success {info['last_success']})")
    return stale


# -- flows and revenue ------------------------------------------------------------------------
# Counts summed over the days of the range; rates recomputed from the sums (a fraction, or None
# where it has no meaning: opens of SMS, any rate without deliveries). Unique counts of
# different days are added up, as the daily reports give no range-wide uniques.
_FLOW_SUMS = """sum(s.recipients) AS recipients, sum(s.delivered) AS delivered,
    sum(s.opens_unique) AS opens_unique,
    sum(CASE WHEN s.send_channel != 'sms' THEN s.opens_unique END) * 1.0
        / nullif(sum(CASE WHEN s.send_channel != 'sms' THEN s.delivered END), 0) AS open_rate,
    sum(s.clicks_unique) AS clicks_unique,
    sum(s.clicks_unique) * 1.0 / nullif(sum(s.delivered), 0) AS click_rate,
    sum(s.conversions) AS conversions,
    sum(s.conversion_uniques) * 1.0 / nullif(sum(s.delivered), 0) AS conversion_rate,
    round(sum(s.conversion_value), 2) AS conversion_value,
    sum(s.unsubscribes) AS unsubscribes,
    sum(s.unsubscribes) * 1.0 / nullif(sum(s.delivered), 0) AS unsubscribe_rate"""
FLOW_TABLE = [
    ("name", "Flow", "text"), ("status", "Status", "text"), ("channels", "Channels", "text"),
    ("recipients", "Recipients", "int"), ("open_rate", "Open rate", "rate"),
    ("click_rate", "Click rate", "rate"), ("conversions", "Conversions", "int"),
    ("conversion_value", "Revenue", "money"), ("unsubscribes", "Unsubs", "int"),
]
FLOW_MESSAGE_TABLE = [
    ("flow_name", "Flow", "text"), ("name", "Message", "text"), ("channel", "Channel", "text"),
    ("recipients", "Recipients", "int"), ("open_rate", "Open rate", "rate"),
    ("click_rate", "Click rate", "rate"), ("conversions", "Conversions", "int"),
    ("conversion_value", "Revenue", "money"), ("unsubscribes", "Unsubs", "int"),
]


UTC_ZONE = ZoneInfo("UTC")


def day_bounds(window: Window, zone: ZoneInfo = UTC_ZONE) -> tuple[str, str]:
    """The first and last day (YYYY-MM-DD) of ``zone`` (the account's: Klaviyo's days) a range
    touches: per-day statistics cover whole days."""
    return (window.start.astimezone(zone).date().isoformat(),
            (window.end - timedelta(seconds=1)).astimezone(zone).date().isoformat())


def flow_stats_cover(db: Database, window: Window, zone: ZoneInfo = UTC_ZONE) -> bool:
    """Whether flow statistics were ever read for a day of the range."""
    first, last = day_bounds(window, zone)
    return db.execute("SELECT 1 FROM flow_stats_days WHERE day >= ? AND day <= ? LIMIT 1",
                      [first, last]).fetchone() is not None


def dict_rows(cursor) -> list[dict]:
    """A cursor's rows as dicts keyed by column name (every command that answers rows)."""
    cols = [c[0] for c in cursor.description]
    return [dict(zip(cols, r)) for r in cursor.fetchall()]


def flows_in_range(db: Database, window: Window, by: str = "flow", zone: ZoneInfo = UTC_ZONE) -> list[dict]:
    """Flows (or, with by='message', flow messages) that sent in the range (days of ``zone``),
    most revenue first."""
    first, last = day_bounds(window, zone)
    if by == "message":
        sql = f"""SELECT s.flow_message_id AS id, m.name, s.flow_id, f.name AS flow_name,
                         coalesce(m.channel, s.send_channel) AS channel, m.subject, m.template_id,
                         {_FLOW_SUMS}, min(s.day) AS first_day, max(s.day) AS last_day
                  FROM flow_stats_daily s
                  LEFT JOIN flows f ON f.id = s.flow_id
                  LEFT JOIN flow_messages m ON m.id = s.flow_message_id
                  WHERE s.day >= ? AND s.day <= ?
                  GROUP BY s.flow_message_id HAVING sum(s.recipients) > 0
                  ORDER BY conversion_value DESC, recipients DESC, id"""
    else:
        sql = f"""SELECT s.flow_id AS id, f.name, f.status, f.archived, f.trigger_type,
                         group_concat(DISTINCT s.send_channel) AS channels,
                         count(DISTINCT s.flow_message_id) AS messages,
                         {_FLOW_SUMS}, f.deleted_at
                  FROM flow_stats_daily s
                  LEFT JOIN flows f ON f.id = s.flow_id
                  WHERE s.day >= ? AND s.day <= ?
                  GROUP BY s.flow_id HAVING sum(s.recipients) > 0
                  ORDER BY conversion_value DESC, recipients DESC, id"""
    rows = dict_rows(db.execute(sql, [first, last]))
    for row in rows:
        if "archived" in row:
            row["archived"] = None if row["archived"] is None else bool(row["archived"])
        if row.get("channels"):
            row["channels"] = ",".join(sorted(row["channels"].split(",")))
    return rows


REVENUE_TABLE = [
    ("period", "Period", "text"), ("orders", "Orders", "int"), ("revenue", "Revenue (events)", "money"),
    ("campaign_revenue", "Campaigns", "money"), ("flow_revenue", "Flows", "money"),
]
REVENUE_CHANNEL_TABLE = [
    ("channel", "Channel", "text"), ("orders", "Orders", "int"), ("revenue", "Revenue (events)", "money"),
    ("campaign_revenue", "Campaigns", "money"), ("flow_revenue", "Flows", "money"),
]


def revenue(db: Database, window: Window, metric_id: str | None, by: str | None,
            zone: ZoneInfo = UTC_ZONE) -> list[dict]:
    """Placed Order revenue and orders from events, next to the revenue the reports attribute to
    campaigns (by send time) and to flows (by send day), over the whole days of ``zone`` (the
    account's: the days flow statistics are stored in) of the range."""
    first, last = day_bounds(window, zone)

    def start(day: date) -> str:
        return iso(datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc))

    def day_of(text: str) -> str:
        return parse_datetime(text).astimezone(zone).date().isoformat()

    lo, hi = start(date.fromisoformat(first)), start(date.fromisoformat(last) + timedelta(days=1))
    per_day: dict[str, list] = {}
    # Summed by UTC minute in SQL, then by the zone's day here (any zone offset is whole minutes).
    for minute, n, value in db.execute(
            "SELECT substr(datetime, 1, 16), count(*), sum(value) FROM events "
            "WHERE metric_id = ? AND datetime >= ? AND datetime < ? GROUP BY 1", [metric_id, lo, hi]):
        acc = per_day.setdefault(day_of(minute + ":00Z"), [0, None])
        acc[0] += n
        if value is not None:
            acc[1] = (acc[1] or 0) + value
    events = {d: (n, None if v is None else round(v, 2)) for d, (n, v) in per_day.items()}
    campaigns: dict[tuple[str, str], float] = {}
    for sent, channel, value in db.execute(
            "SELECT c.send_time, c.channel, sum(s.conversion_value) FROM campaigns c "
            "JOIN campaign_stats s ON s.campaign_id = c.id WHERE c.send_time >= ? AND c.send_time < ? "
            "GROUP BY c.id", [lo, hi]):
        key = (day_of(sent), channel)
        campaigns[key] = value if campaigns.get(key) is None else (
            campaigns[key] if value is None else campaigns[key] + value)
    flows = {(r[0], r[1]): r[2] for r in db.execute(
        "SELECT day, CASE send_channel WHEN 'push-notification' THEN 'mobile_push' ELSE send_channel END, "
        "sum(conversion_value) FROM flow_stats_daily WHERE day >= ? AND day <= ? GROUP BY 1, 2", [first, last])}

    def total(values):
        values = [v for v in values if v is not None]
        return round(sum(values), 2) if values else None

    if by == "day":
        days = sorted({*events, *(k[0] for k in campaigns), *(k[0] for k in flows)})
        return [{"period": d, "orders": events.get(d, (0, None))[0], "revenue": events.get(d, (0, None))[1],
                 "campaign_revenue": total(v for k, v in campaigns.items() if k[0] == d),
                 "flow_revenue": total(v for k, v in flows.items() if k[0] == d)} for d in days]
    all_row = {"orders": sum(v[0] for v in events.values()), "revenue": total(v[1] for v in events.values()),
               "campaign_revenue": total(campaigns.values()), "flow_revenue": total(flows.values())}
    if by == "channel":
        channels = sorted({k[1] for k in campaigns} | {k[1] for k in flows})
        rows = [{"channel": ch, "orders": None, "revenue": None,
                 "campaign_revenue": total(v for k, v in campaigns.items() if k[1] == ch),
                 "flow_revenue": total(v for k, v in flows.items() if k[1] == ch)} for ch in channels]
        return rows + [{"channel": "all", **all_row}]
    return [{"period": f"{first}..{last}", **all_row}]


def tagged(db_path, kind: str, tag: str) -> set[str]:
    """The ids of the campaigns or flows (``kind``) carrying the tag named ``tag``, from
    ``tag_links`` (sync-tags); a UsageError (exit 2) when no synced tag has that name."""
    from pathlib import Path

    from . import db as store
    from .errors import UsageError

    ids: set[str] | None = None
    if Path(db_path).exists():
        database = store.open_db(db_path)
        try:
            found = database.execute("SELECT id FROM tags WHERE name = ?", [tag]).fetchall()
            if found:
                ids = {r[0] for r in database.execute(
                    f"SELECT resource_id FROM tag_links WHERE resource_type = ? AND tag_id IN "
                    f"({','.join('?' for _ in found)})", [kind, *(r[0] for r in found)]).fetchall()}
        finally:
            database.close()
    if ids is None:
        raise UsageError(f"--tag: no tag named {tag!r} in the database (run sync-tags first)")
    return ids
