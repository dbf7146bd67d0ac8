#!/usr/bin/env python
"""Throughput and memory of `klaviyo-sync sync-events` against a plain baseline.

For each N in --events, and for each run (the baseline, then the tool once per --workers value):
a FRESH fake API process (python -m klaviyo_sync.fake) serving N events, all inside the synced
window; the measured program in its own subprocess writing a fresh database; wall time (fork to
exit), events/s, peak RSS, CPU (from wait4 on that child) and the fake's own CPU and 429 count
(GET /_fake/stats). Then both databases are checked to hold the same N event ids.

    python benchmarks/bench_events.py --events 200000
    python benchmarks/bench_events.py --events 500000                       # throughput target
    python benchmarks/bench_events.py --events 300000 --latency 0.2 --enforce-limits
    python benchmarks/bench_events.py --events 50000,200000,1000000 --no-baseline   # memory vs N

A fresh fake per run keeps the runs independent: the fake's rate-limit windows (with
--enforce-limits) and its request counters start at zero for each.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import (code_version, emit_result, BENCH_DIR, FAKE_API_KEY, PYTHON, REPO, Fake, default_workers, iso_z, remove_db,
                      run_measured, system_busy_s, table, tool_exe, tool_env)


def check_query_matches_tool() -> None:
    """The baseline must send the tool's query: fail loudly if sync.py's strings changed."""
    import baseline_events as base
    from klaviyo_sync.streams import events as sync

    mine = (base.EVENT_FIELDS, base.PROFILE_FIELDS, base.METRIC_FIELDS, base.PAGE_SIZE)
    tools = (sync.EVENT_FIELDS, sync.PROFILE_FIELDS, sync.METRIC_FIELDS, sync.EVENT_PAGE_SIZE)
    if mine != tools:
        sys.exit(f"baseline_events.py's query no longer matches klaviyo_sync/streams/events.py: {mine} != {tools}")


def window_for(fake: Fake, span_hours: float) -> tuple[str, str]:
    """A window holding every event of a fake started at fake.started_at.

    The fake puts its events in [now - span, now) with now = its start time (whole seconds), so
    [started_at - span, ready_at) covers them all; ready_at is before the tool's own "now", so
    the tool does not clamp the end.
    """
    since = int(fake.started_at) - int(span_hours * 3600) - 1
    until = int(fake.ready_at) + 1
    while time.time() < until:  # the tool refuses an --until in the future (it clamps to now)
        time.sleep(0.05)
    return iso_z(since), iso_z(until)


def db_summary(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        out = {"events": conn.execute("SELECT count(*) FROM events").fetchone()[0],
               "profiles": conn.execute("SELECT count(*) FROM profiles").fetchone()[0],
               "metrics": conn.execute("SELECT count(*) FROM metrics").fetchone()[0]}
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sync_runs'").fetchone():
            row = conn.execute("SELECT status, seconds, requests, retries, rate_limit_wait_s, error "
                               "FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
            if row:
                out.update(zip(["status", "tool_seconds", "tool_requests", "tool_retries", "tool_rate_limit_wait_s",
                                "tool_error"], row))
        return out
    finally:
        conn.close()


def same_ids(a: Path, b: Path) -> tuple[int, int]:
    """(ids only in a, ids only in b)."""
    conn = sqlite3.connect(a)
    try:
        conn.execute("ATTACH DATABASE ? AS other", [str(b)])
        only_a = conn.execute("SELECT count(*) FROM main.events WHERE id NOT IN (SELECT id FROM other.events)").fetchone()[0]
        only_b = conn.execute("SELECT count(*) FROM other.events WHERE id NOT IN (SELECT id FROM main.events)").fetchone()[0]
        return only_a, only_b
    finally:
        conn.close()


def load_reference(path: Path) -> dict:
    """{(N, workers): events/s} of the tool runs in an earlier bench_events output (its JSON line);
    also {(None, workers): ...} from the largest N, for a reference taken at another size."""
    rates: dict = {}
    for line in path.read_text().splitlines():
        if line.startswith('{"bench":"events"'):
            d = json.loads(line)
            for s in sorted(d["summary"], key=lambda s: s["events"]):
                if s["kind"] == "tool":
                    rates[(s["events"], s["workers"])] = s["events_per_s"]
                    rates[(None, s["workers"])] = s["events_per_s"]
    if not rates:
        sys.exit(f"no bench_events JSON line with tool runs in {path}")
    return rates


def profiles_for(n: int, args) -> int | None:
    """Distinct profiles in the fake: --profiles, else events/20 on the realistic shape (one
    distinct profile per ~20 events over a week, as in real accounts), else the fake's 300."""
    if args.profiles is not None:
        return args.profiles
    if args.shape == "realistic":
        return max(300, round(n * args.profiles_per_event))
    return None


def shape_args(args) -> list[str]:
    out = ["--metrics", str(args.metrics)]
    if args.shape == "realistic":
        out += ["--profile-shape", "realistic", "--diurnal", "--events-per-visit", str(args.events_per_visit)]
    return out


def one_run(kind: str, workers: int | None, n: int, args, workdir: Path, rep: int, latency: float = 0.0) -> dict:
    db = workdir / f"{kind}{'' if workers is None else f'-w{workers}'}-{n}-l{latency:g}-r{rep}.db"
    remove_db(db)
    fake = Fake(events=n, span_hours=args.span_hours, latency=latency, enforce_limits=args.enforce_limits,
                seed=args.seed, profiles=profiles_for(n, args), extra=shape_args(args)).start()
    try:
        since, until = window_for(fake, args.span_hours)
        cpu0 = fake.cpu_seconds()
        busy0 = system_busy_s()
        if kind == "baseline":
            cmd = [PYTHON, str(BENCH_DIR / "baseline_events.py"), "--base-url", fake.url, "--api-key", FAKE_API_KEY,
                   "--since", since, "--until", until, "--db", str(db), "--mode", args.baseline_mode, *args.baseline_arg]
            env = None
        else:
            cmd = [tool_exe(), "sync-events", "--since", since, "--until", until, "--workers", str(workers)]  # no -q: its summary says how the fetchers grew
            if kind.endswith("noattr"):  # --without-attributions: the same code asking include=metric,profile
                cmd[:1] = [PYTHON, str(BENCH_DIR / "without_attributions.py")]
            env = tool_env(fake.url, db)
            if kind.startswith("other"):  # --other-code: the same command from another checkout
                env["PYTHONPATH"] = str(args.other_code)
        m = run_measured(cmd, env=env, cwd=REPO, timeout=args.timeout)
        fake_cpu = fake.cpu_seconds() - cpu0
        other_cpu = system_busy_s() - busy0 - fake_cpu - m.user_s - m.sys_s
        stats = fake.stats()
    finally:
        fake.stop()
    run = kind if workers is None else f"{kind} w={workers}"
    if len(args.latencies) > 1:
        run += f" @{latency * 1000:g}ms"
    row = {"events": n, "run": run, "kind": kind, "workers": workers, "latency": latency,
           "rep": rep, "rc": m.rc, "wall_s": round(m.wall_s, 3), "events_per_s": round(n / m.wall_s, 1),
           "peak_rss_mb": round(m.maxrss_mb, 1), "cpu_s": round(m.user_s + m.sys_s, 2),
           "last_vmhwm_mb": round(m.extra["last_vmhwm_kb"] / 1024, 1) if m.extra.get("last_vmhwm_kb") else None,
           "user_s": round(m.user_s, 2), "sys_s": round(m.sys_s, 2), "rss_timeline_mb": m.rss_timeline_mb(),
           "fake_cpu_s": round(fake_cpu, 2), "fake_cpu_pct": round(100 * fake_cpu / m.wall_s),
           "other_cpu_pct": round(100 * max(0.0, other_cpu) / m.wall_s),
           "requests": stats["requests"], "http_429": stats["throttled"], "window": [since, until], "db": str(db)}
    if m.rc != 0:
        row["error"] = (m.stderr.strip() or m.stdout.strip())[-2000:]
        print(f"  !! {row['run']} exited {m.rc}: {row['error']}", file=sys.stderr)
    row["events_per_cpu_s"] = round(n / max(m.user_s + m.sys_s, 0.001))
    try:
        report = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = None
    if kind == "baseline" and report is not None:
        row["self_report"] = report
    elif isinstance(report, dict):  # the tool's summary: when its fetcher count changed
        row["fetchers_over_time"] = report.get("fetchers_over_time")
    if kind == "baseline" and args.baseline_mode != "full":
        row["stored"] = None
    else:
        row["stored"] = db_summary(db) if db.exists() else None
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--events", default="200000", help="events the fake serves; a comma list runs each size (default 200000)")
    ap.add_argument("--workers", default=None, help="comma list of --workers values for the tool (default: 1 and the tool's default)")
    ap.add_argument("--latency", default="0", help="seconds the fake adds to each request (default 0); a comma list "
                    "(e.g. 0,0.1) alternates them within each round and prints each tool rate against its own at 0")
    ap.add_argument("--enforce-limits", action="store_true", help="the fake enforces Klaviyo's rate limits (answers 429)")
    ap.add_argument("--shape", choices=["realistic", "small"], default="realistic",
                    help="realistic (default): events/20 distinct profiles with ~1 KB of properties and location, "
                         "40 metrics, 7 days of events following the day (quiet nights), visits of 4 events; "
                         "small: the fake's defaults (300 small profiles, 12 metrics, 24 h, even spread)")
    ap.add_argument("--span-hours", type=float, default=None,
                    help="hours over which the fake spreads the events (default 168 realistic, 24 small)")
    ap.add_argument("--profiles", type=int, default=None,
                    help="distinct profiles in the fake account (default: events x --profiles-per-event "
                         "on the realistic shape, 300 on the small one)")
    ap.add_argument("--profiles-per-event", type=float, default=0.05, help="realistic shape (default 0.05 = 1/20)")
    ap.add_argument("--metrics", type=int, default=None, help="metrics in the account (default 40 realistic, 12 small)")
    ap.add_argument("--events-per-visit", type=int, default=4,
                    help="realistic shape: consecutive events of one profile (default 4: ~250 profiles a page)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each program per size; medians are reported (default 1)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline (e.g. for memory-only runs)")
    ap.add_argument("--no-tool", action="store_true", help="run the baseline only")
    ap.add_argument("--baseline-mode", choices=["full", "fetch", "decode"], default="full",
                    help="full (default); fetch = HTTP only, decode = HTTP + json: how fast the fake serves a plain client")
    ap.add_argument("--workdir", type=Path, default=None, help="where the databases go (default: a temporary directory, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a measured run is killed")
    ap.add_argument("--min-rate", type=float, default=None,
                    help="events/s each tool run must reach (e.g. the latency target); reported as met / NOT met")
    ap.add_argument("--reference", type=Path, default=None, metavar="OUT.txt|JSONL",
                    help="the output of an earlier no-latency run: each tool run must then reach "
                         "FACTOR x min(CAP, that run's events/s for the same --workers) with no 429 (the latency target)")
    ap.add_argument("--reference-factor", type=float, default=0.7)
    ap.add_argument("--reference-cap", type=float, default=58000.0, help="events/s (Klaviyo's steady limit, 3,500 pages/min)")
    ap.add_argument("--baseline-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for baseline_events.py (repeatable), e.g. --baseline-arg=--pragma=cache_size=-32768")
    ap.add_argument("--other-code", type=Path, default=None, metavar="DIR",
                    help="also run the tool from this checkout (PYTHONPATH=DIR), alternating with this code: "
                         "e.g. the code before a change, in the same rounds")
    ap.add_argument("--without-attributions", action="store_true",
                    help="also run this code (and --other-code's) with sync-events asking include=metric,profile "
                         "(no attributions; benchmarks/without_attributions.py), alternating: what attributions cost")
    ap.add_argument("--json-out", type=Path, default=None, help="also append the JSON line to this file")
    args = ap.parse_args(argv)
    args.latencies = [float(x) for x in str(args.latency).split(",") if x.strip()]
    args.latency = args.latencies[0] if len(args.latencies) == 1 else args.latencies

    check_query_matches_tool()
    if args.span_hours is None:
        args.span_hours = 168.0 if args.shape == "realistic" else 24.0
    if args.metrics is None:
        args.metrics = 40 if args.shape == "realistic" else 12
    sizes = [int(x.replace("_", "")) for x in args.events.split(",") if x.strip()]
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else sorted({1, default_workers()}))
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_events_", dir=BENCH_DIR / ".cache" if (BENCH_DIR / ".cache").is_dir() else None)
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)

    print(f"bench_events: N={sizes} workers={workers} latency={args.latency}s enforce_limits={args.enforce_limits} "
          f"shape={args.shape} profiles={[profiles_for(n, args) or 300 for n in sizes]} metrics={args.metrics} "
          f"span={args.span_hours}h repeat={args.repeat} python={sys.version.split()[0]} code={code_version()}", flush=True)
    plan = [(kind, w, lat) for lat in args.latencies
            for kind, w in ([] if args.no_baseline else [("baseline", None)]) + ([] if args.no_tool else [("tool", w) for w in workers])
            + ([("other", w) for w in workers] if args.other_code else [])
            + ([("noattr", w) for w in workers] if args.without_attributions else [])
            + ([("other-noattr", w) for w in workers] if args.without_attributions and args.other_code else [])]
    rows: list[dict] = []
    verified = True
    problems: list[str] = []
    try:
        for n in sizes:
            per_size = []
            for rep in range(args.repeat):
                for kind, w, lat in plan:
                    row = one_run(kind, w, n, args, workdir, rep, lat)
                    print(f"  N={n:,} {row['run']:<12} rep {rep}: {row['wall_s']:.2f} s, {row['events_per_s']:,.0f} events/s, "
                          f"peak RSS {row['peak_rss_mb']:.1f} MB, {row['http_429']} x 429, fake CPU {row['fake_cpu_pct']}%, "
                          f"other load {row['other_cpu_pct']}% of a core, CPU {row['cpu_s']:.1f} s "
                          f"({row['events_per_cpu_s']:,} events per CPU-s)"
                          + (f", fetchers [s, n] {row['fetchers_over_time']}" if row.get("fetchers_over_time") else ""),
                          flush=True)
                    per_size.append(row)
            # verification: every stored db holds exactly the N ids, and the same ids as the reference
            stored = [r for r in per_size if r["stored"] is not None]
            for r in per_size:
                if r["rc"] != 0:
                    verified = False
                    problems.append(f"N={n} {r['run']} rep {r['rep']}: exit code {r['rc']}")
            for r in stored:
                if r["stored"]["events"] != n:
                    verified = False
                    problems.append(f"N={n} {r['run']} rep {r['rep']}: {r['stored']['events']} events stored, expected {n}")
                if r["kind"] in ("tool", "other", "noattr", "other-noattr") and r["stored"].get("status") != "ok":
                    verified = False
                    problems.append(f"N={n} {r['run']} rep {r['rep']}: sync_runs status {r['stored'].get('status')!r}")
            if len(stored) > 1:
                ref = stored[0]
                for r in stored[1:]:
                    only_ref, only_r = same_ids(Path(ref["db"]), Path(r["db"]))
                    r["ids_vs_ref"] = {"ref": ref["run"], "only_in_ref": only_ref, "only_here": only_r}
                    if only_ref or only_r:
                        verified = False
                        problems.append(f"N={n} {r['run']}: ids differ from {ref['run']} ({only_ref} only there, {only_r} only here)")
            if not args.keep:
                for r in per_size:
                    remove_db(Path(r["db"]))
            rows.extend(per_size)
    finally:
        if tmp is not None and not args.keep:
            tmp.cleanup()

    # medians per (N, run)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["events"], r["run"]), []).append(r)
    summary = []
    for (n, run), rs in groups.items():
        med = lambda k: statistics.median(x[k] for x in rs)  # noqa: E731
        summary.append({"events": n, "run": run, "kind": rs[0]["kind"], "workers": rs[0]["workers"],
                        "latency": rs[0]["latency"], "runs": len(rs),
                        "wall_s": round(med("wall_s"), 3), "events_per_s": round(med("events_per_s"), 1),
                        "events_per_cpu_s": round(med("events_per_cpu_s")),
                        "peak_rss_mb": round(max(x["peak_rss_mb"] for x in rs), 1), "cpu_s": round(med("cpu_s"), 2),
                        "fake_cpu_pct": round(med("fake_cpu_pct")), "other_cpu_pct": round(med("other_cpu_pct")),
                        "requests": max(x["requests"] for x in rs),
                        "http_429": sum(x["http_429"] for x in rs)})
    ratios = {}
    for s in summary:
        base = next((b for b in summary if b["events"] == s["events"] and b["kind"] == "baseline"
                     and b["latency"] == s["latency"]), None)
        if s["kind"] in ("tool", "other", "noattr", "other-noattr") and base:
            s["ratio"] = round(s["events_per_s"] / base["events_per_s"], 3)
            ratios[("" if s["kind"] == "tool" else f"{s['kind']}:") + f"{s['events']}:w{s['workers']}" + (f"@{s['latency']:g}" if len(args.latencies) > 1 else "")] = s["ratio"]
        # With --latency 0,X: the tool's rate at X as a share of its own no-latency rate in the same rounds.
        own = next((b for b in summary if b["events"] == s["events"] and b["kind"] == s["kind"]
                    and b["workers"] == s["workers"] and b["latency"] == 0 and s["latency"] > 0), None)
        if s["kind"] in ("tool", "other", "noattr", "other-noattr") and own:
            s["vs_no_latency"] = round(s["events_per_s"] / own["events_per_s"], 3)

    print()
    print(table(summary, [("events", "N", ","), ("run", "run", ""), ("wall_s", "wall s", ".2f"),
                          ("events_per_s", "events/s", ",.0f"), ("ratio", "tool/base", ".2f"),
                          ("vs_no_latency", "vs own 0 ms", ".2f"),
                          ("peak_rss_mb", "peak RSS MB", ".1f"), ("cpu_s", "CPU s", ".1f"),
                          ("events_per_cpu_s", "events/CPU-s", ",d"),
                          ("fake_cpu_pct", "fake CPU %", "d"), ("other_cpu_pct", "other load %", "d"),
                          ("requests", "requests", ","),
                          ("http_429", "429s", ",")]))
    ref_rates = load_reference(args.reference) if args.reference else {}
    if args.min_rate is not None or ref_rates:
        print()
        for s in summary:
            if s["kind"] != "tool":
                continue
            need, why = args.min_rate, "--min-rate"
            ref = ref_rates.get((s["events"], s["workers"])) or ref_rates.get((None, s["workers"]))
            if ref is not None:
                need = args.reference_factor * min(args.reference_cap, ref)
                why = f"{args.reference_factor:g} x min({args.reference_cap:,.0f}, {ref:,.0f} no-latency)"
            if need is None:
                continue
            s["required_events_per_s"] = round(need)
            s["meets_target"] = s["events_per_s"] >= need and s["http_429"] == 0
            print(f"N={s['events']:,} {s['run']}: {s['events_per_s']:,.0f} events/s vs required {need:,.0f} [{why}], "
                  f"{s['http_429']} x 429: {'met' if s['meets_target'] else 'NOT met'}")
    print()
    print("verified: " + ("yes, every database holds the expected event ids" if verified else "NO"))
    for p in problems:
        print("  " + p)
    result = {"bench": "events", "sizes": sizes, "workers": workers, "latency": args.latency,
              "enforce_limits": args.enforce_limits, "span_hours": args.span_hours, "shape": args.shape,
              "profiles": {n: profiles_for(n, args) for n in sizes}, "metrics": args.metrics,
              "baseline_mode": args.baseline_mode, "baseline_args": args.baseline_arg, "min_rate": args.min_rate,
              "reference": str(args.reference) if args.reference else None, "repeat": args.repeat, "verified": verified,
              "summary": summary, "ratios": ratios,
              "runs": [{k: v for k, v in r.items() if k not in ("db",)} for r in rows],
              "code": code_version(), "python": sys.version.split()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    emit_result(result, args.json_out)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
