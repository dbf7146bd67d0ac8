"""sync-all over the fake API: every step in order under one lock, one sync_runs row each."""

from __future__ import annotations

import json
from datetime import timedelta

from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, floor_now, ids, parse_iso, query, run_cli



def test_sync_all_runs_every_step_in_order_each_with_its_own_run(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=3000, span_hours=48, now=now) as fake:
        fake.enforce_limits = True
        t0 = floor_now()
        # Four report requests (campaigns, flow statistics, forms, segment growth) at Klaviyo's
        # 2 a minute, which the fake enforces here: the run waits about a minute for them.
        run = run_cli(["sync-all", "--format", "json"], cli_env(fake, db), timeout=300)
        t1 = floor_now() + timedelta(seconds=1)
        assert run.returncode == 0, run.describe()
        commands = [r[0] for r in query(db, "SELECT command FROM sync_runs ORDER BY id")]
        statuses = {r[0] for r in query(db, "SELECT status FROM sync_runs")}
        assert statuses == {"ok"}
        # The metrics come before the events that point at them, campaigns after.
        assert commands.index("sync-metrics") < commands.index("sync-events") < commands.index("sync-campaigns")
        assert ids(db, "metrics") == fake.metric_ids()
        # A first run resumes nothing: events of the last 24 hours, exactly the fake's.
        summaries = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        assert [x["command"] for x in summaries] == commands
        window = next(x["window"] for x in summaries if x["command"] == "sync-events")
        start, end = parse_iso(window["start"]), parse_iso(window["end"])
        assert t0 <= end <= t1 and end - start == timedelta(hours=24)
        assert ids(db, "events") == fake.event_ids(start, end) and len(fake.event_ids(start, end)) > 100
        assert ids(db, "campaigns") == fake.campaign_ids()


def test_sync_all_with_the_report_quota_spent_keeps_everything_and_exits_6_quietly(tmp_path, now):
    """README: exit 6 when a step stored its data but statistics are missing; -q prints only
    what went wrong (nothing on stdout)."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=500, span_hours=48, now=now) as fake:
        fake.report_daily_quota = 0  # every report request: 429 with hours of Retry-After
        # The report steps after the first 429 wait for the shared 2-a-minute budget: up to a minute.
        run = run_cli(["sync-all", "-q"], cli_env(fake, db), timeout=300)
        assert run.returncode == 6, run.describe()
        assert run.stdout == ""
        assert "sync-campaigns:" in run.stderr and "statistics are missing" in run.stderr
        runs = dict(query(db, "SELECT command, status FROM sync_runs"))
        assert runs["sync-campaigns"] == "partial" and runs["sync-metrics"] == runs["sync-flows"] == "ok"
        assert ids(db, "campaigns") == fake.campaign_ids() and ids(db, "flows") == fake.flow_ids()
