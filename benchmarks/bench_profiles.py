"""sync-profiles over the fake API with no latency: the tool's speed and memory, not the API's.

    PYTHONPATH=. python benchmarks/bench_profiles.py [--sizes 50000,200000] [--changed 1000]
    PYTHONPATH=. python benchmarks/bench_profiles.py --sizes 100000 --latency 0.3 --enforce-limits --workers 8

With ``--enforce-limits`` the fake answers 429 beyond Klaviyo's published profile limits (75/s,
750/min) and the tool keeps its own limiter (no override): the first sync's rate is then
compared with the limit, 750 requests of 100 profiles a minute = 1,250 profiles/s.
``--workers`` (a comma list) is passed to sync-profiles.

For each size: a first sync-profiles of every profile (profiles/s, peak RSS of the tool's
process from wait4), then an incremental run after ``--changed`` profiles changed (seconds end
to end). The fake runs in this process (its mutations are Python calls); the tool runs as a
subprocess, exactly as cron would run it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo  # noqa: E402


def run(args, env) -> dict:
    t0 = time.monotonic()
    # A child's ru_maxrss counts the image it was forked from (this process holds the whole fake
    # account), so the tool runs under GNU time, a small process, which reports the tool's own.
    proc = subprocess.run(["/usr/bin/time", "-f", "TIME %M %U %S", sys.executable, "-m", "klaviyo_sync", *args],
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed: {proc.stderr}")
    rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()[1:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            "cpu_s": round(float(user) + float(system), 2), "rows": summary["rows"],
            "requests": summary["requests"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50000,200000")
    ap.add_argument("--changed", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds the fake adds to each request")
    ap.add_argument("--enforce-limits", action="store_true", help="the fake enforces Klaviyo's profile limits")
    ap.add_argument("--workers", default=None, help="comma list of sync-profiles --workers values (default: the tool's)")
    a = ap.parse_args()
    for n in (int(x) for x in a.sizes.split(",")):
        for workers in (a.workers.split(",") if a.workers else [None]):
            t0 = time.monotonic()
            fake = FakeKlaviyo(n_profiles=n, n_events=0, n_quiet_profiles=0, n_lists=0, n_segments=0)
            fake.latency = a.latency
            fake.enforce_limits = a.enforce_limits
            built = time.monotonic() - t0
            with fake, tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url,
                       "KLAVIYO_SYNC_DB": str(Path(tmp) / "k.db")}
                if not a.enforce_limits:
                    # the tool is measured, not Klaviyo's 750/min (which alone makes 200k take 3 min)
                    env["KLAVIYO_RATE_LIMITS"] = "profiles=100000/6000000"
                extra = ["--workers", workers] if workers else []
                load0 = os.getloadavg()[0]
                first = run(["sync-profiles", *extra], env)
                first["profiles_per_s"] = round(n / first["seconds"])
                first["share_of_limit"] = round(n / first["seconds"] / 1250, 3)  # 750 requests/min x 100
                first["http_429"] = fake.throttled
                fake.change_profiles(a.changed)
                seen = len(fake.request_log())
                inc = run(["sync-profiles", *extra], env)
                inc["profile_requests"] = sum(1 for r in fake.request_log()[seen:] if r["path"] == "/api/profiles")
                print(json.dumps({"profiles": n, "workers": workers, "latency": a.latency,
                                  "enforce_limits": a.enforce_limits, "fake_build_s": round(built, 1),
                                  "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)], "first": first,
                                  f"incremental_{a.changed}_changed": inc}), flush=True)


if __name__ == "__main__":
    main()
