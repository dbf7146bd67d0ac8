"""Read-only questions the CLI asks the database: campaigns for a range, and the status report."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

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
    return {"tables": counts, "marks": marks, "last_success": last, "runs": recent}


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
