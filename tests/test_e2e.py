"""End-to-end: the real CLI, as a subprocess, against the in-process fake Klaviyo API.

Each test compares the SQLite file with the fake's ground truth as exact id sets. Windows are
absolute (--since/--until well inside the fake's span) so that "now" never moves under a test.
"""

from __future__ import annotations

import json
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from types import SimpleNamespace

import pytest

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo, RecordingServer

from .e2e_helpers import (
    AUTH_HEADERS, UTC, assert_events_match_fake, base_env, assert_events_window, assert_no_secret, assert_no_secret_in_files,
    assert_partial_run_sound, cli_env, connect, count, dump, fake_now, finish, floor_now, hours, ids, iso, mark,
    parse_iso, query, run_cli, start_cli, sync_runs, try_progress, wait_for,
)

WRONG_KEY = "pk_wrong_5f4dcc3b5aa765d61d8327deb882cf99"


def window_args(since, until):
    return ["--since", iso(since), "--until", iso(until)]


@pytest.fixture(scope="module")
def now():
    """One instant for every fake of this module, read when its first test starts: fakes built
    with the same arguments serve the same data, so a clean run and a faulted run can be
    compared row for row."""
    return fake_now()


@pytest.fixture(scope="module")
def std(now):
    """The standard account (``std.fake``, FakeKlaviyo's arguments: ~500 events/hour) and window
    (``std.since`` .. ``std.until``: ~3,000 events, several pages of 1,000)."""
    return SimpleNamespace(fake=dict(n_events=12_000, span_hours=24, n_profiles=300, now=now),
                           since=now - hours(20), until=now - hours(14))


@pytest.fixture
def make_fake():
    fakes = []

    def make(**kw):
        fake = FakeKlaviyo(**kw)
        fake.enforce_limits = True  # a server that counts: the limiter is tested against it
        fake.start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        fake.stop()


@pytest.fixture(scope="module")
def events_fake(std):
    """A fake nobody turns knobs on (read-only tests share it)."""
    with FakeKlaviyo(**std.fake) as fake:
        fake.enforce_limits = True
        yield fake


@pytest.fixture(autouse=True)
def _no_key_in_files(tmp_path):
    yield
    assert_no_secret_in_files(tmp_path, secrets=[WRONG_KEY])


@pytest.fixture(scope="module")
def clean_events(tmp_path_factory, std):
    """A clean --workers 1 run of the standard window: (database path, its dump, its summary)."""
    db = tmp_path_factory.mktemp("clean") / "clean.db"
    with FakeKlaviyo(**std.fake) as fake:
        fake.enforce_limits = True
        run = run_cli(["sync-events", *window_args(std.since, std.until), "--workers", "1"], cli_env(fake, db))
        assert run.returncode == 0, run.describe()
        assert_events_window(db, fake, std.since, std.until)
    assert_no_secret_in_files(db.parent)
    return db, dump(db), run.summary


# -- 1. metrics ------------------------------------------------------------------------------
def test_metrics_over_several_pages_then_an_idempotent_rerun(make_fake, tmp_path, now):
    fake = make_fake(n_metrics=45, metrics_page_size=20, n_events=0, now=now)
    db = tmp_path / "k.db"
    env = cli_env(fake, db)

    first = run_cli(["sync-metrics"], env)
    assert first.returncode == 0, first.describe()
    assert ids(db, "metrics") == fake.metric_ids()
    assert len(fake.metric_ids()) == 45
    names = dict(query(db, "SELECT id, name FROM metrics"))
    assert names == fake.metric_names()
    s = first.summary
    assert s["command"] == "sync-metrics" and s["status"] == "ok"
    assert s["rows"] == {"metrics": 45} and s["pages"] == 3
    assert s["requests"] == fake.count("/api/metrics") == 3 and s["retries"] == 0
    for key in ("requests", "retries", "seconds", "pages", "rows"):
        assert key in s

    before = dump(db, ("metrics", "profiles", "events", "campaigns", "campaign_messages",
                       "campaign_stats", "sync_state"))
    second = run_cli(["sync-metrics"], env)
    assert second.returncode == 0, second.describe()
    assert second.summary["rows"] == {"metrics": 0}
    assert dump(db, tuple(before)) == before  # nothing but sync_runs changed
    runs = sync_runs(db)
    assert [(r["command"], r["status"]) for r in runs] == [("sync-metrics", "ok")] * 2
    assert [json.loads(r["rows_written"]) for r in runs] == [{"metrics": 45}, {"metrics": 0}]


# -- 2. events -------------------------------------------------------------------------------
def test_a_slow_api_gets_its_fetchers_from_the_first_request(make_fake, tmp_path, std):
    """The account check, before any event is read, measures how long the API takes to answer;
    at 60 ms a request Little's law asks 2 * (60 + 15) / 15 = 10 fetchers, so a run with
    --workers 8 starts all 8 at once instead of growing from 2 after its first half second."""
    fake = make_fake(**std.fake)
    fake.latency = 0.06
    db = tmp_path / "slow.db"
    run = run_cli(["sync-events", *window_args(std.since, std.until), "--workers", "8"], cli_env(fake, db))
    assert run.returncode == 0, run.describe()
    assert run.summary["fetchers_over_time"] == [[0.0, 8]]
    assert_events_window(db, fake, std.since, std.until)
    assert_events_match_fake(db, fake)


def test_events_window_exact_and_workers_1_equals_workers_4(events_fake, clean_events, tmp_path, std):
    fake = events_fake
    db1, dump1, s1 = clean_events
    want = fake.event_ids(std.since, std.until)
    assert 2_500 < len(want) < 4_000  # several pages of 1,000, yet quick

    db4 = tmp_path / "w4.db"
    run = run_cli(["sync-events", *window_args(std.since, std.until), "--workers", "4"], cli_env(fake, db4))
    assert run.returncode == 0, run.describe()
    assert_events_window(db4, fake, std.since, std.until)
    assert_events_match_fake(db4, fake)
    assert dump(db4) == dump1  # identical table contents, whatever the concurrency
    assert mark(db4) == mark(db1) == iso(std.until)

    s4 = run.summary
    for s, pages_at_least in ((s1, 3), (s4, 1)):
        assert s["command"] == "sync-events" and s["status"] == "ok"
        assert s["window"] == {"start": iso(std.since), "end": iso(std.until)}
        assert s["rows"]["events"] == len(want)
        assert s["rows"]["profiles"] == len(fake.profile_ids(std.since, std.until))
        assert s["pages"] >= pages_at_least and s["retries"] == 0
    assert s1["pages"] == -(-len(want) // 1000)  # one slice, full pages of 1,000
    assert s4["requests"] > s1["requests"]  # four workers cut the window into more slices

    # A rerun of the same window, written with a +02:00 offset, writes nothing new.
    plus2 = timezone(timedelta(hours=2))
    again = run_cli(["sync-events", "--since", std.since.astimezone(plus2).isoformat(),
                     "--until", std.until.astimezone(plus2).isoformat()], cli_env(fake, db4))
    assert again.returncode == 0, again.describe()
    assert again.summary["window"] == {"start": iso(std.since), "end": iso(std.until)}
    assert again.summary["rows"] == {"events": 0, "profiles": 0, "metrics": 0, "attributions": 0}
    assert again.summary["pages"] >= 1 and again.summary["requests"] >= again.summary["pages"]
    assert dump(db4) == dump1


# -- 3. campaigns ----------------------------------------------------------------------------
# The statistics columns of campaign_stats (README, The database), and what `campaigns` prints:
# counts summed over a campaign's messages, rates recomputed from the sums.
STAT_COLUMNS = ["recipients", "delivered", "delivery_rate", "opens", "opens_unique", "open_rate", "clicks",
                "clicks_unique", "click_rate", "conversions", "conversion_uniques", "conversion_rate",
                "conversion_value", "unsubscribes", "unsubscribe_rate", "bounced", "bounce_rate",
                "spam_complaints", "spam_complaint_rate"]
SUMMED = ["recipients", "delivered", "opens", "opens_unique", "clicks", "clicks_unique", "conversions",
          "conversion_value", "unsubscribes", "bounced", "spam_complaints"]
RATES = {"open_rate": ("opens_unique", "delivered"), "click_rate": ("clicks_unique", "delivered"),
         "conversion_rate": ("conversion_uniques", "delivered")}


def test_campaigns_synced_then_listed_from_the_database_without_requests(make_fake, tmp_path, now):
    # 20 statistics rows in 90 days: a page of 12 makes the report answer in two pages.
    fake = make_fake(n_events=200, now=now, report_page_size=12)
    db = tmp_path / "k.db"
    env = cli_env(fake, db)

    run = run_cli(["sync-campaigns", "--range", "90d"], env)
    assert run.returncode == 0, run.describe()
    assert run.summary["status"] == "ok"
    assert ids(db, "campaigns") == fake.campaign_ids()  # every channel, archived too
    want_messages = {m for c in fake.campaign_ids() for m in fake.campaign_message_ids(c)}
    assert ids(db, "campaign_messages") == want_messages
    # The fake sends campaigns 1 h .. 60 days before its now: the 90d range cannot race.
    sent = fake.campaign_ids_sent(now - timedelta(days=90), now + timedelta(days=1))
    assert sent and ids(db, "campaign_stats", "campaign_id") == sent
    pairs = {(r[0], r[1]) for r in query(db, "SELECT campaign_id, campaign_message_id FROM campaign_stats")}
    assert pairs == {(c, m) for c in sent for m in fake.campaign_message_ids(c)}
    # Every statistic of every message is the fake's (README, the campaign_stats table).
    conv = fake.metric_id("Placed Order")
    conn = connect(db)
    conn.row_factory = sqlite3.Row
    stored = [dict(r) for r in conn.execute("SELECT * FROM campaign_stats")]
    conn.close()
    for row in stored:
        want = fake.campaign_statistics(row["campaign_id"], conv)[row["campaign_message_id"]]
        for name in STAT_COLUMNS:
            assert row[name] == pytest.approx(want[name]), (name, row, want)
        assert row["conversion_metric_id"] == conv
    # The report answered in pages (the fake's report_page_size): links.next was followed.
    reports = [r for r in fake.request_log() if r["path"].rstrip("/") == "/api/campaign-values-reports"]
    # (A 429 among them is the server counting, under load; the statistics above are complete.)
    assert any("page_cursor=" in r["query"] and r["status"] == 200 for r in reports)

    requests_before = fake.count("/")
    # Relative range: the CLI's own now lies in [t0, t1]; bracket the truth with both.
    t0 = floor_now()
    listed = run_cli(["campaigns", "--range", "30d", "--format", "json"], env)
    t1 = floor_now() + timedelta(seconds=1)
    assert listed.returncode == 0, listed.describe()
    rows = json.loads(listed.stdout)
    got = {r["id"] for r in rows}
    assert fake.campaign_ids_sent(t1 - timedelta(days=30), t1) <= got
    assert got <= fake.campaign_ids_sent(t0 - timedelta(days=30), t1)
    assert got, "no campaign sent in the last 30 days: choose another seed"
    assert "from the local database" in listed.stderr
    assert all(r["recipients"] is not None and r["stats_fetched_at"] for r in rows)
    for r in rows:  # the statistics are the fake's, summed over the campaign's messages
        per_message = fake.campaign_statistics(r["id"], conv).values()
        for name in SUMMED:
            assert r[name] == pytest.approx(sum(s[name] for s in per_message)), (name, r)
        for rate, (num, den) in RATES.items():  # rates recomputed from the sums
            if rate == "open_rate" and r["channel"] == "sms":
                assert r[rate] is None, r  # SMS has no opens: NULL, not 0 %
                continue
            n, d = sum(s[num] for s in per_message), sum(s[den] for s in per_message)
            assert r[rate] == pytest.approx(n / d if d else 0.0), (rate, r)
    assert [r["send_time"] for r in rows] == sorted((r["send_time"] for r in rows), reverse=True)

    # Absolute range: tolerance-free.
    d0 = (now - timedelta(days=30)).date()
    d1 = now.date()
    absolute = f"{d0.isoformat()}..{d1.isoformat()}"
    want_abs = fake.campaign_ids_sent(datetime(d0.year, d0.month, d0.day, tzinfo=UTC),
                                      datetime(d1.year, d1.month, d1.day, tzinfo=UTC) + timedelta(days=1))
    assert want_abs
    for _ in range(2):  # the same call twice: both from the database
        again = run_cli(["campaigns", "--range", absolute, "--format", "json"], env)
        assert again.returncode == 0, again.describe()
        assert {r["id"] for r in json.loads(again.stdout)} == want_abs
    again = run_cli(["campaigns", "--range", "30d", "--format", "json"], env)
    assert again.returncode == 0 and {r["id"] for r in json.loads(again.stdout)} == got
    assert fake.count("/") == requests_before, "campaigns went to the API although the database had the range"

    # A fresh database: the first call goes to the API, the same call again does not. (A twin
    # fake serves the same account: the first one's report quota of 2 a minute is spent.)
    fake = make_fake(n_events=200, now=now)
    env = cli_env(fake, tmp_path / "fresh.db")
    fetched = run_cli(["campaigns", "--range", absolute, "--format", "json"], env)
    assert fetched.returncode == 0, fetched.describe()
    assert {r["id"] for r in json.loads(fetched.stdout)} == want_abs
    assert "fetched from the API" in fetched.stderr
    assert all(r["recipients"] is not None for r in json.loads(fetched.stdout))
    requests_before = fake.count("/")
    cached = run_cli(["campaigns", "--range", absolute, "--format", "json"], env)
    assert cached.returncode == 0, cached.describe()
    assert json.loads(cached.stdout) == json.loads(fetched.stdout)
    assert fake.count("/") == requests_before


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])  # UTC+14, UTC-11
def test_statistics_complete_whatever_the_account_time_zone(tz, make_fake, tmp_path, now):
    """Klaviyo reads a report's timeframe in the account's time zone, which this tool does not
    know: the day of padding each side of the requested timeframe must cover any zone. A range
    of the one day a campaign was sent: without the padding, a campaign sent before 11:00 UTC
    is missed at UTC-11 and one sent from 10:00 UTC at UTC+14, so one of the two fails."""
    fake = make_fake(n_events=10, now=now, account_timezone=tz)
    cid = sorted(fake.campaign_ids_sent(now - timedelta(days=30), now - timedelta(days=2)))[0]
    day = fake.campaign(cid)["attributes"]["send_time"][:10]
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    sent = fake.campaign_ids_sent(start, start + timedelta(days=1))
    db = tmp_path / "k.db"
    run = run_cli(["sync-campaigns", "--range", f"{day}..{day}"], cli_env(fake, db))
    assert run.returncode == 0, run.describe()
    pairs = set(query(db, "SELECT campaign_id, campaign_message_id FROM campaign_stats"))
    assert cid in sent and pairs == {(c, m) for c in sent for m in fake.campaign_message_ids(c)}


def test_spent_report_quota_stores_campaigns_and_exits_6(make_fake, tmp_path, now):
    fake = make_fake(n_events=200, now=now)
    fake.report_daily_quota = 0
    db = tmp_path / "k.db"
    run = run_cli(["sync-campaigns", "--range", "90d"], cli_env(fake, db))
    assert run.returncode == 6, run.describe()
    assert run.summary["status"] == "partial"
    assert "statistics" in run.stderr
    assert ids(db, "campaigns") == fake.campaign_ids()
    assert count(db, "campaign_stats") == 0
    assert any(r["path"] == "/api/campaign-values-reports" and r["status"] == 429 for r in fake.request_log())
    assert sync_runs(db)[-1]["status"] == "partial"


# -- 4. faults -------------------------------------------------------------------------------
FAULTS = {
    "429-retry-after-1": dict(rate_limit_every=3, retry_after=1),
    "429-no-retry-after": dict(rate_limit_every=3, retry_after=None),
    "503": dict(server_error_every=3),
    "dropped-connection": dict(drop_every=3),
    "truncated-body": dict(truncate_every=3),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_gives_the_clean_database(fault, make_fake, clean_events, tmp_path, std):
    fake = make_fake(**std.fake)
    for knob, value in FAULTS[fault].items():
        setattr(fake, knob, value)
    db = tmp_path / "k.db"
    # -v: the retry log lines are checked for the key as well.
    run = run_cli(["sync-events", *window_args(std.since, std.until), "--workers", "2", "-v"], cli_env(fake, db))
    assert run.returncode == 0, run.describe()
    s = run.summary
    assert s["retries"] > 0, s
    assert "retrying" in run.stderr
    if fault.startswith("429"):
        assert s["rate_limited"] > 0 and fake.throttled > 0
    if fault == "503":
        assert any(r["status"] == 503 for r in fake.request_log())
    _, clean_dump, clean_summary = clean_events
    assert ids(db, "events") == fake.event_ids(std.since, std.until)
    assert dump(db) == clean_dump
    assert mark(db) == iso(std.until)
    assert s["rows"] == clean_summary["rows"]


def test_throttling_every_4th_request_plus_faults_with_default_workers(make_fake, tmp_path, std):
    """A 429 that says when to come back spends no retry attempt: with every 4th request
    throttled (Retry-After: 1) and 503s, dropped connections and truncated bodies on top, the
    default workers finish with exactly the window's events. The fake's faults are counted
    per request, not timed, so this does not depend on the machine's speed. (That no 429 is
    counted as an attempt is pinned down exactly in tests/test_client.py; this is the scenario
    of issue 12 end to end.)"""
    fake = make_fake(**std.fake)
    fake.rate_limit_every, fake.retry_after = 4, 1
    fake.server_error_every, fake.drop_every, fake.truncate_every = 9, 13, 17
    since, until = std.since, std.since + hours(3)
    db = tmp_path / "k.db"
    run = run_cli(["sync-events", *window_args(since, until)], cli_env(fake, db))
    assert run.returncode == 0, run.describe()
    s = run.summary
    assert s["max_workers"] == 32 and s["rate_limited"] > 0 and fake.throttled == s["rate_limited"]
    assert s["retries"] >= s["rate_limited"]
    assert_events_window(db, fake, since, until)
    assert mark(db) == iso(until)


# -- 5. kill -9 and resume -------------------------------------------------------------------
def stopped_mid_run(fake, db, answered: int) -> None:
    """Park the fake after ``answered`` requests, and wait for the events that make a stop
    'mid-run': some rows committed, a request parked (so the run cannot finish by itself)."""
    assert wait_for(lambda: try_progress(db)[0] > 0 and fake.held > 0, timeout=60), (
        f"no committed page and parked request within 60 s (held {fake.held})")


@pytest.mark.parametrize("workers", [1, 4])
def test_sigkill_halfway_then_rerun(workers, make_fake, tmp_path, now):
    fake = make_fake(n_events=40_000, span_hours=24, n_profiles=300, now=now)  # ~1,700/hour
    since, until = now - hours(20), now - hours(14)
    want = fake.event_ids(since, until)
    fake.hold_after = 4  # four pages answered, then every request waits: killed mid-run, always
    db = tmp_path / "k.db"
    env = cli_env(fake, db)
    args = ["sync-events", *window_args(since, until), "--workers", str(workers)]

    t0 = time.monotonic()
    proc = start_cli(args, env)
    try:
        stopped_mid_run(fake, db, 4)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        killed = finish(proc, args, t0)
    assert killed.returncode == -signal.SIGKILL

    got = assert_partial_run_sound(db, fake, since, until)
    assert 0 < len(got) < len(want), "not killed halfway"
    if workers == 1:  # one cursor chain: its committed pages are the mark's
        assert mark(db) is not None

    fake.release()
    rerun = run_cli(args, env)
    assert rerun.returncode == 0, rerun.describe()
    assert_events_window(db, fake, since, until)
    assert mark(db) == iso(until)
    statuses = [r["status"] for r in sync_runs(db)]
    assert statuses == ["abandoned", "ok"]  # the killed run, as the next run found it


# -- more event windows ----------------------------------------------------------------------
def test_metric_filter_hours_and_resume(events_fake, tmp_path, std, now):
    fake = events_fake
    # --metric (by name, twice): only those metrics' events, under their own mark.
    db = tmp_path / "metric.db"
    env = cli_env(fake, db)
    wanted = [fake.metric_id("Placed Order"), fake.metric_id("Opened Email")]
    run = run_cli(["sync-events", *window_args(std.since, std.until), "--metric", "Placed Order", "--metric", wanted[1]], env)
    assert run.returncode == 0, run.describe()
    assert ids(db, "events") == fake.event_ids(std.since, std.until, metric_ids=wanted)
    assert ids(db, "events", "metric_id") == set(wanted)
    assert ids(db, "metrics") == fake.metric_ids()  # names were resolved by syncing metrics
    assert dict(query(db, "SELECT key, value FROM sync_state")) == {
        f"events.mark:metric={','.join(sorted(wanted))}": iso(std.until), "account.id": fake.account()["id"]}

    # An explicit window, then a resume with no window option: [mark - 1h, now).
    db = tmp_path / "resume.db"
    env = cli_env(fake, db)
    assert run_cli(["sync-events", *window_args(std.since, std.until)], env).returncode == 0
    t0 = floor_now()
    resumed = run_cli(["sync-events"], env)
    t1 = floor_now() + timedelta(seconds=1)
    assert resumed.returncode == 0, resumed.describe()
    assert resumed.summary["window"]["start"] == iso(std.until - hours(1))
    assert ids(db, "events") == fake.event_ids(std.since, now + hours(1))  # the fake has none after now
    assert iso(t0) <= mark(db) <= iso(t1)

    status = run_cli(["status", "--format", "json", "--max-age", "3h"], env)
    assert status.returncode == 0, status.describe()
    report = json.loads(status.stdout)
    assert report["tables"]["events"] == len(fake.event_ids(std.since, now + hours(1)))
    assert report["marks"] == {"events.mark": mark(db)} and report["stale"] == []
    assert [r["status"] for r in report["runs"]] == ["ok", "ok"]

    # --hours: the CLI's now lies in [t0, t1]; bracket the truth with both ends.
    db = tmp_path / "hours.db"
    t0 = floor_now()
    run = run_cli(["sync-events", "--hours", "2"], cli_env(fake, db))
    t1 = floor_now() + timedelta(seconds=1)
    assert run.returncode == 0, run.describe()
    got = ids(db, "events")
    assert fake.event_ids(t1 - hours(2), now + hours(1)) <= got <= fake.event_ids(t0 - hours(2), now + hours(1))
    assert got


def test_a_window_after_a_gap_does_not_move_the_mark(events_fake, tmp_path, std, now):
    fake = events_fake
    mid = now - hours(18)
    db = tmp_path / "k.db"
    env = cli_env(fake, db)
    assert run_cli(["sync-events", *window_args(std.since, mid)], env).returncode == 0
    assert mark(db) == iso(mid)
    # [mid + 2h, std.until) leaves [mid, mid + 2h) uncovered: the mark must stay at mid.
    later = run_cli(["sync-events", *window_args(mid + hours(2), std.until)], env)
    assert later.returncode == 0, later.describe()
    assert mark(db) == iso(mid)
    assert ids(db, "events") == fake.event_ids(std.since, mid) | fake.event_ids(mid + hours(2), std.until)
    # Resuming from the mark (minus the 1 h overlap) fills the gap.
    resumed = run_cli(["sync-events"], env)
    assert resumed.returncode == 0, resumed.describe()
    assert resumed.summary["window"]["start"] == iso(mid - hours(1))
    assert ids(db, "events") == fake.event_ids(std.since, now + hours(1))


def test_fractional_second_bounds_keep_to_the_window(events_fake, tmp_path, std, now):
    """--since/--until with a fraction: events have whole-second datetimes, so the window
    [since, until) holds those with ceil(since) <= datetime < ceil(until)."""
    fake = events_fake
    inside = sorted(fake.event(fake.event_index(e))["attributes"]["datetime"]
                    for e in fake.event_ids(std.since, now - hours(19)))
    # Both bounds half a second after a second that has events.
    since = parse_iso(inside[0]) + timedelta(milliseconds=500)
    until = parse_iso(inside[-1]) + timedelta(milliseconds=500)
    db = tmp_path / "k.db"
    run = run_cli(["sync-events", "--since", since.isoformat(), "--until", until.isoformat()],
                  cli_env(fake, db))
    assert run.returncode == 0, run.describe()
    got = ids(db, "events")
    want = fake.event_ids(since, until)
    # Whole-second datetimes before since.5 are those before the next whole second.
    early = query(db, "SELECT id, datetime FROM events WHERE datetime < ?",
                  [iso(since + timedelta(milliseconds=500))])
    late = want - got  # e.g. events in the second of --until, which is before --until
    assert not early and not late, (
        f"window {since.isoformat()} .. {until.isoformat()}: stored {len(early)} events before "
        f"--since (at {sorted({r[1] for r in early})}), missed {len(late)} events of the window "
        f"(at {sorted(fake.event(fake.event_index(e))['attributes']['datetime'] for e in late)}); "
        f"summary window {run.summary['window']}")
    assert got == want


def test_html_403_stops_the_sync_and_a_rerun_completes(make_fake, tmp_path, std):
    fake = make_fake(**std.fake)
    fake.html_403_every = 3  # a bot challenge answers the third request
    db = tmp_path / "k.db"
    env = cli_env(fake, db)
    args = ["sync-events", *window_args(std.since, std.until), "--workers", "1"]
    run = run_cli(args, env)
    assert run.returncode == 3, run.describe()  # not 4: the key was not rejected
    assert "HTML" in run.stderr
    assert_partial_run_sound(db, fake, std.since, std.until)
    assert 0 < count(db, "events") < len(fake.event_ids(std.since, std.until))
    assert sync_runs(db)[-1]["status"] == "failed"
    fake.html_403_every = 0
    rerun = run_cli(args, env)
    assert rerun.returncode == 0, rerun.describe()
    assert_events_window(db, fake, std.since, std.until)
    assert mark(db) == iso(std.until)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_record_the_run_as_interrupted(sig, code, make_fake, tmp_path, now):
    """README: 130 / 143, interrupted (Ctrl-C) / terminated (SIGTERM): the run is recorded as
    `interrupted`."""
    fake = make_fake(n_events=40_000, span_hours=24, n_profiles=300, now=now)
    since, until = now - hours(20), now - hours(14)
    fake.hold_after = 3
    db = tmp_path / "k.db"
    env = cli_env(fake, db)
    args = ["sync-events", *window_args(since, until), "--workers", "1"]
    t0 = time.monotonic()
    proc = start_cli(args, env)
    try:
        stopped_mid_run(fake, db, 3)
        assert proc.poll() is None
        proc.send_signal(sig)
        stopped = finish(proc, args, t0, timeout=30)  # kills it if the signal did not stop it
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stopped.returncode == code, stopped.describe()
    got = assert_partial_run_sound(db, fake, since, until)
    assert 0 < len(got) < len(fake.event_ids(since, until))
    last = sync_runs(db)[-1]
    assert last["status"] == "interrupted" and last["finished_at"], last
    assert stopped.stderr.strip().splitlines()[-1].startswith("klaviyo-sync: error:")
    assert ("SIGTERM" if sig == signal.SIGTERM else "interrupted") in stopped.stderr
    fake.release()
    rerun = run_cli(args, env)
    assert rerun.returncode == 0, rerun.describe()
    assert_events_window(db, fake, since, until)


# -- 6. two syncs at once --------------------------------------------------------------------
def test_two_syncs_at_once(make_fake, tmp_path, std):
    fake = make_fake(**std.fake)
    fake.hold_after = 0  # the first sync's first request waits until released: it holds the lock
    args = ["sync-events", *window_args(std.since, std.until), "--workers", "1"]

    db = tmp_path / "a.db"
    env = cli_env(fake, db)
    t0 = time.monotonic()
    first = start_cli(args, env)
    try:
        assert wait_for(lambda: fake.held > 0, timeout=60), "the first sync made no request"
        second = run_cli(args, env)
    finally:
        fake.release()
    winner = finish(first, args, t0)
    assert (winner.returncode, second.returncode) == (0, 5), winner.describe() + second.describe()
    assert f"another klaviyo-sync run (pid {first.pid})" in second.stderr
    assert f"holds the lock {db}.lock" in second.stderr
    assert "--wait" in second.stderr and second.stdout == ""
    assert_events_window(db, fake, std.since, std.until)
    assert [r["status"] for r in sync_runs(db)] == ["ok"]  # the refused run recorded nothing

    # --wait: the second run waits for the first instead of exiting 5.
    fake = make_fake(**std.fake)
    fake.hold_after = 0
    db = tmp_path / "b.db"
    env = cli_env(fake, db)
    waiting = [*args, "--wait", "60"]
    t0 = time.monotonic()
    first = start_cli(waiting, env)
    try:
        assert wait_for(lambda: fake.held > 0, timeout=60), "the first sync made no request"
        second = start_cli(waiting, env)
    finally:
        fake.release()
    runs = [finish(first, waiting, t0), finish(second, waiting, t0)]
    assert [r.returncode for r in runs] == [0, 0], "\n".join(r.describe() for r in runs)
    assert [r.summary["rows"]["events"] for r in runs] == [len(fake.event_ids(std.since, std.until)), 0]
    assert_events_window(db, fake, std.since, std.until)
    assert [r["status"] for r in sync_runs(db)] == ["ok", "ok"]


# -- 7. a reader during a sync ---------------------------------------------------------------
def test_reader_keeps_its_snapshot_during_a_sync(events_fake, tmp_path, std, now):
    fake = events_fake
    mid = now - hours(17)
    db = tmp_path / "k.db"
    env = cli_env(fake, db)
    first = run_cli(["sync-events", *window_args(std.since, mid)], env)
    assert first.returncode == 0, first.describe()

    reader = connect(db)
    try:
        reader.execute("BEGIN")
        before = {r[0] for r in reader.execute("SELECT id FROM events")}
        before_mark = reader.execute("SELECT value FROM sync_state WHERE key='events.mark'").fetchone()
        assert before == fake.event_ids(std.since, mid)

        second = run_cli(["sync-events", *window_args(mid, std.until)], env)
        assert second.returncode == 0, second.describe()
        assert second.summary["rows"]["events"] == len(fake.event_ids(mid, std.until))

        during = {r[0] for r in reader.execute("SELECT id FROM events")}
        assert during == before, "the reader's snapshot changed inside its transaction"
        assert reader.execute("SELECT value FROM sync_state WHERE key='events.mark'").fetchone() == before_mark
        assert reader.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == 1
        reader.execute("COMMIT")
        after = {r[0] for r in reader.execute("SELECT id FROM events")}
    finally:
        reader.close()
    assert after == fake.event_ids(std.since, std.until)
    assert_events_window(db, fake, std.since, std.until)
    assert mark(db) == iso(std.until)


# -- 8. a bad key ----------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["-v"]])
def test_bad_key_exits_4_and_leaks_no_key(extra, events_fake, tmp_path, std):
    db = tmp_path / "k.db"
    env = cli_env(events_fake, db, api_key=WRONG_KEY)
    for args in (["sync-metrics", *extra], ["sync-events", *window_args(std.since, std.until), *extra],
                 ["sync-campaigns", "--range", "30d", *extra]):
        run = run_cli(args, env, secrets=[WRONG_KEY])
        assert run.returncode == 4, run.describe()
        assert "401" in run.stderr
    assert count(db, "events") == 0 and count(db, "metrics") == 0
    assert {r["status"] for r in sync_runs(db)} == {"failed"}
    for r in sync_runs(db):
        assert_no_secret(r["error"] or "", "sync_runs.error", [WRONG_KEY])
    # the autouse fixture checks the database, WAL and lock files for both keys


# -- 9. an off-host links.next ----------------------------------------------------------------
def test_off_host_next_link_is_refused_before_any_request(make_fake, tmp_path, std):
    fake = make_fake(n_metrics=45, metrics_page_size=20, **std.fake)
    with RecordingServer() as other:
        fake.next_link_base = other.base_url
        db = tmp_path / "k.db"
        env = cli_env(fake, db)
        for args in (["sync-metrics"], ["sync-events", *window_args(std.since, std.until), "--workers", "1"]):
            run = run_cli(args, env)
            assert run.returncode == 3, run.describe()
            assert "refusing" in run.stderr and other.base_url.split("//")[1] in run.stderr
            assert other.request_log() == [], f"the other host received {other.request_log()}"
        assert [r["status"] for r in sync_runs(db)] == ["failed", "failed"]
    assert all(r["authorization"] == f"Klaviyo-API-Key {FAKE_API_KEY}" for r in fake.request_log())


# -- 10. demo --------------------------------------------------------------------------------
def test_demo(tmp_path):
    db = tmp_path / "demo.db"
    t0 = datetime.now(UTC)
    # Every sync-all step, four report requests among them at 2 a minute: about a minute of waiting.
    run = run_cli(["demo", "--db", db, "--events", "3000"], base_env(), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.describe()
    assert "synthetic" in run.stdout.lower()
    for table in ("metrics", "profiles", "events", "campaigns", "campaign_messages", "campaign_stats"):
        assert count(db, table) > 0, table
    # The demo's fake is FakeKlaviyo(n_events=3000, span_hours=336) made at the demo's start;
    # event and metric ids do not depend on its now, so a twin fake gives the ground truth of
    # the demo's last 7 days (its now is a few seconds after its fake's).
    now = t0.replace(microsecond=0)
    twin = FakeKlaviyo(n_events=3000, span_hours=24 * 14, now=now)
    got = ids(db, "events")
    week = timedelta(days=7)
    lag = (datetime.now(UTC) - t0).total_seconds() + 1
    assert twin.event_ids(now - week + timedelta(seconds=lag), now) <= got <= twin.event_ids(now - week, now)
    assert ids(db, "metrics") == twin.metric_ids()
    assert count(db, "campaigns") == len(twin.campaign_ids())
    # Profile, list and flow ids are made from creation times relative to the fake's now: count.
    assert count(db, "profiles") == len(twin.live_profile_ids())  # quiet ones too: sync-profiles ran
    assert count(db, "flows") == len(twin.flow_ids()) and count(db, "lists") == len(twin.list_ids())
    # Memberships are filled too (ids relative to the fake's now: counted per list and segment).
    want = sorted(len(twin.members(g)) for g in twin.list_ids())
    assert sorted(n for (n,) in query(db, "SELECT count(*) FROM list_members GROUP BY list_id")) == \
        [n for n in want if n]
    want = sorted(len(twin.members(g)) for g in twin.segment_ids())
    assert sorted(n for (n,) in query(db, "SELECT count(*) FROM segment_members GROUP BY segment_id")) == \
        [n for n in want if n]
    assert count(db, "list_members") > 0 and count(db, "segment_members") > 0
    assert [(r["command"], r["status"]) for r in sync_runs(db)] == [
        (c, "ok") for c in ("sync-account", "sync-metrics", "sync-profiles", "sync-events", "sync-lists",
                            "sync-segments", "sync-campaigns", "sync-flows", "sync-templates", "sync-flow-stats",
                            "sync-images", "sync-forms", "sync-segment-growth", "sync-tags", "sync-coupons",
                            "sync-push-tokens", "sync-reviews", "sync-catalogs")]
    assert ids(db, "images") == twin.images.ids()
    assert ids(db, "tags") == twin.tag_ids() and ids(db, "catalog_items") == twin.catalog_items.ids()


# -- 11. the fake's own command line ----------------------------------------------------------
def test_fake_api_command_serves_and_terminates(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "klaviyo_sync.fake", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=20), "no URL line within 20 s"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
        req = urllib.request.Request(url + "/api/metrics", headers=AUTH_HEADERS)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            assert len(json.loads(resp.read())["data"]) == 12
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
