#!/usr/bin/env python
"""Profile `klaviyo-sync sync-events` (no latency) and, optionally, the fake API serving the baseline.

For each --workers value, against a fresh fake serving N events:
  1. the plain `python -m cProfile -o OUT -m klaviyo_sync sync-events ...`: MAIN THREAD ONLY,
     i.e. the writer loop (the fetcher threads do HTTP, JSON and row building, unseen there);
  2. the same under benchmarks/profile_threads.py: every thread, written as OUT (all), OUT.main
     (writer) and OUT.threads (fetchers).
With --fake, the fake API itself runs under profile_threads.py while the baseline pages through it.

    python benchmarks/profile_events.py --events 200000 --workers 1,4 --fake
    python benchmarks/show_profile.py benchmarks/.cache/prof/tool-w1-threads.prof.threads

Profiling slows Python code that makes many calls (the per-event functions) more than C code
(sqlite, json), so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _harness import BENCH_DIR, FAKE_API_KEY, PYTHON, REPO, Fake, default_workers, remove_db, run_measured, tool_env
from bench_events import profiles_for, shape_args, window_for


def show(path: Path, top: int, out) -> None:
    proc = subprocess.run([PYTHON, str(BENCH_DIR / "show_profile.py"), str(path), "--top", str(top)],
                          capture_output=True, text=True)
    out.write(proc.stdout + proc.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--workers", default=None, help="comma list (default: 1 and the tool's default)")
    ap.add_argument("--span-hours", type=float, default=None, help="default 168 (realistic), 24 (small)")
    ap.add_argument("--shape", choices=["realistic", "small"], default="realistic", help="as in bench_events.py")
    ap.add_argument("--profiles", type=int, default=None)
    ap.add_argument("--profiles-per-event", type=float, default=0.05)
    ap.add_argument("--metrics", type=int, default=None)
    ap.add_argument("--events-per-visit", type=int, default=4)
    ap.add_argument("--styles", default="cprofile,threads", help="cprofile (main thread only), threads (per thread)")
    ap.add_argument("--fake", action="store_true", help="also profile the fake API while the baseline pages through it")
    ap.add_argument("--without-attributions", action="store_true",
                    help="profile the tool asking include=metric,profile (benchmarks/without_attributions.py)")
    ap.add_argument("--outdir", type=Path, default=BENCH_DIR / ".cache" / "prof")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    if args.span_hours is None:
        args.span_hours = 168.0 if args.shape == "realistic" else 24.0
    if args.metrics is None:
        args.metrics = 40 if args.shape == "realistic" else 12
    fake_kw = dict(profiles=profiles_for(args.events, args), extra=shape_args(args))
    args.outdir.mkdir(parents=True, exist_ok=True)
    workers = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, default_workers()})
    report = args.outdir / f"profiles-{args.events}{'-noattr' if args.without_attributions else ''}.txt"
    summary = []
    with open(report, "w") as out:
        for w in workers:
            for style in args.styles.split(","):
                name = f"{'noattr' if args.without_attributions else 'tool'}-w{w}-{style}"
                prof = args.outdir / f"{name}.prof"
                db = args.outdir / f"{name}.db"
                remove_db(db)
                with Fake(events=args.events, span_hours=args.span_hours, **fake_kw) as fake:
                    since, until = window_for(fake, args.span_hours)
                    sync = ["sync-events", "--since", since, "--until", until, "--workers", str(w), "-q"]
                    target = ([str(BENCH_DIR / "without_attributions.py")] if args.without_attributions
                              else ["-m", "klaviyo_sync"])
                    if style == "cprofile":
                        cmd = [PYTHON, "-m", "cProfile", "-o", str(prof), *target, *sync]
                    else:
                        cmd = [PYTHON, str(BENCH_DIR / "profile_threads.py"), "-o", str(prof), *target, *sync]
                    m = run_measured(cmd, env=tool_env(fake.url, db), cwd=REPO)
                remove_db(db)
                line = {"workers": w, "style": style, "rc": m.rc, "wall_s": round(m.wall_s, 2),
                        "cpu_s": round(m.user_s + m.sys_s, 2), "profile": str(prof)}
                summary.append(line)
                print(json.dumps(line), flush=True)
                out.write(f"\n######## tool --workers {w}, {style}: {m.wall_s:.2f} s wall under the profiler, rc={m.rc}\n")
                if m.rc:
                    out.write(m.stderr[-3000:])
                    continue
                if style == "cprofile":
                    show(prof, args.top, out)
                else:
                    show(Path(str(prof) + ".main"), args.top, out)
                    show(Path(str(prof) + ".threads"), args.top, out)
        if args.fake:
            prof = args.outdir / "fake.prof"
            db = args.outdir / "baseline.db"
            remove_db(db)
            fake = Fake(events=args.events, span_hours=args.span_hours, **fake_kw,
                        wrapper=[str(BENCH_DIR / "profile_threads.py"), "-o", str(prof)]).start()
            try:
                since, until = window_for(fake, args.span_hours)
                m = run_measured([PYTHON, str(BENCH_DIR / "baseline_events.py"), "--base-url", fake.url, "--api-key",
                                  FAKE_API_KEY, "--since", since, "--until", until, "--db", str(db)], cwd=REPO)
            finally:
                fake.stop()
            remove_db(db)
            line = {"fake_under_profiler_serving_baseline": True, "baseline_wall_s": round(m.wall_s, 2),
                    "baseline_rc": m.rc, "profile": str(prof)}
            summary.append(line)
            print(json.dumps(line), flush=True)
            out.write(f"\n######## the fake API, serving the baseline ({m.wall_s:.2f} s): its handler threads\n")
            show(Path(str(prof) + ".threads"), args.top, out)
    print(f"profiles: {args.outdir}; top {args.top} of each: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
