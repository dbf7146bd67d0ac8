"""``python -m klaviyo_sync.fake --port 0``: serve a fake account until SIGTERM/SIGINT.

Prints the base URL on one line, then serves.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .account import FakeKlaviyo
from .hosting import FAKE_API_KEY


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m klaviyo_sync.fake",
                                 description="Serve a fake Klaviyo API on 127.0.0.1.")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--profiles", type=int, default=300)
    ap.add_argument("--metrics", type=int, default=12)
    ap.add_argument("--campaigns-per-channel", type=int, default=8)
    ap.add_argument("--flows", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--span-hours", type=float, default=24 * 7)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--enforce-limits", action="store_true")
    ap.add_argument("--api-key", default=FAKE_API_KEY)
    ap.add_argument("--profile-shape", choices=["small", "realistic"], default="small",
                    help="realistic: ~1 KB of properties and location per profile (default small)")
    ap.add_argument("--diurnal", action="store_true", help="events follow the day (quiet nights)")
    ap.add_argument("--events-per-visit", type=int, default=1,
                    help="consecutive events sharing one profile, as in a visit (default 1)")
    args = ap.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake = FakeKlaviyo(api_key=args.api_key, seed=args.seed, n_events=args.events,
                       n_profiles=args.profiles, n_metrics=args.metrics,
                       n_campaigns_per_channel=args.campaigns_per_channel, n_flows=args.flows,
                       span_hours=args.span_hours, port=args.port, profile_shape=args.profile_shape,
                       diurnal=args.diurnal, events_per_visit=args.events_per_visit)
    fake.latency = args.latency
    fake.enforce_limits = args.enforce_limits
    fake.start()
    try:
        sys.stdout.write(fake.base_url + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
