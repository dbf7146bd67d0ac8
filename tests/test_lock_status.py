import json
import subprocess
import sys
import time

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.errors import LockedError
from klaviyo_sync.lock import SyncLock

from .test_db_metrics import metric, serve_metric_pages


def test_lock_refuses_a_second_writer(tmp_path):
    path = tmp_path / "k.db"
    with SyncLock(path):
        with pytest.raises(LockedError, match="another klaviyo-sync run"):
            SyncLock(path).acquire()
    SyncLock(path).acquire().release()  # free again once released


def test_lock_wait_gives_up_after_the_deadline(tmp_path):
    path = tmp_path / "k.db"
    with SyncLock(path):
        t0 = time.monotonic()
        with pytest.raises(LockedError, match="after waiting 0.5 s"):
            SyncLock(path).acquire(wait=0.5, poll=0.05)
        assert time.monotonic() - t0 >= 0.5


def test_lock_held_by_another_process_and_released_by_kill_9(tmp_path):
    path = tmp_path / "k.db"
    code = ("import sys,time; from klaviyo_sync.lock import SyncLock; "
            f"SyncLock({str(path)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            SyncLock(path).acquire()
        proc.kill()
        proc.wait()
        SyncLock(path).acquire(wait=5).release()
    finally:
        proc.kill()


def test_cli_second_sync_exits_5_while_locked(cli, db_path, mocked):
    serve_metric_pages(mocked, [[metric(1)]])
    with SyncLock(db_path):
        result = cli("sync-metrics")
    assert result.exit_code == 5
    assert "another klaviyo-sync run" in result.stderr and "--wait" in result.stderr
    assert result.stdout == ""


def test_status_json_and_max_age(cli, db_path, mocked):
    serve_metric_pages(mocked, [[metric(1), metric(2)]])
    assert cli("sync-metrics", "-q").exit_code == 0
    result = cli("status", "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["tables"]["metrics"] == 2 and report["tables"]["events"] == 0
    assert report["runs"][0]["command"] == "sync-metrics" and report["runs"][0]["rows_written"] == {"metrics": 2}
    assert set(report["last_success"]) == {"sync-metrics"}
    assert cli("status", "--max-age", "3h", "--format", "json").exit_code == 0
    # Age the run: now it is stale.
    database = store.open_db(db_path)
    database.execute("UPDATE sync_runs SET finished_at = '2020-01-01T00:00:00Z'")
    database.close()
    stale = cli("status", "--max-age", "3h", "--format", "json")
    assert stale.exit_code == 7
    assert "sync-metrics" in stale.stderr and json.loads(stale.stdout)["stale"]
    # --command narrows the check; a command that never ran counts as stale.
    assert cli("status", "--max-age", "3h", "--command", "sync-events", "--format", "json").exit_code == 7
    database = store.open_db(db_path)
    database.execute("UPDATE sync_runs SET finished_at = ?", [store.iso(store.utcnow())])
    database.close()
    assert cli("status", "--max-age", "3h", "--command", "sync-metrics", "--format", "json").exit_code == 0
    assert cli("status", "--max-age", "3h", "--command", "sync-everything").exit_code == 2


def test_status_runs_lists_that_many_recent_runs_newest_first(cli, mocked):
    serve_metric_pages(mocked, [[metric(1)]])
    for _ in range(4):
        assert cli("sync-metrics", "-q").exit_code == 0
    default = json.loads(cli("status", "--format", "json").stdout)["runs"]
    assert [r["id"] for r in default] == [4, 3, 2, 1]  # fewer than the default 10: all of them
    two = json.loads(cli("status", "--format", "json", "--runs", "2").stdout)["runs"]
    assert [r["id"] for r in two] == [4, 3] and all(r["status"] == "ok" for r in two)
    assert json.loads(cli("status", "--format", "json", "--runs", "0").stdout)["runs"] == []
    bad = cli("status", "--runs", "-1")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_status_table_on_terminal_format(cli, mocked):
    serve_metric_pages(mocked, [[metric(1)]])
    cli("sync-metrics", "-q")
    result = cli("status", "--format", "table")
    assert result.exit_code == 0
    assert "Tables" in result.stdout and "metrics" in result.stdout and "Recent runs" in result.stdout


def test_status_without_database_exits_8(cli):
    result = cli("status")
    assert result.exit_code == 8 and "run a sync first" in result.stderr


@pytest.mark.parametrize("args", [["status", "--max-age", "soon"], ["status", "--format", "xml"]])
def test_status_bad_options_exit_2(cli, args):
    assert cli(*args).exit_code == 2


def test_missing_directory_exits_8(cli, tmp_path, mocked):
    result = cli("sync-metrics", env={"KLAVIYO_SYNC_DB": str(tmp_path / "nope" / "k.db")})
    assert result.exit_code == 8 and "k.db" in result.stderr and "Traceback" not in result.stderr


def test_not_a_database_exits_8_and_is_left_alone(cli, db_path, mocked):
    db_path.write_bytes(b"this is not sqlite" * 100)
    result = cli("sync-metrics")
    assert result.exit_code == 8 and "cannot open database" in result.stderr
    assert db_path.read_bytes() == b"this is not sqlite" * 100


def test_database_error_mid_run_exits_8_and_is_recorded(cli, db_path, mocked, monkeypatch):
    import sqlite3

    from klaviyo_sync import db as sync_store

    serve_metric_pages(mocked, [[metric(1)]])

    def disk_full(*args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sync_store, "write_rows", disk_full)
    result = cli("sync-metrics")
    assert result.exit_code == 8
    assert result.stderr.strip() == "klaviyo-sync: error: database error: database or disk is full (SQLITE_FULL)"
    run = list(store.open_db(db_path)["sync_runs"].rows)[-1]
    assert run["status"] == "failed" and "disk is full" in run["error"]


def test_a_run_left_running_by_a_kill_is_marked_abandoned(cli, db_path, mocked):
    serve_metric_pages(mocked, [[metric(1)]])
    database = store.open_db(db_path)
    store.start_run(database, "sync-events", {})  # as if killed with -9 right after starting
    database.close()
    assert cli("sync-metrics", "-q").exit_code == 0
    rows = list(store.open_db(db_path)["sync_runs"].rows)
    assert [(r["command"], r["status"]) for r in rows] == [("sync-events", "abandoned"), ("sync-metrics", "ok")]
    assert "killed" in rows[0]["error"]
