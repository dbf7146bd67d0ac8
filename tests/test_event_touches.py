"""event_touches (the session model's touches, read out of the events' JSON once) stays equal to
what the stored events say: after a sync, a re-sync of a window (upserts), events stored before
their metric, a metric renamed, events changed or deleted, a rolled-back (killed) transaction,
and when the migration fills it for a database that had none. And `customers` counts an event
with several attributions by the one attributed_conversions chooses."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import base_env, cli_env, floor_now, iso, query, run_cli

TOUCH_METRICS = {"Opened Email", "Clicked Email", "Clicked SMS"}


def truth(path) -> set[tuple]:
    """(event_id, profile_id, datetime, message, flow) of every stored touch, from the events'
    properties parsed here with json.loads (not SQLite's JSON functions)."""
    names = dict(query(path, "SELECT id, name FROM metrics"))
    out = set()
    for eid, metric, profile, when, props in query(path, "SELECT id, metric_id, profile_id, datetime, properties "
                                                         "FROM events"):
        if names.get(metric) not in TOUCH_METRICS:
            continue
        try:
            p = json.loads(props)
        except (TypeError, ValueError):
            continue
        if not isinstance(p, dict):
            continue
        if p.get("$message") is not None or p.get("$flow") is not None:
            out.add((eid, profile, when, p.get("$message"), p.get("$flow")))
    return out


def stored(path) -> set[tuple]:
    return set(query(path, "SELECT event_id, profile_id, datetime, message, flow FROM event_touches"))


def test_event_touches_equal_the_synced_events_after_a_resync_of_a_window(tmp_path):
    now = floor_now() - timedelta(minutes=1)
    with FakeKlaviyo(n_events=3000, n_profiles=60, n_metrics=18, span_hours=48, now=now) as fake:
        db = tmp_path / "k.db"
        env = cli_env(fake, db)
        r = run_cli(["sync-events", "--since", iso(now - timedelta(hours=49)), "--until", iso(now)], env, timeout=120)
        assert r.returncode == 0, r.describe()
        want = truth(db)
        # the fake's opens and clicks name their message: there is something to keep
        assert len(want) > 100
        assert stored(db) == want
        # a window synced again: its events are upserted unchanged, nothing doubles or goes
        r = run_cli(["sync-events", "--since", iso(now - timedelta(hours=30)), "--until", iso(now - timedelta(hours=10))],
                    env, timeout=120)
        assert r.returncode == 0, r.describe()
        assert stored(db) == want == truth(db)
        assert query(db, "SELECT count(*) FROM events")[0][0] == fake.n_events


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "t.db"
    db = store.open_db(path)
    with db.atomic():
        db.execute("INSERT INTO metrics (id, name) VALUES ('OE', 'Opened Email'), ('PO', 'Placed Order')")
    return path, db


def add(db, eid, metric, props, profile="P1", when="2026-03-01T12:00:00Z"):
    db.execute("INSERT INTO events (id, metric_id, profile_id, datetime, properties) VALUES (?, ?, ?, ?, ?)",
               [eid, metric, profile, when, props if isinstance(props, str) else json.dumps(props)])


def test_event_touches_follow_inserts_changes_deletes_and_metrics(tiny):
    path, db = tiny
    with db.atomic():
        add(db, "E1", "OE", {"$message": "CM1"})
        add(db, "E2", "OE", {"$flow": "F1"}, profile=None)
        add(db, "E3", "OE", {"Subject": "no message"})  # no $message nor $flow: no touch
        add(db, "E4", "OE", "not json")
        add(db, "E5", "PO", {"$message": "CM1", "$value": 3})  # not a touch metric
        add(db, "E6", "CS", {"$message": "CM2"})  # its metric is not stored yet
    assert stored(path) == truth(path) == {("E1", "P1", "2026-03-01T12:00:00Z", "CM1", None),
                                           ("E2", None, "2026-03-01T12:00:00Z", None, "F1")}
    with db.atomic():  # the metric of E6 arrives after its event
        db.execute("INSERT INTO metrics (id, name) VALUES ('CS', 'Clicked SMS')")
    assert {r[0] for r in stored(path)} == {"E1", "E2", "E6"}
    with db.atomic():
        db.execute("UPDATE events SET properties = ? WHERE id = 'E3'", [json.dumps({"$message": "CM3"})])
        db.execute("UPDATE events SET properties = '{}' WHERE id = 'E1'")
        db.execute("UPDATE events SET profile_id = 'P9', datetime = '2026-03-02T00:00:00Z' WHERE id = 'E2'")
        db.execute("DELETE FROM events WHERE id = 'E6'")
    assert stored(path) == truth(path) == {("E3", "P1", "2026-03-01T12:00:00Z", "CM3", None),
                                           ("E2", "P9", "2026-03-02T00:00:00Z", None, "F1")}
    with db.atomic():  # a metric renamed to or from a touch metric
        db.execute("UPDATE metrics SET name = 'Opened Email (old)' WHERE id = 'OE'")
        db.execute("UPDATE metrics SET name = 'Clicked SMS' WHERE id = 'PO'")
    assert stored(path) == truth(path) == {("E5", "P1", "2026-03-01T12:00:00Z", "CM1", None)}
    db.close()


def test_a_rolled_back_write_leaves_events_and_touches_as_they_were(tiny):
    path, db = tiny
    with db.atomic():
        add(db, "E1", "OE", {"$message": "CM1"})
    before = stored(path)

    class Killed(Exception):
        pass

    with pytest.raises(Killed), db.atomic():
        add(db, "E2", "OE", {"$message": "CM2"})
        db.execute("DELETE FROM events WHERE id = 'E1'")
        raise Killed
    assert query(path, "SELECT id FROM events") == [("E1",)]
    assert stored(path) == before == truth(path)
    db.close()


def test_the_migration_fills_event_touches_for_a_database_without_them(tiny):
    path, db = tiny
    with db.atomic():
        add(db, "E1", "OE", {"$message": "CM1"})
        add(db, "E2", "OE", {"$flow": "F1"})
        add(db, "E3", "PO", {"$message": "CM1"})
    # a database from before m011: no table, no triggers; events written meanwhile
    with db.atomic():
        for name in [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                              "AND name LIKE 'event_touches%'")]:
            db.execute(f"DROP TRIGGER {name}")
        db.execute("DROP TABLE event_touches")
        db.execute("DROP TABLE event_touch_metrics")
        add(db, "E4", "OE", {"$message": "CM4"})
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm011_event_touches'")
    db.close()
    db = store.open_db(path)
    assert stored(path) == truth(path) and {r[0] for r in stored(path)} == {"E1", "E2", "E4"}
    db.close()


def test_customers_count_an_event_with_several_attributions_by_the_chosen_one(tiny):
    path, db = tiny
    with db.atomic():
        db.execute("INSERT INTO profiles (id, email) VALUES ('P1', 'a@example.com'), ('P2', 'b@example.com')")
        add(db, "T1", "OE", {"$message": "CM1"}, when="2026-03-01T00:00:00Z")
        add(db, "T2", "OE", {"$message": "CM2"}, when="2026-03-01T05:00:00Z")
        for eid, profile, value in (("O1", "P1", 10.0), ("O2", "P1", 20.0), ("O3", "P2", 40.0)):
            db.execute("INSERT INTO events (id, metric_id, profile_id, datetime, value) VALUES (?, 'PO', ?, ?, ?)",
                       [eid, profile, "2026-03-01T06:00:00Z", value])
        # O1: two attributions, the one with the latest touch (T2) credits no message: organic.
        # O2: two attributions, the latest touch's credits CM2: attributed. O3: one, credits CM1.
        db.execute("INSERT INTO event_attributions VALUES ('A1', 'O1', 'T1', 'C1', 'CM1', NULL, NULL, NULL), "
                   "('A2', 'O1', 'T2', NULL, NULL, NULL, NULL, NULL), "
                   "('A3', 'O2', 'T1', NULL, NULL, NULL, NULL, NULL), "
                   "('A4', 'O2', 'T2', 'C2', 'CM2', NULL, NULL, NULL), "
                   "('A5', 'O3', 'T1', 'C1', 'CM1', NULL, NULL, NULL)")
    db.close()
    r = run_cli(["customers", "--top", "0", "--format", "json"], base_env(KLAVIYO_SYNC_DB=str(path)))
    assert r.returncode == 0, r.describe()
    got = {c["profile_id"]: (c["orders"], c["revenue"], c["attributed_revenue"], c["organic_revenue"])
           for c in json.loads(r.stdout)}
    assert got == {"P1": (2, 30.0, 20.0, 10.0), "P2": (1, 40.0, 40.0, 0.0)}
    assert query(path, "SELECT profile_id, attributed_revenue FROM customer_summary ORDER BY profile_id") == [
        ("P1", 20.0), ("P2", 40.0)]
