"""Issue 18: a run that dies on a full disk or a held SQLite write lock records its real error
(exit 8), in the database or, when the database cannot be written, in ``<db>.lastfail`` until the
next run records it; `status` shows it either way, never "abandoned (killed?)"."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import query, sync_runs

LOCKED = "database error: database is locked: another connection held a write lock on it for more than 0.2 s"
FULL = "database error: database or disk is full (SQLITE_FULL)"


@pytest.fixture
def run(cli):
    def invoke(fake, *args):
        return cli(*map(str, args), env={"KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url})
    return invoke


@pytest.fixture
def fake():
    with FakeKlaviyo(n_events=200, n_profiles=40, span_hours=24) as f:
        yield f


def status_runs(run, fake) -> list[dict]:
    res = run(fake, "status", "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["runs"]


class WriteLockHolder:
    """Another program's connection holding BEGIN IMMEDIATE on the database (a sqlite3 shell, a
    Datasette plugin): taken now, or once the fake has parked a request of the run."""

    def __init__(self, db):
        self.conn = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
        self.taken = threading.Event()

    def take(self):
        self.conn.execute("BEGIN IMMEDIATE")
        self.taken.set()

    def take_when_parked(self, fake):
        def wait_then_take():
            while not fake.held and not self.done.is_set():
                self.done.wait(0.01)
            self.take()
            fake.release()

        self.done = threading.Event()
        thread = threading.Thread(target=wait_then_take, daemon=True)
        thread.start()
        return thread

    def release(self):
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.mark.parametrize("when", ["before-the-run", "while-it-runs"])
def test_a_held_write_lock_ends_the_run_with_exit_8_and_status_shows_the_real_error(run, fake, db_path,
                                                                                     monkeypatch, when):
    assert run(fake, "sync-metrics").exit_code == 0
    monkeypatch.setattr("klaviyo_sync.db.BUSY_TIMEOUT_MS", 200)
    holder = WriteLockHolder(db_path)
    before = sync_runs(db_path)
    if when == "before-the-run":
        holder.take()
    else:  # the run starts (its row is written), then the lock is taken while it fetches
        fake.hold_after = len(fake.request_log()) + 1  # the account check answered, the first page parked
        thread = holder.take_when_parked(fake)
    res = run(fake, "sync-events", "--hours", "24")
    if when == "while-it-runs":
        thread.join()
    assert holder.taken.is_set()
    assert res.exit_code == 8, res.output
    assert res.output.strip().splitlines()[-1].startswith(f"klaviyo-sync: error: {LOCKED}")
    # the database cannot be written: the failure waits in <db>.lastfail, and status shows it
    lastfail = db_path.parent / "k.db.lastfail"
    assert lastfail.exists()
    shown = status_runs(run, fake)[0]
    assert (shown["command"], shown["status"]) == ("sync-events", "failed")
    assert shown["error"].startswith(LOCKED)
    assert shown["id"] == (None if when == "before-the-run" else before[-1]["id"] + 1)
    table = run(fake, "status", "--format", "table")
    assert "1 run failure(s) could not be written into the database" in table.stdout
    holder.release()

    # the next run records it in sync_runs (not "abandoned") and removes the side file
    assert run(fake, "sync-metrics").exit_code == 0
    assert not lastfail.exists()
    rows = sync_runs(db_path)[len(before):]
    assert [(r["command"], r["status"]) for r in rows] == [("sync-events", "failed"), ("sync-metrics", "ok")]
    assert rows[0]["error"].startswith(LOCKED) and rows[0]["finished_at"]
    assert query(db_path, "SELECT count(*) FROM sync_runs WHERE status IN ('running', 'abandoned')") == [(0,)]
    assert status_runs(run, fake)[1]["error"].startswith(LOCKED)


def test_a_full_disk_ends_the_run_with_exit_8_and_status_shows_the_real_error(run, fake, db_path, monkeypatch):
    """SQLITE_FULL simulated with PRAGMA max_page_count (per connection) capped at the file's size
    on every connection the tool opens: the metrics fit, the events do not."""
    assert run(fake, "sync-metrics").exit_code == 0
    from klaviyo_sync import db as store

    opened = store.open_db

    def open_full(path, **kw):
        database = opened(path, **kw)
        database.execute("PRAGMA max_page_count = 1")  # never below the current size: that size
        return database

    monkeypatch.setattr("klaviyo_sync.db.open_db", open_full)
    before = sync_runs(db_path)
    res = run(fake, "sync-events", "--hours", "24")
    assert res.exit_code == 8, res.output
    assert res.output.strip().splitlines()[-1] == f"klaviyo-sync: error: {FULL}"
    assert query(db_path, "SELECT count(*) FROM events")[0][0] < 200  # what was committed before is kept
    shown = status_runs(run, fake)[0]
    assert (shown["id"], shown["command"], shown["status"], shown["error"]) == \
        (before[-1]["id"] + 1, "sync-events", "failed", FULL)

    monkeypatch.setattr("klaviyo_sync.db.open_db", opened)  # space again
    assert run(fake, "sync-events", "--hours", "24").exit_code == 0
    rows = sync_runs(db_path)[len(before):]
    assert [(r["command"], r["status"], r["error"]) for r in rows] == [
        ("sync-events", "failed", FULL), ("sync-events", "ok", None)]
    assert not (db_path.parent / "k.db.lastfail").exists()
