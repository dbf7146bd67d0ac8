import threading

import pytest

from klaviyo_sync.ratelimit import RateLimiter, endpoint_key

from .conftest import FakeTime, SharedClock


def max_in_window(stamps, width):
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def admissions(limiters, clock: SharedClock, key: str, each: int) -> list[float]:
    """One thread per limiter (the same one may be given several times), each admitting ``each``
    requests for ``key``: the admission instants, sorted, each the clock reading the limiter took
    when it let the request through."""
    lock = threading.Lock()
    stamps, errors = [], []

    def worker(limiter):
        try:
            for _ in range(each):
                limiter.acquire(key)
                with lock:
                    stamps.append(clock.last())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return sorted(stamps)


def test_limiter_never_exceeds_either_tier_on_a_simulated_clock():
    clock = FakeTime()
    limiter = RateLimiter({"events": (350, 3500)}, headroom=1.0, clock=clock.monotonic, sleep=clock.sleep)
    stamps = []
    for _ in range(8000):
        limiter.acquire("events")
        stamps.append(clock.now)
    assert max_in_window(stamps, 1.0) <= 350
    assert max_in_window(stamps, 60.0) <= 3500
    # ...and it does not waste the budget: 8000 requests need a bit over two minutes.
    assert 120 <= stamps[-1] - stamps[0] <= 140
    # Every fixed window the server might use holds no more than the limit either.
    for offset in (0.0, 0.37, 0.9):
        per_second = {}
        for t in stamps:
            per_second[int(t - offset)] = per_second.get(int(t - offset), 0) + 1
        assert max(per_second.values()) <= 350


def test_report_endpoint_limits_are_exact_small_numbers():
    clock = FakeTime()
    limiter = RateLimiter(clock=clock.monotonic, sleep=clock.sleep)  # default headroom
    stamps = []
    for _ in range(5):
        limiter.acquire("reports")
        stamps.append(clock.now - 1000.0)
    assert max_in_window(stamps, 60.0) <= 2 and max_in_window(stamps, 1.0) <= 1
    # Two a minute, a second apart (plus the margin for the server's clock), are allowed.
    assert stamps[:2] == [0.0, pytest.approx(1.1)]
    assert stamps[2] == pytest.approx(61.0)  # the third waits for the minute (plus its margin)


def test_a_refused_request_gives_its_slot_back():
    """A request the server answered with 429 did not count there: its slot is refunded, so the
    retry of the second report of a minute waits seconds, not the rest of the minute."""
    clock = FakeTime()
    limiter = RateLimiter(clock=clock.monotonic, sleep=clock.sleep)
    limiter.acquire("reports")
    limiter.acquire("reports")  # 1.1 s later (1/s, and the window margin)
    limiter.refund("reports")  # ... and refused with a 429
    assert limiter.acquire("reports") == 0.0  # its retry goes now, not a minute later
    assert limiter.acquire("reports") == pytest.approx(59.9)  # the minute's two are spent: 61 s after the first
    limiter.refund("metrics")  # nothing to give back there: no effect
    assert limiter.budget("reports") == (1, 2)


def test_pause_holds_every_worker_of_the_endpoint():
    clock = FakeTime()
    limiter = RateLimiter(clock=clock.monotonic, sleep=clock.sleep, rng=lambda: 0.5)
    limiter.pause("events", 30)
    assert limiter.paused_until("events") == 1030.0
    start = clock.now
    waited = limiter.acquire("events")
    # The pause, plus this worker's spread (half of the one-second maximum here).
    assert waited == 30.5 and clock.now - start == 30.5
    assert limiter.acquire("metrics") == 0.0  # other endpoints are not held


def test_workers_resume_spread_out_after_a_shared_pause():
    """After a 429 every worker waits out the same pause; each then resumes after its own random
    delay (up to a second), so they do not all fire at the instant the pause ends."""
    clock = FakeTime()
    draws = iter([0.0, 0.25, 0.5, 0.99])
    limiter = RateLimiter(clock=clock.monotonic, sleep=clock.sleep, rng=lambda: next(draws))
    limiter.pause("events", 1.0)
    resumed = []
    for _ in range(4):  # four workers that were all held at the same instant
        clock.now = 1000.0
        limiter.acquire("events")
        resumed.append(clock.now)
    assert resumed == [1001.0, 1001.25, 1001.5, 1001.99]


def test_shared_between_threads_admission_instants():
    """Four threads share one limiter; each admission instant is the clock reading the limiter
    took when it let the request through (not a timestamp taken afterwards, which a busy machine
    would skew), on a clock that moves only when a thread sleeps."""
    clock = SharedClock(sharers=4)
    limiter = RateLimiter({"other": (20, 1000)}, headroom=1.0, clock=clock.monotonic, sleep=clock.sleep)
    stamps = admissions([limiter] * 4, clock, "other", 25)
    assert len(stamps) == 100 and max_in_window(stamps, 1.0) <= 20


def test_endpoint_keys():
    assert endpoint_key("/api/events") == "events"
    assert endpoint_key("/api/events/") == "events"
    assert endpoint_key("/api/events/abc") == "event"
    assert endpoint_key("/api/metrics/") == "metrics"
    assert endpoint_key("/api/campaigns") == "campaigns"
    assert endpoint_key("/api/campaign-values-reports") == "reports"
    assert endpoint_key("/api/flow-values-reports") == "reports"  # one shared quota
    assert endpoint_key("/api/flow-series-reports/") == "reports"
    assert endpoint_key("/api/metric-aggregates") == "metric-aggregates"
    assert endpoint_key("/api/profiles", "page%5Bsize%5D=100") == "profiles"
    assert endpoint_key("/api/profiles", "additional-fields%5Bprofile%5D=subscriptions,predictive_analytics") == "profiles-predictive"
    assert endpoint_key("/api/lists") == "lists"
    assert endpoint_key("/api/lists/Y6nRLr", "additional-fields%5Blist%5D=profile_count") == "profile-count"
    assert endpoint_key("/api/segments/Xy12", "additional-fields[segment]=profile_count") == "profile-count"
    assert endpoint_key("/api/lists/Y6nRLr/profiles") == "list-profiles"
    assert endpoint_key("/api/segments/Xy12/profiles/") == "segment-profiles"
    assert endpoint_key("/api/flows/abc") == "flows"
    assert endpoint_key("/api/templates") == "templates"


def test_parse_limits_and_the_cli_option(cli, tmp_path):

    from klaviyo_sync.cli import Settings
    from klaviyo_sync.ratelimit import parse_limits

    assert parse_limits("events=100/1000, metrics=5/60") == {"events": (100, 1000), "metrics": (5, 60)}
    for bad in ("nope=1/2", "events=fast", "events=0/10"):
        with pytest.raises(ValueError):
            parse_limits(bad)
    settings = Settings(db=tmp_path / "x.db", api_key="pk_x", base_url="https://a.klaviyo.com", revision="2026-07-15",
                        quiet=True, verbose=False, rate_limit="events=100/1000")
    client = settings.client()
    # The limits given are used as they are (100 is large: 10 % headroom); the others stay.
    assert client.limiter.budget("events") == (90, 900) and client.limiter.budget("metrics") == (10, 135)
    result = cli("sync-metrics", "--rate-limit", "events=lots")
    assert result.exit_code == 2 and "--rate-limit" in result.stderr


def test_klaviyo_rate_limits_environment_variable(cli, mocked, monkeypatch):
    """README: --rate-limit is read from KLAVIYO_RATE_LIMITS when the flag is absent."""
    from klaviyo_sync.commands import settings as base

    made = []

    class Recording(RateLimiter):
        def __init__(self, limits=None, **kw):
            super().__init__(limits, **kw)
            made.append(self)

    monkeypatch.setattr(base, "RateLimiter", Recording)
    mocked.get("https://a.klaviyo.com/api/metrics", json={"data": [], "links": {"next": None}})
    ok = cli("sync-metrics", "-q", env={"KLAVIYO_RATE_LIMITS": "metrics=2/15,events=5/12"})
    assert ok.exit_code == 0, ok.stderr
    assert made[-1].budget("metrics") == (2, 15) and made[-1].budget("events") == (5, 12)
    assert made[-1].budget("campaigns") == (10, 135)  # the others keep their defaults
    flag = cli("sync-metrics", "-q", "--rate-limit", "metrics=3/14", env={"KLAVIYO_RATE_LIMITS": "metrics=2/15"})
    assert flag.exit_code == 0 and made[-1].budget("metrics") == (3, 14)  # the flag wins
    bad = cli("sync-metrics", env={"KLAVIYO_RATE_LIMITS": "metrics=lots"})
    assert bad.exit_code == 2 and "--rate-limit" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# -- one budget per database: every process (and every client of one process) shares it -------
def test_a_second_limiter_on_the_same_database_knows_what_the_first_spent(tmp_path):
    """Two processes on one database share Klaviyo's per-account budget: the second knows the
    first spent the minute's two report requests and waits for the minute, not from zero."""
    clock = FakeTime()
    db = tmp_path / "k.db"
    first = RateLimiter(database=db, server="https://a.klaviyo.com", clock=clock.monotonic, sleep=clock.sleep)
    assert first.acquire("reports") == 0.0
    assert first.acquire("reports") == pytest.approx(1.1)  # 1/s, plus the window margin
    first.close()
    second = RateLimiter(database=db, server="https://a.klaviyo.com", clock=clock.monotonic, sleep=clock.sleep)
    assert second.acquire("reports") == pytest.approx(59.9)  # 61 s after the first one
    assert second.shared_path == tmp_path / "k.db.ratelimit"
    # Another server (a `demo` fake on another port) is another account: its own budget.
    other = RateLimiter(database=db, server="http://127.0.0.1:8999", clock=clock.monotonic, sleep=clock.sleep)
    assert other.acquire("reports") == 0.0
    # Without a database the budget is this process's own, as before.
    alone = RateLimiter(clock=clock.monotonic, sleep=clock.sleep)
    assert alone.acquire("reports") == 0.0 and alone.shared_path is None


def test_a_pause_from_a_429_holds_every_process_on_the_database(tmp_path):
    clock = FakeTime()
    db = tmp_path / "k.db"
    one = RateLimiter(database=db, clock=clock.monotonic, sleep=clock.sleep, rng=lambda: 0.0)
    two = RateLimiter(database=db, clock=clock.monotonic, sleep=clock.sleep, rng=lambda: 0.0)
    one.pause("metric-aggregates", 30)
    assert two.paused_until("metric-aggregates") == 1030.0
    assert two.acquire("metric-aggregates") == 30.0
    assert two.acquire("metrics") == 0.0  # other endpoints are not held


def test_a_refund_gives_the_slot_back_to_every_process(tmp_path):
    clock = FakeTime()
    db = tmp_path / "k.db"
    one = RateLimiter(database=db, clock=clock.monotonic, sleep=clock.sleep)
    two = RateLimiter(database=db, clock=clock.monotonic, sleep=clock.sleep)
    one.acquire("reports")
    one.acquire("reports")
    one.refund("reports")  # the second was refused with a 429: the server did not count it
    assert two.acquire("reports") == 0.0
    assert two.acquire("reports") == pytest.approx(59.9)


def test_the_daily_report_quota_is_shared_and_fails_fast_when_spent(tmp_path):
    """225 report requests a day: a new process does not start from zero; once the day's quota is
    spent, the request fails at once (RateLimitExceeded, as for a server's hours-long
    Retry-After) instead of sleeping for hours."""
    from klaviyo_sync.errors import RateLimitExceeded

    clock = FakeTime()
    db = tmp_path / "k.db"
    first = RateLimiter(database=db, clock=clock.monotonic, sleep=clock.sleep, daily={"reports": 3})
    for _ in range(3):
        first.acquire("reports")
    assert clock.now == pytest.approx(1061.0)  # the third waited for the minute
    second = RateLimiter(database=db, clock=clock.monotonic, sleep=clock.sleep, daily={"reports": 3})
    with pytest.raises(RateLimitExceeded, match="daily quota of 3 requests is spent") as caught:
        second.acquire("reports")
    assert caught.value.retry_after == pytest.approx(86401 - 61)
    assert clock.now == pytest.approx(1061.0)  # it did not wait
    clock.now += 86401 - 61  # a day after the first one
    assert second.acquire("reports") == 0.0
    # By default, Klaviyo's 225 a day.
    default = RateLimiter(database=tmp_path / "d.db", clock=clock.monotonic, sleep=clock.sleep)
    for _ in range(225):
        default.acquire("reports")
    with pytest.raises(RateLimitExceeded, match="daily quota of 225 requests"):
        default.acquire("reports")


def test_limiters_on_one_database_never_overshoot_together(tmp_path):
    """Four limiters on one file (four SQLite connections, as four processes would hold), each
    used by its own thread: every admission is one write transaction, so together they keep
    the budget; the admission instants are the clock readings the limiters took."""
    clock = SharedClock(sharers=4)
    limiters = [RateLimiter({"other": (5, 40)}, headroom=1.0, database=tmp_path / "k.db", clock=clock.monotonic,
                            sleep=clock.sleep) for _ in range(4)]
    stamps = admissions(limiters, clock, "other", 15)
    assert len(stamps) == 60
    assert max_in_window(stamps, 1.1) <= 5 and max_in_window(stamps, 61.0) <= 40


def test_no_database_file_means_no_shared_log(tmp_path):
    from klaviyo_sync.ratelimit import shared_log_path

    assert shared_log_path(tmp_path / "k.db") == tmp_path / "k.db.ratelimit"
    assert shared_log_path(":memory:") is None and shared_log_path("") is None
    assert shared_log_path("/dev/null") is None
    # The file appears with the first request, not before.
    limiter = RateLimiter(database=tmp_path / "k.db")
    assert not (tmp_path / "k.db.ratelimit").exists()
    limiter.acquire("metrics")
    assert (tmp_path / "k.db.ratelimit").exists()


def test_the_shared_log_is_owner_only_and_never_written_through_a_symlink(tmp_path, caplog):
    import os
    import stat

    limiter = RateLimiter(database=tmp_path / "k.db")
    limiter.acquire("metrics")
    assert stat.S_IMODE(os.stat(tmp_path / "k.db.ratelimit").st_mode) == 0o600
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "other.db.ratelimit").symlink_to(target)
    other = RateLimiter(database=tmp_path / "other.db")
    assert other.acquire("metrics") == 0.0  # works, counting only its own requests
    assert target.read_text() == "keep me"
    assert "cannot share the request budget" in caplog.text


def test_runs_opening_one_new_log_at_once_all_share_it(tmp_path, caplog):
    """Runs that start together on a new database all share its budget. SQLite refuses a
    connection's switch of a new file to WAL at once ("database is locked", without waiting out
    busy_timeout) while another connection is switching it, and the refused run used to fall
    back to counting only its own requests (which made the test above fail now and then). The
    race is rare (about 1 in 500 opens on 2 cores): many tries, to catch it when it is back."""
    for n in range(100):
        limiters = [RateLimiter({"other": (100, 1000)}, database=tmp_path / f"k{n}.db") for _ in range(8)]
        barrier = threading.Barrier(len(limiters))

        def first_request(limiter):
            barrier.wait()
            limiter.acquire("other")

        threads = [threading.Thread(target=first_request, args=(lim,)) for lim in limiters]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "cannot share the request budget" not in caplog.text, f"attempt {n}: {caplog.text}"
