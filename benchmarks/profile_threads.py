#!/usr/bin/env python
"""cProfile for EVERY thread of a program, not only the main one.

`python -m cProfile` profiles the main thread only; in `klaviyo-sync sync-events` the HTTP
requests, JSON decoding and row building run in fetcher threads, so they are invisible there.
This wrapper patches threading.Thread.run before the target starts, so each thread gets its own
profiler, and at exit writes three files:

    OUT            every thread merged
    OUT.main       the main thread only (for the tool: the writer loop)
    OUT.threads    the other threads merged (for the tool: the fetchers; for the fake: handlers)

    python benchmarks/profile_threads.py -o tool.prof -m klaviyo_sync sync-events --since ... --until ... -q
    python benchmarks/profile_threads.py -o fake.prof -m klaviyo_sync.fake --port 0 --events 200000
    python benchmarks/show_profile.py tool.prof.threads

PROFILE_TIMER=cpu charges each function its thread's CPU time (time.thread_time), not wall
time: waiting for the GIL, the network or other load on the machine is then not counted.

Threads still running at exit (daemon threads) are left out; the fake's handler threads end when
their client disconnects, so stop the fake (SIGTERM) after its clients have exited.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import os
import threading
import time

# PROFILE_TIMER=cpu: each thread's own CPU time (time.thread_time) instead of wall time, so a
# thread waiting for the GIL, the network or a busy machine is not charged; load-independent.
_TIMER = (time.thread_time,) if os.environ.get("PROFILE_TIMER") == "cpu" else ()

_lock = threading.Lock()
_finished: list[cProfile.Profile] = []


def _patch_threads() -> None:
    original = threading.Thread.run

    def run(self, *a, **kw):
        prof = cProfile.Profile(*_TIMER)
        prof.enable()
        try:
            return original(self, *a, **kw)
        finally:
            prof.disable()
            with _lock:
                _finished.append(prof)

    threading.Thread.run = run


def _dump(profiles: list[cProfile.Profile], path: str) -> bool:
    if not profiles:
        return False
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        stats.add(p)
    stats.dump_stats(path)
    return True


def main() -> None:
    usage = "usage: profile_threads.py -o OUT (-m MODULE | SCRIPT) [ARGS...]"
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[0] not in ("-o", "--out"):
        sys.exit(usage)
    out, rest = argv[1], argv[2:]
    module = None
    if rest[0] == "-m":
        if len(rest) < 2:
            sys.exit(usage)
        module, target, argv = True, rest[1], rest[2:]
    else:
        target, argv = rest[0], rest[1:]

    _patch_threads()
    main_prof = cProfile.Profile(*_TIMER)
    sys.argv = [target, *argv]
    code = 0
    main_prof.enable()
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        main_prof.disable()
        with _lock:
            others = list(_finished)
        _dump([main_prof, *others], out)
        _dump([main_prof], out + ".main")
        if not _dump(others, out + ".threads"):
            print(f"profile_threads: no finished threads to write to {out}.threads", file=sys.stderr)
        print(f"profile_threads: wrote {out} (+ .main, .threads; {len(others)} threads)", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
