import json
import os
import stat
from datetime import date

import pytest
from responses import matchers

from klaviyo_sync import db as store
from klaviyo_sync.streams.metrics import sync_metrics
from klaviyo_sync.transform import metric_row

from .conftest import ACCOUNT_BODY, API_KEY, BASE

METRICS = f"{BASE}/api/metrics"


def metric(i, name=None):
    return {"type": "metric", "id": f"M{i:03d}", "attributes": {
        "name": name or f"Metric {i}", "created": "2023-01-01T00:00:00+00:00",
        "updated": "2023-01-02T00:00:00+00:00",
        "integration": {"object": "integration", "id": "int1", "key": "api", "name": "API", "category": "API"}},
        "links": {"self": f"{METRICS}/M{i:03d}"}}


def serve_metric_pages(mocked, pages):
    """Register linked pages: each page's links.next carries a cursor to the next one."""
    for n, items in enumerate(pages):
        nxt = f"{METRICS}?page%5Bcursor%5D=p{n + 1}" if n + 1 < len(pages) else None
        match = [matchers.query_param_matcher({"page[cursor]": f"p{n}"} if n else {"fields[metric]": "name,created,updated,integration"})]
        mocked.get(METRICS, json={"data": items, "links": {"self": METRICS, "next": nxt}}, match=match)


def test_spec_shaped_metric_becomes_exactly_this_row(fixture_json):
    resource = fixture_json("metrics_page1.json")["data"][0]
    row = dict(zip(store.METRIC_COLUMNS, metric_row(resource)))
    assert row == {
        "id": "RESQ6t",
        "name": "Placed Order",
        "created": "2022-11-08T00:00:00Z",
        "updated": "2022-11-09T12:30:00Z",
        "integration_id": "0eMvjm",
        "integration_key": "shopify",
        "integration_name": "Shopify",
        "integration_category": "ecommerce",
        "attributes": json.dumps(resource["attributes"], separators=(",", ":")),
    }


def test_schema_tables_indexes_and_views(db):
    assert set(db.table_names()) >= {"metrics", "profiles", "events", "campaigns", "campaign_messages",
                                     "campaign_stats", "sync_runs", "sync_state"}
    assert set(db.view_names()) >= {"event_details", "campaign_performance", "flow_message_daily",
                                    "email_subscribers", "list_growth", "profile_lists"}
    idx = {i.name: i.columns for i in db["events"].indexes}
    assert idx["idx_events_datetime"] == ["datetime"]
    assert idx["idx_events_metric_id_datetime"] == ["metric_id", "datetime"]
    assert idx["idx_events_profile_id"] == ["profile_id"]
    assert {fk.other_table for fk in db["events"].foreign_keys} == {"metrics", "profiles"}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_no_migration_twice(tmp_path):
    path = tmp_path / "x.db"
    store.open_db(path).close()
    database = store.open_db(path)
    applied = [m.name for m in store.migrations.applied(database)]
    assert applied[0] == "m001_initial" and {"m002_audience", "m003_flows", "m004_verify"} <= set(applied)
    assert len(applied) == len(set(applied))
    assert store.migrations.pending(database) == []


def test_new_database_is_owner_only(tmp_path):
    path = tmp_path / "private.db"
    store.open_db(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_upserting_twice_leaves_one_row_and_counts_no_change(mocked, client, db, fixture_json):
    page = fixture_json("metrics_page1.json")
    page["links"]["next"] = None
    mocked.get(METRICS, json=page)
    first = sync_metrics(client, db)
    second = sync_metrics(client, db)
    assert first.rows == {"metrics": 2} and second.rows == {"metrics": 0}
    assert db["metrics"].count == 2


def test_changed_metric_is_updated(mocked, client, db):
    mocked.get(METRICS, json={"data": [metric(1)], "links": {"next": None}})
    sync_metrics(client, db)
    mocked.reset()
    mocked.get(METRICS, json={"data": [metric(1, "Renamed")], "links": {"next": None}})
    assert sync_metrics(client, db).rows == {"metrics": 1}
    assert db["metrics"].get("M001")["name"] == "Renamed"


def test_sync_metrics_reads_every_page(mocked, client, db):
    serve_metric_pages(mocked, [[metric(i) for i in range(0, 200)], [metric(i) for i in range(200, 400)],
                                [metric(i) for i in range(400, 450)]])
    result = sync_metrics(client, db)
    assert result.pages == 3
    assert {r["id"] for r in db["metrics"].rows} == {f"M{i:03d}" for i in range(450)}
    # Metrics take no page[size]: it must never be sent.
    assert all("page%5Bsize%5D" not in c.request.url and "page[size]" not in c.request.url for c in mocked.calls)


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_sync_metrics_summary_on_stdout_and_second_run_changes_nothing(mocked, cli, db_path):
    serve_metric_pages(mocked, [[metric(1), metric(2)], [metric(3)], [metric(4)]])
    result = cli("sync-metrics")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["command"] == "sync-metrics" and summary["status"] == "ok"
    assert summary["rows"] == {"metrics": 4} and summary["pages"] == 3 and summary["requests"] == 3
    assert result.stderr == ""
    again = cli("sync-metrics")
    assert json.loads(again.stdout)["rows"] == {"metrics": 0}
    database = store.open_db(db_path)
    runs = list(database["sync_runs"].rows)
    assert [(r["command"], r["status"], r["pages"]) for r in runs] == [("sync-metrics", "ok", 3)] * 2


def test_cli_quiet_prints_nothing(mocked, cli):
    serve_metric_pages(mocked, [[metric(1)]])
    result = cli("sync-metrics", "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_cli_missing_key_is_a_usage_error_naming_the_variable(cli):
    result = cli("sync-metrics", key=False)
    assert result.exit_code == 2
    assert "KLAVIYO_API_KEY" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize("status,code", [(401, 4), (403, 4), (400, 3), (503, 3)])
def test_cli_api_failures_exit_codes_one_line_no_traceback(mocked, cli, db_path, status, code):
    mocked.get(METRICS, status=status, json={"errors": [{"detail": f"it failed with {status}; key {API_KEY}"}]})
    result = cli("sync-metrics")
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("klaviyo-sync: error:") and "Traceback" not in result.stderr
    assert API_KEY not in result.stderr + result.stdout
    run = list(store.open_db(db_path)["sync_runs"].rows)[-1]
    assert run["status"] == "failed" and API_KEY not in run["error"] and "[REDACTED]" in run["error"]


def test_cli_connection_errors_give_up_with_exit_3(mocked, cli):
    import requests

    mocked.get(METRICS, body=requests.exceptions.ConnectionError("refused"))
    result = cli("sync-metrics")
    assert result.exit_code == 3 and "failed after 6 attempts" in result.stderr


def test_key_is_absent_from_every_output_and_the_database_bytes(mocked, cli, db_path):
    serve_metric_pages(mocked, [[metric(1)], [metric(2)], [metric(3)]])
    outputs = [cli("sync-metrics", "-v", "--api-key", API_KEY), cli("status", "--format", "json")]
    mocked.get(METRICS, status=401, json={"errors": [{"detail": "bad"}]})
    outputs.append(cli("sync-metrics", "-v"))
    for r in outputs:
        assert API_KEY not in r.stdout and API_KEY not in r.stderr
    for suffix in ("", "-wal", "-shm"):
        path = f"{db_path}{suffix}"
        if os.path.exists(path):
            assert API_KEY.encode() not in open(path, "rb").read()


def test_an_old_revision_warns_once_on_stderr(mocked, cli, monkeypatch):
    monkeypatch.setattr("klaviyo_sync.timeutil.today", lambda: date(2028, 1, 1))
    serve_metric_pages(mocked, [[metric(1)]])
    result = cli("sync-metrics", "--revision", "2026-04-15")
    assert result.exit_code == 0
    assert result.stderr.count("warning: API revision 2026-04-15 is 20 months old") == 1
    assert mocked.calls[0].request.headers["revision"] == "2026-04-15"


@pytest.mark.parametrize("revision", ["2025-07-15", "2026-04-14", "2023-01-24.pre"])
def test_a_revision_older_than_the_requests_conform_to_is_refused(mocked, cli, db_path, revision):
    """README: the requests conform to revision 2026-04-15 and later (older revisions declare no
    page[size] on lists, segments and templates): an older one exits 2 before any request,
    naming the oldest supported revision, in one line."""
    for env in ({}, {"KLAVIYO_REVISION": revision}):
        args = ["sync-metrics"] + ([] if env else ["--revision", revision])
        result = cli(*args, env=env)
        assert result.exit_code == 2, result.stderr
        assert result.stderr == (f"klaviyo-sync: error: --revision: revision {revision} is not supported: the "
                                 "requests this tool builds conform to revision 2026-04-15 and later "
                                 "(default 2026-07-15)\n")
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("revision", ["latest", "2026-7-15", "2026-07-15.beta", ""])
def test_a_revision_that_is_not_a_date_is_refused(mocked, cli, revision):
    result = cli("sync-metrics", "--revision", revision)
    assert result.exit_code == 2 and result.stderr.startswith("klaviyo-sync: error: --revision: invalid revision")
    assert len(result.stderr.splitlines()) == 1 and len(mocked.calls) == 0


def test_supported_revisions_are_sent_as_given(mocked, cli):
    for revision in ("2026-04-15", "2026-07-15.pre", "2026-10-15"):
        serve_metric_pages(mocked, [[metric(1)]])
        result = cli("sync-metrics", "-q", "--revision", revision)
        assert result.exit_code == 0, result.stderr
        assert mocked.calls[-1].request.headers["revision"] == revision


def test_the_day_the_default_revision_turns_old(mocked, cli, monkeypatch):
    """From 2028-01-15 the default revision is over 18 months old. -q stays silent (an hourly
    cron job must not mail it 24 times a day); without -q it is one line on stderr; `status`
    reports it whatever -q says."""
    monkeypatch.setattr("klaviyo_sync.timeutil.today", lambda: date(2028, 1, 15))
    serve_metric_pages(mocked, [[metric(1)]])
    quiet = cli("sync-metrics", "-q")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = cli("sync-metrics")
    assert loud.exit_code == 0 and loud.stderr.count("warning: API revision 2026-07-15") == 1
    status = cli("status", "--format", "json", "-q")
    assert status.exit_code == 0 and status.stderr == ""
    assert [w.split(" is ")[0] for w in json.loads(status.stdout)["warnings"]] == ["warning: API revision 2026-07-15"]
    monkeypatch.setattr("klaviyo_sync.timeutil.today", lambda: date(2028, 1, 13))
    assert json.loads(cli("status", "--format", "json").stdout)["warnings"] == []
    assert cli("sync-metrics").stderr == ""


def test_concurrent_first_opens_migrate_once(tmp_path):
    import threading

    path = tmp_path / "race.db"
    errors = []

    def opener():
        try:
            store.open_db(path).close()
        except Exception as exc:  # pragma: no cover - the failure this test guards against
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    database = store.open_db(path)
    applied = [m.name for m in store.migrations.applied(database)]
    assert applied[0] == "m001_initial" and len(applied) == len(set(applied))
    assert store.migrations.pending(database) == []


def test_verbose_logs_retries_on_stderr_and_quiet_run_does_not(mocked, cli):
    mocked.get(METRICS, status=503, json={"errors": [{"detail": "busy"}]})
    serve_metric_pages(mocked, [[metric(1)]])
    loud = cli("sync-metrics", "-v")
    assert loud.exit_code == 0 and "retrying after HTTP 503: busy" in loud.stderr
    mocked.reset()
    mocked.get(f"{BASE}/api/accounts", json=ACCOUNT_BODY)
    mocked.get(METRICS, status=503, json={"errors": [{"detail": "busy"}]})
    serve_metric_pages(mocked, [[metric(1)]])
    quiet = cli("sync-metrics", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
