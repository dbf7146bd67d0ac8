"""Metric aggregates: ``POST /api/metric-aggregates`` (shared/klaviyo-api.md 4.6 and 10.7).

Counts come from the very events ``/api/events`` serves (the compact index of ``events.py``,
late and forgotten events included), so the two agree by construction.  Buckets are
calendar-aligned in the query's ``timezone``: ``dates`` are the UTC instants of each local
bucket start (local midnight for ``day``, the local hour for ``hour``, Monday for ``week``, the
1st for ``month``).  Only the datetime range is accepted in ``filter`` and ``by`` must be
empty: the fake does not group by dimensions.  A naive datetime in the filter is read in the
query's time zone [unverified]; one with an offset or ``Z`` is an instant.

Custom metrics (which Klaviyo refuses to aggregate, with a 400) are, in the fake, the metrics
whose integration is ``api`` ("Active on Site" and the "Custom Event N" padding):
``unaggregatable_metric_ids()`` says which.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from ..data import M64, dumps, iso, mix
from ..errors import bad
from ..hosting import Route
from ..jsonapi import fields_param, query_params, post_attributes
from . import Resource

MEASUREMENTS = ("count", "sum_value", "unique")
INTERVALS = ("day", "hour", "month", "week")
ATTRIBUTES = {"metric_id", "page_cursor", "measurements", "interval", "page_size", "by",
              "return_fields", "filter", "timezone", "sort"}
# The spec: "While most are supported, a few notable exceptions are Factory, Europe/Kyiv and
# Pacific/Kanton."
UNSUPPORTED_ZONES = {"Factory", "Europe/Kyiv", "Pacific/Kanton"}
_TIME_COND = re.compile(r"^\s*(greater-or-equal|less-than)\(\s*datetime\s*,\s*([^()]*?)\s*\)\s*$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$")
UTC = timezone.utc


def _zone(name):
    if name is None:
        return ZoneInfo("UTC")
    if not isinstance(name, str) or name in UNSUPPORTED_ZONES or name not in _zones():
        raise bad(f"'{name}' is not a valid timezone.", pointer="/data/attributes/timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(f"'{name}' is not a valid timezone.", pointer="/data/attributes/timezone") from None


_ZONES: set | None = None


def _zones() -> set:
    global _ZONES
    if _ZONES is None:
        _ZONES = set(available_timezones()) | {"UTC"}
    return _ZONES


def _instant(text: str, zone, ignore_offset: bool = False) -> int:
    """A filter datetime -> epoch seconds (a naive one is local time in ``zone``; with
    ``ignore_offset`` every one is: its wall-clock time read in ``zone``)."""
    if not _ISO.match(text):
        raise bad(f"Invalid filter provided: {text!r} is not an unquoted ISO-8601 datetime.",
                  pointer="/data/attributes/filter")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None or ignore_offset:
        dt = dt.replace(tzinfo=zone)
    return math.ceil(dt.timestamp())


def bucket_starts(lo: int, hi: int, zone, interval: str) -> list[int]:
    """Epoch seconds of the calendar-aligned local bucket starts covering [lo, hi)."""
    local = datetime.fromtimestamp(lo, zone)
    if interval == "hour":
        first = local.replace(minute=0, second=0, microsecond=0)
    else:
        d = local.date()
        if interval == "week":
            d -= timedelta(days=d.weekday())
        elif interval == "month":
            d = d.replace(day=1)
        first = datetime(d.year, d.month, d.day, tzinfo=zone)
    out = [int(first.timestamp())]
    if interval == "hour":
        while out[-1] + 3600 < hi:
            out.append(out[-1] + 3600)
        return out
    d = first.date()
    while True:
        if interval == "day":
            d += timedelta(days=1)
        elif interval == "week":
            d += timedelta(days=7)
        else:
            d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
        t = int(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp())
        if t >= hi:
            return out
        out.append(t)


class AggregatesResource(Resource):
    """Counts over the events family; needs metrics, profiles and events built first."""

    ROUTES = (
        Route("POST", "/api/metric-aggregates", "_h_metric_aggregates", tier="S",
              scope="metrics:read"),
    )
    # The spec does not say whether a filter datetime's offset or the query's ``timezone`` wins:
    # "honoured" reads the offset, "ignored" the wall-clock time in ``timezone``.
    OPTIONS = {"aggregate_offsets": "honoured"}

    # ------------------------------------------------------------------ ground truth
    def unaggregatable_metric_ids(self) -> set[str]:
        """Metrics that /api/metric-aggregates refuses with a 400 (the fake's custom metrics)."""
        return {m["id"] for m in self._metrics if m["attributes"]["integration"]["key"] == "api"}

    def daily_counts(self, since, until, tz: str = "UTC") -> dict[tuple[str, str], int]:
        """{(metric id, local date 'YYYY-MM-DD'): events} over the events served now with
        since <= datetime < until, each dated in the IANA zone ``tz``."""
        zone = ZoneInfo(tz)
        out: dict = {}
        for i in self._indices(since, until):
            day = datetime.fromtimestamp(self._ts(i), zone).date().isoformat()
            key = (self._mids[self._metric_of(i)], day)
            out[key] = out.get(key, 0) + 1
        return out

    # ------------------------------------------------------------------ handler
    def _h_metric_aggregates(self, ctx):
        params = query_params(ctx, {"fields[metric-aggregate]"})
        fagg = fields_param(params, "fields[metric-aggregate]", {"data", "dates", "id"})
        attrs = post_attributes(ctx, "metric-aggregate", ATTRIBUTES)
        for name in ("metric_id", "measurements", "filter"):
            if attrs.get(name) in (None, "", []):
                raise bad(f"'{name}' is required.", pointer=f"/data/attributes/{name}")
        mid = attrs["metric_id"]
        if not isinstance(mid, str) or mid not in self._metric_index:
            raise bad(f"Metric IDs ['{mid}'] do not exist.", pointer="/data/attributes/metric_id")
        meas = attrs["measurements"]
        if not isinstance(meas, list) or any(m not in MEASUREMENTS for m in meas):
            raise bad(f"'measurements' must be a list of {', '.join(MEASUREMENTS)}.",
                      pointer="/data/attributes/measurements")
        interval = attrs.get("interval") or "day"
        if interval not in INTERVALS:
            raise bad(f"'{interval}' is not a valid interval.", pointer="/data/attributes/interval")
        if attrs.get("by") not in (None, []):
            raise bad("This fake does not group by dimensions: 'by' must be empty.",
                      pointer="/data/attributes/by")
        zone = _zone(attrs.get("timezone"))
        flt = attrs["filter"]
        if not isinstance(flt, list) or not all(isinstance(f, str) for f in flt):
            raise bad("'filter' must be a list of strings.", pointer="/data/attributes/filter")
        lo = hi = None
        for cond in flt:
            m = _TIME_COND.match(cond)
            if m is None:
                raise bad(f"Invalid filter provided: {cond!r}.", pointer="/data/attributes/filter")
            t = _instant(m.group(2), zone, self.aggregate_offsets == "ignored")
            if m.group(1) == "greater-or-equal":
                lo = t if lo is None else max(lo, t)
            else:
                hi = t if hi is None else min(hi, t)
        if lo is None or hi is None:
            raise bad("The filter must include a time range: greater-or-equal(datetime,...) and "
                      "less-than(datetime,...).", pointer="/data/attributes/filter")
        if hi <= lo:
            raise bad("The end of the time range must be after its start.",
                      pointer="/data/attributes/filter")
        if mid in self.unaggregatable_metric_ids():
            raise bad(f"Metric '{mid}' is a custom metric; custom metrics are not supported.",
                      pointer="/data/attributes/metric_id")

        starts = bucket_starts(lo, hi, zone, interval)
        k = self._metric_index[mid]
        plo = self._pos_at(lo)
        phi = max(plo, self._pos_at(hi))
        ov = self._overlay()
        at = int if ov is None else ov[0].__getitem__
        counts = [0] * len(starts)
        sums = [0.0] * len(starts)
        uniq: list[set] = [set() for _ in starts]
        any_event = False
        for p in self._iter_pos(plo, True, plo, phi, {k}, None, False):
            i = at(p)
            b = max(0, min(len(starts) - 1, bisect.bisect_right(starts, self._ts(i)) - 1))
            any_event = True
            counts[b] += 1
            if "unique" in meas:
                q = self._pidx(i)
                if q >= 0:
                    uniq[b].add(q)
            if "sum_value" in meas and self._mkind[k] == "order":
                h2 = mix((self._salt_v + i) & M64)
                sums[b] += (h2 % 40000 + 500) / 100
        rows = []
        if any_event:
            values = {"count": counts, "sum_value": [round(x, 2) for x in sums],
                      "unique": [len(u) for u in uniq]}
            rows = [{"dimensions": [], "measurements": {m: values[m] for m in dict.fromkeys(meas)}}]
        attributes = {"dates": [iso(t) for t in starts], "data": rows}
        if fagg is not None:
            attributes = {f: v for f, v in attributes.items() if f in fagg}
        self_link = f"{self.base_url}/api/metric-aggregates"
        out = {"data": {"type": "metric-aggregate",
                        "id": hashlib.sha1(ctx.body).hexdigest()[:26],
                        "attributes": attributes, "links": {"self": self_link}},
               "links": {"self": self_link}}
        return 200, dumps(out).encode("utf-8"), []
