"""Campaign statistics: ``POST /api/campaign-values-reports`` (shared/klaviyo-api.md 4.5).

Statistics are a deterministic function of (seed, message id, conversion metric id), so a
test can ask ``campaign_statistics()`` for exactly what the endpoint serves.  Reports count
against the daily quota (``report_daily_quota``) as well as their rate tier.
"""

from __future__ import annotations

import calendar
import hashlib
import random
from datetime import datetime, timedelta
from urllib.parse import urlencode

from ..data import dumps, parse_iso
from ..errors import bad
from ..filters import FilterError, parse_filter
from ..hosting import Route
from ..jsonapi import dec_cursor, enc_cursor, fields_param, query_params, post_attributes
from . import Resource

REPORT_CHANNEL = {"email": "email", "sms": "sms", "mobile_push": "push-notification"}
_SCALAR = {"single": ("equals",), "list": ("contains-any",), "type": "string"}
REPORT_FILTERS = {
    "send_channel": dict(_SCALAR, enum=["email", "sms", "push-notification", "whatsapp"]),
    "campaign_id": _SCALAR,
    "campaign_message_id": _SCALAR,
    "campaign_message_name": _SCALAR,
    "variation": _SCALAR,
    "variation_name": _SCALAR,
    "text_message_format": _SCALAR,
    "tag_id": {"list": ("contains-any", "contains-all"), "type": "string"},
    "tag_name": {"list": ("contains-any", "contains-all"), "type": "string"},
}
REPORT_STATISTICS = [
    "average_order_value", "bounce_rate", "bounced", "bounced_or_failed",
    "bounced_or_failed_rate", "click_rate", "click_to_open_rate", "clicks", "clicks_unique",
    "conversion_rate", "conversion_uniques", "conversion_value", "conversions", "delivered",
    "delivery_rate", "failed", "failed_rate", "message_segment_count_sum", "open_rate", "opens",
    "opens_unique", "recipients", "revenue_per_recipient", "spam_complaint_rate",
    "spam_complaints", "text_message_credit_usage_amount", "text_message_roi",
    "text_message_spend", "unsubscribe_rate", "unsubscribe_uniques", "unsubscribes",
]
REPORT_GROUP_BY = [
    "campaign_id", "campaign_message_id", "campaign_message_name", "group", "group_name",
    "send_channel", "tag_id", "tag_name", "text_message_format", "variation", "variation_name",
]
REPORT_TIMEFRAME_KEYS = [
    "last_12_months", "last_30_days", "last_365_days", "last_3_months", "last_7_days",
    "last_90_days", "last_month", "last_week", "last_year", "this_month", "this_week",
    "this_year", "today", "yesterday",
]


class ReportsResource(Resource):
    """Values reports over the campaigns and metrics built before."""

    ROUTES = (
        Route("POST", "/api/campaign-values-reports", "_h_report", tier="reports",
              scope="campaigns:read", daily=True),
    )

    # ------------------------------------------------------------------ ground truth
    def campaign_statistics(self, campaign_id: str, conversion_metric_id: str) -> dict[str, dict]:
        """{message id: every statistic} of a campaign's messages, exactly as the values report
        serves them for that conversion metric (when the campaign's send falls in its timeframe)."""
        if conversion_metric_id not in self._metric_index:
            raise KeyError(conversion_metric_id)
        return {mid: self._msg_stats(self._messages[mid], conversion_metric_id)
                for mid in self._campaign_by_id[campaign_id]["message_ids"]}

    # ------------------------------------------------------------------ handlers
    def _timeframe(self, tf, tz=None) -> tuple[float, float, bool]:
        """-> (start, end, end_inclusive) in epoch seconds, read in ``tz`` (default: the
        account's time zone, as Klaviyo does)."""
        tz = tz or self.account_timezone
        ptr = "/data/attributes/timeframe"
        if not isinstance(tf, dict):
            raise bad("timeframe must be an object.", pointer=ptr)
        if "key" in tf:
            if set(tf) != {"key"}:
                raise bad("timeframe must have either 'key' or 'start' and 'end'.", pointer=ptr)
            key = tf["key"]
            if key not in REPORT_TIMEFRAME_KEYS:
                raise bad(f"'{key}' is not a valid timeframe key.", pointer=ptr + "/key")
            now = self.now.astimezone(tz)
            today = now.replace(hour=0, minute=0, second=0, microsecond=0)
            week0 = today - timedelta(days=today.weekday())
            month0 = today.replace(day=1)
            year0 = today.replace(month=1, day=1)

            def months_back(d, k):
                y, m = d.year, d.month - k
                while m <= 0:
                    m += 12
                    y -= 1
                return d.replace(year=y, month=m, day=min(d.day, calendar.monthrange(y, m)[1]))

            ts = lambda d: d.timestamp()  # noqa: E731
            n = now.timestamp()
            table = {
                "today": (ts(today), n, True),
                "yesterday": (ts(today - timedelta(days=1)), ts(today), False),
                "this_week": (ts(week0), n, True),
                "last_week": (ts(week0 - timedelta(days=7)), ts(week0), False),
                "this_month": (ts(month0), n, True),
                "last_month": (ts(months_back(month0, 1)), ts(month0), False),
                "this_year": (ts(year0), n, True),
                "last_year": (ts(year0.replace(year=year0.year - 1)), ts(year0), False),
                "last_7_days": (ts(today - timedelta(days=7)), ts(today), False),
                "last_30_days": (ts(today - timedelta(days=30)), ts(today), False),
                "last_90_days": (ts(today - timedelta(days=90)), ts(today), False),
                "last_365_days": (ts(today - timedelta(days=365)), ts(today), False),
                "last_3_months": (ts(months_back(today, 3)), ts(today), False),
                "last_12_months": (ts(months_back(today, 12)), ts(today), False),
            }
            return table[key]
        if set(tf) != {"start", "end"}:
            raise bad("timeframe must have either 'key' or 'start' and 'end'.", pointer=ptr)
        if not isinstance(tf["start"], str) or not isinstance(tf["end"], str):
            raise bad("timeframe start and end must be datetimes.", pointer=ptr)
        start, end = self._account_time(tf["start"], tz), self._account_time(tf["end"], tz)
        if start is None:
            raise bad("timeframe start is not a valid datetime.", pointer=ptr + "/start")
        if end is None:
            raise bad("timeframe end is not a valid datetime.", pointer=ptr + "/end")
        if end < start:
            raise bad("timeframe end must be after start.", pointer=ptr)
        if end - start > 366 * 86400:
            raise bad("The timeframe cannot be longer than 1 year.", pointer=ptr)
        return start, end, True

    def _account_time(self, text: str, tz) -> float | None:
        """Epoch seconds of a custom timeframe bound: Klaviyo ignores the offset and reads the
        wall-clock time in the account's time zone (shared/klaviyo-api.md 4.5)."""
        if parse_iso(text) is None:
            return None
        try:
            wall = datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            return None
        return wall.replace(tzinfo=tz).timestamp()

    def _msg_stats(self, m: dict, conv_mid: str) -> dict:
        digest = hashlib.blake2b(f"{self.seed}|{m['id']}".encode(), digest_size=16).digest()
        r = random.Random(digest)
        ch = m["channel"]
        email, sms, push = ch == "email", ch == "sms", ch == "mobile_push"
        recipients = r.randint(500, 20000) if email else r.randint(50, 4000)
        bounced = int(recipients * r.uniform(0, 0.03)) if email else 0
        failed = int(recipients * r.uniform(0, 0.03)) if not email else 0
        delivered = recipients - bounced - failed
        if email:
            opens_unique = int(delivered * r.uniform(0.15, 0.55))
        elif push:
            opens_unique = int(delivered * r.uniform(0.03, 0.15))
        else:
            opens_unique = 0
        opens = opens_unique + int(opens_unique * r.uniform(0.1, 0.9))
        clicks_unique = int(delivered * r.uniform(0.005, 0.08))
        if opens_unique:
            clicks_unique = min(clicks_unique, opens_unique)
        clicks = clicks_unique + int(clicks_unique * r.uniform(0, 0.6))
        unsubscribe_uniques = int(delivered * r.uniform(0, 0.004))
        unsubscribes = unsubscribe_uniques + int(unsubscribe_uniques * r.uniform(0, 0.1))
        spam = int(delivered * r.uniform(0, 0.0008)) if email else 0
        # Conversions are the events attributed to this message (attribution.py).
        conversions, conversion_value, conversion_uniques = self._attributed_counts(m["id"], conv_mid)
        segments = (r.randint(1, 3) * delivered) if sms else 0
        spend = round(segments * 0.0079, 2)

        def d(a, b):
            return a / b if b else 0.0

        return {
            "recipients": recipients, "delivered": delivered, "bounced": bounced,
            "failed": failed, "bounced_or_failed": bounced + failed,
            "opens": opens, "opens_unique": opens_unique, "clicks": clicks,
            "clicks_unique": clicks_unique, "conversions": conversions,
            "conversion_uniques": conversion_uniques, "conversion_value": float(conversion_value),
            "unsubscribes": unsubscribes, "unsubscribe_uniques": unsubscribe_uniques,
            "spam_complaints": spam,
            "open_rate": d(opens_unique, delivered), "click_rate": d(clicks_unique, delivered),
            "click_to_open_rate": d(clicks_unique, opens_unique),
            "conversion_rate": d(conversion_uniques, delivered),
            "delivery_rate": d(delivered, recipients), "bounce_rate": d(bounced, recipients),
            "failed_rate": d(failed, recipients),
            "bounced_or_failed_rate": d(bounced + failed, recipients),
            "unsubscribe_rate": d(unsubscribe_uniques, delivered),
            "spam_complaint_rate": d(spam, delivered),
            "average_order_value": d(conversion_value, conversions),
            "revenue_per_recipient": d(conversion_value, recipients),
            "message_segment_count_sum": segments,
            "text_message_credit_usage_amount": segments,
            "text_message_spend": float(spend),
            "text_message_roi": d(conversion_value, spend),
        }

    def _h_report(self, ctx):
        params = query_params(ctx, {"fields[campaign-values-report]", "page_cursor"})
        frep = fields_param(params, "fields[campaign-values-report]", {"id", "results"})
        attrs = post_attributes(ctx, "campaign-values-report",
                                {"statistics", "timeframe", "conversion_metric_id", "group_by", "filter"})
        stats = attrs.get("statistics")
        if not isinstance(stats, list) or not stats:
            raise bad("'statistics' is required and must be a non-empty list.",
                       pointer="/data/attributes/statistics")
        for s in stats:
            if s not in REPORT_STATISTICS:
                raise bad(f"'{s}' is not a valid statistic.", pointer="/data/attributes/statistics")
        if "timeframe" not in attrs:
            raise bad("'timeframe' is required.", pointer="/data/attributes/timeframe")
        t0, t1, incl = self._timeframe(attrs["timeframe"])
        conv = attrs.get("conversion_metric_id")
        if not isinstance(conv, str) or not conv:
            raise bad("'conversion_metric_id' is required.",
                       pointer="/data/attributes/conversion_metric_id")
        if conv not in self._metric_index:
            raise bad(f"Metric IDs ['{conv}'] do not exist.",
                       pointer="/data/attributes/conversion_metric_id")
        group_by = attrs.get("group_by")
        if group_by is None:
            group_by = ["campaign_id", "campaign_message_id", "send_channel"]
        if not isinstance(group_by, list) or any(g not in REPORT_GROUP_BY for g in group_by):
            raise bad("Invalid group_by.", pointer="/data/attributes/group_by")
        if "campaign_id" not in group_by or "campaign_message_id" not in group_by:
            raise bad("group_by must include campaign_id and campaign_message_id.",
                       pointer="/data/attributes/group_by")
        conds = []
        ftext = attrs.get("filter")
        if ftext is not None:
            if not isinstance(ftext, str):
                raise bad("filter must be a string.", pointer="/data/attributes/filter")
            try:
                conds = parse_filter(ftext, REPORT_FILTERS, max_list=100)
            except FilterError as e:
                raise bad(f"Invalid filter provided: {e}", pointer="/data/attributes/filter") from None
            fields_used = [f for _, f, _, _ in conds]
            if len(fields_used) != len(set(fields_used)):
                raise bad("Only one filter can be used per attribute.",
                           pointer="/data/attributes/filter")

        results = []
        campaign_ids: dict = {}
        for c in self._campaigns:
            st = c["send_ts"]
            if st is None or st < t0 or (st > t1 if incl else st >= t1):
                continue
            for mid in c["message_ids"]:
                m = self._messages[mid]
                vals = {
                    "campaign_id": c["id"], "campaign_message_id": mid,
                    "campaign_message_name": m["label"],
                    "send_channel": REPORT_CHANNEL[c["channel"]],
                    "tag_id": list(c["tag_ids"]),
                    "tag_name": [self._tag_by_id[t]["name"] for t in c["tag_ids"]],
                    "group": None, "group_name": None, "variation": None,
                    "variation_name": None,
                    "text_message_format": "SMS" if c["channel"] == "sms" else None,
                }
                ok = True
                for op, field, val, is_list in conds:
                    have = vals[field]
                    if field in ("tag_id", "tag_name"):
                        ok = (set(val) <= set(have)) if op == "contains-all" else bool(set(val) & set(have))
                    elif is_list:
                        ok = have in val
                    else:
                        ok = have == val
                    if not ok:
                        break
                if not ok:
                    continue
                allstats = self._msg_stats(m, conv)
                groupings = {}
                for g in group_by:
                    v = vals[g]
                    groupings[g] = (v[0] if v else None) if isinstance(v, list) else v
                results.append({"groupings": groupings,
                                "statistics": {s: allstats[s] for s in stats}})
                campaign_ids[c["id"]] = None
        rid = hashlib.sha1(ctx.body).hexdigest()[:26]
        base = self.base_url
        # Pages of results: the cursor belongs to this request body; the next page is the same
        # POST to links.next.
        offset = 0
        cur = params.get("page_cursor")
        if cur is not None:
            parts = dec_cursor(cur, "rep")
            try:
                if parts[0] != rid:
                    raise ValueError
                offset = int(parts[1])
            except (ValueError, IndexError):
                raise bad("Invalid cursor provided.", "page_cursor") from None
        next_link = None
        size = self.report_page_size
        if size:
            if offset + size < len(results):
                next_link = f"{base}/api/campaign-values-reports?" + urlencode(
                    {"page_cursor": enc_cursor("rep", rid, offset + size)})
            results = results[offset:offset + size]
            campaign_ids = {r["groupings"]["campaign_id"]: None for r in results}
        attributes = {"results": results}
        out = {"data": {"type": "campaign-values-report", "id": rid,
                        "attributes": attributes if frep is None or "results" in frep else {},
                        "relationships": {"campaigns": {
                            "data": [{"type": "campaign", "id": c} for c in campaign_ids],
                            "links": {"self": f"{base}/api/campaign-values-reports/{rid}/relationships/campaigns/",
                                      "related": f"{base}/api/campaign-values-reports/{rid}/campaigns/"}}}},
               "links": {"self": f"{base}/api/campaign-values-reports/", "next": next_link}}
        return 200, dumps(out).encode("utf-8"), []
