"""sync-account, sync-forms (and forms --range), sync-segment-growth against the fake API: rows
exact against the fake's public truth, days counted in the account's time zone (Pacific/Auckland
and America/Los_Angeles around a day boundary), the shared report quota, the optional-step policy."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.client import KlaviyoClient
from klaviyo_sync.fake import ALL_SCOPES, FAKE_API_KEY, FakeKlaviyo
from klaviyo_sync.ratelimit import RateLimiter
from klaviyo_sync.streams.account import sync_account
from klaviyo_sync.streams.forms import sync_forms
from klaviyo_sync.streams.segment_growth import sync_segment_growth
from klaviyo_sync.timeutil import Window

from .e2e_helpers import cli_env, floor_now, ids, query, run_cli

UTC = timezone.utc
FORM_COLUMNS = ("viewed_form", "viewed_form_uniques", "submits", "submit_rate", "qualified_form",
                "qualified_form_uniques", "closed_form", "closed_form_uniques", "viewed_form_step",
                "viewed_form_step_uniques", "submitted_form_step", "submitted_form_step_uniques")
GROWTH_COLUMNS = ("total_members", "members_added", "members_removed", "net_members_changed")
LOOSE = "--rate-limit", "reports=20/200"  # the fake does not enforce limits here: no minute-long waits


def account_row(a: dict) -> tuple:
    c = a["attributes"]["contact_information"]
    at = a["attributes"]
    return (a["id"], c["organization_name"], at["timezone"], at["preferred_currency"], at["locale"],
            at["industry"], 0, c["default_sender_name"], c["default_sender_email"], c["website_url"],
            c["street_address"]["country"])


def test_sync_account_stores_the_keys_account_and_is_an_optional_first_step(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, account_timezone="Pacific/Auckland", account_id="AbC987") as fake:
        env = cli_env(fake, db)
        first = run_cli(["sync-account", "--format", "json"], env)
        assert first.returncode == 0, first.describe()
        assert query(db, "SELECT * FROM account") == [account_row(fake.account())]
        assert query(db, "SELECT timezone FROM account") == [("Pacific/Auckland",)]
        assert first.summary["rows"] == {"account": 1} and first.summary["timezone"] == "Pacific/Auckland"
        again = run_cli(["sync-account", "--format", "json"], env)
        assert again.returncode == 0 and again.summary["rows"] == {"account": 0}
        fake.set_account(timezone="America/Los_Angeles", preferred_currency="EUR")
        third = run_cli(["sync-account", "--format", "json"], env)
        assert third.summary["rows"] == {"account": 1}
        # One request a run: the step stores what the run's account check read.
        assert [r["path"] for r in fake.request_log()] == ["/api/accounts"] * 3
        assert query(db, "SELECT timezone, preferred_currency FROM account") == [("America/Los_Angeles", "EUR")]

        fake.scopes = set(ALL_SCOPES - {"accounts:read"})
        alone = run_cli(["sync-account"], env)
        assert alone.returncode == 4
        assert alone.stderr.splitlines()[-1] == ("klaviyo-sync: error: sync-account: permission denied: the API "
                                                 "key lacks the accounts:read scope (/api/accounts)")
        step = run_cli(["sync-all", "--only", "account,forms"], env)
        assert step.returncode == 0, step.describe()
        assert "klaviyo-sync: skipped: sync-account: the API key lacks the accounts:read scope" in step.stderr
        assert query(db, "SELECT command, status FROM sync_runs ORDER BY id DESC LIMIT 2") == [
            ("sync-forms", "ok"), ("sync-account", "skipped")]


def form_stat_rows(fake, days: list[str], zone: str) -> list[tuple]:
    out = []
    for fid in sorted(fake.forms.ids()):
        if fake.forms.get(fid)["status"] != "live":
            continue
        for d in days:
            s = fake.form_daily_statistics(fid, d)
            out.append((fid, d, *[s[c] for c in FORM_COLUMNS], zone))
    return out


def test_sync_forms_stores_forms_and_daily_statistics_exactly(tmp_path):
    db = tmp_path / "k.db"
    now = floor_now() - timedelta(minutes=1)
    with FakeKlaviyo(n_events=0, now=now, account_timezone="UTC", n_forms=7) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-account"], env).returncode == 0
        run = run_cli(["sync-forms", "--range", "2026-01-01..2026-03-15", "--format", "json", *LOOSE], env)
        assert run.returncode == 0, run.describe()
        assert ids(db, "forms") == fake.forms.ids()
        assert query(db, "SELECT id, name, status, ab_test, created_at, updated_at FROM forms ORDER BY id") == [
            (i, f["name"], f["status"], int(f["ab_test"]), f["created_at"].replace("+00:00", "Z"),
             f["updated_at"].replace("+00:00", "Z"))
            for i, f in sorted((i, fake.forms.get(i)) for i in fake.forms.ids())]
        days = [(date(2026, 1, 1) + timedelta(days=k)).isoformat() for k in range(74)]  # Jan 1 .. Mar 15
        cols = ", ".join(("form_id", "day", *FORM_COLUMNS, "timezone"))
        assert query(db, f"SELECT {cols} FROM form_stats_daily ORDER BY form_id, day") == form_stat_rows(
            fake, days, "UTC")
        # 74 days: two requests (60 + 14 days), every live form in each.
        reports = [r for r in fake.request_log() if r["path"] == "/api/form-series-reports"]
        assert len(reports) == run.summary["report_requests"] == 2
        # Settled days are not read again; a second run writes nothing and asks nothing.
        again = run_cli(["sync-forms", "--range", "2026-01-01..2026-03-15", "--format", "json", *LOOSE], env)
        assert again.returncode == 0 and again.summary["rows"] == {"forms": 0, "form_stats_daily": 0}
        assert again.summary.get("report_requests", 0) == 0
        assert len([r for r in fake.request_log() if r["path"] == "/api/form-series-reports"]) == 2

        # forms --range answers from the database: one row per form that was shown, zone named.
        shown = run_cli(["forms", "--range", "2026-02-01..2026-02-10", "--format", "json"], env)
        assert shown.returncode == 0, shown.describe()
        rows = json.loads(shown.stdout)
        feb = [(date(2026, 2, 1) + timedelta(days=k)).isoformat() for k in range(10)]
        want = {}
        for fid in fake.forms.ids():
            if fake.forms.get(fid)["status"] == "live":
                st = [fake.form_daily_statistics(fid, d) for d in feb]
                if sum(s["viewed_form"] for s in st):
                    want[fid] = (sum(s["viewed_form"] for s in st), sum(s["submits"] for s in st))
        assert {r["id"]: (r["viewed_form"], r["submits"]) for r in rows} == want
        assert {r["timezone"] for r in rows} == {"UTC"} and "from the local database" in shown.stderr
        assert len([r for r in fake.request_log() if r["path"] == "/api/form-series-reports"]) == 2

        # A form removed from the account goes with its statistics.
        gone = sorted(fake.forms.ids())[0]
        fake.forms.remove(gone)
        third = run_cli(["sync-forms", "--no-stats", "--format", "json"], env)
        assert third.returncode == 0 and third.summary["forms_removed"] == 1
        assert query(db, "SELECT count(*) FROM form_stats_daily WHERE form_id = ?", [gone]) == [(0,)]


def test_sync_forms_spent_quota_keeps_what_was_read_and_exits_6(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, account_timezone="UTC") as fake:
        fake.report_daily_quota = 1
        run = run_cli(["sync-forms", "--range", "2026-01-01..2026-03-15", *LOOSE], cli_env(fake, db))
        assert run.returncode == 6, run.describe()
        assert "statistics are missing for" in run.stderr
        assert query(db, "SELECT min(day), max(day), count(DISTINCT day) FROM form_stats_daily") == [
            ("2026-01-01", "2026-03-01", 60)]
        assert query(db, "SELECT status FROM sync_runs") == [("partial",)]


def test_sync_forms_without_scope_is_skipped_in_sync_all(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, scopes=ALL_SCOPES - {"forms:read"}) as fake:
        alone = run_cli(["sync-forms"], cli_env(fake, db))
        assert alone.returncode == 4 and alone.stderr.startswith(
            "klaviyo-sync: error: sync-forms: permission denied: the API key lacks the forms:read scope")
        step = run_cli(["sync-all", "--only", "forms,segment-growth"], cli_env(fake, db))
        assert step.returncode == 0, step.describe()
        assert "klaviyo-sync: skipped: sync-forms: the API key lacks the forms:read scope" in step.stderr
        assert query(db, "SELECT command, status FROM sync_runs ORDER BY id") == [
            ("sync-forms", "failed"), ("sync-forms", "skipped"), ("sync-segment-growth", "ok")]


def _client(fake) -> KlaviyoClient:
    return KlaviyoClient(FAKE_API_KEY, base_url=fake.base_url, limiter=RateLimiter({"reports": (50, 500)}))


@pytest.mark.parametrize("zone, now, today", [
    # 10:30 UTC on 1 March is 23:30 in Auckland (UTC+13): today there is still 1 March ...
    ("Pacific/Auckland", datetime(2026, 3, 1, 10, 30, tzinfo=UTC), "2026-03-01"),
    # ... and at 11:30 UTC it is 00:30 on 2 March there.
    ("Pacific/Auckland", datetime(2026, 3, 1, 11, 30, tzinfo=UTC), "2026-03-02"),
    # 07:30 UTC on 2 March is 23:30 on 1 March in Los Angeles (UTC-8); 08:30 UTC is 2 March there.
    ("America/Los_Angeles", datetime(2026, 3, 2, 7, 30, tzinfo=UTC), "2026-03-01"),
    ("America/Los_Angeles", datetime(2026, 3, 2, 8, 30, tzinfo=UTC), "2026-03-02"),
])
def test_series_days_are_the_accounts_days_around_a_day_boundary(tmp_path, zone, now, today):
    with FakeKlaviyo(n_events=0, now=now, account_timezone=zone) as fake:
        database = store.open_db(tmp_path / "k.db")
        client = _client(fake)
        try:
            sync_account(client, database, reuse=False)
            database.execute("INSERT INTO segments (id, name) SELECT value, 'S' FROM json_each(?)",
                             [json.dumps(sorted(fake.segment_ids()))])
            window = Window(now - timedelta(days=3), now, "3d")
            forms = sync_forms(client, database, window, now=now)
            growth = sync_segment_growth(client, database, window, now=now)
        finally:
            client.close()
        assert forms.extra["timezone"] == growth.extra["timezone"] == zone
        last = date.fromisoformat(today)
        days = [(last - timedelta(days=k)).isoformat() for k in (3, 2, 1, 0)]
        cols = ", ".join(("form_id", "day", *FORM_COLUMNS, "timezone"))
        got = [tuple(r) for r in database.execute(f"SELECT {cols} FROM form_stats_daily ORDER BY form_id, day")]
        assert got == form_stat_rows(fake, days, zone)
        got = [tuple(r) for r in database.execute(
            f"SELECT segment_id, day, {', '.join(GROWTH_COLUMNS)}, timezone FROM segment_growth_daily "
            "ORDER BY segment_id, day")]
        assert got == [(s, d, *[fake.segment_daily_growth(s, d)[c] for c in GROWTH_COLUMNS], zone)
                       for s in sorted(fake.segment_ids()) for d in days]
        # The timeframe was sent as the zone's wall-clock times with its offset.
        bodies = [json.loads(r["body"]) for r in fake.request_log() if r["path"] == "/api/form-series-reports"]
        tf = bodies[0]["data"]["attributes"]["timeframe"]
        assert tf["start"][:19] == f"{days[0]}T00:00:00" and tf["end"][:19] == f"{today}T23:59:59"
        assert datetime.fromisoformat(tf["start"]).utcoffset() == datetime(
            2026, 3, 1, tzinfo=__import__("zoneinfo").ZoneInfo(zone)).utcoffset()
        database.close()


def test_segment_growth_asks_nothing_before_june_2023(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, account_timezone="UTC") as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-segments"], env).returncode == 0
        run = run_cli(["sync-segment-growth", "--range", "2023-05-20..2023-06-05", "--format", "json", *LOOSE], env)
        assert run.returncode == 0, run.describe()
        days = [f"2023-06-0{k}" for k in range(1, 6)]
        assert query(db, "SELECT segment_id, day, total_members, members_added, members_removed, "
                         "net_members_changed FROM segment_growth_daily ORDER BY segment_id, day") == [
            (s, d, *[fake.segment_daily_growth(s, d)[c] for c in GROWTH_COLUMNS])
            for s in sorted(fake.segment_ids()) for d in days]
        assert run.summary["report_requests"] == 1
