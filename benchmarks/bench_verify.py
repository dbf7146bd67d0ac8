"""Requests and wall time of `verify --range 90d` over 40 metrics at the enforced rate tier
(metric-aggregates 3/s, 60/m), and what `--repair` costs for one bad day.

    PYTHONPATH=. python benchmarks/bench_verify.py [--events 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

UTC = timezone.utc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--metrics", type=int, default=40)
    args = ap.parse_args()
    now = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), dtime(12), UTC)
    start = now - timedelta(days=92)
    with tempfile.TemporaryDirectory() as tmp, FakeKlaviyo(
            now=now, n_events=args.events, n_metrics=args.metrics, span_hours=24 * 92, n_profiles=2000) as fake:
        db = Path(tmp) / "bench.db"
        env = dict(os.environ, KLAVIYO_API_KEY=FAKE_API_KEY, KLAVIYO_BASE_URL=fake.base_url,
                   KLAVIYO_SYNC_DB=str(db))

        def run(*a):
            n0 = len(fake.request_log())
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "klaviyo_sync", *a], env=env, capture_output=True, text=True)
            dt = time.monotonic() - t0
            log = fake.request_log()[n0:]
            by = {}
            for q in log:
                key = (q["path"], q["status"])
                by[key] = by.get(key, 0) + 1
            print(f"$ klaviyo-sync {' '.join(a)}: exit {p.returncode}, {dt:.1f} s, {len(log)} requests {by}")
            print("  " + p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "")
            return p

        run("sync-events", "--since", start.isoformat(), "--until", now.isoformat(), "-q")
        fake.enforce_limits = True
        run("verify", "--range", "90d", "--format", "json")
        bad = (now - timedelta(days=10)).date()
        fake.add_late_events(fake.metric_id("Placed Order"), at=datetime.combine(bad, dtime(9, 15), UTC), n=5)
        fake.add_late_events(fake.metric_id("Placed Order"), at=datetime.combine(bad, dtime(17, 40), UTC), n=2)
        time.sleep(61)  # a fresh minute window: the repair's own cost, not the previous run's budget
        run("verify", "--range", "90d", "--format", "json", "--repair")


if __name__ == "__main__":
    main()
