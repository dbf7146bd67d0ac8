"""export: round trips (CSV, JSONL, Parquet, DuckDB), incremental rewrites, the missing extra,
and the Fivetran shape dbt_klaviyo v1.4.1 reads."""

import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import orjson
import pytest

from klaviyo_sync import db as store
from klaviyo_sync.errors import UsageError
from klaviyo_sync.export import MANIFEST, export

try:
    import duckdb
except ImportError:  # CI installs the extra; elsewhere these tests say why they skip
    duckdb = None

needs_duckdb = pytest.mark.skipif(duckdb is None, reason="duckdb not installed: pip install -e '.[export]'")

METRICS = [
    ("MPO", "Placed Order", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "int1", "shopify", "Shopify", "eCommerce", "{}"),
    ("MOE", "Opened Email", "2024-01-01T00:00:00Z", None, "int2", "klaviyo", "Klaviyo", "Internal", None),
]
PROFILES = [
    # id, email, first_name, last_name, created, updated, location, properties
    ("P1", "ada@example.com", "Ada", 'O"Brien, Jr.', "2024-01-03T10:00:00Z", "2024-02-01T00:00:00Z",
     '{"city":"Boston","latitude":42.36,"longitude":-71.06,"address1":"1 Main St"}', '{"vip":true}'),
    ("P2", "", "Zoë", "line\nbreak", "2024-01-04T10:00:00Z", None, None, None),
]
EVENTS = [
    # id, metric_id, profile_id, datetime, timestamp, uuid, value, properties
    ("E1", "MOE", "P1", "2024-03-01T09:00:00Z", 1709283600, "u1", None,
     '{"$message":"CM1","Subject":"Hi, \\"you\\""}'),
    ("E2", "MPO", "P1", "2024-03-01T10:30:00Z", 1709289000, "u2", 42.5, '{"$value":42.5,"Items":["a","b"]}'),
    ("E3", "MPO", "P2", "2024-03-02T23:59:59Z", 1709423999, "u3", 1234567.25, '{"$value":1234567.25}'),
    ("E4", "MOE", "P2", "2024-03-03T00:00:00Z", 1709424000, None, 0.0, ""),
]


def build(path: Path) -> Path:
    db = store.open_db(path)
    with db.atomic():
        db.conn.executemany(f"INSERT INTO metrics ({', '.join(store.METRIC_COLUMNS)}) VALUES ({', '.join('?' * 9)})",
                            [(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]) for m in METRICS])
        db.conn.executemany("INSERT INTO profiles (id, email, first_name, last_name, created, updated, location, "
                            "properties, email_can_receive) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)", PROFILES)
        db.conn.executemany(f"INSERT INTO events ({', '.join(store.EVENT_COLUMNS)}) VALUES ({', '.join('?' * 8)})",
                            EVENTS)
        db.execute("INSERT INTO campaigns (id, name, channel, status, archived, send_time, created_at, updated_at) "
                   "VALUES ('C1', 'Spring, \"Sale\"', 'email', 'Sent', 0, '2024-02-28T12:00:00Z', "
                   "'2024-02-20T00:00:00Z', '2024-02-28T12:00:00Z')")
        db.execute("INSERT INTO campaign_messages (id, campaign_id, channel, from_email, from_label) "
                   "VALUES ('CM1', 'C1', 'email', 'shop@example.com', 'Shop')")
        db.execute("INSERT INTO campaign_stats (campaign_id, campaign_message_id, send_channel, recipients, "
                   "conversion_value, open_rate) VALUES ('C1', 'CM1', 'email', 100, 42.5, 0.25)")
        db.execute("INSERT INTO flows (id, name, status, archived, trigger_type, created, updated) "
                   "VALUES ('F1', 'Welcome', 'live', 1, 'Added to List', '2024-01-01T00:00:00Z', NULL)")
        db.execute("INSERT INTO sync_runs (command, started_at, finished_at, status) "
                   "VALUES ('sync-events', '2024-03-04T00:00:00Z', '2024-03-04T00:01:00Z', 'ok')")
    db.close()
    return path


@pytest.fixture
def src(tmp_path):
    return build(tmp_path / "k.db")


def sqlite_rows(path: Path, table: str) -> tuple[list[str], list[tuple]]:
    conn = sqlite3.connect(path)
    cur = conn.execute(f'SELECT * FROM "{table}"')
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    conn.close()
    return names, rows


def typed(value, kind: str):
    """A SQLite value as the declared export type reads back from Parquet / DuckDB."""
    if value is None:
        return None
    if kind == "timestamp":
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    if kind == "date":
        return date.fromisoformat(value)
    return value


def manifest(out: Path) -> dict:
    return orjson.loads((out / MANIFEST).read_bytes())


def by_id(names, rows):
    return sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r))


TABLES = ["metrics", "profiles", "events", "campaigns", "campaign_messages", "campaign_stats", "flows"]


# -- JSONL and CSV need nothing -------------------------------------------------------------------
def test_jsonl_round_trip_every_table_row_for_row(src, tmp_path):
    out = tmp_path / "out"
    export(src, out, "jsonl")
    m = manifest(out)
    for table in TABLES:
        names, rows = sqlite_rows(src, table)
        assert [c for c, _ in m["sources"][table]["columns"]] == names
        if table == "events":
            files = sorted(out.glob("events/day=*/events.jsonl"))
            assert [f.parent.name for f in files] == ["day=2024-03-01", "day=2024-03-02", "day=2024-03-03"]
        else:
            files = [out / f"{table}.jsonl"]
        got = [tuple(orjson.loads(line)[n] for n in names) for f in files for line in f.read_bytes().splitlines()]
        assert by_id(names, got) == by_id(names, rows), table
    # owner-only, like the database: profiles are personal data
    assert all(p.stat().st_mode & 0o077 == 0 for p in [out, *out.rglob("*")])
    # JSON columns stay text
    line = (out / "events/day=2024-03-01/events.jsonl").read_bytes().splitlines()[1]
    assert orjson.loads(line)["properties"] == '{"$value":42.5,"Items":["a","b"]}'


def test_csv_writes_null_unquoted_and_empty_string_quoted(src, tmp_path):
    out = tmp_path / "out"
    export(src, out, "csv", tables=["profiles"])
    lines = (out / "profiles.csv").read_text(encoding="utf-8")
    names, rows = sqlite_rows(src, "profiles")
    assert lines.splitlines()[0] == ",".join(f'"{n}"' for n in names)
    # P2: email is '' (quoted), updated is NULL (nothing), a newline stays inside quotes
    parsed = list(csv.reader(lines.splitlines(keepends=True)))
    p2 = next(r for r in parsed if r[0] == "P2")
    assert p2[names.index("last_name")] == "line\nbreak"
    assert ',"",' in lines  # the empty email
    record = next(line for line in lines.split("\n") if line.startswith('"P2"'))
    assert record.startswith('"P2","",')


@needs_duckdb
def test_csv_round_trip_read_back_by_duckdb_keeps_null_and_empty_apart(src, tmp_path):
    out = tmp_path / "out"
    export(src, out, "csv")
    con = duckdb.connect()
    for table in TABLES:
        names, rows = sqlite_rows(src, table)
        pattern = str(out / ("events/day=*/events.csv" if table == "events" else f"{table}.csv"))
        got = con.execute(f"SELECT * FROM read_csv('{pattern}', header = true, all_varchar = true, "
                          f"allow_quoted_nulls = false, nullstr = '', hive_partitioning = false)").fetchall()
        expected = [tuple(None if v is None else (repr(v) if isinstance(v, float) else str(v)) for v in r) for r in rows]
        assert by_id(names, got) == by_id(names, expected), table


# -- Parquet and DuckDB ------------------------------------------------------------------------
@needs_duckdb
def test_parquet_round_trip_with_declared_types(src, tmp_path):
    out = tmp_path / "out"
    export(src, out, "parquet")
    m = manifest(out)
    con = duckdb.connect()
    for table in TABLES + ["campaign_performance"]:
        kinds = dict(m["sources"][table]["columns"])
        names, rows = sqlite_rows(src, table)
        if table == "events":
            rel = f"read_parquet('{out}/events/*/*.parquet', hive_partitioning = false)"
        else:
            rel = f"'{out}/{table}.parquet'"
        got = con.execute(f"SELECT * FROM {rel}").fetchall()
        expected = [tuple(typed(v, kinds[n]) for n, v in zip(names, r)) for r in rows]
        assert by_id(names, got) == by_id(names, expected), table
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {rel})").fetchall())
        assert list(types) == names
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                             f"read_parquet('{out}/events/*/*.parquet', hive_partitioning = true))").fetchall())
    assert types == {"id": "VARCHAR", "metric_id": "VARCHAR", "profile_id": "VARCHAR", "datetime": "TIMESTAMP",
                     "timestamp": "BIGINT", "uuid": "VARCHAR", "value": "DOUBLE", "properties": "VARCHAR",
                     "day": "DATE"}
    assert con.execute(f"SELECT column_type FROM (DESCRIBE SELECT * FROM '{out}/campaigns.parquet') "
                       f"WHERE column_name = 'send_time'").fetchone() == ("TIMESTAMP",)


@needs_duckdb
def test_duckdb_file_round_trip_with_declared_types(src, tmp_path):
    target = tmp_path / "k.duckdb"
    report = export(src, target, "duckdb")
    assert report.rows["events"] == 4
    con = duckdb.connect(str(target), read_only=True)
    m = orjson.loads(con.execute("SELECT manifest FROM _klaviyo_export").fetchone()[0])
    for table in TABLES + ["email_subscribers"]:
        kinds = dict(m["sources"][table]["columns"])
        names, rows = sqlite_rows(src, table)
        got = con.execute(f'SELECT * FROM "{table}"').fetchall()
        expected = [tuple(typed(v, kinds[n]) for n, v in zip(names, r)) for r in rows]
        assert by_id(names, got) == by_id(names, expected), table


# -- incremental ----------------------------------------------------------------------------------
def _change(src: Path) -> None:
    conn = sqlite3.connect(src)
    with conn:
        conn.execute("""UPDATE events SET properties = '{"$value":43}', value = 43 WHERE id = 'E2'""")  # 03-01
        conn.execute("INSERT INTO events (id, metric_id, profile_id, datetime, timestamp, value) "
                     "VALUES ('E0', 'MPO', 'P1', '2024-02-27T08:00:00Z', 1709020800, 5)")  # a late, older day
        conn.execute("DELETE FROM events WHERE id = 'E4'")  # 03-03 now empty
        conn.execute("UPDATE campaigns SET name = 'Spring' WHERE id = 'C1'")
    conn.close()


@pytest.mark.parametrize("fmt", ["jsonl", pytest.param("parquet", marks=needs_duckdb)])
def test_second_export_rewrites_only_what_changed(src, tmp_path, fmt):
    out = tmp_path / "out"
    ext = fmt
    first = export(src, out, fmt)
    assert first.written["events"] == 3 and first.unchanged["events"] == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob(f"*.{ext}")}
    for p in stamps:
        os.utime(p, ns=(1, 1))  # mark every file: an untouched one keeps it

    again = export(src, out, fmt)
    assert all(n == 0 for n in again.written.values()), again.written
    assert all(p.stat().st_mtime_ns == 1 for p in stamps)

    _change(src)
    third = export(src, out, fmt)
    assert (third.written["events"], third.unchanged["events"], third.removed["events"]) == (2, 1, 1)
    rewritten = {p.relative_to(out).as_posix() for p in out.rglob(f"*.{ext}") if p.stat().st_mtime_ns != 1}
    assert rewritten == {f"events/day=2024-02-27/events.{ext}", f"events/day=2024-03-01/events.{ext}",
                         f"campaigns.{ext}", f"campaign_performance.{ext}",
                         # the analytics views read events or campaigns (m008_analytics)
                         f"customer_summary.{ext}", f"customer_rfm.{ext}", f"cohort_retention.{ext}",
                         f"message_deliverability.{ext}"}
    assert not (out / "events/day=2024-03-03").exists()
    assert sorted(manifest(out)["sources"]["events"]["parts"]) == ["2024-02-27", "2024-03-01", "2024-03-02"]
    assert third.rows["events"] == 4
    assert third.written["profiles"] == 0 and third.written["email_subscribers"] == 0


@needs_duckdb
def test_second_duckdb_export_replaces_changed_days_and_tables(src, tmp_path):
    target = tmp_path / "k.duckdb"
    export(src, target, "duckdb")
    _change(src)
    report = export(src, target, "duckdb")
    assert (report.written["events"], report.unchanged["events"], report.removed["events"]) == (2, 1, 1)
    assert report.written["campaigns"] == 1 and report.written["profiles"] == 0
    con = duckdb.connect(str(target), read_only=True)
    names, rows = sqlite_rows(src, "events")
    got = con.execute("SELECT * FROM events").fetchall()
    assert by_id(names, got) == by_id(names, [tuple(typed(v, "timestamp") if n == "datetime" else v
                                                    for n, v in zip(names, r)) for r in rows])
    assert con.execute("SELECT name FROM campaigns").fetchall() == [("Spring",)]


def test_export_refuses_a_foreign_directory_and_a_format_change(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds no klaviyo-sync export"):
        export(src, out, "csv")
    out2 = tmp_path / "out2"
    export(src, out2, "csv", tables=["flows"])
    with pytest.raises(UsageError, match="holds a csv export"):
        export(src, out2, "jsonl")
    with pytest.raises(UsageError, match="no table or view named 'nope'"):
        export(src, out2, "csv", tables=["nope"])


# -- the CLI: the missing extra ------------------------------------------------------------------
def _cli(args, block_duckdb=False):
    code = ("import sys\n"
            + ("sys.modules['duckdb'] = None\n" if block_duckdb else "")
            + "from klaviyo_sync.cli import main\nsys.argv = ['klaviyo-sync'] + sys.argv[1:]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fmt", ["parquet", "duckdb"])
def test_parquet_and_duckdb_without_the_extra_exit_2_naming_it(src, tmp_path, fmt):
    run = _cli(["export", "--db", str(src), "--to", str(tmp_path / "x"), "--format", fmt], block_duckdb=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr == ("klaviyo-sync: error: Parquet and DuckDB exports need the export extra: "
                          "pip install 'klaviyo-sync[export]'\n")
    assert not (tmp_path / "x").exists()


def test_csv_needs_no_extra_and_reports_json(src, tmp_path):
    run = _cli(["export", "--db", str(src), "--to", str(tmp_path / "x"), "--format", "csv", "--tables",
                "events,flows", "--report", "json"], block_duckdb=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [(t["table"], t["rows"], t["written"]) for t in report["tables"]] == [("events", 4, 3), ("flows", 1, 1)]
    again = _cli(["export", "--db", str(src), "--to", str(tmp_path / "x"), "--format", "csv", "-q"])
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_bad_format_and_fivetran_outside_duckdb_exit_2(src, tmp_path):
    run = _cli(["export", "--db", str(src), "--to", str(tmp_path / "x"), "--format", "xml"])
    assert run.returncode == 2 and run.stderr.startswith("klaviyo-sync: error: --format: 'xml' is not one of")
    run = _cli(["export", "--db", str(src), "--to", str(tmp_path / "x"), "--format", "csv", "--schema", "fivetran"])
    assert run.returncode == 2 and "use --format duckdb" in run.stderr


# -- the Fivetran shape -------------------------------------------------------------------------------
# Copied from dbt_klaviyo v1.4.1, macros/staging/get_*_columns.sql: every column its staging models
# select, with the type it declares (dbt.type_string() -> VARCHAR, type_timestamp() -> TIMESTAMP,
# type_float() -> DOUBLE on DuckDB).
DBT_KLAVIYO_COLUMNS = {
    "event": {"_fivetran_deleted": "boolean", "_fivetran_synced": "timestamp", "_variation": "string",
              "campaign_id": "string", "datetime": "timestamp", "flow_id": "string", "flow_message_id": "string",
              "id": "string", "metric_id": "string", "person_id": "string", "timestamp": "timestamp",
              "type": "string", "uuid": "string", "property_attribution": "string", "property_value": "string",
              "propertyAttribution": "string", "propertyValue": "string"},
    "person": {"_fivetran_deleted": "boolean", "_fivetran_synced": "timestamp", "address_1": "string",
               "address_2": "string", "city": "string", "country": "string", "created": "timestamp",
               "email": "string", "first_name": "string", "id": "string", "last_name": "string",
               "latitude": "float", "longitude": "float", "organization": "string", "phone_number": "string",
               "region": "string", "timezone": "string", "title": "string", "updated": "timestamp",
               "zip": "string", "last_event_date": "timestamp"},
    "campaign": {"_fivetran_deleted": "boolean", "_fivetran_synced": "timestamp", "campaign_type": "string",
                 "created": "timestamp", "email_template_id": "string", "from_email": "string",
                 "from_name": "string", "id": "string", "name": "string", "send_time": "timestamp",
                 "sent_at": "timestamp", "status": "string", "status_id": "string", "status_label": "string",
                 "subject": "string", "updated": "timestamp", "archived": "boolean", "scheduled": "timestamp"},
    "flow": {"_fivetran_deleted": "boolean", "_fivetran_synced": "timestamp", "created": "timestamp",
             "id": "string", "name": "string", "status": "string", "updated": "timestamp", "archived": "boolean",
             "trigger_type": "string"},
    "metric": {"_fivetran_deleted": "boolean", "_fivetran_synced": "timestamp", "created": "timestamp",
               "id": "string", "integration_id": "string", "integration_category": "string",
               "integration_name": "string", "name": "string", "updated": "timestamp"},
}
DUCK = {"boolean": "BOOLEAN", "timestamp": "TIMESTAMP", "string": "VARCHAR", "float": "DOUBLE"}


def _attributions(src: Path) -> None:
    conn = sqlite3.connect(src)
    with conn:
        # IF NOT EXISTS: migration m008_analytics creates it (empty) on a database without it.
        conn.execute("""CREATE TABLE IF NOT EXISTS event_attributions (id TEXT PRIMARY KEY, event_id TEXT,
            attributed_event_id TEXT, campaign_id TEXT, campaign_message_id TEXT, flow_id TEXT, flow_message_id TEXT,
            flow_message_variation_id TEXT)""")
        conn.execute("INSERT INTO event_attributions VALUES ('A1', 'E2', 'E1', 'C1', 'CM1', NULL, NULL, NULL)")
        conn.execute("INSERT INTO event_attributions VALUES ('A2', 'E3', 'E4', NULL, NULL, 'F1', 'FM1', 'V1')")
    conn.close()


@needs_duckdb
def test_fivetran_shape_has_every_column_dbt_klaviyo_selects(src, tmp_path):
    _attributions(src)
    target = tmp_path / "f.duckdb"
    export(src, target, "duckdb", schema="fivetran")
    con = duckdb.connect(str(target), read_only=True)
    for table, columns in DBT_KLAVIYO_COLUMNS.items():
        have = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_schema = 'klaviyo' AND table_name = ?", [table]).fetchall())
        assert {c: have.get(c) for c in columns} == {c: DUCK[t] for c, t in columns.items()}, table
    events = {r[0]: r[1:] for r in con.execute(
        "SELECT id, type, person_id, campaign_id, flow_id, flow_message_id, _variation, property_attribution, "
        "property_value, timestamp FROM klaviyo.event").fetchall()}
    # E1 is the touch A1 points at, and its $message is campaign message CM1; E4 is a flow touch
    assert events["E1"][:6] == ("Opened Email", "P1", "C1", None, None, None)
    assert events["E4"][2:5] == (None, "F1", "FM1")
    assert json.loads(events["E2"][6]) == {"attributed_event_id": "E1", "campaign_id": "C1",
                                           "campaign_message_id": "CM1", "flow_id": None, "flow_message_id": None,
                                           "flow_message_variation_id": None}
    assert events["E1"][6] is None and events["E4"][6] is None
    assert [events[e][7] for e in ("E1", "E2", "E3", "E4")] == [None, "42.5", "1234567.25", "0.0"]
    assert all(re.fullmatch(r"[0-9]+(\.[0-9]+)?", events[e][7]) for e in ("E2", "E3", "E4"))
    assert events["E3"][8] == datetime(2024, 3, 2, 23, 59, 59)
    assert con.execute("SELECT id, status, sent_at, from_email, archived FROM klaviyo.campaign").fetchall() == \
        [("C1", "sent", datetime(2024, 2, 28, 12), "shop@example.com", False)]
    assert con.execute("SELECT id, city, latitude, address_1, _fivetran_deleted FROM klaviyo.person ORDER BY id").fetchall() == \
        [("P1", "Boston", 42.36, "1 Main St", False), ("P2", None, None, None, False)]
    assert con.execute("SELECT DISTINCT _fivetran_synced FROM klaviyo.metric").fetchall() == [(datetime(2024, 3, 4, 0, 1),)]


@needs_duckdb
def test_fivetran_without_attributions_leaves_property_attribution_null(src, tmp_path):
    target = tmp_path / "klaviyo.duckdb"  # a catalog named like the schema
    export(src, target, "duckdb", schema="fivetran")
    con = duckdb.connect(str(target), read_only=True)
    assert con.execute('SELECT count(*), count(property_attribution) FROM klaviyo.klaviyo.event').fetchone() == (4, 0)
