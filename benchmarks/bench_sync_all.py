"""The hourly `sync-all` on an unchanged large account: how long it takes and which requests
(and how much report quota) it spends.

    PYTHONPATH=. python benchmarks/bench_sync_all.py            # 5,000,000 events, 200,000 profiles, 200 flows, 500 campaigns

The database: the cached synthetic 5M-event file of bench_incremental.py (built once), copied,
then primed by one `sync-all` against an in-process fake holding the account (its profiles,
flows, campaigns, lists, segments and a day of events), with the client's limits raised so the
priming takes minutes, not the hour Klaviyo's flow limits would. Then the fake enforces
Klaviyo's limits (429 beyond them, 225 reports a day) and, the account unchanged, `sync-all`
runs ``--repeat`` times, a minute apart (the fake's minute windows start empty, as an hour
apart they would): wall time from spawn to exit, each step's seconds (sync_runs), requests per
path and report requests (quota) from the fake's request log.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import remove_db  # noqa: E402
from bench_incremental import CACHE, cached_db, fresh_copy  # noqa: E402

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo  # noqa: E402

REPORT_PATHS = ("/api/campaign-values-reports", "/api/flow-series-reports", "/api/flow-values-reports")


def run(args: list[str], env: dict) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "TIME %M %U %S", sys.executable, "-m", "klaviyo_sync", *args],
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()[1:]
    return {"rc": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            "cpu_s": round(float(user) + float(system), 2),
            "stderr": "\n".join(proc.stderr.strip().splitlines()[:-1])[-1500:] if proc.returncode else ""}


def steps(db: Path, after_id: int) -> dict:
    conn = sqlite3.connect(db)
    try:
        return {cmd: {"seconds": s, "status": st, "requests": r} for cmd, s, st, r in conn.execute(
            "SELECT command, seconds, status, requests FROM sync_runs WHERE id > ? ORDER BY id", [after_id])}
    finally:
        conn.close()


def last_run_id(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT coalesce(max(id), 0) FROM sync_runs").fetchone()[0]
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-events", type=int, default=5_000_000)
    ap.add_argument("--profiles", type=int, default=200_000)
    ap.add_argument("--flows", type=int, default=200)
    ap.add_argument("--campaigns", type=int, default=500, help="in all, split over the 3 channels")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pause", type=float, default=61.0, help="seconds between measured runs (default 61)")
    ap.add_argument("--target", type=float, default=10.0)
    ap.add_argument("--before", type=Path, default=None, metavar="DIR",
                    help="a checkout of older code (its klaviyo_sync/ on PYTHONPATH): its runs alternate with this code's")
    a = ap.parse_args()

    src, meta = cached_db(a.db_events, 1000, False)
    db = CACHE / "work" / f"sync_all-{os.getpid()}.db"
    db.parent.mkdir(exist_ok=True)
    remove_db(db)
    fresh_copy(src, db)
    conn = sqlite3.connect(db)
    with conn:  # the synthetic metrics' names would clash with the fake's ("Placed Order" twice)
        conn.execute("UPDATE metrics SET name = name || ' (history)' WHERE id LIKE 'SYN%'")
    conn.close()
    t0 = time.monotonic()
    fake = FakeKlaviyo(n_events=2000, span_hours=24, n_profiles=a.profiles, n_quiet_profiles=0,
                       n_flows=a.flows, n_campaigns_per_channel=max(1, a.campaigns // 3))
    print(f"fake built in {time.monotonic() - t0:.0f} s; database {src.name} ({meta['events']:,} events)", flush=True)
    out: dict = {"bench": "sync_all", "db_events": a.db_events, "profiles": a.profiles, "flows": a.flows,
                 "campaigns": a.campaigns, "runs": []}
    with fake:
        env = {**os.environ, "KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url,
               "KLAVIYO_SYNC_DB": str(db)}
        prime_env = {**env, "KLAVIYO_RATE_LIMITS": "profiles=100000/6000000,flows=1000/60000,reports=100/6000"}
        prime = run(["sync-all"], prime_env)
        print(f"primed in {prime['seconds']} s (rc {prime['rc']}) {prime['stderr']}", flush=True)
        out["prime"] = prime
        fake.enforce_limits = True
        plan = [(rep, code) for rep in range(a.repeat) for code in (["before", "after"] if a.before else ["this"])]
        for rep, code in plan:
            time.sleep(a.pause)
            seen, first_id = len(fake.request_log()), last_run_id(db)
            load0 = os.getloadavg()[0]
            run_env = env if code != "before" else {**env, "PYTHONPATH": str(a.before)}
            r = run(["sync-all"], run_env)
            r["code"] = code
            log = fake.request_log()[seen:]
            r["load_avg_1m"] = round(load0, 1)
            r["requests"] = dict(collections.Counter(
                "/api/flows/{id}" if q["path"].startswith("/api/flows/") else q["path"] for q in log))
            r["report_requests"] = sum(1 for q in log if q["path"] in REPORT_PATHS)
            r["http_429"] = sum(1 for q in log if q["status"] == 429)
            r["steps"] = steps(db, first_id)
            out["runs"].append(r)
            slow = sorted(((v["seconds"] or 0, k) for k, v in r["steps"].items()), reverse=True)[:4]
            print(f"  run {rep} ({code}): {r['seconds']:.2f} s (rc {r['rc']}), peak RSS {r['peak_rss_mb']} MB, CPU {r['cpu_s']} s, "
                  f"{len(log)} requests, {r['report_requests']} report requests, {r['http_429']} x 429, load {load0:.1f}; "
                  f"slowest steps {[(k, round(s, 2)) for s, k in slow]}", flush=True)
            print(f"    requests by path: {r['requests']}", flush=True)
    walls = [r["seconds"] for r in out["runs"] if r["code"] != "before"]
    if a.before:
        before = [r["seconds"] for r in out["runs"] if r["code"] == "before"]
        print(f"\nbefore ({a.before}): median {statistics.median(before):.2f} s, report requests "
              f"{[r['report_requests'] for r in out['runs'] if r['code'] == 'before']}")
    out["median_s"] = statistics.median(walls)
    out["meets_target"] = max(walls) < a.target and all(r["rc"] == 0 for r in out["runs"])
    print(f"\nmedian {out['median_s']:.2f} s, max {max(walls):.2f} s (target < {a.target:g} s: "
          f"{'met' if out['meets_target'] else 'NOT met'}); report requests {[r['report_requests'] for r in out['runs'] if r['code'] != 'before']}")
    print(json.dumps(out))
    remove_db(db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
