"""The SQLite store: opening, schema (as migrations), prepared upserts, sync state and runs.

Schema steps are sqlite-utils ``Migrations``: each runs once, in a transaction, so opening an
old file brings it up to date and opening a current one changes nothing.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlite_utils import Database, Migrations

from .errors import DatabaseError
from .timeutil import iso, utcnow

BUSY_TIMEOUT_MS = 30_000

try:
    import orjson

    def to_json(value) -> str | None:
        if value is None:
            return None
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            # orjson stops at 255 levels of nesting, the decoder at 1024: an event nested 300
            # levels deep is valid JSON and must not block the sync for good. The standard
            # library writes it; one it cannot write either is stored as a marker, not lost
            # silently (see _unstorable).
            return _fallback_json(value)
except ImportError:  # pragma: no cover

    def to_json(value) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fallback_json(value) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError, TypeError) as exc:
        logging.getLogger("klaviyo_sync").warning(
            "warning: a value could not be stored as JSON (%s): stored as a marker", type(exc).__name__)
        return json.dumps({"klaviyo_sync_unstorable": f"{type(exc).__name__}: nested too deeply or not JSON"})


METRIC_COLUMNS = ["id", "name", "created", "updated", "integration_id", "integration_key",
                  "integration_name", "integration_category", "attributes"]
PROFILE_COLUMNS = ["id", "email", "phone_number", "external_id", "first_name", "last_name",
                   "organization", "locale", "title", "image", "created", "updated",
                   "last_event_date", "location", "properties"]
EVENT_COLUMNS = ["id", "metric_id", "profile_id", "datetime", "timestamp", "uuid", "value", "properties"]
CAMPAIGN_COLUMNS = ["id", "name", "channel", "status", "archived", "send_time", "scheduled_at",
                    "created_at", "updated_at", "send_strategy", "subject", "label", "attributes"]
CAMPAIGN_MESSAGE_COLUMNS = ["id", "campaign_id", "channel", "label", "subject", "preview_text",
                            "from_email", "from_label", "body", "send_time", "send_times",
                            "created_at", "updated_at", "definition"]
STAT_NAMES = ["recipients", "delivered", "delivery_rate", "opens", "opens_unique", "open_rate",
              "clicks", "clicks_unique", "click_rate", "conversions", "conversion_uniques",
              "conversion_rate", "conversion_value", "unsubscribes", "unsubscribe_rate",
              "bounced", "bounce_rate", "spam_complaints", "spam_complaint_rate"]
CAMPAIGN_STAT_COLUMNS = ["campaign_id", "campaign_message_id", "send_channel", *STAT_NAMES,
                         "conversion_metric_id", "timeframe_start", "timeframe_end", "fetched_at"]

# Columns sync-profiles adds to a profile (events' included profiles leave them alone).
PROFILE_AUDIENCE_COLUMNS = ["email_consent", "email_can_receive", "email_suppression", "email_consent_at",
                            "sms_consent", "sms_can_receive", "sms_consent_at", "push_consent",
                            "push_can_receive", "subscriptions"]
LIST_COLUMNS = ["id", "name", "created", "updated", "opt_in_process"]
SEGMENT_COLUMNS = ["id", "name", "definition", "created", "updated", "is_active", "is_processing", "is_starred"]

TEXT, INT, REAL = str, int, float

migrations = Migrations("klaviyo_sync")


@migrations()
def m001_initial(db: Database) -> None:
    db["metrics"].create(
        {"id": TEXT, "name": TEXT, "created": TEXT, "updated": TEXT, "integration_id": TEXT,
         "integration_key": TEXT, "integration_name": TEXT, "integration_category": TEXT,
         "attributes": TEXT},
        pk="id",
    )
    db["profiles"].create(
        {"id": TEXT, "email": TEXT, "phone_number": TEXT, "external_id": TEXT, "first_name": TEXT,
         "last_name": TEXT, "organization": TEXT, "locale": TEXT, "title": TEXT, "image": TEXT,
         "created": TEXT, "updated": TEXT, "last_event_date": TEXT, "location": TEXT,
         "properties": TEXT},
        pk="id",
    )
    # Foreign keys are declared (for tools like Datasette) but not enforced: an event may be
    # stored before its profile or metric.
    db["events"].create(
        {"id": TEXT, "metric_id": TEXT, "profile_id": TEXT, "datetime": TEXT, "timestamp": INT,
         "uuid": TEXT, "value": REAL, "properties": TEXT},
        pk="id",
        not_null={"datetime"},
        foreign_keys=[("metric_id", "metrics", "id"), ("profile_id", "profiles", "id")],
    )
    db["events"].create_index(["datetime"], index_name="idx_events_datetime")
    db["events"].create_index(["metric_id", "datetime"], index_name="idx_events_metric_id_datetime")
    db["events"].create_index(["profile_id"], index_name="idx_events_profile_id")
    db["profiles"].create_index(["email"], index_name="idx_profiles_email")
    db["metrics"].create_index(["name"], index_name="idx_metrics_name")

    db["campaigns"].create(
        {"id": TEXT, "name": TEXT, "channel": TEXT, "status": TEXT, "archived": INT,
         "send_time": TEXT, "scheduled_at": TEXT, "created_at": TEXT, "updated_at": TEXT,
         "send_strategy": TEXT, "subject": TEXT, "label": TEXT, "attributes": TEXT},
        pk="id",
    )
    db["campaigns"].create_index(["send_time"], index_name="idx_campaigns_send_time")
    db["campaign_messages"].create(
        {"id": TEXT, "campaign_id": TEXT, "channel": TEXT, "label": TEXT, "subject": TEXT,
         "preview_text": TEXT, "from_email": TEXT, "from_label": TEXT, "body": TEXT,
         "send_time": TEXT, "send_times": TEXT, "created_at": TEXT, "updated_at": TEXT,
         "definition": TEXT},
        pk="id",
        foreign_keys=[("campaign_id", "campaigns", "id")],
    )
    db["campaign_messages"].create_index(["campaign_id"], index_name="idx_campaign_messages_campaign_id")
    stat_cols = {name: (REAL if name.endswith("_rate") or name == "conversion_value" else INT) for name in STAT_NAMES}
    db["campaign_stats"].create(
        {"campaign_id": TEXT, "campaign_message_id": TEXT, "send_channel": TEXT, **stat_cols,
         "conversion_metric_id": TEXT, "timeframe_start": TEXT, "timeframe_end": TEXT,
         "fetched_at": TEXT},
        pk=("campaign_id", "campaign_message_id"),
        foreign_keys=[("campaign_id", "campaigns", "id")],
    )

    db["sync_runs"].create(
        {"id": INT, "command": TEXT, "arguments": TEXT, "started_at": TEXT, "finished_at": TEXT,
         "status": TEXT, "window_start": TEXT, "window_end": TEXT, "rows_written": TEXT,
         "pages": INT, "requests": INT, "retries": INT, "rate_limit_wait_s": REAL,
         "seconds": REAL, "error": TEXT},
        pk="id",
    )
    db["sync_runs"].create_index(["command", "started_at"], index_name="idx_sync_runs_command_started_at")
    db["sync_state"].create({"key": TEXT, "value": TEXT, "updated_at": TEXT}, pk="key")

    db.create_view("event_details", """
        SELECT e.id, e.datetime, m.name AS metric, p.email, e.value,
               e.metric_id, e.profile_id, e.properties
        FROM events e
        LEFT JOIN metrics m ON m.id = e.metric_id
        LEFT JOIN profiles p ON p.id = e.profile_id""")
    # One row per campaign: counts summed over its messages; a rate is the API's own when the
    # campaign has one message, otherwise recomputed from the summed counts.
    rate = ("CASE WHEN count(s.campaign_id) = 1 THEN max(s.{r}) "
            "ELSE sum(s.{n}) * 1.0 / nullif(sum(s.delivered), 0) END AS {r}")
    db.create_view("campaign_performance", f"""
        SELECT c.id, c.name, c.channel, c.status, c.archived, c.send_time, c.subject, c.label,
               sum(s.recipients) AS recipients, sum(s.delivered) AS delivered,
               sum(s.opens) AS opens, sum(s.opens_unique) AS opens_unique,
               {rate.format(r='open_rate', n='opens_unique')},
               sum(s.clicks) AS clicks, sum(s.clicks_unique) AS clicks_unique,
               {rate.format(r='click_rate', n='clicks_unique')},
               sum(s.conversions) AS conversions,
               {rate.format(r='conversion_rate', n='conversion_uniques')},
               sum(s.conversion_value) AS conversion_value,
               sum(s.unsubscribes) AS unsubscribes, sum(s.bounced) AS bounced,
               sum(s.spam_complaints) AS spam_complaints,
               max(s.fetched_at) AS stats_fetched_at
        FROM campaigns c
        LEFT JOIN campaign_stats s ON s.campaign_id = c.id
        GROUP BY c.id""")


@migrations()
def m002_audience(db: Database) -> None:
    profiles = db["profiles"]
    for column in PROFILE_AUDIENCE_COLUMNS:
        profiles.add_column(column, INT if column.endswith("_can_receive") else TEXT)
    profiles.add_column("predictive_analytics", TEXT)
    # A profile deleted in Klaviyo keeps its row (events point at it) without its personal data.
    profiles.add_column("deleted_at", TEXT)
    profiles.create_index(["updated"], index_name="idx_profiles_updated")
    db["lists"].create(
        {"id": TEXT, "name": TEXT, "created": TEXT, "updated": TEXT, "opt_in_process": TEXT,
         "profile_count": INT, "profile_count_at": TEXT},
        pk="id",
    )
    db["segments"].create(
        {"id": TEXT, "name": TEXT, "definition": TEXT, "created": TEXT, "updated": TEXT,
         "is_active": INT, "is_processing": INT, "is_starred": INT, "profile_count": INT,
         "profile_count_at": TEXT},
        pk="id",
    )
    for group, table in (("list", "list_members"), ("segment", "segment_members")):
        db[table].create(
            {f"{group}_id": TEXT, "profile_id": TEXT, "joined_group_at": TEXT},
            pk=(f"{group}_id", "profile_id"),
            foreign_keys=[(f"{group}_id", f"{group}s", "id"), ("profile_id", "profiles", "id")],
        )
        db[table].create_index(["profile_id"], index_name=f"idx_{table}_profile_id")
        db[table].create_index([f"{group}_id", "joined_group_at"], index_name=f"idx_{table}_{group}_id_joined_group_at")

    db.create_view("email_subscribers", """
        SELECT id, email, first_name, last_name, email_consent_at, created, updated
        FROM profiles
        WHERE deleted_at IS NULL AND email IS NOT NULL
          AND email_consent = 'SUBSCRIBED' AND email_can_receive = 1""")
    # Members per list per day from joined_group_at: the current members counted by the day they
    # (most recently) joined, and the running total. Members who left are not in the table.
    db.create_view("list_growth", """
        SELECT l.id AS list_id, l.name AS list, d.day, d.joined,
               sum(d.joined) OVER (PARTITION BY l.id ORDER BY d.day) AS members
        FROM (SELECT list_id, substr(joined_group_at, 1, 10) AS day, count(*) AS joined
              FROM list_members GROUP BY list_id, day) d
        JOIN lists l ON l.id = d.list_id""")
    db.create_view("profile_lists", """
        SELECT p.id AS profile_id, p.email, l.id AS list_id, l.name AS list, m.joined_group_at
        FROM list_members m
        JOIN profiles p ON p.id = m.profile_id
        JOIN lists l ON l.id = m.list_id""")


def _declared_tables() -> list:
    from .streams import declarations  # the streams import this module: import them late

    return [spec for decl in declarations() for spec in decl.tables]


def _missing_declared(db: Database) -> bool:
    have = set(db.table_names())
    return any(spec.name not in have for spec in _declared_tables())


def create_declared_tables(db: Database) -> None:
    """The tables of declared streams that the migrations above do not create: a new stream's
    table is made from its declaration the first time a database is opened with it (see
    streams/declare.py, ``TableSpec.create``). It never alters an existing table: a column
    added to a declared table later needs a migration here."""
    have = set(db.table_names())
    for spec in _declared_tables():
        if spec.name not in have:
            spec.create(db)


def _create_private(path: Path) -> None:
    """Create an empty file readable by its owner only, unless it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _check_ours(path: Path) -> None:
    """Refuse (exit 8) a file that is not a klaviyo-sync database: another application's SQLite
    file must not be switched to WAL or get our tables. Opened read-only for the check."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        ours = False
        if migrations.migrations_table in tables:
            ours = conn.execute(f"SELECT count(*) FROM [{migrations.migrations_table}] WHERE migration_set = ?",
                                [migrations.name]).fetchone()[0] > 0
    finally:
        conn.close()
    if tables and not ours:
        names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise DatabaseError(f"cannot open database {path}: it is not a klaviyo-sync database (it holds "
                            f"{names}); refusing to change it: pass another --db")


def check_path(path: str | os.PathLike) -> None:
    """Refuse (exit 8) a path the database cannot be at, or another application's SQLite file,
    before anything is created next to it (the lock file) or changed in it. Changes nothing."""
    path = Path(path)
    try:
        _check_path(path)
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None
    except OSError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc.strerror}") from None


def _check_path(path: Path) -> None:
    if path.parent and not path.parent.exists():
        raise DatabaseError(f"cannot open database {path}: directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise DatabaseError(f"cannot open database {path}: not a regular file")
    if path.exists() and path.stat().st_size > 0:
        _check_ours(path)  # read-only, before anything (WAL, migrations) changes it


def open_db(path: str | os.PathLike, *, migrate: bool = True) -> Database:
    """Open (creating owner-only if new) the database in WAL mode with a busy timeout."""
    path = Path(path)
    try:
        if str(path) != ":memory:":
            _check_path(path)
            _create_private(path)
        # isolation_level=None: no implicit transactions; every write is inside db.atomic().
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if str(path) != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        # Random primary keys touch pages all over the id index: a larger cache (16 MB) keeps more
        # of them hot; larger ones measured no faster and cost peak memory.
        conn.execute("PRAGMA cache_size = -16384")
        # Checkpoint every ~40 MB of WAL rather than 4 MB: random ids dirty index pages all over
        # the file, and frequent checkpoints copied them back almost every commit (measured:
        # 35k -> 41k events/s on a backfill). The WAL file may grow to about that size.
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        db = Database(conn, execute_plugins=False)
        if migrate and (migrations.pending(db) or _missing_declared(db)):
            # Readers (campaigns, status) take no lock: a write transaction taken up front makes
            # two processes that open a new file at once migrate it one after the other.
            conn.execute("BEGIN IMMEDIATE")
            try:
                migrations.apply(db)
                create_declared_tables(db)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return db
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None
    except OSError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc.strerror}") from None


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str] = ("id",), *, immutable: bool = False) -> str:
    """A prepared upsert. It only rewrites a row whose values differ, so a re-sync of unchanged
    data writes nothing and ``rowcount`` counts real changes. Identifiers are quoted: Klaviyo's
    attribute names (``default``, ``exclusive``) may be SQL keywords."""
    q = quote
    cols = ", ".join(q(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    conflict = ", ".join(q(c) for c in key)
    sql = f"INSERT INTO {q(table)} ({cols}) VALUES ({marks}) ON CONFLICT({conflict}) DO "
    rest = [c for c in columns if c not in key]
    if immutable or not rest:
        return sql + "NOTHING"
    sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in rest)
    differs = " OR ".join(f"{q(c)} IS NOT excluded.{q(c)}" for c in rest)
    return sql + f"UPDATE SET {sets} WHERE {differs}"


def quote(name: str) -> str:
    """An SQL identifier, double-quoted (a quote inside is doubled)."""
    return '"' + name.replace('"', '""') + '"'


# The secondary indexes of events (created by m001). A first backfill into an empty table drops
# them and builds each once at the end: maintaining them row by row doubled the writer's SQLite
# time (measured, 200,000 events: 3.7 -> 1.9 s CPU without them).
EVENT_INDEXES = {
    "idx_events_datetime": ("datetime",),
    "idx_events_metric_id_datetime": ("metric_id", "datetime"),
    "idx_events_profile_id": ("profile_id",),
    # customers, rfm and cohorts (analytics.py) read a metric's events per profile from this index
    # alone, never the table (m011).
    "idx_events_metric_id_profile_id": ("metric_id", "profile_id", "datetime", "value", "id"),
}


# event_attributions' secondary index (m007), dropped and built once with the events' during a
# first backfill: kept up row by row, it cost ~0.1 s of the writer's CPU per 76,000 attributions
# (a third of what writing them costs; README, Performance).
ATTRIBUTION_INDEXES = {"idx_event_attributions_event_id": ("event_id",)}


def _backfill_indexes() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{index: (table, columns)} of every index a first backfill drops and builds at its end."""
    return {**{name: ("events", cols) for name, cols in EVENT_INDEXES.items()},
            **{name: ("event_attributions", cols) for name, cols in ATTRIBUTION_INDEXES.items()}}


def ensure_event_indexes(db: Database) -> None:
    """Create any missing event (or event attribution) index (after a backfill, or one that was
    killed midway).

    The build sorts in memory up to the page cache's size, on top of the cache itself: a 4 MB
    cache meanwhile keeps the peak flat (measured, 1,000,000 events: +16 MB and 2.6-3.0 s CPU
    with the usual 16 MB, +4 MB and 2.1 s with 4 MB)."""
    indexes = _backfill_indexes()
    existing = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                         "AND tbl_name IN ('events', 'event_attributions')")}
    missing = [name for name in indexes if name not in existing]
    if not missing:
        return
    cache = db.execute("PRAGMA cache_size").fetchone()[0]
    db.execute("PRAGMA cache_size = -4096")
    try:
        for name in missing:
            table, cols = indexes[name]
            columns = ", ".join(f'"{c}"' for c in cols)
            db.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({columns})')
    finally:
        db.execute(f"PRAGMA cache_size = {int(cache)}")


def drop_event_indexes(db: Database) -> None:
    for name in _backfill_indexes():
        db.execute(f'DROP INDEX IF EXISTS "{name}"')


def write_rows(db: Database, sql: str, rows: Iterable[Sequence]) -> int:
    """Run a prepared upsert over rows; return how many rows were inserted or changed."""
    cur = db.conn.executemany(sql, rows)
    return max(cur.rowcount, 0)


# -- sync state (high-water marks) -----------------------------------------------------------
def get_state(db: Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM sync_state WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_state(db: Database, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO sync_state (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, value, iso(utcnow())],
    )


# -- sync_runs -----------------------------------------------------------------------------
def start_run(db: Database, command: str, arguments: dict) -> int:
    """Record a new run. Called with the lock held, so a row still 'running' belongs to a run
    that died without finishing: first the failures kept in ``<db>.lastfail`` (runs that could
    not write their end) are recorded, then the rest (kill -9, power loss) are called abandoned."""
    kept = kept_failures(_file_of(db))
    with db.atomic():
        _record_kept(db, kept)
        db.execute(
            "UPDATE sync_runs SET status = 'abandoned', error = 'the process ended before the run "
            "finished (killed?); what it committed is kept' WHERE status = 'running'"
        )
        cur = db.execute(
            "INSERT INTO sync_runs (command, arguments, started_at, status) VALUES (?, ?, ?, 'running')",
            [command, to_json(arguments), iso(utcnow())],
        )
    if kept:
        try:
            lastfail_path(_file_of(db)).unlink()
        except OSError:
            pass
    return cur.lastrowid


def finish_run(db: Database, run_id: int, *, status: str, summary: dict, error: str | None = None,
               finished_at: str | None = None) -> None:
    window = summary.get("window") or {}
    with db.atomic():
        db.execute(
            """UPDATE sync_runs SET finished_at = ?, status = ?, window_start = ?, window_end = ?,
               rows_written = ?, pages = ?, requests = ?, retries = ?, rate_limit_wait_s = ?,
               seconds = ?, error = ? WHERE id = ?""",
            [finished_at or iso(utcnow()), status, window.get("start"), window.get("end"),
             to_json(summary.get("rows", {})), summary.get("pages", 0), summary.get("requests", 0),
             summary.get("retries", 0), summary.get("rate_limit_wait_s", 0.0),
             summary.get("seconds", 0.0), error, run_id],
        )


# -- runs that cannot write their own end (a full disk, a held write lock) ---------------------
# Their failure is kept in a small side file, <db>.lastfail (one JSON object a line), which
# `status` shows and the next run's start_run records in sync_runs and removes.
FINISH_BUSY_TIMEOUT_MS = 5_000  # the run already waited the full busy timeout once


def database_failure(exc: BaseException) -> DatabaseError | None:
    """A write that failed for the database's or the disk's sake (SQLITE_FULL, SQLITE_BUSY after
    the busy timeout, ENOSPC), as one DatabaseError (exit 8); None for anything else."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(exc):
            return DatabaseError(f"database error: database is locked: another connection held a write "
                                 f"lock on it for more than {BUSY_TIMEOUT_MS / 1000:g} s (SQLITE_BUSY)")
        if name == "SQLITE_FULL" or "is full" in str(exc):
            return DatabaseError("database error: database or disk is full (SQLITE_FULL)")
        return DatabaseError(f"database error: {exc}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DatabaseError(f"database error: {exc.strerror} (disk full)")
    return None


def lastfail_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".lastfail")


def _file_of(db: Database) -> str:
    """The file a connection writes (empty for an in-memory database)."""
    return db.execute("PRAGMA database_list").fetchone()[2] or ""


def finish_or_keep(db: Database, path: str | os.PathLike, run_id: int | None, *, command: str,
                   arguments: dict, status: str, summary: dict, error: str | None) -> DatabaseError | None:
    """finish_run, or, when the database cannot be written, keep the run's end in
    ``<db>.lastfail`` (``run_id`` None: a run whose start could not be written either).
    Returns the database failure that prevented the write, if any."""
    if run_id is not None:
        try:
            if db.conn.in_transaction:  # what failed midway cannot be committed any more
                db.conn.execute("ROLLBACK")
            db.execute(f"PRAGMA busy_timeout = {min(BUSY_TIMEOUT_MS, FINISH_BUSY_TIMEOUT_MS)}")
            try:
                finish_run(db, run_id, status=status, summary=summary, error=error)
            finally:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return None
        except (sqlite3.Error, OSError) as exc:
            failure = database_failure(exc)
            if failure is None:
                raise
    else:
        failure = None
    entry = {"run_id": run_id, "command": command, "arguments": arguments, "status": status,
             "summary": summary, "error": error, "finished_at": iso(utcnow())}
    try:
        fd = os.open(lastfail_path(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
        try:
            os.write(fd, (to_json(entry) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        logging.getLogger("klaviyo_sync").warning(
            "warning: this run's end could not be recorded in the database nor in %s (%s): the next run "
            "will call it abandoned", lastfail_path(path), exc.strerror)
    return failure


def kept_failures(path: str | os.PathLike) -> list[dict]:
    """The run ends kept in ``<db>.lastfail``, oldest first (lines that cannot be read are skipped)."""
    if not path:
        return []
    try:
        text = lastfail_path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("command"):
            entries.append(entry)
    return entries


def _record_kept(db: Database, kept: list[dict]) -> None:
    """Record the kept run ends in sync_runs (inside the caller's transaction), then remove the
    side file. An end applies only to a row still 'running'; a run that could not even start
    gets a row of its own. The caller removes the side file once this is committed."""
    for e in kept:
        summary = e.get("summary") or {}
        if e.get("run_id") is None:
            cur = db.execute(
                "INSERT INTO sync_runs (command, arguments, started_at, status) VALUES (?, ?, ?, 'running')",
                [e["command"], to_json(e.get("arguments") or {}), e.get("finished_at")])
            run_id = cur.lastrowid
        else:
            run_id = e["run_id"]
            if db.execute("SELECT count(*) FROM sync_runs WHERE id = ? AND status = 'running'",
                          [run_id]).fetchone()[0] == 0:
                continue
        finish_run(db, run_id, status=e.get("status") or "failed", summary=summary, error=e.get("error"),
                   finished_at=e.get("finished_at"))



# -- flows, their actions and messages, templates, flow statistics (migration m003_flows) ----
FLOW_COLUMNS = ["id", "name", "status", "archived", "trigger_type", "created", "updated", "deleted_at"]
FLOW_DEFINITION_COLUMNS = ["id", "definition_updated", "entry_action_id", "triggers", "profile_filter",
                           "reentry_criteria"]
FLOW_ACTION_COLUMNS = ["id", "flow_id", "type", "status", "position", "next_action_ids",
                       "delay_value", "delay_unit", "delay_seconds", "definition"]
FLOW_MESSAGE_COLUMNS = ["id", "flow_id", "flow_action_id", "channel", "name", "subject", "preview_text",
                        "from_email", "from_label", "template_id", "body", "definition"]
TEMPLATE_COLUMNS = ["id", "name", "editor_type", "created", "updated", "html", "text", "amp"]
FLOW_STAT_COLUMNS = ["flow_id", "flow_message_id", "day", "send_channel", *STAT_NAMES,
                     "conversion_metric_id", "fetched_at"]


@migrations()
def m003_flows(db: Database) -> None:
    db["flows"].create(
        {"id": TEXT, "name": TEXT, "status": TEXT, "archived": INT, "trigger_type": TEXT,
         "created": TEXT, "updated": TEXT, "deleted_at": TEXT, "definition_updated": TEXT,
         "entry_action_id": TEXT, "triggers": TEXT, "profile_filter": TEXT, "reentry_criteria": TEXT},
        pk="id",
    )
    db["flow_actions"].create(
        {"id": TEXT, "flow_id": TEXT, "type": TEXT, "status": TEXT, "position": INT,
         "next_action_ids": TEXT, "delay_value": INT, "delay_unit": TEXT, "delay_seconds": INT,
         "definition": TEXT},
        pk="id", foreign_keys=[("flow_id", "flows", "id")],
    )
    db["flow_actions"].create_index(["flow_id", "position"], index_name="idx_flow_actions_flow_id")
    db["flow_messages"].create(
        {"id": TEXT, "flow_id": TEXT, "flow_action_id": TEXT, "channel": TEXT, "name": TEXT,
         "subject": TEXT, "preview_text": TEXT, "from_email": TEXT, "from_label": TEXT,
         "template_id": TEXT, "body": TEXT, "definition": TEXT},
        pk="id", foreign_keys=[("flow_id", "flows", "id"), ("flow_action_id", "flow_actions", "id")],
    )
    db["flow_messages"].create_index(["flow_id"], index_name="idx_flow_messages_flow_id")
    db["templates"].create(
        {"id": TEXT, "name": TEXT, "editor_type": TEXT, "created": TEXT, "updated": TEXT,
         "html": TEXT, "text": TEXT, "amp": TEXT},
        pk="id",
    )
    stat_cols = {name: (REAL if name.endswith("_rate") or name == "conversion_value" else INT)
                 for name in STAT_NAMES}
    # One row per flow message and UTC day (series reports, daily interval).
    db["flow_stats_daily"].create(
        {"flow_id": TEXT, "flow_message_id": TEXT, "day": TEXT, "send_channel": TEXT, **stat_cols,
         "conversion_metric_id": TEXT, "fetched_at": TEXT},
        pk=("flow_message_id", "day"),
        foreign_keys=[("flow_id", "flows", "id")],
    )
    db["flow_stats_daily"].create_index(["day"], index_name="idx_flow_stats_daily_day")
    # Which (flow, day) the statistics cover, and when they were read: a day is read again
    # until it was read after its attribution settled.
    db["flow_stats_days"].create(
        {"flow_id": TEXT, "day": TEXT, "conversion_metric_id": TEXT, "fetched_at": TEXT},
        pk=("flow_id", "day"),
    )
    # campaign_performance again: an SMS has no opens, so its open rate is NULL, not 0.0.
    rate = ("CASE WHEN count(s.campaign_id) = 1 THEN max(s.{r}) "
            "ELSE sum(s.{n}) * 1.0 / nullif(sum(s.delivered), 0) END")
    db.execute("DROP VIEW IF EXISTS campaign_performance")
    db.create_view("campaign_performance", f"""
        SELECT c.id, c.name, c.channel, c.status, c.archived, c.send_time, c.subject, c.label,
               sum(s.recipients) AS recipients, sum(s.delivered) AS delivered,
               sum(s.opens) AS opens, sum(s.opens_unique) AS opens_unique,
               CASE WHEN c.channel = 'sms' THEN NULL
                    ELSE {rate.format(r='open_rate', n='opens_unique')} END AS open_rate,
               sum(s.clicks) AS clicks, sum(s.clicks_unique) AS clicks_unique,
               {rate.format(r='click_rate', n='clicks_unique')} AS click_rate,
               sum(s.conversions) AS conversions,
               {rate.format(r='conversion_rate', n='conversion_uniques')} AS conversion_rate,
               sum(s.conversion_value) AS conversion_value,
               sum(s.unsubscribes) AS unsubscribes, sum(s.bounced) AS bounced,
               sum(s.spam_complaints) AS spam_complaints,
               max(s.fetched_at) AS stats_fetched_at
        FROM campaigns c
        LEFT JOIN campaign_stats s ON s.campaign_id = c.id
        GROUP BY c.id""")
    # One row per flow message and day, with its flow: what `flows` and Datasette read.
    db.create_view("flow_message_daily", """
        SELECT s.day, s.flow_id, f.name AS flow_name, s.flow_message_id, m.name AS message_name,
               coalesce(m.channel, s.send_channel) AS channel, s.recipients, s.delivered,
               s.opens_unique, s.clicks_unique, s.conversions, s.conversion_uniques,
               s.conversion_value, s.unsubscribes, s.conversion_metric_id
        FROM flow_stats_daily s
        LEFT JOIN flows f ON f.id = s.flow_id
        LEFT JOIN flow_messages m ON m.id = s.flow_message_id""")


@migrations()
def m004_verify(db: Database) -> None:
    # One row per metric, local day and verify run: what the copy held, what Klaviyo counted.
    db["verify_results"].create(
        {"run_id": INT, "metric_id": TEXT, "metric": TEXT, "day": TEXT, "timezone": TEXT,
         "local": INT, "klaviyo": INT, "difference": INT, "status": TEXT, "local_before": INT,
         "repaired": INT, "checked_at": TEXT},
        pk=("run_id", "metric_id", "day"),
        foreign_keys=[("run_id", "sync_runs", "id")],
    )
    db["verify_results"].create_index(["metric_id", "day"], index_name="idx_verify_results_metric_id_day")


# -- Klaviyo's attribution of events, and the analytics views over it (migration m007) ---------
ATTRIBUTION_COLUMNS = ["id", "event_id", "attributed_event_id", "campaign_id", "campaign_message_id",
                       "flow_id", "flow_message_id", "flow_message_variation_id"]
# The session model's touches (dbt_klaviyo's klaviyo__eligible_attribution_events) and windows
# (klaviyo__email_attribution_lookback / klaviyo__sms_attribution_lookback, in hours).
SESSION_TOUCH_METRICS = ("Opened Email", "Clicked Email", "Clicked SMS")
SESSION_EMAIL_HOURS = 120
SESSION_SMS_HOURS = 24
# conversion_lag's buckets: [from, to) hours after the touch; the last one is open.
LAG_BUCKETS = [(0, 1), (1, 2), (2, 4), (4, 8), (8, 12), (12, 24), (24, 48), (48, 72), (72, 96), (96, 120),
               (120, None)]

_CHANNEL_OF_METRIC = ("CASE WHEN {m} LIKE '%SMS%' THEN 'sms' WHEN {m} LIKE '%Push%' THEN 'mobile_push' "
                      "WHEN {m} LIKE '%Email%' THEN 'email' END")
_EPOCH = "CAST(strftime('%s', {d}) AS INTEGER)"


def _prop(table: str, key: str) -> str:
    """An event property, NULL (not an error) when the row's properties are not JSON."""
    return (f"CASE WHEN json_valid({table}.properties) "
            f"THEN json_extract({table}.properties, '$.\"{key}\"') END")


def _lag_bucket_sql(seconds: str) -> str:
    cases = " ".join(f"WHEN {seconds} < {hi * 3600} THEN '{lo}-{hi}h'" for lo, hi in LAG_BUCKETS if hi)
    return f"CASE WHEN {seconds} IS NULL THEN NULL {cases} ELSE '{LAG_BUCKETS[-1][0]}h+' END"


def is_attributed(v: str) -> str:
    """Whether a row ``v`` of attributed_conversions (or of the session model) is attributed to a
    campaign or flow message: the one test every reader uses."""
    return f"coalesce({v}.campaign_id, {v}.flow_id, {v}.message_id) IS NOT NULL"


def credits_message(a: str) -> str:
    """Whether a row ``a`` of event_attributions credits a campaign or flow message (what
    is_attributed tests on attributed_conversions, for readers of the table itself)."""
    return f"coalesce({a}.campaign_id, {a}.campaign_message_id, {a}.flow_id, {a}.flow_message_id) IS NOT NULL"


def chosen_attribution(event_id: str) -> str:
    """The one attribution that counts for the event ``event_id`` (an SQL expression) when
    Klaviyo returned several: the one whose touch is latest (a touch not stored counts as
    earliest), then the smallest attribution id. attributed_conversions reads it, and every other
    reader reads attributed_conversions (or, where the view's joins cost too much, this).
    The touches are looked up only for an event with several attributions (most have one), as
    a touch is a random read in the events table."""
    return f"""CASE WHEN (SELECT count(*) FROM event_attributions a1 WHERE a1.event_id = {event_id}) < 2
            THEN (SELECT a1.id FROM event_attributions a1 WHERE a1.event_id = {event_id})
            ELSE (SELECT a2.id FROM event_attributions a2
                  LEFT JOIN events t2 ON t2.id = a2.attributed_event_id
                  WHERE a2.event_id = {event_id}
                  ORDER BY t2.datetime IS NULL, t2.datetime DESC, a2.id LIMIT 1) END"""


def session_conversions_sql(where: str = "1", touch_where: str = "1") -> str:
    """dbt_klaviyo's session model: every event of ``events e`` matching ``where`` inherits the
    latest session touch (session_touches ``t`` matching ``touch_where``) of its profile at or
    before it (same second included) if no more than 120 hours have passed since that touch (24
    when it is an SMS); a newer touch starts a new session, so an expired newer session is not
    replaced by an older one. Of touches in the same second, the largest event id.

    One pass of a window function over the events and the touches (sorted by profile and
    time), not a look-up per event: a command restricts both to its metric and range first
    (touches from 120 hours before the range), the view session_attributed_conversions does not."""
    sms = ", ".join(f"'{n}'" for n in SESSION_TOUCH_METRICS if "SMS" in n)
    smsg = _prop("s", "$message")
    return f"""
        SELECT x.id AS event_id, x.profile_id, x.metric_id, m.name AS metric_name, x.datetime,
               substr(x.datetime, 1, 10) AS day, coalesce(x.value, 0.0) AS value,
               s.id AS attributed_event_id, s.datetime AS touch_datetime,
               coalesce(cm.campaign_id, c.id) AS campaign_id, cm.id AS campaign_message_id,
               coalesce(fm.flow_id, {_prop("s", "$flow")}) AS flow_id,
               fm.id AS flow_message_id, NULL AS flow_message_variation_id,
               coalesce(cm.id, fm.id) AS message_id,
               CASE WHEN s.id IS NULL THEN NULL WHEN sm.name IN ({sms}) THEN 'sms' ELSE 'email' END AS channel
        FROM (SELECT k.id, k.profile_id, k.metric_id, k.datetime, k.value, k.kind,
                     max(k.touch) OVER (PARTITION BY k.profile_id ORDER BY k.datetime, k.kind
                                        ROWS UNBOUNDED PRECEDING) AS last_touch
              FROM (SELECT e.id, e.profile_id, e.metric_id, e.datetime, e.value, 1 AS kind, NULL AS touch
                    FROM events e WHERE {where}
                    UNION ALL
                    SELECT t.event_id, t.profile_id, NULL, t.datetime, NULL, 0, t.datetime || ' ' || t.event_id
                    FROM session_touches t WHERE t.profile_id IS NOT NULL AND ({touch_where})) k) x
        LEFT JOIN metrics m ON m.id = x.metric_id
        LEFT JOIN events s ON s.id = substr(x.last_touch, instr(x.last_touch, ' ') + 1)
          AND {_EPOCH.format(d='x.datetime')} - {_EPOCH.format(d='s.datetime')}
              <= CASE WHEN s.metric_id IN (SELECT id FROM metrics WHERE name IN ({sms}))
                      THEN {SESSION_SMS_HOURS * 3600} ELSE {SESSION_EMAIL_HOURS * 3600} END
        LEFT JOIN metrics sm ON sm.id = s.metric_id
        LEFT JOIN campaign_messages cm ON cm.id = {smsg}
        LEFT JOIN campaigns c ON c.id = {smsg}
        LEFT JOIN flow_messages fm ON fm.id = {smsg}
        WHERE x.kind = 1"""


def lag_sql(model: str, source: str) -> str:
    """The attributed rows of ``source`` (attributed_conversions, or the session model's rows)
    with the time from their touch to them: the conversion_lag view's arm of ``model``."""
    lag = f"{_EPOCH.format(d='v.datetime')} - {_EPOCH.format(d='v.touch_datetime')}"
    return f"""SELECT '{model}' AS model, v.event_id, v.profile_id, v.metric_id, v.metric_name, v.datetime,
               v.day, v.value, v.attributed_event_id, v.touch_datetime, v.campaign_id, v.flow_id,
               v.message_id, v.channel, {lag} AS lag_seconds, {_lag_bucket_sql(lag)} AS lag_bucket
        FROM {source} v
        WHERE {is_attributed("v")}"""


@migrations()
def m007_attributions(db: Database) -> None:
    # One row per attribution Klaviyo returned (GET /api/events?include=attributions), written
    # with its event. Usually one per event; attributed_conversions picks one when there are more.
    db["event_attributions"].create(
        {"id": TEXT, "event_id": TEXT, "attributed_event_id": TEXT, "campaign_id": TEXT,
         "campaign_message_id": TEXT, "flow_id": TEXT, "flow_message_id": TEXT,
         "flow_message_variation_id": TEXT},
        pk="id", not_null={"event_id"},
        foreign_keys=[("event_id", "events", "id")],
    )
    db["event_attributions"].create_index(["event_id"], index_name="idx_event_attributions_event_id")
    # Every event with Klaviyo's attribution: the campaign or flow message it credits, the touch
    # (attributed event) and its channel; all NULL for an organic event. Of several attributions
    # of one event, the one chosen_attribution picks.
    db.create_view("attributed_conversions", f"""
        SELECT e.id AS event_id, e.profile_id, e.metric_id, m.name AS metric_name, e.datetime,
               substr(e.datetime, 1, 10) AS day, coalesce(e.value, 0.0) AS value,
               a.attributed_event_id, t.datetime AS touch_datetime,
               a.campaign_id, a.campaign_message_id, a.flow_id, a.flow_message_id,
               a.flow_message_variation_id,
               coalesce(a.campaign_message_id, a.flow_message_id) AS message_id,
               CASE WHEN NOT ({credits_message("a")}) THEN NULL
                    ELSE coalesce(cm.channel, c.channel, fm.channel, {_CHANNEL_OF_METRIC.format(m='tm.name')})
               END AS channel
        FROM events e
        LEFT JOIN metrics m ON m.id = e.metric_id
        LEFT JOIN event_attributions a ON a.id = ({chosen_attribution("e.id")})
        LEFT JOIN events t ON t.id = a.attributed_event_id
        LEFT JOIN metrics tm ON tm.id = t.metric_id
        LEFT JOIN campaign_messages cm ON cm.id = a.campaign_message_id
        LEFT JOIN campaigns c ON c.id = a.campaign_id
        LEFT JOIN flow_messages fm ON fm.id = a.flow_message_id""")
    # The touches that start a session in dbt_klaviyo's model: opened or clicked emails and
    # clicked SMS whose $message is a stored campaign message (or campaign) or flow message, or
    # that name a $flow.
    names = ", ".join(f"'{n}'" for n in SESSION_TOUCH_METRICS)
    msg = _prop("e", "$message")
    db.create_view("session_touches", f"""
        SELECT e.id AS event_id, e.profile_id, e.datetime, m.name AS metric_name,
               {_CHANNEL_OF_METRIC.format(m='m.name')} AS channel,
               coalesce(cm.campaign_id, c.id) AS campaign_id, cm.id AS campaign_message_id,
               coalesce(fm.flow_id, {_prop("e", "$flow")}) AS flow_id,
               fm.id AS flow_message_id
        FROM events e
        JOIN metrics m ON m.id = e.metric_id
        LEFT JOIN campaign_messages cm ON cm.id = {msg}
        LEFT JOIN campaigns c ON c.id = {msg}
        LEFT JOIN flow_messages fm ON fm.id = {msg}
        WHERE m.name IN ({names})
          AND coalesce(cm.campaign_id, c.id, fm.flow_id, {_prop("e", "$flow")}) IS NOT NULL""")
    # dbt_klaviyo's session model (session_conversions_sql), over every event.
    db.create_view("session_attributed_conversions", session_conversions_sql())
    # How long after its touch each attributed event came, under either model (model column).
    db.create_view("conversion_lag", lag_sql("klaviyo", "attributed_conversions")
                   + "\n        UNION ALL\n        " + lag_sql("session", "session_attributed_conversions"))


@migrations()
def m008_analytics(db: Database) -> None:
    # The analyst's views (customer_summary, customer_rfm, cohort_retention,
    # message_deliverability, customer_timeline), made from the rules in analytics.py.
    from .analytics import create_views

    create_views(db)


@migrations()
def m009_suppressions(db: Database) -> None:
    # Who may not be emailed or texted, and why: one row per profile and channel whose marketing
    # Klaviyo will not send (can_receive = 0), the reason being the suppression (email: HARD_BOUNCE,
    # SPAM_COMPLAINT, USER_SUPPRESSED, ...) or else the consent (UNSUBSCRIBED, NEVER_SUBSCRIBED).
    # Fivetran and Airbyte call this table global exclusions. Deleted profiles are left out.
    db.create_view("suppressions", """
        SELECT id AS profile_id, 'email' AS channel, email AS address,
               coalesce(email_suppression, email_consent) AS reason, email_consent AS consent,
               email_consent_at AS consent_at
        FROM profiles
        WHERE deleted_at IS NULL AND email IS NOT NULL AND email_can_receive = 0
        UNION ALL
        SELECT id, 'sms', phone_number, sms_consent, sms_consent, sms_consent_at
        FROM profiles
        WHERE deleted_at IS NULL AND phone_number IS NOT NULL AND sms_can_receive = 0""")


@migrations()
def m010_unverifiable_metrics(db: Database) -> None:
    # Metrics Klaviyo refused to aggregate (custom ones, a 400): verify asks again only after
    # verify.RETRY_UNVERIFIABLE_DAYS days, or with --retry-unverifiable.
    db["unverifiable_metrics"].create(
        {"metric_id": TEXT, "metric": TEXT, "reason": TEXT, "first_refused_at": TEXT, "refused_at": TEXT},
        pk="metric_id",
    )


@migrations()
def m011_customer_index(db: Database) -> None:
    # The conversions of a metric per profile, with every column customers, rfm and cohorts read
    # (EVENT_INDEXES): they answer from the index without reading the events table. The views
    # made of those rules (m008) are made again from their current SQL.
    from .analytics import create_views

    ensure_event_indexes(db)
    create_views(db)
