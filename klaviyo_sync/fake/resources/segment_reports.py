"""Segment growth: ``POST /api/segment-series-reports`` (query_segment_series: segments:read, 1/s,
2/m and the daily report quota shared with the other reports; no ``group_by``, results grouped by
``segment_id``; no data before 2023-06-01: an earlier timeframe is a 400).

Each segment of ``AudienceResource`` grows by a deterministic function of (seed, segment id, day
of the account's time zone): ``segment_daily_growth(segment_id, "YYYY-MM-DD")`` is exactly what
a daily series serves for that day (the total is the running sum from 2023-06-01)."""

from __future__ import annotations

import functools
import hashlib
import random
from datetime import date, timedelta

from ..hosting import Route
from . import Resource
from .forms import _ID_FILTER, series_answer, series_days

SEGMENT_STATISTICS = ["members_added", "members_removed", "net_members_changed", "total_members"]
DATA_FROM = date(2023, 6, 1)


@functools.lru_cache(maxsize=4096)
def _change(seed: int, segment_id: str, day: str) -> tuple[int, int]:
    r = random.Random(hashlib.blake2b(f"{seed}|{segment_id}|{day}|growth".encode(), digest_size=16).digest())
    return r.randint(0, 40), r.randint(0, 30)


class SegmentReportsResource(Resource):
    ROUTES = (Route("POST", "/api/segment-series-reports", "_h_segment_series", tier="reports",
                    scope="segments:read", daily=True),)

    # ------------------------------------------------------------------ ground truth
    def segment_daily_growth(self, segment_id: str, day: str) -> dict:
        """total_members at the day's end, members_added, members_removed and
        net_members_changed of one segment on one day of the account's time zone."""
        if segment_id not in self.segment_ids():
            raise KeyError(segment_id)
        d = date.fromisoformat(day)
        if d < DATA_FROM or d > self.now.astimezone(self.account_timezone).date():
            return dict.fromkeys(SEGMENT_STATISTICS, 0)
        total = 1000
        k = DATA_FROM
        while k <= d:
            added, removed = _change(self.seed, segment_id, k.isoformat())
            total += added - removed
            k += timedelta(days=1)
        added, removed = _change(self.seed, segment_id, day)
        return {"members_added": added, "members_removed": removed, "net_members_changed": added - removed,
                "total_members": total}

    # ------------------------------------------------------------------ handlers
    def _h_segment_series(self, ctx):
        stats, wanted, _, days = series_days(self, ctx, "segment-series-report", SEGMENT_STATISTICS,
                                             {"segment_id": _ID_FILTER}, group_by=None, earliest=DATA_FROM)
        ids = [i for i in sorted(self.segment_ids()) if wanted["segment_id"] is None or i in wanted["segment_id"]]
        results = []
        for sid in ids:
            series = [self.segment_daily_growth(sid, d.isoformat()) for d in days]
            results.append({"groupings": {"segment_id": sid},
                            "statistics": {s: [x[s] for x in series] for s in stats}})
        return series_answer(self, ctx, "segment-series-report", "/api/segment-series-reports", results, days)
