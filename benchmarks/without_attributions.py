#!/usr/bin/env python
"""`klaviyo-sync` with `sync-events` asking `include=metric,profile` instead of
`include=metric,profile,attributions`: the same code without attributions, to measure what they
cost (bench_events.py --without-attributions, profile_events.py --without-attributions).
Benchmark only: the tool itself always asks for attributions.

    python benchmarks/without_attributions.py sync-events --since ... --until ...
"""

from klaviyo_sync.streams import events_fetch

_events_params = events_fetch.events_params


def events_params(*args, **kwargs) -> dict:
    params = _events_params(*args, **kwargs)
    params["include"] = "metric,profile"
    return params


events_fetch.events_params = events_params

if __name__ == "__main__":
    from klaviyo_sync.cli import main

    main()
