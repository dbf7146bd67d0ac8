"""Klaviyo's days (issue 18 section 1): flow statistics, flows, revenue and verify count days in the
account's time zone (from sync-account; UTC with a warning when unknown), and verify --timezone
sends its timeframe so that a server honouring the offset and one reading wall-clock time in the
zone agree. Expected values come from the fake's public truth and literals."""

from __future__ import annotations

import calendar
import json
from datetime import date, datetime, time, timedelta, timezone

import pytest

from klaviyo_sync import db as store
from klaviyo_sync import queries
from klaviyo_sync.client import KlaviyoClient
from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo
from klaviyo_sync.ratelimit import RateLimiter
from klaviyo_sync.streams.account import sync_account
from klaviyo_sync.streams.flows import sync_flow_stats, sync_flows
from klaviyo_sync.timeutil import Window

from .e2e_helpers import cli_env, past_days, query, run_cli

UTC = timezone.utc
STATS = ("recipients", "delivered", "opens_unique", "clicks_unique", "conversions", "conversion_value")


def label(day: str) -> int:
    """The fake's name for a day of the account (the date at 00:00 UTC)."""
    return calendar.timegm(date.fromisoformat(day).timetuple())


@pytest.mark.parametrize("zone, now, today", [
    ("Pacific/Auckland", datetime(2026, 3, 1, 10, 30, tzinfo=UTC), "2026-03-01"),  # 23:30 there
    ("Pacific/Auckland", datetime(2026, 3, 1, 11, 30, tzinfo=UTC), "2026-03-02"),  # 00:30 there
    ("America/Los_Angeles", datetime(2026, 3, 2, 7, 30, tzinfo=UTC), "2026-03-01"),  # 23:30 there
    ("America/Los_Angeles", datetime(2026, 3, 2, 8, 30, tzinfo=UTC), "2026-03-02"),  # 00:30 there
])
def test_flow_stats_daily_holds_the_accounts_days(tmp_path, zone, now, today):
    with FakeKlaviyo(n_events=200, now=now, account_timezone=zone, n_flows=4) as fake:
        database = store.open_db(tmp_path / "k.db")
        client = KlaviyoClient(FAKE_API_KEY, base_url=fake.base_url, limiter=RateLimiter({"reports": (50, 500)}))
        try:
            sync_account(client, database, reuse=False)
            database.execute("INSERT INTO metrics (id, name) VALUES (?, 'Placed Order')",
                             [fake.metric_id("Placed Order")])
            sync_flows(client, database)
            result = sync_flow_stats(client, database, Window(now - timedelta(days=2), now, "2d"), now=now)
        finally:
            client.close()
        assert result.extra["timezone"] == zone
        last = date.fromisoformat(today)
        days = [(last - timedelta(days=k)).isoformat() for k in (2, 1, 0)]
        assert [r[0] for r in database.execute("SELECT DISTINCT day FROM flow_stats_days ORDER BY day")] == days
        conv = fake.metric_id("Placed Order")
        want = []
        for fid in sorted(fake.flow_ids()):
            for mid in sorted(fake.flow_message_ids(fid)):
                for d in days:
                    s = fake.flow_daily_statistics(mid, label(d), conv)
                    if s["recipients"]:
                        want.append((mid, d, *[s[k] for k in STATS]))
        got = [tuple(r) for r in database.execute(
            f"SELECT flow_message_id, day, {', '.join(STATS)} FROM flow_stats_daily ORDER BY flow_message_id, day")]
        assert got == sorted(want) and got
        # The request's timeframe: the zone's wall-clock days, with the zone's offset.
        body = json.loads([r for r in fake.request_log() if r["path"] == "/api/flow-series-reports"][0]["body"])
        tf = body["data"]["attributes"]["timeframe"]
        offset = datetime.combine(date.fromisoformat(days[0]), time(0), __import__("zoneinfo").ZoneInfo(zone))
        assert tf == {"start": offset.isoformat(), "end": f"{today}T23:59:59{offset.isoformat()[19:]}"}
        # flows --range reads the same days back.
        window = Window(now - timedelta(days=2), now, "2d")
        rows = queries.flows_in_range(database, window, "message", __import__("zoneinfo").ZoneInfo(zone))
        assert {r["id"] for r in rows} == {w[0] for w in want}
        database.close()


def test_a_new_account_zone_reads_flow_statistics_again_in_it(tmp_path):
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with FakeKlaviyo(n_events=200, now=now, account_timezone="UTC", n_flows=2) as fake:
        database = store.open_db(tmp_path / "k.db")
        client = KlaviyoClient(FAKE_API_KEY, base_url=fake.base_url, limiter=RateLimiter({"reports": (50, 500)}))
        try:
            database.execute("INSERT INTO metrics (id, name) VALUES (?, 'Placed Order')",
                             [fake.metric_id("Placed Order")])
            sync_flows(client, database)
            window = Window(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 4, tzinfo=UTC), "x")
            first = sync_flow_stats(client, database, window, now=now)  # no account table: UTC
            assert first.extra["timezone"] == "UTC"
            fake.set_account(timezone="Pacific/Auckland")
            sync_account(client, database, reuse=False)
            second = sync_flow_stats(client, database, window, now=now)
        finally:
            client.close()
        assert second.extra["timezone"] == "Pacific/Auckland"
        # 2026-02-01T00:00Z is 13:00 on 1 February in Auckland; the window's end 13:00 on 4 Feb.
        assert [r[0] for r in database.execute("SELECT DISTINCT day FROM flow_stats_days ORDER BY day")] == [
            "2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04"]
        assert second.extra["report_requests"] == 1
        database.close()


# -- the commands: titles and JSON name the zone; verify's zone -------------------------------------
@pytest.fixture
def days():
    """The fake account's clock, read when the test starts (its events end 5 days back, at noon),
    and the whole days synced, d0 to d1."""
    return past_days(6)


def test_flows_and_revenue_name_the_accounts_zone(tmp_path, days):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=300, now=days.now, span_hours=24 * 6, account_timezone="Pacific/Auckland",
                     n_flows=3) as fake:
        env = cli_env(fake, db)
        unknown = run_cli(["sync-flows", "--range", f"{days.d0}..{days.d1}", "--rate-limit", "reports=20/200"], env)
        assert unknown.returncode == 0, unknown.describe()
        assert ("klaviyo-sync: warning: the account's time zone is unknown (run sync-account; scope accounts:read): "
                "counting Klaviyo's days in UTC") in unknown.stderr
        assert run_cli(["sync-account"], env).returncode == 0
        run = run_cli(["flows", "--range", f"{days.d0}..{days.d1}", "--refresh", "--format", "json",
                       "--rate-limit", "reports=20/200"], env)
        assert run.returncode == 0, run.describe()
        rows = json.loads(run.stdout)
        assert rows and {r["timezone"] for r in rows} == {"Pacific/Auckland"}
        table = run_cli(["flows", "--range", f"{days.d0}..{days.d1}", "--format", "table"], {**env, "COLUMNS": "200"})
        assert f"Flows that sent {days.d0} .. {days.d1 + timedelta(days=1)} (Pacific/Auckland days)" in table.stdout
        revenue = run_cli(["revenue", "--range", f"{days.d0}..{days.d1}", "--by", "day", "--format", "json"], env)
        assert revenue.returncode == 0, revenue.describe()
        assert {r["timezone"] for r in json.loads(revenue.stdout)} == {"Pacific/Auckland"}


@pytest.mark.parametrize("offsets", ["honoured", "ignored"])
def test_verify_timezone_reads_alike_whether_the_offset_or_the_zone_wins(tmp_path, offsets, days):
    db = tmp_path / "k.db"
    with FakeKlaviyo(now=days.now, n_events=1500, span_hours=24 * 6, n_profiles=60, seed=5,
                     aggregate_offsets=offsets) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-events", "--since", days.start.isoformat(), "--until", days.now.isoformat()], env).returncode == 0
        run = run_cli(["verify", "--range", f"{days.d0}..{days.d1}", "--timezone", "America/New_York", "--all",
                       "--metric", "Placed Order", "--format", "json"], env)
        assert run.returncode == 0, run.describe()
        rows = json.loads(run.stdout)
        ny = __import__("zoneinfo").ZoneInfo("America/New_York")
        lo = datetime.combine(days.d0, time(0), ny)
        hi = datetime.combine(days.d1 + timedelta(days=1), time(0), ny)
        truth = fake.daily_counts(lo.astimezone(UTC), hi.astimezone(UTC), tz="America/New_York")
        po = fake.metric_id("Placed Order")
        assert {r["day"]: r["klaviyo"] for r in rows} == {r["day"]: truth.get((po, r["day"]), 0) for r in rows}
        assert {r["status"] for r in rows} == {"ok"}
        body = json.loads([r for r in fake.request_log() if r["path"] == "/api/metric-aggregates"][-1]["body"])
        assert body["data"]["attributes"]["filter"] == [f"greater-or-equal(datetime,{lo.isoformat()})",
                                                        f"less-than(datetime,{hi.isoformat()})"]


def test_verify_counts_the_accounts_days_by_default(tmp_path, days):
    db = tmp_path / "k.db"
    with FakeKlaviyo(now=days.now, n_events=300, span_hours=24 * 6, n_profiles=40,
                     account_timezone="America/Los_Angeles") as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-events", "--since", days.start.isoformat(), "--until", days.now.isoformat()], env).returncode == 0
        before = run_cli(["verify", "--range", f"{days.d0}..{days.d1}", "--metric", "Placed Order"], env)
        assert "counting Klaviyo's days in UTC" in before.stderr and "(UTC)" in before.stderr
        assert run_cli(["sync-account"], env).returncode == 0
        after = run_cli(["verify", "--range", f"{days.d0}..{days.d1}", "--metric", "Placed Order"], env)
        assert after.returncode == 0, after.describe()
        assert "(America/Los_Angeles)" in after.stderr and "warning" not in after.stderr
        assert query(db, "SELECT DISTINCT json_extract(arguments, '$.timezone') FROM sync_runs "
                         "WHERE command = 'verify' ORDER BY id") == [("UTC",), ("America/Los_Angeles",)]
