"""Sign-up forms: ``GET /api/forms`` (OpenAPI get_forms: forms:read, 3/s and 60/m, page size
1-100, default 20; filters and sorts as the spec lists them: no sort on id) and
``POST /api/form-series-reports`` (query_form_series: 1/s, 2/m and the daily report quota shared
with campaign, flow and segment reports).

A series report counts days in the account's time zone: a custom timeframe's wall-clock times
are read there (the offset is ignored, as the spec says), and its ``date_times`` are the local
midnights of the days, with their offset. ``series_days`` is shared with the segment series
report (segment_reports.py).

A live form's numbers for one day are a deterministic function of (seed, form id, local day):
``form_daily_statistics(form_id, "YYYY-MM-DD")`` is exactly what a daily series serves for it
(all zero for a draft, or a day before the form was created or after today).
"""

from __future__ import annotations

import hashlib
import random
import string
from datetime import date, datetime, timedelta

from ..data import dumps, iso
from ..errors import bad
from ..filters import FilterError, parse_filter
from ..hosting import Route
from ..jsonapi import fields_param, post_attributes, query_params
from ..listing import Collection, ListEndpoint
from . import Resource

_CMP = ("greater-or-equal", "greater-than", "less-or-equal", "less-than")
FORMS = ListEndpoint(
    "form", fields=frozenset({"ab_test", "created_at", "id", "name", "status", "updated_at"}),
    filters={"id": {"single": ("equals",), "list": ("any",), "type": "string"},
             "name": {"single": ("contains", "equals"), "list": ("any",), "type": "string"},
             "ab_test": {"single": ("equals",), "type": "boolean"},
             "updated_at": {"single": _CMP, "type": "datetime"},
             "created_at": {"single": _CMP, "type": "datetime"}},
    sorts=("created_at", "updated_at"), default_sort=None, page=(1, 100, 20), kind="fo")
FORM_STATISTICS = ["closed_form", "closed_form_uniques", "qualified_form", "qualified_form_uniques",
                   "submit_rate", "submits", "submitted_form_step", "submitted_form_step_uniques",
                   "viewed_form", "viewed_form_step", "viewed_form_step_uniques", "viewed_form_uniques"]
_ID_FILTER = {"single": ("equals",), "list": ("any",), "type": "string"}
FORM_REPORT_FILTERS = {"form_id": _ID_FILTER, "form_version_id": _ID_FILTER}
SERIES_INTERVALS = ("daily", "hourly", "monthly", "weekly")


def series_days(fake, ctx, kind: str, statistics: list[str], filters: dict, *, group_by: list[str] | None,
                earliest: date | None = None):
    """Check a series report request as Klaviyo does; -> (statistics asked, {filter field: ids
    or None}, group_by, every local day of the timeframe: days after today are zeros). Only the daily interval is
    served (the others are checked, then refused as this fake's limit)."""
    query_params(ctx, {f"fields[{kind}]"})
    allowed = {"statistics", "timeframe", "interval", "filter"} | ({"group_by"} if group_by is not None else set())
    attrs = post_attributes(ctx, kind, allowed)
    stats = attrs.get("statistics")
    if not isinstance(stats, list) or not stats:
        raise bad("'statistics' is required and must be a non-empty list.", pointer="/data/attributes/statistics")
    for s in stats:
        if s not in statistics:
            raise bad(f"'{s}' is not a valid statistic.", pointer="/data/attributes/statistics")
    if "timeframe" not in attrs:
        raise bad("'timeframe' is required.", pointer="/data/attributes/timeframe")
    interval = attrs.get("interval")
    if interval not in SERIES_INTERVALS:
        raise bad("'interval' is required: one of daily, hourly, monthly, weekly.", pointer="/data/attributes/interval")
    zone = fake.account_timezone
    t0, t1, incl = fake._timeframe(attrs["timeframe"], zone)
    first = datetime.fromtimestamp(t0, zone).date()
    last = datetime.fromtimestamp(t1 if incl else t1 - 1, zone).date()
    if earliest is not None and first < earliest:
        raise bad(f"Data is unavailable before {earliest.strftime('%B')} {earliest.day}, {earliest.year}. "
                  "Please use a time frame after this date.", pointer="/data/attributes/timeframe")
    if interval != "daily":
        raise bad(f"this fake serves the daily interval only, not {interval}.", pointer="/data/attributes/interval")
    if (last - first).days + 1 > 60:
        raise bad("The timeframe cannot be longer than 60 days for the daily interval.",
                  pointer="/data/attributes/timeframe")
    gb = attrs.get("group_by")
    if group_by is not None:
        gb = gb if gb is not None else group_by[:1]
        if not isinstance(gb, list) or not gb or any(g not in group_by for g in gb) or gb[0] != group_by[0]:
            raise bad("Invalid group_by.", pointer="/data/attributes/group_by")
    wanted: dict[str, list | None] = dict.fromkeys(filters)
    ftext = attrs.get("filter")
    if ftext is not None:
        if not isinstance(ftext, str):
            raise bad("filter must be a string.", pointer="/data/attributes/filter")
        try:
            conds = parse_filter(ftext, filters, max_list=100)
        except FilterError as e:
            raise bad(f"Invalid filter provided: {e}", pointer="/data/attributes/filter") from None
        used = [f for _, f, _, _ in conds]
        if len(used) != len(set(used)):
            raise bad("Only one filter can be used per attribute.", pointer="/data/attributes/filter")
        for _, name, value, is_list in conds:
            wanted[name] = list(value) if is_list else [value]
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return stats, wanted, gb, days


def series_answer(fake, ctx, kind: str, path: str, results: list, days: list[date]):
    zone = fake.account_timezone
    rid = hashlib.sha1(ctx.body).hexdigest()[:26]
    stamps = [datetime(d.year, d.month, d.day, tzinfo=zone).isoformat() for d in days]
    out = {"data": {"type": kind, "id": rid, "attributes": {"results": results, "date_times": stamps}},
           "links": {"self": f"{fake.base_url}{path}/"}}
    return 200, dumps(out).encode("utf-8"), []


class FormsResource(Resource):
    """``fake.forms``: the account's sign-up forms (a ``listing.Collection``) and their daily
    statistics (``form_daily_statistics``)."""

    ROUTES = (Route("GET", "/api/forms", "_h_forms", tier="S", scope="forms:read"),
              Route("POST", "/api/form-series-reports", "_h_form_series", tier="reports", scope="forms:read",
                    daily=True))
    OPTIONS = {"n_forms": 7}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-forms")
        rows = {}
        kinds = ("Popup", "Flyout", "Embedded", "Full page")
        for k in range(self.n_forms):
            fid = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(6))
            created = self.now_ts - rng.randint(20, 500) * 86400
            rows[fid] = {"name": f"{kinds[k % 4]} sign-up {k + 1}", "status": "draft" if k % 5 == 3 else "live",
                         "ab_test": k % 3 == 1, "created_at": iso(created).replace("Z", "+00:00"),
                         "updated_at": iso(created + rng.randint(0, 15 * 86400)).replace("Z", "+00:00")}
        self.forms = Collection(FORMS, "/api/forms", rows, updated="updated_at", clock=self.now_ts - 60)

    # ------------------------------------------------------------------ ground truth
    def form_daily_statistics(self, form_id: str, day: str) -> dict:
        """Every statistic of one form for one day of the account's time zone, as a daily
        series serves it (zeros when the form shows nothing that day)."""
        form = self.forms.get(form_id)
        d = date.fromisoformat(day)
        created = datetime.fromisoformat(form["created_at"]).astimezone(self.account_timezone).date()
        today = self.now.astimezone(self.account_timezone).date()
        if form["status"] != "live" or not created <= d <= today:
            return dict.fromkeys(FORM_STATISTICS, 0) | {"submit_rate": 0.0}
        r = random.Random(hashlib.blake2b(f"{self.seed}|{form_id}|{day}".encode(), digest_size=16).digest())
        views = r.randint(0, 900)
        uniques = int(views * r.uniform(0.6, 0.95))
        qualified = views + r.randint(0, 200)
        closed = int(views * r.uniform(0.3, 0.7))
        submits = int(uniques * r.uniform(0, 0.12))
        step_views = views + submits
        return {"viewed_form": views, "viewed_form_uniques": uniques, "qualified_form": qualified,
                "qualified_form_uniques": int(qualified * 0.9), "closed_form": closed,
                "closed_form_uniques": int(closed * 0.95), "submits": submits,
                "submit_rate": submits / uniques if uniques else 0.0,
                "viewed_form_step": step_views, "viewed_form_step_uniques": int(step_views * 0.9),
                "submitted_form_step": submits, "submitted_form_step_uniques": submits}

    # ------------------------------------------------------------------ handlers
    def _h_forms(self, ctx):
        return self.forms.respond(self, ctx)

    def _h_form_series(self, ctx):
        stats, wanted, group_by, days = series_days(self, ctx, "form-series-report", FORM_STATISTICS,
                                                    FORM_REPORT_FILTERS, group_by=["form_id", "form_version_id"])
        if "form_version_id" in group_by or wanted["form_version_id"] is not None:
            raise bad("this fake has no form versions.", pointer="/data/attributes/group_by")
        ids = [i for i in sorted(self.forms.ids()) if wanted["form_id"] is None or i in wanted["form_id"]]
        results = []
        for fid in ids:
            series = [self.form_daily_statistics(fid, d.isoformat()) for d in days]
            if not any(s["viewed_form"] or s["qualified_form"] for s in series):
                continue  # a form with nothing in the timeframe has no result
            results.append({"groupings": {"form_id": fid}, "statistics": {s: [x[s] for x in series] for s in stats}})
        return series_answer(self, ctx, "form-series-report", "/api/form-series-reports", results, days)
