"""sync-flows, sync-templates, flows and revenue, end to end against the fake API."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from klaviyo_sync.cli import app
from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, ids, query, run_cli

UTC = timezone.utc
# The fake's clock is the test's ``now`` (conftest.py). The tests never assume the CLI's clock reads
# the same day as ``now`` (midnight may pass in between: tests/clock/run_shifted.py runs them at
# 00:00:30 and at a month's last second): they give the CLI explicit day ranges instead of "10d".


def days(now: datetime, n: int) -> str:
    """The n days before now's day and that day: ``YYYY-MM-DD..YYYY-MM-DD``."""
    return f"{now.date() - timedelta(days=n)}..{now.date()}"
FAST = "reports=50/500,flows=50/500"  # the real tiers would make each test wait minutes


@pytest.fixture
def fake(now):
    with FakeKlaviyo(seed=5, now=now, n_events=600, span_hours=24 * 9, n_flows=12) as f:
        yield f


@pytest.fixture
def env(fake, tmp_path):
    return cli_env(fake, tmp_path / "k.db", KLAVIYO_RATE_LIMITS=FAST)


def db_of(env):
    return env["KLAVIYO_SYNC_DB"]


def ok(args, env):
    run = run_cli(args, env)
    assert run.returncode == 0, run.describe()
    return run


def all_flow_ids(fake):
    return fake.flow_ids(archived=False) | fake.flow_ids(archived=True)


# The statistics Klaviyo's flow series report returns, each a column of flow_stats_daily
# (spelled out here, not read from the code under test).
STATISTICS = ("recipients", "delivered", "delivery_rate", "opens", "opens_unique", "open_rate", "clicks",
              "clicks_unique", "click_rate", "conversions", "conversion_uniques", "conversion_rate",
              "conversion_value", "unsubscribes", "unsubscribe_rate", "bounced", "bounce_rate",
              "spam_complaints", "spam_complaint_rate")


def day_ts(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


def test_flows_actions_and_messages_match_the_account(fake, env):
    ok(["sync-flows", "--no-stats"], env)
    path = db_of(env)
    assert ids(path, "flows") == all_flow_ids(fake) and fake.flow_ids(archived=True)
    for fid in all_flow_ids(fake):
        want = fake.flow(fid)["attributes"]
        row = query(path, "SELECT name, status, archived, trigger_type, created, updated, deleted_at, "
                          "entry_action_id, triggers FROM flows WHERE id = ?", [fid])[0]
        d = want["definition"]
        assert row == (want["name"], want["status"], int(want["archived"]), want["trigger_type"],
                       want["created"].replace("+00:00", "Z"), want["updated"].replace("+00:00", "Z"), None,
                       d["entry_action_id"], json.dumps(d["triggers"], separators=(",", ":")))
        actions = query(path, "SELECT id, type, status, position, delay_value, delay_unit, definition "
                              "FROM flow_actions WHERE flow_id = ? ORDER BY position", [fid])
        # The fake's chains run in definition order from the entry action.
        assert [a[0] for a in actions] == [a["id"] for a in d["actions"]]
        for (aid, typ, status, pos, dv, du, js), a in zip(actions, d["actions"]):
            assert (typ, status, json.loads(js)) == (a["type"], a["data"].get("status"), a)
            if typ == "time-delay":
                assert (dv, du) == (a["data"]["value"], a["data"]["unit"])
        assert {r[0] for r in query(path, "SELECT id FROM flow_messages WHERE flow_id = ?", [fid])} \
            == fake.flow_message_ids(fid)
    for mid in fake.flow_message_ids():
        truth = fake.flow_message(mid)
        a = next(a for a in fake.flow_definition(truth["flow_id"])["actions"] if a["id"] == truth["action_id"])
        m = a["data"]["message"]
        row = query(path, "SELECT flow_id, flow_action_id, channel, name, subject, preview_text, from_email, "
                          "from_label, template_id, body FROM flow_messages WHERE id = ?", [mid])[0]
        assert row == (truth["flow_id"], truth["action_id"], truth["channel"], m["name"], m.get("subject_line"),
                       m.get("preview_text"), m.get("from_email"), m.get("from_label"), m.get("template_id"),
                       m.get("body"))


def test_incremental_run_fetches_definitions_of_changed_flows_only(fake, env):
    ok(["sync-flows", "--no-stats"], env)
    changed, gone, archived = sorted(fake.flow_ids(archived=False))[:3]
    fake.touch_flow(changed, subject="New subject")
    fake.archive_flow(archived)
    fake.delete_flow(gone)
    n = len(fake.request_log())
    run = ok(["sync-flows", "--no-stats"], env)
    fetched = {r["path"].rsplit("/", 1)[1] for r in fake.request_log()[n:]
               if r["path"].startswith("/api/flows/")}
    assert fetched == {changed, archived}
    assert run.summary["definitions_fetched"] == 2 and run.summary["flows_removed"] == 1
    path = db_of(env)
    assert query(path, "SELECT subject FROM flow_messages WHERE flow_id = ? AND subject IS NOT NULL "
                       "ORDER BY flow_action_id LIMIT 1", [changed]) == [("New subject",)]
    assert query(path, "SELECT archived FROM flows WHERE id = ?", [archived]) == [(1,)]
    assert query(path, "SELECT deleted_at IS NOT NULL FROM flows WHERE id = ?", [gone]) == [(1,)]
    n = len(fake.request_log())
    run = ok(["sync-flows", "--no-stats"], env)
    assert not [r for r in fake.request_log()[n:] if r["path"].startswith("/api/flows/")]


def test_failed_definition_request_fails_the_run_and_keeps_stored_flows(fake, env, monkeypatch):
    ok(["sync-flows", "--no-stats"], env)
    first = sorted(fake.flow_ids())[0]
    fake.touch_flow(first, rename="Renamed")
    fake.server_error_every = 1  # every request fails, retries included
    # In-process with the backoff sleeps skipped: six real attempts would wait ~30 s.
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    run = CliRunner().invoke(app, ["sync-flows", "--no-stats"], env=env)
    assert run.exit_code == 3, run.output
    assert "failed after 6 attempts" in run.stderr
    monkeypatch.undo()
    fake.server_error_every = 0
    assert ids(db_of(env), "flows") == all_flow_ids(fake)
    assert query(db_of(env), "SELECT count(*) FROM flow_actions WHERE flow_id = ?", [first])[0][0] > 0
    ok(["sync-flows", "--no-stats"], env)
    assert query(db_of(env), "SELECT name, definition_updated = updated FROM flows WHERE id = ?",
                 [first]) == [("Renamed", 1)]


def test_statistics_equal_the_fake_for_every_statistic_and_day(fake, env, now):
    run = ok(["sync-flows", "--range", days(now, 10)], env)
    assert run.summary["report_requests"] == 1
    conv = fake.metric_id("Placed Order")
    rows = query(db_of(env), f"SELECT flow_id, flow_message_id, day, send_channel, "
                             f"{', '.join(STATISTICS)} FROM flow_stats_daily")
    got = {(r[1], r[2]): r for r in rows}
    first = now.date() - timedelta(days=10)
    expected = 0
    for mid in fake.flow_message_ids():
        truth = fake.flow_message(mid)
        for i in range(11):
            d = first + timedelta(days=i)
            want = fake.flow_daily_statistics(mid, day_ts(d), conv)
            if not want["recipients"]:
                assert (mid, d.isoformat()) not in got
                continue
            expected += 1
            row = got[(mid, d.isoformat())]
            assert row[:4] == (truth["flow_id"], mid, d.isoformat(), truth["channel"])
            assert dict(zip(STATISTICS, row[4:])) == {k: want[k] for k in STATISTICS}
    assert expected == len(rows) > 0


def test_flows_answers_from_the_database_without_requests(fake, env, now):
    ok(["sync-flows", "--range", days(now, 10)], env)
    n = len(fake.request_log())
    run = ok(["flows", "--range", days(now, 10), "--format", "json"], env)
    assert len(fake.request_log()) == n
    rows = json.loads(run.stdout)
    conv = fake.metric_id("Placed Order")
    first, last = now.date() - timedelta(days=10), now.date()
    by_flow: dict = {}
    for mid in fake.flow_message_ids():
        s = fake.flow_statistics(mid, day_ts(first), day_ts(last), conv)
        f = fake.flow_message(mid)["flow_id"]
        acc = by_flow.setdefault(f, {"recipients": 0, "conversions": 0, "conversion_value": 0.0})
        for k in acc:
            acc[k] += s[k]
    want = {f: v for f, v in by_flow.items() if v["recipients"]}
    assert {r["id"] for r in rows} == set(want)
    for r in rows:
        assert r["name"] == fake.flow(r["id"])["attributes"]["name"]
        assert (r["recipients"], r["conversions"]) == (want[r["id"]]["recipients"], want[r["id"]]["conversions"])
        assert r["conversion_value"] == pytest.approx(want[r["id"]]["conversion_value"], abs=0.01)
        assert 0 <= r["click_rate"] <= 1
    msgs = json.loads(ok(["flows", "--range", days(now, 10), "--by", "message", "--format", "json"], env).stdout)
    assert len(fake.request_log()) == n
    sms = [m for m in msgs if m["channel"] == "sms"]
    assert sms and all(m["open_rate"] is None for m in sms)
    assert all(m["flow_id"] == fake.flow_message(m["id"])["flow_id"] and m["flow_name"] for m in msgs)
    assert run_cli(["flows", "--range", "3x"], env).returncode == 2


def test_flows_goes_to_the_api_when_the_database_has_nothing(fake, env):
    run = ok(["flows", "--range", "5d", "--format", "csv"], env)
    assert "fetched from the API" in run.stderr and run.stdout.startswith("id,name,status")
    assert any(r["path"] == "/api/flow-series-reports" for r in fake.request_log())


def test_spent_quota_mid_run_keeps_what_was_fetched(fake, env):
    fake.report_daily_quota = 1
    run = run_cli(["sync-flows", "--range", "2025-01-01..2025-04-30"], env)  # 120 days: 2 requests
    assert run.returncode == 6, run.describe()
    assert "statistics are missing" in run.stderr
    days = query(db_of(env), "SELECT min(day), max(day), count(DISTINCT day) FROM flow_stats_days")[0]
    assert days == ("2025-01-01", "2025-03-01", 60)
    assert ids(db_of(env), "flows") == all_flow_ids(fake)


def test_a_missing_scope_is_named(fake, env):
    fake.revoke_scope("templates:read")
    run = run_cli(["sync-templates"], env)
    assert run.returncode == 4 and "templates:read" in run.stderr


def test_templates_incremental_and_no_html(fake, env):
    ok(["sync-templates", "--no-html"], env)
    assert ids(db_of(env), "templates") == fake.template_ids()
    assert query(db_of(env), "SELECT count(*) FROM templates WHERE html IS NOT NULL")[0][0] == 0
    assert all("page%5Bsize%5D=10" in r["query"] or "page[size]=10" in r["query"]
               for r in fake.request_log() if r["path"] == "/api/templates")
    ok(["sync-templates"], env)
    tid = sorted(fake.template_ids())[0]
    assert query(db_of(env), "SELECT html FROM templates WHERE id = ?", [tid])[0][0] == \
        fake.template(tid)["attributes"]["html"]
    fake.touch_template(tid, html="<p>new</p>")
    run = ok(["sync-templates"], env)
    assert run.summary["rows"]["templates"] == 1
    assert query(db_of(env), "SELECT html FROM templates WHERE id = ?", [tid]) == [("<p>new</p>",)]


def test_revenue_matches_sums_from_the_ground_truth(fake, env, now):
    first, last = now.date() - timedelta(days=8), now.date()
    ok(["sync-events", "--since", f"{first}T00:00:00Z"], env)
    ok(["sync-campaigns", "--range", days(now, 8)], env)
    ok(["sync-flows", "--range", days(now, 8)], env)
    n = len(fake.request_log())
    got = json.loads(ok(["revenue", "--range", days(now, 8), "--format", "json"], env).stdout)
    assert len(fake.request_log()) == n
    lo = datetime(first.year, first.month, first.day, tzinfo=UTC)
    hi = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    order = fake.metric_id("Placed Order")
    values = [fake.event(fake.event_index(e))["attributes"]["event_properties"].get("$value") or 0
              for e in fake.event_ids(lo, min(hi, now + timedelta(seconds=1)), [order])]
    camp = sum(s["conversion_value"] for c in fake.campaign_ids_sent(lo, hi)
               for s in fake.campaign_statistics(c, order).values())
    flows = sum(fake.flow_statistics(m, day_ts(first), day_ts(last), order)["conversion_value"]
                for m in fake.flow_message_ids())
    assert got[0]["orders"] == len(values) > 0
    assert got[0]["revenue"] == pytest.approx(sum(values), abs=0.01)
    assert got[0]["campaign_revenue"] == pytest.approx(camp, abs=0.01)
    assert got[0]["flow_revenue"] == pytest.approx(flows, abs=0.01)
    by_day = json.loads(ok(["revenue", "--range", days(now, 8), "--by", "day", "--format", "json"], env).stdout)
    assert sum(r["orders"] for r in by_day) == len(values)
    by_channel = json.loads(ok(["revenue", "--range", days(now, 8), "--by", "channel", "--format", "json"], env).stdout)
    assert by_channel[-1]["flow_revenue"] == pytest.approx(flows, abs=0.01)


def test_revenue_says_which_syncs_it_needs(env):
    missing = run_cli(["revenue"], env)
    assert missing.returncode == 2 and "sync-events, sync-campaigns and sync-flows" in missing.stderr
    ok(["sync-templates"], env)  # a database without events, campaigns or flows
    run = ok(["revenue", "--range", "7d", "--format", "json"], env)
    assert "sync-events" in run.stderr and "sync-campaigns" in run.stderr and "sync-flows" in run.stderr
    assert "need not add up" in run.stderr


def test_campaigns_sms_open_rate_is_null(fake, env):
    ok(["sync-campaigns", "--range", "60d"], env)
    rows = json.loads(ok(["campaigns", "--range", "60d", "--format", "json"], env).stdout)
    sms = [r for r in rows if r["channel"] == "sms" and r["recipients"]]
    assert sms and all(r["open_rate"] is None for r in sms)
    assert all(r["open_rate"] is not None for r in rows if r["channel"] == "email" and r["delivered"])
