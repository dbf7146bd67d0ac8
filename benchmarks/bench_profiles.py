"""sync-profiles over the fake API with no latency: the tool's speed and memory, not the API's.

    PYTHONPATH=. python benchmarks/bench_profiles.py [--sizes 50000,200000] [--changed 1000]

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
    a = ap.parse_args()
    for n in (int(x) for x in a.sizes.split(",")):
        t0 = time.monotonic()
        fake = FakeKlaviyo(n_profiles=n, n_events=0, n_quiet_profiles=0, n_lists=0, n_segments=0)
        built = time.monotonic() - t0
        with fake, tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url,
                   "KLAVIYO_SYNC_DB": str(Path(tmp) / "k.db"),
                   # the tool is measured, not Klaviyo's 750/min (which alone makes 200k take 3 min)
                   "KLAVIYO_RATE_LIMITS": "profiles=100000/6000000"}
            first = run(["sync-profiles"], env)
            first["profiles_per_s"] = round(n / first["seconds"])
            fake.change_profiles(a.changed)
            inc = run(["sync-profiles"], env)
            print(json.dumps({"profiles": n, "fake_build_s": round(built, 1), "first": first,
                              f"incremental_{a.changed}_changed": inc}), flush=True)


if __name__ == "__main__":
    main()
