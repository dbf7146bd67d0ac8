"""Run the date-sensitive tests with the clock moved to the worst moments: 30 s after midnight UTC
and the last second of a month (libfaketime, via LD_PRELOAD, so the fake API and every CLI
subprocess see the same moved clock as the test).

Each test runs in its own pytest process whose clock is set so that the test itself starts at
that moment (module-level constants included, which are computed a moment before): the suite as
a whole must pass at any hour, and a test that reads "now" at import while the CLI reads its own
clock a minute later fails here.

    python tests/clock/run_shifted.py                 # every test of the date-sensitive files
    python tests/clock/run_shifted.py tests/test_flows.py::test_x   # just these
    python tests/clock/run_shifted.py --at month-end

Exits 0 when every test passed at every moment, 1 otherwise; 0 with a notice when libfaketime
is missing and --require is not given (``.ci/run`` installs it with apt-get where it can).
"""

from __future__ import annotations

import argparse
import calendar
import glob
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTC = timezone.utc
# The files whose tests speak of days, months, "now" or "the last N days".
FILES = ["tests/test_flows.py", "tests/test_verify.py", "tests/test_campaigns.py",
         "tests/test_sync_all.py", "tests/test_audience.py", "tests/test_readme_promises.py",
         "tests/test_openapi_conformance.py", "tests/test_charts.py", "tests/test_account_days.py",
         "tests/test_verify_unverifiable.py", "tests/test_forms.py"]
LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1"]
LEAD = 1.5  # seconds between starting pytest and the test starting (imports, collection)


def libfaketime() -> str | None:
    found = os.environ.get("LIBFAKETIME")
    if found and os.path.exists(found):
        return found
    for path in LIBS + glob.glob("/usr/lib/*/faketime/libfaketime.so.1"):
        if os.path.exists(path):
            return path
    return None


def target(moment: str, real: datetime) -> datetime:
    """The moved clock's reading when the test starts."""
    if moment == "midnight":
        day = real.date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, 0, 0, 30, tzinfo=UTC)
    if moment == "month-end":
        last = calendar.monthrange(real.year, real.month)[1]
        when = datetime(real.year, real.month, last, 23, 59, 59, tzinfo=UTC)
        if when <= real:  # already past it this month: next month's
            nxt = (real.replace(day=1) + timedelta(days=32)).replace(day=1)
            last = calendar.monthrange(nxt.year, nxt.month)[1]
            when = datetime(nxt.year, nxt.month, last, 23, 59, 59, tzinfo=UTC)
        return when
    raise ValueError(moment)


def run_one(lib: str, moment: str, nodeid: str) -> tuple[str, str, int, str]:
    real = datetime.now(UTC)
    offset = (target(moment, real) - real).total_seconds() - LEAD
    # An offset (not an absolute start), so every process sees one and the same moved clock;
    # monotonic clocks move by the same offset (DONT_FAKE_MONOTONIC breaks time.sleep on 3.11).
    env = dict(os.environ, LD_PRELOAD=lib, FAKETIME=f"{offset:+.3f}")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           nodeid], cwd=ROOT, env=env, capture_output=True, text=True)
    return moment, nodeid, proc.returncode, proc.stdout[-3000:] + proc.stderr[-2000:]


def collect(paths: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", *paths],
                         cwd=ROOT, capture_output=True, text=True)
    ids = [ln.strip() for ln in out.stdout.splitlines() if "::" in ln]
    if out.returncode != 0 or not ids:
        sys.exit(f"collecting {paths} failed:\n{out.stdout}\n{out.stderr}")
    return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tests", nargs="*", help=f"test files or node ids (default: {' '.join(FILES)})")
    ap.add_argument("--at", action="append", choices=["midnight", "month-end"],
                    help="the moment(s) to move the clock to (default: both)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="tests at once (default 2)")
    ap.add_argument("--require", action="store_true", help="fail, rather than skip, without libfaketime")
    args = ap.parse_args()
    lib = libfaketime()
    if lib is None:
        print("clock-shift tests SKIPPED: libfaketime is not installed (Debian: apt-get install faketime)")
        return 1 if args.require else 0
    moments = args.at or ["midnight", "month-end"]
    nodeids = collect(args.tests or FILES)
    jobs = [(m, n) for m in moments for n in nodeids]
    print(f"running {len(nodeids)} test(s) at {', '.join(moments)} ({len(jobs)} runs, {args.jobs} at once)",
          flush=True)
    failed = []
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        for moment, nodeid, code, output in pool.map(lambda j: run_one(lib, *j), jobs):
            if code != 0:
                failed.append((moment, nodeid))
                print(f"FAILED at {moment}: {nodeid}\n{output}", flush=True)
    print(f"clock-shifted runs took {time.monotonic() - t0:.0f} s"
          + "".join(f"\n  failed at {m}: {n}" for m, n in failed))
    # The plain closing line CI reads: "N passed, N failed" alone on its line.
    print(f"clock: {len(jobs) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
