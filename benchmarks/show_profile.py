#!/usr/bin/env python
"""Print the top of a cProfile file, by cumulative time and by own time (tottime).

    python benchmarks/show_profile.py out.prof [--top 25] [--sort cumulative,tottime]
"""

from __future__ import annotations

import argparse
import pstats
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile", nargs="+")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="cumulative,tottime")
    args = ap.parse_args()
    for path in args.profile:
        stats = pstats.Stats(path, stream=sys.stdout)
        stats.strip_dirs()
        for key in args.sort.split(","):
            print(f"==== {path}: top {args.top} by {key} (total {stats.total_tt:.3f} s of profiled time) ====")
            stats.sort_stats(key).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
