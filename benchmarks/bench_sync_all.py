"""The hourly `sync-all` on an unchanged large account: how long it takes and which requests
(and how much report quota) it spends.

    PYTHONPATH=. python benchmarks/bench_sync_all.py            # 5,000,000 events, 200,000 profiles, 200 flows, 500 campaigns
    PYTHONPATH=. python benchmarks/bench_sync_all.py --backfill-only --repeat 1   # the cache's backfill alone: its peak RSS

The fake account holds the whole account at that size (5,000,000 events over a year: the fake
stores a few bytes per event and computes the rest; built in about a minute), with its clock
fixed at the instant the cache was built, so every run of this benchmark serves the same
account, and no event is newer than the last sync: the account is unchanged.

The database: what a completed first sync leaves, made by the tool itself against that fake
(client limits raised, the fake not enforcing Klaviyo's), once, then cached under
benchmarks/.cache/ (rebuilt when the schema or the sizes change, or with --rebuild):
`sync-events --since <a year before>` (the backfill of all 5,000,000 events), then `sync-all`
(profiles, lists, segments, campaigns with statistics, flows with definitions, templates, flow
statistics, forms, segment growth ...).

Each measurement: a fresh copy of the cached file; one unmeasured `sync-all` (the previous
hour's run: it reads whatever statistics their rules say are due now); then the fake enforces
Klaviyo's limits (429 beyond them, 225 reports a day) and, the account unchanged, `sync-all`
runs ``--repeat`` times, a minute apart (the fake's minute windows start empty, as an hour
apart they would): wall time from spawn to exit, CPU and peak RSS (GNU time), each step's
seconds (sync_runs), requests per step and path (the fake's request log, split in order by
each step's recorded request count) and report requests (quota).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import code_version, remove_db  # noqa: E402
from bench_incremental import CACHE, fresh_copy, iso, schema_fingerprint  # noqa: E402

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo  # noqa: E402

BUILD_VERSION = 1  # bump when the way the cached database is made changes
REPORT_RE = re.compile(r"^/api/(campaign|flow|form|segment)-(values|series)-reports/?$")
# Raised for building the cache only: the fake does not enforce limits then, and Klaviyo's
# flow (60/min) and report (2/min) limits would make the first sync take most of an hour.
FAST_LIMITS = ("profiles=100000/6000000,flows=1000/60000,reports=100/6000,campaigns=1000/60000,"
               "templates=1000/60000,accounts=100/6000,segments=1000/60000,lists=1000/60000")


def per_step(log: list[dict], runs: dict) -> dict:
    """{step: {path: requests}} from the fake's request log. Steps run one after another and each
    records how many requests it made (429s included), so the log splits in order: first the
    key's account check, then each step's share."""
    out: dict = {}
    i = 0
    if log and log[0]["path"] == "/api/accounts":
        out["account check"] = {"/api/accounts": 1}
        i = 1
    for step, info in runs.items():
        n = info["requests"] or 0
        chunk = log[i:i + n]
        i += n
        if chunk:
            out[step] = dict(collections.Counter(
                "/api/flows/{id}" if q["path"].startswith("/api/flows/") else q["path"] for q in chunk))
    if i != len(log):
        out["unaccounted"] = len(log) - i
    return out


def make_fake(a, now: datetime) -> FakeKlaviyo:
    return FakeKlaviyo(n_events=a.events, span_hours=24 * 365, now=now, n_profiles=a.profiles, n_quiet_profiles=0,
                       n_flows=a.flows, n_campaigns_per_channel=max(1, a.campaigns // 3))


# Runs `python -m klaviyo_sync` from the code in argv[1] (--before): an editable install's
# import hook would otherwise find this checkout's package whatever PYTHONPATH says.
_FROM_DIR = ("import runpy, sys; d = sys.argv.pop(1); sys.path.insert(0, d); "
             "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
             "runpy.run_module('klaviyo_sync', run_name='__main__', alter_sys=True)")


def run(args: list[str], env: dict, code_dir: Path | None = None) -> dict:
    t0 = time.monotonic()
    python = [sys.executable, "-m", "klaviyo_sync"] if code_dir is None else [sys.executable, "-c", _FROM_DIR, str(code_dir)]
    proc = subprocess.run(["/usr/bin/time", "-f", "TIME %M %U %S", *python, *args],
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()[1:]
    return {"rc": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            "cpu_s": round(float(user) + float(system), 2),
            "stderr": "\n".join(proc.stderr.strip().splitlines()[:-1])[-1500:]}


def count(db: Path, sql: str):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def remove_side_files(db: Path) -> None:
    for suffix in ("-wal", "-shm", ".lock", ".ratelimit", ".ratelimit-wal", ".ratelimit-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def cached_db(a) -> tuple[Path, dict]:
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    stem = f"sync_all-e{a.events}-p{a.profiles}-f{a.flows}-c{a.campaigns}-{schema_fingerprint(BUILD_VERSION)}"
    path, meta_path = CACHE / f"{stem}.db", CACHE / f"{stem}.json"
    if path.exists() and meta_path.exists() and not a.rebuild:
        return path, json.loads(meta_path.read_text())
    for old in CACHE.glob(f"sync_all-e{a.events}-p{a.profiles}-f{a.flows}-c{a.campaigns}-*"):
        old.unlink()
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    t0 = time.monotonic()
    fake = make_fake(a, now)
    meta: dict = {"now": now.isoformat(), "fake_build_s": round(time.monotonic() - t0, 1)}
    print(f"building {path.name} (cached for later runs): fake built in {meta['fake_build_s']} s", flush=True)
    tmp = path.with_name(path.name + ".building")
    remove_db(tmp)
    with fake:
        env = {**os.environ, "KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url,
               "KLAVIYO_SYNC_DB": str(tmp), "KLAVIYO_RATE_LIMITS": FAST_LIMITS}
        since = iso(now.timestamp() - 365 * 86400 - 3600)
        for name, cmd in (("backfill", ["sync-events", "--since", since, "-q"]), ("first_sync_all", ["sync-all", "-q"])):
            r = run(cmd, env)
            print(f"  {name}: {r['seconds']} s (rc {r['rc']}), CPU {r['cpu_s']} s, peak RSS {r['peak_rss_mb']} MB "
                  f"{r['stderr'] if r['rc'] else ''}", flush=True)
            if r["rc"] != 0:
                raise SystemExit(f"{name} failed: {r['stderr']}")
            meta[name] = r
    events, profiles = count(tmp, "SELECT count(*) FROM events"), count(tmp, "SELECT count(*) FROM profiles")
    if events != a.events or profiles != len(fake.live_profile_ids()):
        raise SystemExit(f"the first sync stored {events:,} events and {profiles:,} profiles, "
                         f"the fake holds {a.events:,} and {len(fake.live_profile_ids()):,}")
    meta.update({"events": events, "profiles": profiles, "bytes": tmp.stat().st_size,
                 "build_s": round(time.monotonic() - t0, 1), "code": code_version()})
    os.replace(tmp, path)
    remove_side_files(tmp)
    meta_path.write_text(json.dumps(meta))
    return path, meta


def steps(db: Path, after_id: int) -> dict:
    conn = sqlite3.connect(db)
    try:
        return {cmd: {"seconds": s, "status": st, "requests": r} for cmd, s, st, r in conn.execute(
            "SELECT command, seconds, status, requests FROM sync_runs WHERE id > ? ORDER BY id", [after_id])}
    finally:
        conn.close()


STATS_TABLES = ("campaign_stats", "flow_stats_daily", "flow_stats_days", "form_stats_daily", "segment_growth_daily")


def age_statistics(db: Path, hours: float) -> None:
    """As if every statistic had been read ``hours`` earlier (the hourly runs in between read none)."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            for table in STATS_TABLES:
                conn.execute(f"UPDATE {table} SET fetched_at = strftime('%Y-%m-%dT%H:%M:%SZ', fetched_at, ?)",
                             [f"-{round(hours * 60)} minutes"])
    finally:
        conn.close()


def last_run_id(db: Path) -> int:
    return count(db, "SELECT coalesce(max(id), 0) FROM sync_runs")


def backfill_only(a) -> int:
    """The backfill that builds the cache, measured on its own: seconds, CPU and peak RSS (GNU
    time) of `sync-events --since <a year before> -q` into an empty scratch database."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    t0 = time.monotonic()
    fake = make_fake(a, now)
    print(f"fake built in {time.monotonic() - t0:.0f} s", flush=True)
    db = CACHE / "work" / f"backfill-{os.getpid()}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    since = iso(now.timestamp() - 365 * 86400 - 3600)
    out: dict = {"bench": "sync_all_backfill", "events": a.events, "profiles": a.profiles, "code": code_version(),
                 "runs": []}
    with fake:
        env = {**os.environ, "KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url,
               "KLAVIYO_SYNC_DB": str(db), "KLAVIYO_RATE_LIMITS": FAST_LIMITS}
        for rep in range(a.repeat):
            for code in (["before", "after"] if a.before else ["this"]):
                remove_db(db)
                remove_side_files(db)
                load0 = os.getloadavg()[0]
                r = run(["sync-events", "--since", since, "-q"], env, a.before if code == "before" else None)
                r.update(code=code, load=[round(load0, 1), round(os.getloadavg()[0], 1)],
                         events=count(db, "SELECT count(*) FROM events") if r["rc"] == 0 else None)
                print(f"  backfill {rep} ({code}): {r['seconds']} s (rc {r['rc']}), CPU {r['cpu_s']} s, "
                      f"peak RSS {r['peak_rss_mb']} MB, {r['events']} events, load {r['load'][0]}-{r['load'][1]}"
                      f"{' ' + r['stderr'] if r['rc'] else ''}", flush=True)
                out["runs"].append(r)
    remove_db(db)
    remove_side_files(db)
    print(json.dumps(out))
    return 0 if all(r["rc"] == 0 for r in out["runs"]) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--profiles", type=int, default=200_000)
    ap.add_argument("--flows", type=int, default=200)
    ap.add_argument("--campaigns", type=int, default=500, help="in all, split over the 3 channels")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pause", type=float, default=61.0, help="seconds between runs (default 61)")
    ap.add_argument("--target", type=float, default=10.0)
    ap.add_argument("--stats-age", type=float, default=0.0, metavar="HOURS",
                    help="before each measured run, date every stored statistic's fetched_at back this many hours: "
                         "the run 6 hours after they were read (--stats-age 6.05), when the settling ones are due")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the cached database and stop")
    ap.add_argument("--backfill-only", action="store_true",
                    help="measure only the cache's backfill (`sync-events --since` a year) into a scratch database, "
                         "--repeat times (with --before: alternating with the older code), and stop")
    ap.add_argument("--before", type=Path, default=None, metavar="DIR",
                    help="a directory holding older code's klaviyo_sync/ (e.g. from git archive): its runs alternate with this code's")
    a = ap.parse_args()

    if a.backfill_only:
        return backfill_only(a)
    src, meta = cached_db(a)
    print(f"database {src.name}: {meta['events']:,} events, {meta['profiles']:,} profiles, "
          f"{meta['bytes'] / 1e9:.2f} GB (built in {meta['build_s']} s); the fake's clock {meta['now']}", flush=True)
    if a.build_only:
        return 0
    db = CACHE / "work" / f"sync_all-{os.getpid()}.db"
    db.parent.mkdir(exist_ok=True)
    fresh_copy(src, db)
    t0 = time.monotonic()
    fake = make_fake(a, datetime.fromisoformat(meta["now"]))
    print(f"fake built in {time.monotonic() - t0:.0f} s", flush=True)
    out: dict = {"bench": "sync_all", "events": a.events, "profiles": a.profiles, "flows": a.flows,
                 "campaigns": a.campaigns, "code": code_version(), "runs": []}
    with fake:
        env = {**os.environ, "KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url,
               "KLAVIYO_SYNC_DB": str(db)}
        seen, first_id = len(fake.request_log()), last_run_id(db)
        prime = run(["sync-all"], env)
        log = fake.request_log()[seen:]
        prime["requests_per_step"] = per_step(log, steps(db, first_id))
        prime["report_requests"] = sum(1 for q in log if REPORT_RE.match(q["path"]))
        print(f"previous hour's run: {prime['seconds']} s (rc {prime['rc']}), {len(log)} requests, "
              f"{prime['report_requests']} report requests", flush=True)
        out["prime"] = {k: v for k, v in prime.items() if k != "stderr"}
        fake.enforce_limits = True
        plan = [(rep, code) for rep in range(a.repeat) for code in (["before", "after"] if a.before else ["this"])]
        for rep, code in plan:
            time.sleep(a.pause)
            if a.stats_age:
                age_statistics(db, a.stats_age)
            seen, first_id = len(fake.request_log()), last_run_id(db)
            load0 = os.getloadavg()[0]
            r = run(["sync-all"], env, a.before if code == "before" else None)
            r["code"] = code
            log = fake.request_log()[seen:]
            r["load_avg_1m"] = round(load0, 1)
            r["requests"] = len(log)
            r["steps"] = steps(db, first_id)
            r["requests_per_step"] = per_step(log, r["steps"])
            r["report_requests"] = sum(1 for q in log if REPORT_RE.match(q["path"]))
            r["http_429"] = {q["path"]: sum(1 for x in log if x["status"] == 429 and x["path"] == q["path"])
                             for q in log if q["status"] == 429}
            if not r["rc"]:
                r.pop("stderr")
            out["runs"].append(r)
            slow = sorted(((v["seconds"] or 0, k) for k, v in r["steps"].items()), reverse=True)[:5]
            print(f"  run {rep} ({code}): {r['seconds']:.2f} s (rc {r['rc']}), peak RSS {r['peak_rss_mb']} MB, "
                  f"CPU {r['cpu_s']} s, {len(log)} requests, {r['report_requests']} report requests, "
                  f"429s {r['http_429']}, load {load0:.1f}; slowest steps {[(k, round(s, 2)) for s, k in slow]}"
                  + (f"\n    stderr: {r['stderr']}" if r["rc"] else ""), flush=True)
            print("    requests per step: " + "; ".join(
                f"{k} {sum(v.values()) if isinstance(v, dict) else v} ({r['steps'].get(k, {}).get('seconds') or 0:.2f} s)"
                for k, v in r["requests_per_step"].items()), flush=True)
    remove_db(db)
    remove_side_files(db)
    mine = [r for r in out["runs"] if r["code"] != "before"]
    walls = [r["seconds"] for r in mine]
    if a.before:
        before = [r["seconds"] for r in out["runs"] if r["code"] == "before"]
        print(f"\nbefore ({a.before}): median {statistics.median(before):.2f} s, report requests "
              f"{[r['report_requests'] for r in out['runs'] if r['code'] == 'before']}")
    out["median_s"] = statistics.median(walls)
    out["median_cpu_s"] = statistics.median(r["cpu_s"] for r in mine)
    out["max_peak_rss_mb"] = max(r["peak_rss_mb"] for r in mine)
    out["meets_target"] = max(walls) < a.target and all(r["rc"] == 0 for r in mine)
    print(f"\nmedian {out['median_s']:.2f} s (CPU {out['median_cpu_s']:.2f} s), max {max(walls):.2f} s "
          f"(target < {a.target:g} s: {'met' if out['meets_target'] else 'NOT met'}); peak RSS up to "
          f"{out['max_peak_rss_mb']} MB; report requests {[r['report_requests'] for r in mine]}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
