"""verify end to end: the real CLI as a subprocess against the fake API.

The fake's events end 5 days before today (UTC midnight-aligned, plus 12 h), and every range is
absolute, so neither "today" nor the settle window can reach the checked days on any date.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest

from klaviyo_sync import errors
from klaviyo_sync.fake import FakeKlaviyo
from klaviyo_sync.verify import day_start, plan_days, repair_windows

from .e2e_helpers import cli_env, past_days, query, run_cli

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
# Stands for a range of days that is always in the future, whenever the test runs.
FUTURE_RANGE = "<days 400 to 404 from today>"


@pytest.fixture(scope="module")
def days():
    """The fake account's clock, read once for the module's fake: 12 days of events ending 5 days back."""
    return past_days(12)


@pytest.fixture(scope="module")
def synced(tmp_path_factory, days):
    """A fake account and a database holding all of its events (copied once per module)."""
    path = tmp_path_factory.mktemp("verify") / "base.db"
    with FakeKlaviyo(now=days.now, n_events=4000, span_hours=24 * 12, n_profiles=80, seed=5) as fake:
        r = run_cli(["sync-events", "--since", days.start.isoformat(), "--until", days.now.isoformat()], cli_env(fake, path))
        assert r.returncode == 0, r.describe()
    return path


@pytest.fixture
def env(synced, tmp_path, days):
    db = tmp_path / "v.db"
    src = sqlite3.connect(synced)
    dst = sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    with FakeKlaviyo(now=days.now, n_events=4000, span_hours=24 * 12, n_profiles=80, seed=5) as fake:
        yield fake, db, cli_env(fake, db)


def verify(env_, days, *args):
    r = run_cli(["verify", "--range", days.range, "--format", "json", *args], env_)
    return r, (json.loads(r.stdout) if r.stdout.strip().startswith("[") else None)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), UTC)


def test_a_complete_copy_verifies_clean(env, days):
    fake, db, e = env
    r, rows = verify(e, days, "--all")
    assert r.returncode == 0, r.describe()
    custom = fake.unaggregatable_metric_ids()
    truth = fake.daily_counts(at(days.d0, 0), at(days.d1 + timedelta(days=1), 0))
    names = fake.metric_names()
    ndays = (days.d1 - days.d0).days + 1
    assert len(rows) == len(names) * ndays
    for row in rows:
        assert set(row) == {"metric_id", "metric", "day", "local", "klaviyo", "difference", "status"}
        n = truth.get((row["metric_id"], row["day"]), 0)
        assert row["metric"] == names[row["metric_id"]] and row["local"] == n
        if row["metric_id"] in custom:
            assert (row["klaviyo"], row["difference"], row["status"]) == (None, None, "unverifiable")
        else:
            assert (row["klaviyo"], row["difference"], row["status"]) == (n, 0, "ok")
    # one request per metric (12 days fit one window), all interval=day in UTC
    posts = [q for q in fake.request_log() if q["path"] == "/api/metric-aggregates"]
    assert len(posts) == len(names)
    for q in posts:
        attrs = json.loads(q["body"])["data"]["attributes"]
        assert attrs["interval"] == "day" and attrs["timezone"] == "UTC" and attrs["measurements"] == ["count"]
        assert attrs["filter"] == [f"greater-or-equal(datetime,{days.d0}T00:00:00Z)",
                                   f"less-than(datetime,{days.d1 + timedelta(days=1)}T00:00:00Z)"]
    assert "0 differ" in r.stderr and "Active on Site" in r.stderr
    # stored: one row per metric and day for this run, and a verify run record
    (run_id, status), = query(db, "SELECT id, status FROM sync_runs WHERE command = 'verify'")
    assert status == "ok"
    assert query(db, "SELECT count(*), count(DISTINCT run_id) FROM verify_results") == [(len(rows), 1)]
    # without --all only differing rows are printed: none
    r, rows = verify(e, days)
    assert r.returncode == 0 and rows == []


def test_late_events_are_reported_on_exactly_their_metrics_and_days(env, days):
    fake, db, e = env
    po, rv = fake.metric_id("Placed Order"), fake.metric_id("Received Email")
    d2, d5 = days.d0 + timedelta(days=2), days.d0 + timedelta(days=5)
    fake.add_late_events(po, at=at(d2, 14, 3), n=4)
    fake.add_late_events(po, at=at(d5, 0, 0), n=1)
    fake.add_late_events(rv, at=at(d5, 23, 59), n=2)
    # an event Klaviyo no longer counts (its profile was deleted): extra locally
    gone = sorted(fake.event_ids(at(days.d1, 0), at(days.d1, 23), [rv]))[:1]
    fake.forget_events(gone)
    r, rows = verify(e, days)
    assert r.returncode == errors.DIFFERS == 9, r.describe()
    got = {(x["metric_id"], x["day"]): (x["difference"], x["status"]) for x in rows}
    assert got == {(po, str(d2)): (-4, "missing_locally"), (po, str(d5)): (-1, "missing_locally"),
                   (rv, str(d5)): (-2, "missing_locally"), (rv, str(days.d1)): (1, "extra_locally")}
    assert "3 differ" not in r.stderr and "4 differ (7 events missing locally, 1 extra locally)" in r.stderr


def test_repair_fetches_only_the_affected_hours_then_verifies_clean(env, days):
    fake, db, e = env
    po, rv = fake.metric_id("Placed Order"), fake.metric_id("Received Email")
    d2 = days.d0 + timedelta(days=2)
    ids = fake.add_late_events(po, at=at(d2, 14, 3), n=3) + fake.add_late_events(rv, at=at(d2, 15, 30), n=1)
    mark_before = query(db, "SELECT value FROM sync_state WHERE key = 'events.mark'")
    events_before = query(db, "SELECT count(*) FROM events")[0][0]
    n_log = len(fake.request_log())
    r, rows = verify(e, days, "--repair")
    assert r.returncode == 0, r.describe()
    log = fake.request_log()[n_log:]
    event_filters = sorted(parse_qs(q["query"])["filter"][0] for q in log if q["path"] == "/api/events")
    assert event_filters == sorted([
        f'and(greater-or-equal(datetime,{d2}T14:00:00Z),less-than(datetime,{d2}T15:00:00Z),equals(metric_id,"{po}"))',
        f'and(greater-or-equal(datetime,{d2}T15:00:00Z),less-than(datetime,{d2}T16:00:00Z),equals(metric_id,"{rv}"))',
    ])
    hourly = [json.loads(q["body"])["data"]["attributes"] for q in log
              if q["path"] == "/api/metric-aggregates" and '"hour"' in q["body"]]
    assert sorted(a["metric_id"] for a in hourly) == sorted([po, rv])
    assert all(a["filter"] == [f"greater-or-equal(datetime,{d2}T00:00:00Z)",
                               f"less-than(datetime,{d2 + timedelta(days=1)}T00:00:00Z)"] for a in hourly)
    got = {(x["metric_id"], x["day"]): x for x in rows}
    assert set(got) == {(po, str(d2)), (rv, str(d2))}
    assert got[(po, str(d2))]["local"] - got[(po, str(d2))]["local_before"] == 3
    assert all(x["status"] == "ok" and x["repaired"] for x in rows)
    assert "2 of 2 differing days fixed, 0 still differ" in r.stderr
    # the late events are stored, nothing was deleted, the mark did not move, each window has its run
    assert set(ids) <= {x for (x,) in query(db, "SELECT id FROM events")}
    assert query(db, "SELECT count(*) FROM events")[0][0] == events_before + 4
    assert query(db, "SELECT value FROM sync_state WHERE key = 'events.mark'") == mark_before
    assert query(db, "SELECT key FROM sync_state ORDER BY key") == [("account.id",), ("attributions.covered",), ("events.mark",)]
    repairs = query(db, "SELECT window_start, window_end, status FROM sync_runs WHERE command = 'sync-events' "
                          "AND arguments LIKE '%\"repair\":true%' ORDER BY window_start")
    assert repairs == [(f"{d2}T14:00:00Z", f"{d2}T15:00:00Z", "ok"), (f"{d2}T15:00:00Z", f"{d2}T16:00:00Z", "ok")]
    r, rows = verify(e, days)
    assert r.returncode == 0 and rows == []


def test_extra_locally_is_not_repaired_away(env, days):
    fake, db, e = env
    rv = fake.metric_id("Received Email")
    gone = sorted(fake.event_ids(at(days.d1, 0), at(days.d1, 23), [rv]))[:2]
    fake.forget_events(gone)
    r, rows = verify(e, days, "--repair")
    assert r.returncode == 9, r.describe()
    assert [(x["day"], x["difference"], x["status"]) for x in rows] == [(str(days.d1), 2, "extra_locally")]
    assert set(gone) <= {x for (x,) in query(db, "SELECT id FROM events")}  # nothing stored is deleted


def test_a_zone_buckets_both_sides_the_same_way(env, days):
    fake, db, e = env
    po = fake.metric_id("Placed Order")
    d3 = days.d0 + timedelta(days=3)
    # 02:00 UTC is the previous evening in New York: the same events land on different days.
    fake.add_late_events(po, at=at(d3, 2, 0), n=2)
    r, rows = verify(e, days, "--timezone", "America/New_York")
    assert r.returncode == 9, r.describe()
    assert [(x["metric_id"], x["day"], x["difference"]) for x in rows] == [(po, str(d3 - timedelta(days=1)), -2)]
    post = [q for q in fake.request_log() if q["path"] == "/api/metric-aggregates"][-1]
    assert json.loads(post["body"])["data"]["attributes"]["timezone"] == "America/New_York"
    r, rows = verify(e, days)
    assert [(x["metric_id"], x["day"], x["difference"]) for x in rows] == [(po, str(d3), -2)]
    # Every count, local and Klaviyo's, is the fake's ground truth for that New York day (the
    # database lacks the two late events, on the New York day before d3).
    truth = fake.daily_counts(datetime.combine(days.d0, time(0), NEW_YORK),
                              datetime.combine(days.d1 + timedelta(days=1), time(0), NEW_YORK), tz="America/New_York")
    r, rows = verify(e, days, "--timezone", "America/New_York", "--all", "--metric", "Placed Order")
    assert [x["day"] for x in rows] == [str(days.d0 + timedelta(days=i)) for i in range((days.d1 - days.d0).days + 1)]
    late_day = str(d3 - timedelta(days=1))
    assert {x["day"]: x["klaviyo"] for x in rows} == {x["day"]: truth.get((po, x["day"]), 0) for x in rows}
    assert {x["day"]: x["local"] for x in rows} == {
        x["day"]: truth.get((po, x["day"]), 0) - (2 if x["day"] == late_day else 0) for x in rows}
    assert sum(x["local"] for x in rows) > 0


def test_unsettled_days_never_fail_the_run(env, days):
    fake, db, e = env
    po = fake.metric_id("Placed Order")
    fake.add_late_events(po, at=at(days.d1, 10), n=2)
    r, rows = verify(e, days, "--settle", "30")  # every checked day is within 30 days of today
    assert r.returncode == 0, r.describe()
    assert [(x["day"], x["difference"], x["status"]) for x in rows] == [(str(days.d1), -2, "unsettled")]
    r, rows = verify(e, days, "--settle", "0")
    assert r.returncode == 9 and rows[0]["status"] == "missing_locally"


@pytest.mark.parametrize("args, message", [
    (["--range", "soon"], "--range"),
    (["--range", FUTURE_RANGE], "no whole day before today"),
    (["--timezone", "Mars/Olympus"], "unknown time zone"),
    (["--metric", "No Such Metric"], "unknown metric"),
    (["--format", "yaml"], "--format"),
])
def test_bad_input_exits_2(env, args, message, days):
    fake, db, e = env
    future = datetime.now(UTC).date() + timedelta(days=400)
    args = [f"{future}..{future + timedelta(days=4)}" if a == FUTURE_RANGE else a for a in args]
    r = run_cli(["verify", "--range", days.range, *args], e)
    assert r.returncode == 2, r.describe()
    assert message in r.stderr and "Traceback" not in r.stderr


def test_missing_scope_names_metrics_read(env, days):
    fake, db, e = env
    fake.revoke_scope("metrics:read")
    r = run_cli(["verify", "--range", days.range, "--metric", "Placed Order"], e)
    assert r.returncode == 4, r.describe()
    assert "metrics:read" in r.stderr
    assert query(db, "SELECT status FROM sync_runs WHERE command = 'verify'") == [("failed",)]


def test_a_429_waits_and_retries(env, days):
    fake, db, e = env
    fake.rate_limit_every = 2
    r, rows = verify(e, days, "--metric", "Placed Order", "--metric", "Viewed Product")
    assert r.returncode == 0, r.describe()
    assert any(q["status"] == 429 for q in fake.request_log())


def test_days_in_a_zone_and_today_left_out():
    utc, ny = ZoneInfo("UTC"), NEW_YORK
    now = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)  # still Nov 2 in New York
    days, unsettled = plan_days("2026-10-30..2026-11-10", ny, now, 2)
    assert days == [date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1)] and unsettled == date(2026, 10, 31)
    days, _ = plan_days("3d", utc, now, 2)
    assert days == [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    # the DST day in New York is 25 hours long, counted exactly
    assert day_start(date(2026, 11, 2), ny) - day_start(date(2026, 11, 1), ny) == timedelta(hours=25)


def test_adjacent_repair_hours_merge_per_metric_set():
    h = [datetime(2026, 11, 1, k, tzinfo=UTC) for k in range(5)]
    windows = repair_windows({(h[0], h[1]): {"a"}, (h[1], h[2]): {"a"}, (h[3], h[4]): {"a", "b"}})
    assert [(w.start.hour, w.end.hour, ids) for w, ids in windows] == [(0, 2, ["a"]), (3, 4, ["a", "b"])]


def test_status_shows_the_last_verify(env, days):
    fake, db, e = env
    fake.add_late_events(fake.metric_id("Placed Order"), at=at(days.d0, 9), n=3)
    assert verify(e, days)[0].returncode == 9
    r = run_cli(["status", "--format", "json"], e)
    assert r.returncode == 0, r.describe()
    lv = json.loads(r.stdout)["last_verify"]
    assert {k: lv[k] for k in ("first_day", "last_day", "timezone", "days_differ", "events_missing_locally",
                               "events_extra_locally", "unverifiable_metrics")} == {
        "first_day": str(days.d0), "last_day": str(days.d1), "timezone": "UTC", "days_differ": 1,
        "events_missing_locally": 3, "events_extra_locally": 0, "unverifiable_metrics": 1}
    r = run_cli(["status", "--format", "table"], e)
    assert "Last verify" in r.stdout
