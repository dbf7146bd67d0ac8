"""One request budget per account: processes on one database share Klaviyo's limits.

Against the fake with Klaviyo's limits enforced; the proof is the fake's request log (no 429),
not the limiter's own account of itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import base_env, cli_env, floor_now, run_cli

REPORTS = "/api/campaign-values-reports"


def test_back_to_back_commands_share_the_report_allowance(tmp_path):
    """The report endpoint allows 2 requests a minute. Three `sync-campaigns` runs back to back,
    one report request each (one channel each, so each has statistics to fetch): the third run
    must know the first two spent the minute's allowance and wait, instead of being refused."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=200, span_hours=48, now=floor_now()) as fake:
        fake.enforce_limits = True
        for channel in ("email", "sms", "mobile_push"):
            run = run_cli(["sync-campaigns", "--channel", channel, "--format", "json"], cli_env(fake, db),
                          timeout=180)
            assert run.returncode == 0, run.describe()
            assert run.summary["report_requests"] == 1
        log = fake.request_log()
    reports = [r for r in log if r["path"] == REPORTS]
    assert [r["status"] for r in reports] == [200, 200, 200]
    assert [r for r in log if r["status"] == 429] == []
    assert (tmp_path / "k.db.ratelimit").exists()


# One process's share of the work: N requests to the templates endpoint (75/s, 750/min at
# Klaviyo) through the real client, allowing itself 45 a second (50 less 10 %), with the budget
# kept beside DB. Alone within the server's limit, two together over it, unless they share; the
# 30-a-second slack absorbs a loaded machine's jitter between admission and arrival.
_WORKER = textwrap.dedent("""
    import sys
    from klaviyo_sync.client import KlaviyoClient
    from klaviyo_sync.ratelimit import RateLimiter
    base, key, db, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()  # start together
    client = KlaviyoClient(key, base_url=base,
                           limiter=RateLimiter({"templates": (50, 700)}, database=db, server=base))
    for _ in range(n):
        client.request("GET", "/api/templates", params={"page[size]": "1"})
    print(client.stats.rate_limited)
""")


def test_concurrent_processes_on_one_database_stay_within_the_limit_together(tmp_path):
    """Two processes at once (a sync and a command beside it): each allows itself 45 templates
    requests a second, the server 75; alone each is within the limit, together only if they
    share one budget. The fake refuses what goes over (429), so its log is the proof."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=50, span_hours=24, now=floor_now()) as fake:
        fake.enforce_limits = True
        env = base_env()
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, fake.base_url, FAKE_API_KEY, str(db), "150"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(2)]
        try:
            for p in procs:
                assert p.stdout.readline().strip() == "ready", p.stderr.read()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        log = fake.request_log()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "0", err
    templates = [r for r in log if r["path"] == "/api/templates"]
    assert len(templates) == 300
    assert [r for r in log if r["status"] == 429] == []
