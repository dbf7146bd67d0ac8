"""The faster paths of the analytics commands answer what the rules say: customers' per-event
attribution flag picks the attribution attributed_conversions picks; migration m011 adds the
customers' index and remakes the views on a database that had them from m008; the session
model's note about missing touches is given exactly when no touch is stored."""

from __future__ import annotations

import json

from klaviyo_sync import db as store

from .e2e_helpers import base_env, query, run_cli


def _db(tmp_path):
    path = tmp_path / "t.db"
    db = store.open_db(path)
    with db.atomic():
        db.execute("INSERT INTO metrics (id, name) VALUES ('OE', 'Opened Email'), ('PO', 'Placed Order')")
        db.execute("INSERT INTO profiles (id, email) VALUES ('P1', 'a@example.com'), ('P2', 'b@example.com')")
    return path, db


def _event(db, eid, metric, when, profile="P1", value=None, props=None):
    db.execute("INSERT INTO events (id, metric_id, profile_id, datetime, value, properties) VALUES (?, ?, ?, ?, ?, ?)",
               [eid, metric, profile, when, value, json.dumps(props or {})])


def test_customers_count_an_event_with_several_attributions_by_the_chosen_one(tmp_path):
    path, db = _db(tmp_path)
    with db.atomic():
        _event(db, "T1", "OE", "2026-03-01T00:00:00Z", props={"$message": "CM1"})
        _event(db, "T2", "OE", "2026-03-01T05:00:00Z", props={"$message": "CM2"})
        for eid, profile, value in (("O1", "P1", 10.0), ("O2", "P1", 20.0), ("O3", "P2", 40.0), ("O4", "P2", 1.5)):
            _event(db, eid, "PO", "2026-03-01T06:00:00Z", profile=profile, value=value)
        # O1: two attributions; the latest touch's (T2) credits no message: organic.
        # O2: two attributions; the latest touch's credits CM2: attributed. O3: one, credits CM1.
        # O4: none: organic.
        db.execute("INSERT INTO event_attributions VALUES ('A1', 'O1', 'T1', 'C1', 'CM1', NULL, NULL, NULL), "
                   "('A2', 'O1', 'T2', NULL, NULL, NULL, NULL, NULL), "
                   "('A3', 'O2', 'T1', NULL, NULL, NULL, NULL, NULL), "
                   "('A4', 'O2', 'T2', 'C2', 'CM2', NULL, NULL, NULL), "
                   "('A5', 'O3', 'T1', 'C1', 'CM1', NULL, NULL, NULL)")
    db.close()
    env = base_env(KLAVIYO_SYNC_DB=str(path))
    r = run_cli(["customers", "--top", "0", "--format", "json"], env)
    assert r.returncode == 0, r.describe()
    got = {c["profile_id"]: (c["orders"], c["revenue"], c["attributed_revenue"], c["organic_revenue"])
           for c in json.loads(r.stdout)}
    assert got == {"P1": (2, 30.0, 20.0, 10.0), "P2": (2, 41.5, 40.0, 1.5)}
    r = run_cli(["customers", "--range", "2026-03-01..2026-03-01", "--format", "json"], env)
    assert {c["profile_id"]: c["attributed_revenue"] for c in json.loads(r.stdout)} == {"P1": 20.0, "P2": 40.0}
    assert query(path, "SELECT profile_id, attributed_revenue, organic_revenue FROM customer_summary "
                       "ORDER BY profile_id") == [("P1", 20.0, 10.0), ("P2", 40.0, 1.5)]


def test_the_migration_adds_the_index_and_remakes_the_views(tmp_path):
    path, db = _db(tmp_path)
    with db.atomic():
        _event(db, "O1", "PO", "2026-03-01T06:00:00Z", value=7.0)
        # a database from before m011: the views as m008 made them, no customers' index
        db.execute("DROP INDEX idx_events_metric_id_profile_id")
        db.execute("DROP VIEW customer_summary")
        db.execute("CREATE VIEW customer_summary AS SELECT 'old' AS metric")
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm011_customer_index'")
    db.close()
    db = store.open_db(path)
    cols = [r[2] for r in db.execute("PRAGMA index_info('idx_events_metric_id_profile_id')")]
    assert cols == ["metric_id", "profile_id", "datetime", "value", "id"]
    db.close()
    assert query(path, "SELECT metric, profile_id, orders, revenue FROM customer_summary") == [
        ("Placed Order", "P1", 1, 7.0)]


def test_the_session_note_is_given_when_no_touch_is_stored(tmp_path):
    path, db = _db(tmp_path)
    with db.atomic():
        db.execute("INSERT INTO campaigns (id, name, channel) VALUES ('C1', 'Spring', 'email')")
        db.execute("INSERT INTO campaign_messages (id, campaign_id, channel, label) VALUES ('CM1', 'C1', 'email', 'x')")
        _event(db, "O1", "PO", "2026-03-01T06:00:00Z", value=7.0)
    env = base_env(KLAVIYO_SYNC_DB=str(path))
    args = ["attribution", "--model", "session", "--range", "2026-03-01..2026-03-01", "--format", "json"]
    note = "no opened or clicked email or clicked SMS carries a stored campaign or flow message"
    r = run_cli(args, env)
    assert r.returncode == 0 and note in r.stderr, r.describe()
    with db.atomic():  # a touch after the order: nothing attributed, but a touch is stored
        _event(db, "T1", "OE", "2026-03-01T07:00:00Z", props={"$message": "CM1"})
    r = run_cli(args, env)
    assert r.returncode == 0 and note not in r.stderr, r.describe()
    assert json.loads(r.stdout)[-1]["conversions"] == 1
    with db.atomic():  # a touch before it: attributed
        _event(db, "T0", "OE", "2026-03-01T05:00:00Z", props={"$message": "CM1"})
    for extra in ([], ["--by", "day"]):
        r = run_cli(args + extra, env)
        assert r.returncode == 0 and note not in r.stderr, r.describe()
    r = run_cli(["conversion-lag", "--model", "session", "--range", "2026-03-01..2026-03-01", "--format", "json"], env)
    assert r.returncode == 0 and note not in r.stderr, r.describe()
    db.close()
