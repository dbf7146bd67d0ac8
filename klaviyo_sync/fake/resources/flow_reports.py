"""Flow statistics: ``POST /api/flow-values-reports`` and ``POST /api/flow-series-reports``
(shared/klaviyo-api.md 10.6).

Every send action of a live or manual flow sends every day from the day after the flow was
created until today. A message's numbers for one day are a deterministic function of (seed,
message id, day, conversion metric id): ``flow_daily_statistics()`` is exactly what a daily
series serves for that day, and a values report is the sum of a timeframe's days (rates
recomputed from the sums). Both routes count against the daily report quota shared with the
campaign reports, and use the same ``reports`` rate tier.

A custom timeframe covers the days whose midnight (UTC, the fake account's time zone) lies in
[start's day, end] (both ends inclusive), so ``start=D0T00:00:00, end=DnT23:59:59`` is the days
D0..Dn and consecutive requests built that way never overlap.
"""

from __future__ import annotations

import hashlib
import random
from datetime import timezone

from ..data import dumps, iso
from ..errors import bad
from ..filters import FilterError, parse_filter
from ..hosting import Route
from ..jsonapi import fields_param, query_params, post_attributes
from . import Resource
from .reports import REPORT_STATISTICS

FLOW_REPORT_CHANNEL = {"email": "email", "sms": "sms"}
_SCALAR = {"single": ("equals",), "list": ("contains-any",), "type": "string"}
FLOW_REPORT_FILTERS = {
    "send_channel": dict(_SCALAR, enum=["email", "sms", "push-notification", "whatsapp"]),
    "flow_id": _SCALAR, "flow_name": _SCALAR, "flow_message_id": _SCALAR,
    "flow_message_name": _SCALAR, "text_message_format": _SCALAR, "variation": _SCALAR,
    "variation_name": _SCALAR,
    "tag_id": {"list": ("contains-any", "contains-all"), "type": "string"},
    "tag_name": {"list": ("contains-any", "contains-all"), "type": "string"},
}
FLOW_GROUP_BY = ["flow_id", "flow_message_id", "flow_message_name", "flow_name", "send_channel",
                 "tag_id", "tag_name", "text_message_format", "variation", "variation_name"]
INTERVALS = {"hourly": 7 * 86400, "daily": 60 * 86400, "weekly": 52 * 7 * 86400,
             "monthly": 52 * 7 * 86400}
COUNTS = ["recipients", "delivered", "bounced", "failed", "bounced_or_failed", "opens",
          "opens_unique", "clicks", "clicks_unique", "conversions", "conversion_uniques",
          "conversion_value", "unsubscribes", "unsubscribe_uniques", "spam_complaints",
          "message_segment_count_sum", "text_message_credit_usage_amount", "text_message_spend"]


def _rates(c: dict) -> dict:
    """Every statistic from summed counts (rates as fractions, 0.0 when undefined)."""

    def d(a, b):
        return a / b if b else 0.0

    out = dict(c)
    out["conversion_value"] = round(c["conversion_value"], 2)
    out["text_message_spend"] = round(c["text_message_spend"], 2)
    out.update({
        "open_rate": d(c["opens_unique"], c["delivered"]),
        "click_rate": d(c["clicks_unique"], c["delivered"]),
        "click_to_open_rate": d(c["clicks_unique"], c["opens_unique"]),
        "conversion_rate": d(c["conversion_uniques"], c["delivered"]),
        "delivery_rate": d(c["delivered"], c["recipients"]),
        "bounce_rate": d(c["bounced"], c["recipients"]),
        "failed_rate": d(c["failed"], c["recipients"]),
        "bounced_or_failed_rate": d(c["bounced_or_failed"], c["recipients"]),
        "unsubscribe_rate": d(c["unsubscribe_uniques"], c["delivered"]),
        "spam_complaint_rate": d(c["spam_complaints"], c["delivered"]),
        "average_order_value": d(c["conversion_value"], c["conversions"]),
        "revenue_per_recipient": d(c["conversion_value"], c["recipients"]),
        "text_message_roi": d(c["conversion_value"], c["text_message_spend"]),
    })
    return out


class FlowReportsResource(Resource):
    """Values and series reports over the flows built by ``FlowsResource``."""

    ROUTES = (
        Route("POST", "/api/flow-values-reports", "_h_flow_values", tier="reports",
              scope="flows:read", daily=True),
        Route("POST", "/api/flow-series-reports", "_h_flow_series", tier="reports",
              scope="flows:read", daily=True),
    )

    # ------------------------------------------------------------------ ground truth
    def flow_daily_counts(self, message_id: str, day_ts: int, conversion_metric_id: str) -> dict:
        """The counts one message sent on the UTC day starting at ``day_ts`` (all zero when
        its flow did not send that day)."""
        m = self._flow_messages[message_id]
        f = self._flow_by_id[m["flow_id"]]
        today = self.now_ts - self.now_ts % 86400
        if f["status"] == "draft" or not f["first_send_day"] <= day_ts <= today:
            return dict.fromkeys(COUNTS, 0) | {"conversion_value": 0.0, "text_message_spend": 0.0}
        r = random.Random(hashlib.blake2b(f"{self.seed}|{message_id}|{day_ts}".encode(),
                                          digest_size=16).digest())
        email = m["channel"] == "email"
        recipients = r.randint(0, 400) if email else r.randint(0, 60)
        bounced = int(recipients * r.uniform(0, 0.03)) if email else 0
        failed = 0 if email else int(recipients * r.uniform(0, 0.05))
        delivered = recipients - bounced - failed
        opens_unique = int(delivered * r.uniform(0.3, 0.7)) if email else 0
        opens = opens_unique + int(opens_unique * r.uniform(0.1, 0.9))
        clicks_unique = int(delivered * r.uniform(0.01, 0.12))
        if email:
            clicks_unique = min(clicks_unique, opens_unique)
        clicks = clicks_unique + int(clicks_unique * r.uniform(0, 0.6))
        unsub_u = int(delivered * r.uniform(0, 0.01))
        unsubs = unsub_u + int(unsub_u * r.uniform(0, 0.2))
        spam = int(delivered * r.uniform(0, 0.002)) if email else 0
        # Conversions are the events attributed to this message, on the touch's day (attribution.py).
        conversions, value, conv_u = self._attributed_counts(message_id, conversion_metric_id, day_ts)
        if conversions and not delivered:  # it converted, so it reached someone that day
            recipients = delivered = max(recipients, 1)
            bounced = failed = 0
        segments = 0 if email else r.randint(1, 2) * delivered
        return {"recipients": recipients, "delivered": delivered, "bounced": bounced,
                "failed": failed, "bounced_or_failed": bounced + failed, "opens": opens,
                "opens_unique": opens_unique, "clicks": clicks, "clicks_unique": clicks_unique,
                "conversions": conversions, "conversion_uniques": conv_u,
                "conversion_value": float(value), "unsubscribes": unsubs,
                "unsubscribe_uniques": unsub_u, "spam_complaints": spam,
                "message_segment_count_sum": segments,
                "text_message_credit_usage_amount": segments,
                "text_message_spend": float(round(segments * 0.0079, 2))}

    def flow_daily_statistics(self, message_id: str, day_ts: int, conversion_metric_id: str) -> dict:
        """Every statistic of one message for one UTC day, as a daily series serves it."""
        return _rates(self.flow_daily_counts(message_id, day_ts, conversion_metric_id))

    def flow_statistics(self, message_id: str, first_day_ts: int, last_day_ts: int,
                        conversion_metric_id: str) -> dict:
        """Every statistic of one message over the days first..last (inclusive), as a values
        report for that timeframe serves it."""
        total = dict.fromkeys(COUNTS, 0) | {"conversion_value": 0.0, "text_message_spend": 0.0}
        for day in range(first_day_ts, last_day_ts + 1, 86400):
            for k, v in self.flow_daily_counts(message_id, day, conversion_metric_id).items():
                total[k] += v
        return _rates(total)

    # ------------------------------------------------------------------ handlers
    def _flow_report_request(self, ctx, kind: str):
        params = query_params(ctx, {f"fields[{kind}]", "page_cursor"})
        fields_param(params, f"fields[{kind}]", {"id", "results", "date_times"})
        allowed = {"statistics", "timeframe", "conversion_metric_id", "group_by", "filter"}
        if kind == "flow-series-report":
            allowed.add("interval")
        attrs = post_attributes(ctx, kind, allowed)
        stats = attrs.get("statistics")
        if not isinstance(stats, list) or not stats:
            raise bad("'statistics' is required and must be a non-empty list.",
                      pointer="/data/attributes/statistics")
        for s in stats:
            if s not in REPORT_STATISTICS:
                raise bad(f"'{s}' is not a valid statistic.", pointer="/data/attributes/statistics")
        if "timeframe" not in attrs:
            raise bad("'timeframe' is required.", pointer="/data/attributes/timeframe")
        # Still read in UTC: this fake's flow statistics are per UTC day, so an account time zone
        # would need local-day buckets too (not done yet; campaign reports use the zone).
        t0, t1, incl = self._timeframe(attrs["timeframe"], timezone.utc)
        interval = None
        if kind == "flow-series-report":
            interval = attrs.get("interval")
            if interval not in INTERVALS:
                raise bad("'interval' is required: one of daily, hourly, monthly, weekly.",
                          pointer="/data/attributes/interval")
            if t1 - t0 > INTERVALS[interval]:
                limit = {"hourly": "7 days", "daily": "60 days"}.get(interval, "52 weeks")
                raise bad(f"The timeframe cannot be longer than {limit} for the {interval} interval.",
                          pointer="/data/attributes/timeframe")
        conv = attrs.get("conversion_metric_id")
        if not isinstance(conv, str) or not conv:
            raise bad("'conversion_metric_id' is required.", pointer="/data/attributes/conversion_metric_id")
        if conv not in self._metric_index:
            raise bad(f"Metric IDs ['{conv}'] do not exist.", pointer="/data/attributes/conversion_metric_id")
        group_by = attrs.get("group_by")
        if group_by is None:
            group_by = ["flow_id", "flow_message_id", "send_channel"]
        if not isinstance(group_by, list) or any(g not in FLOW_GROUP_BY for g in group_by):
            raise bad("Invalid group_by.", pointer="/data/attributes/group_by")
        if "flow_id" not in group_by or "flow_message_id" not in group_by:
            raise bad("group_by must include flow_id and flow_message_id.", pointer="/data/attributes/group_by")
        conds = []
        ftext = attrs.get("filter")
        if ftext is not None:
            if not isinstance(ftext, str):
                raise bad("filter must be a string.", pointer="/data/attributes/filter")
            try:
                conds = parse_filter(ftext, FLOW_REPORT_FILTERS, max_list=100)
            except FilterError as e:
                raise bad(f"Invalid filter provided: {e}", pointer="/data/attributes/filter") from None
            used = [f for _, f, _, _ in conds]
            if len(used) != len(set(used)):
                raise bad("Only one filter can be used per attribute.", pointer="/data/attributes/filter")
        # The days of the timeframe, up to today.
        today = self.now_ts - self.now_ts % 86400
        first = int(t0) - int(t0) % 86400
        days = [d for d in range(first, today + 1, 86400) if (d <= t1 if incl else d < t1)]
        messages = []
        for m in self._flow_messages.values():
            f = self._flow_by_id[m["flow_id"]]
            vals = {"flow_id": f["id"], "flow_name": f["name"], "flow_message_id": m["id"],
                    "flow_message_name": m["name"], "send_channel": FLOW_REPORT_CHANNEL[m["channel"]],
                    "tag_id": [], "tag_name": [], "variation": None, "variation_name": None,
                    "text_message_format": "SMS" if m["channel"] == "sms" else None}
            ok = True
            for op, field, val, is_list in conds:
                have = vals[field]
                if field in ("tag_id", "tag_name"):
                    ok = (set(val) <= set(have)) if op == "contains-all" else bool(set(val) & set(have))
                else:
                    ok = have in val if is_list else have == val
                if not ok:
                    break
            if ok:
                messages.append((m, vals))
        return stats, conv, group_by, interval, days, messages, (t0, t1)

    @staticmethod
    def _groupings(vals, group_by):
        return {g: ((vals[g][0] if vals[g] else None) if isinstance(vals[g], list) else vals[g])
                for g in group_by}

    def _flow_report_answer(self, ctx, kind, path, attributes, flow_ids, message_ids):
        rid = hashlib.sha1(ctx.body).hexdigest()[:26]
        base = self.base_url
        out = {"data": {"type": kind, "id": rid, "attributes": attributes, "relationships": {
            "flows": {"data": [{"type": "flow", "id": f} for f in flow_ids]},
            "flow-messages": {"data": [{"type": "flow-message", "id": m} for m in message_ids]}}},
            "links": {"self": f"{base}{path}/"}}
        return 200, dumps(out).encode("utf-8"), []

    def _h_flow_values(self, ctx):
        stats, conv, group_by, _, days, messages, _ = self._flow_report_request(ctx, "flow-values-report")
        results, flows = [], {}
        for m, vals in messages:
            total = dict.fromkeys(COUNTS, 0) | {"conversion_value": 0.0, "text_message_spend": 0.0}
            for d in days:
                for k, v in self.flow_daily_counts(m["id"], d, conv).items():
                    total[k] += v
            if not total["recipients"]:
                continue  # a message that sent nothing in the timeframe has no row
            allstats = _rates(total)
            results.append({"groupings": self._groupings(vals, group_by),
                            "statistics": {s: allstats[s] for s in stats}})
            flows[m["flow_id"]] = None
        return self._flow_report_answer(ctx, "flow-values-report", "/api/flow-values-reports",
                                        {"results": results}, list(flows),
                                        [r["groupings"]["flow_message_id"] for r in results])

    def _h_flow_series(self, ctx):
        stats, conv, group_by, interval, days, messages, (t0, t1) = self._flow_report_request(
            ctx, "flow-series-report")
        # Buckets: each day for daily; hours of the timeframe (a day's sends at its midnight
        # hour) for hourly; ISO weeks (Monday) and calendar months otherwise.
        if interval == "daily":
            bucket_of = {d: d for d in days}
            starts = list(days)
        elif interval == "hourly":
            first = int(t0) - int(t0) % 3600
            starts = list(range(first, int(t1) + 1, 3600))
            bucket_of = {d: d for d in days}
        else:
            import datetime as _dt

            def start_of(d):
                day = _dt.datetime.fromtimestamp(d, _dt.timezone.utc)
                if interval == "weekly":
                    day = day - _dt.timedelta(days=day.weekday())
                else:
                    day = day.replace(day=1)
                return int(day.timestamp())

            bucket_of = {d: start_of(d) for d in days}
            starts = sorted(set(bucket_of.values()))
        index = {s: i for i, s in enumerate(starts)}
        results, flows = [], {}
        for m, vals in messages:
            buckets = [dict.fromkeys(COUNTS, 0) | {"conversion_value": 0.0, "text_message_spend": 0.0}
                       for _ in starts]
            sent = 0
            for d in days:
                c = self.flow_daily_counts(m["id"], d, conv)
                sent += c["recipients"]
                b = buckets[index[bucket_of[d]]]
                for k, v in c.items():
                    b[k] += v
            if not sent:
                continue
            series = [_rates(b) for b in buckets]
            results.append({"groupings": self._groupings(vals, group_by),
                            "statistics": {s: [x[s] for x in series] for s in stats}})
            flows[m["flow_id"]] = None
        return self._flow_report_answer(ctx, "flow-series-report", "/api/flow-series-reports",
                                        {"results": results, "date_times": [iso(s) for s in starts]},
                                        list(flows), [r["groupings"]["flow_message_id"] for r in results])
