"""The audience: ``GET /api/profiles``, lists, segments and their members (klaviyo-api.md 4.3, 10.1-10.3).

Builds on ``ProfilesResource``: every profile gets ``subscriptions`` (and ``predictive_analytics``),
and ``n_quiet_profiles`` more profiles are added that no event references. Lists and segments
("groups") hold members with a ``joined_group_at``. Tests change the account between syncs with the
public mutations (``change_profiles``, ``delete_profiles``, ``join``, ``leave``) and compare the
database with the public ground truth (``profile``, ``profile_ids``, ``members``, ...).
"""

from __future__ import annotations

import bisect
import random
from urllib.parse import parse_qsl

from ..data import CITIES, FIRST_NAMES, LAST_NAMES, dumps, iso, parse_iso, ulid
from ..errors import bad, not_found
from ..filters import cmp, filter_or_400
from ..hosting import Route, endpoint_bucket
from ..jsonapi import fields_param, page_size, query_params, sparse
from ..listing import ListEndpoint, page_of
from . import Resource
from .profiles import PROFILE_FIELDS

PROFILE_LIST_FIELDS = PROFILE_FIELDS | {"subscriptions", "predictive_analytics"}
MEMBER_FIELDS = PROFILE_LIST_FIELDS | {"joined_group_at"}
ADDITIONAL = {"subscriptions", "predictive_analytics"}
PROFILE_FILTERS = {
    "id": {"single": ("equals",), "list": ("any",), "type": "string"},
    "email": {"single": ("equals",), "list": ("any",), "type": "string"},
    "phone_number": {"single": ("equals",), "list": ("any",), "type": "string"},
    "external_id": {"single": ("equals",), "list": ("any",), "type": "string"},
    # Klaviyo accepts only these two on created/updated: a greater-or-equal is a 400.
    "created": {"single": ("greater-than", "less-than"), "type": "datetime"},
    "updated": {"single": ("greater-than", "less-than"), "type": "datetime"},
}
PROFILE_SORTS = {s for f in ("created", "email", "id", "updated") for s in (f, f"-{f}")}
GROUP_FILTERS = {
    "name": {"single": ("equals",), "list": ("any",), "type": "string"},
    "id": {"single": ("equals",), "list": ("any",), "type": "string"},
    "created": {"single": ("greater-than",), "type": "datetime"},
    "updated": {"single": ("greater-than",), "type": "datetime"},
}
SEGMENT_FILTERS = {**GROUP_FILTERS,
                   "is_active": {"single": ("equals",), "list": ("any",), "type": "boolean"},
                   "is_starred": {"single": ("equals",), "type": "boolean"}}
GROUP_SORTS = {s for f in ("created", "id", "name", "updated") for s in (f, f"-{f}")}
MEMBER_FILTERS = {"joined_group_at": {"single": ("greater-than", "greater-or-equal", "less-than",
                                                 "less-or-equal"), "type": "datetime"}}
LIST_FIELDS = {"name", "created", "updated", "opt_in_process", "profile_count"}
SEGMENT_FIELDS = {"name", "definition", "created", "updated", "is_active", "is_processing",
                  "is_starred", "profile_count"}
# Lists and segments: at most 10 a page; `include=tags` serves their tags (fake/resources/tags.py),
# `include=flow-triggers` an empty list.
_FLOW_FIELDS = frozenset({"archived", "created", "id", "name", "status", "trigger_type", "updated"})
GROUP_LISTS = {
    kind: ListEndpoint(kind, fields=frozenset(fields - {"profile_count"}), filters=filters,
                       sorts=("created", "id", "name", "updated"), page=(1, 10, 10), kind=kind[:2],
                       includes={"tags": ("tag", frozenset({"id", "name"})), "flow-triggers": ("flow", _FLOW_FIELDS)})
    for kind, fields, filters in (("list", LIST_FIELDS, GROUP_FILTERS), ("segment", SEGMENT_FIELDS, SEGMENT_FILTERS))
}
LIST_NAMES = ["Newsletter", "VIP Customers", "Back in Stock Alerts", "SMS Subscribers",
              "Wholesale", "Giveaway Entrants", "Preview List", "Events", "Loyalty", "Press"]
SEGMENT_NAMES = ["Engaged 30 Days", "Repeat Buyers", "Lapsed Customers", "High Value",
                 "Never Purchased", "Berlin Shoppers", "Cart Abandoners", "Newsletter Openers"]


def _email_marketing(rng, has_email: bool, ts: int) -> dict:
    consent = rng.choice(["SUBSCRIBED", "SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED"]) if has_email else "NEVER_SUBSCRIBED"
    suppression = []
    if has_email and rng.random() < 0.1:
        suppression = [{"reason": rng.choice(["HARD_BOUNCE", "SPAM_COMPLAINT", "USER_SUPPRESSED"]),
                        "timestamp": iso(ts)}]
    subscribed = consent == "SUBSCRIBED"
    return {
        "can_receive_email_marketing": has_email and not suppression and consent != "UNSUBSCRIBED",
        "consent": consent,
        "consent_timestamp": iso(ts) if consent != "NEVER_SUBSCRIBED" else None,
        "last_updated": iso(ts),
        "method": rng.choice(["FORM", "API", "PREFERENCE_PAGE"]) if subscribed else None,
        "method_detail": "" if subscribed else None,
        "custom_method_detail": None,
        "double_optin": rng.random() < 0.3 if subscribed else None,
        "suppression": suppression,
        "list_suppressions": [],
    }


def _subscriptions(rng, attrs: dict, ts: int) -> dict:
    phone = attrs.get("phone_number") is not None
    sms_consent = rng.choice(["SUBSCRIBED", "UNSUBSCRIBED"]) if phone else "NEVER_SUBSCRIBED"
    push = rng.random() < 0.2
    return {
        "email": {"marketing": _email_marketing(rng, attrs.get("email") is not None, ts)},
        "sms": {"marketing": {"can_receive_sms_marketing": sms_consent == "SUBSCRIBED",
                              "consent": sms_consent,
                              "consent_timestamp": iso(ts) if phone else None,
                              "method": "TEXT" if sms_consent == "SUBSCRIBED" else None,
                              "method_detail": "JOIN" if sms_consent == "SUBSCRIBED" else None,
                              "last_updated": iso(ts) if phone else None},
                "transactional": None},
        "mobile_push": {"marketing": {"can_receive_push_marketing": push,
                                      "consent": "SUBSCRIBED" if push else "NEVER_SUBSCRIBED",
                                      "consent_timestamp": iso(ts) if push else None}},
    }


class _Window:
    """``seq[start:]`` without copying: len() and slicing, as ``_page`` uses them."""

    def __init__(self, seq, start):
        self.seq, self.start = seq, start

    def __len__(self):
        return len(self.seq) - self.start

    def __getitem__(self, s: slice):
        return self.seq[self.start + s.start:self.start + min(s.stop, len(self))]


class _Group:
    """A list or a segment: attributes and members {profile index: joined_group_at epoch}."""

    def __init__(self, kind: str, gid: str, attrs: dict):
        self.kind, self.id, self.attrs = kind, gid, attrs
        self.members: dict[int, int] = {}
        self.tag_ids: list[str] = []  # set by fake/resources/tags.py


class AudienceResource(Resource):
    """Profiles as ``GET /api/profiles`` serves them, lists, segments and membership."""

    ROUTES = (
        Route("GET", "/api/profiles", "_h_profiles", tier="L", scope="profiles:read"),
        Route("GET", "/api/lists", "_h_lists", tier="L", scope="lists:read"),
        Route("GET", "/api/lists/{id}", "_h_list", tier="L", scope="lists:read"),
        Route("GET", "/api/lists/{id}/profiles", "_h_list_profiles", tier="L",
              scope=("lists:read", "profiles:read")),
        Route("GET", "/api/segments", "_h_segments", tier="L", scope="segments:read"),
        Route("GET", "/api/segments/{id}", "_h_segment", tier="L", scope="segments:read"),
        Route("GET", "/api/segments/{id}/profiles", "_h_segment_profiles", tier="L",
              scope=("segments:read", "profiles:read")),
    )

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-audience")
        # Profiles no event references: subscribers who did nothing in the synced windows.
        seen = set(self._pids)
        for j in range(self.n_quiet_profiles):
            k = len(self._pids)
            created = self.now_ts - 86400 * rng.randint(1, 900) - rng.randrange(86400)
            while True:
                pid = ulid(rng, created)
                if pid not in seen:
                    seen.add(pid)
                    break
            first, last, city = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(CITIES)
            self._pids.append(pid)
            self._pattrs.append({
                "email": f"quiet.{j}@example.org", "phone_number": None, "external_id": None,
                "first_name": first, "last_name": last, "organization": None, "locale": "en-US",
                "title": None, "image": None, "created": iso(created),
                "updated": iso(min(self.now_ts - 1, created + rng.randrange(86400 * 30))),
                "last_event_date": None,
                "location": {"address1": None, "address2": None, "city": city[0], "country": city[2],
                             "region": city[1], "zip": city[3], "timezone": city[4], "ip": None,
                             "latitude": None, "longitude": None},
                "properties": {"$source": "Signup Form"},
            })
            self._profile_index[pid] = k
        self._pupd = [int(parse_iso(a["updated"])) for a in self._pattrs]
        self._pcre = [int(parse_iso(a["created"])) for a in self._pattrs]
        self._psubs = [_subscriptions(rng, a, self._pupd[k]) for k, a in enumerate(self._pattrs)]
        self._ppred = [{"historic_clv": round(rng.uniform(0, 900), 2), "predicted_clv": round(rng.uniform(0, 400), 2),
                        "total_clv": None, "historic_number_of_orders": rng.randint(0, 12),
                        "predicted_number_of_orders": round(rng.uniform(0, 4), 2),
                        "average_days_between_orders": None, "average_order_value": round(rng.uniform(10, 120), 2),
                        "churn_probability": round(rng.random(), 2), "expected_date_of_next_order": None,
                        "ranked_channel_affinity": ["email", "sms"]} for _ in self._pattrs]
        self._deleted: set[int] = set()
        self._mutations = 0

        n = len(self._pids)
        self._groups: dict[str, _Group] = {}
        for kind, names, count in (("list", LIST_NAMES, self.n_lists), ("segment", SEGMENT_NAMES, self.n_segments)):
            for i in range(count):
                created = self.now_ts - 86400 * rng.randint(100, 800)
                gid = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(6))
                name = names[i % len(names)] + (f" {i // len(names) + 1}" if i >= len(names) else "")
                attrs = {"name": name, "created": iso(created),
                         "updated": iso(created + rng.randrange(86400 * 90))}
                if kind == "list":
                    attrs["opt_in_process"] = rng.choice(["single_opt_in", "double_opt_in"])
                else:
                    attrs.update({"definition": {"condition_groups": [{"conditions": [{
                        "type": "profile-metric", "metric_id": self._mids[i % len(self._mids)],
                        "measurement": "count", "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": i},
                        "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30 + i, "unit": "day"},
                        "metric_filters": None}]}]},
                        "is_active": i % 4 != 3, "is_processing": False, "is_starred": i == 0})
                g = _Group(kind, gid, attrs)
                share = rng.uniform(0.1, 0.6)
                for k in range(n):
                    if rng.random() < share:
                        g.members[k] = max(created, self._pcre[k]) + rng.randrange(86400 * 60)
                        g.members[k] = min(g.members[k], self.now_ts - 60)
                self._groups[gid] = g

    # ------------------------------------------------------------------ public mutations
    def _bump(self) -> int:
        self._mutations += 1
        self._json_cache.clear()  # events' included profiles must show the change too
        return self.now_ts + self._mutations

    def change_profiles(self, n: int, *, seed: int = 0) -> list[str]:
        """Change ``n`` live profiles (new email, flipped email consent, ``updated`` moved past
        every earlier value); returns their ids."""
        rng = random.Random(f"change-{self.seed}-{seed}-{self._mutations}")
        live = [k for k in range(len(self._pids)) if k not in self._deleted]
        chosen = rng.sample(live, n)
        ts = self._bump()
        for k in chosen:
            a = self._pattrs[k]
            a["email"] = f"changed.{k}.{self._mutations}@example.net"
            a["updated"] = iso(ts)
            self._pupd[k] = ts
            m = self._psubs[k]["email"]["marketing"]
            m["consent"] = "UNSUBSCRIBED" if m["consent"] == "SUBSCRIBED" else "SUBSCRIBED"
            m["can_receive_email_marketing"] = m["consent"] == "SUBSCRIBED" and not m["suppression"]
            m["last_updated"] = m["consent_timestamp"] = iso(ts)
        return [self._pids[k] for k in chosen]

    def delete_profiles(self, ids) -> None:
        """Delete profiles (e.g. a privacy request): they vanish from every endpoint."""
        for pid in ids:
            self._deleted.add(self._profile_index[pid])
        for g in self._groups.values():
            for pid in ids:
                g.members.pop(self._profile_index[pid], None)
        self._bump()

    def restore_profiles(self, ids) -> None:
        """Deleted profiles reappear, unchanged (their ``updated`` stays): e.g. a listing that
        missed them for a while. Their list and segment memberships stay gone."""
        for pid in ids:
            self._deleted.discard(self._profile_index[pid])
        self._bump()

    def join(self, group_id: str, profile_ids, at: int | None = None) -> None:
        """Profiles join a list or segment now (or at epoch ``at``); a rejoin moves joined_group_at."""
        ts = self._bump() if at is None else at
        for pid in profile_ids:
            self._groups[group_id].members[self._profile_index[pid]] = ts

    def leave(self, group_id: str, profile_ids) -> None:
        for pid in profile_ids:
            self._groups[group_id].members.pop(self._profile_index[pid], None)
        self._bump()

    # ------------------------------------------------------------------ ground truth
    def live_profile_ids(self, *, updated_after=None) -> set[str]:
        """Every profile of the account (deleted ones excluded); with ``updated_after`` (epoch
        seconds or ISO), only those updated later. (``profile_ids(since, until)`` is the events
        family's: profiles of events in a window.)"""
        if isinstance(updated_after, str):
            updated_after = parse_iso(updated_after)
        return {self._pids[k] for k in range(len(self._pids)) if k not in self._deleted
                and (updated_after is None or self._pupd[k] > updated_after)}

    def quiet_profile_ids(self) -> set[str]:
        """The profiles no event references."""
        return set(self._pids[self._np:])

    def deleted_profile_ids(self) -> set[str]:
        return {self._pids[k] for k in self._deleted}

    def profile(self, pid: str, *, predictive: bool = False) -> dict:
        """The profile resource as ``GET /api/profiles`` serves it (subscriptions included)."""
        k = self._profile_index[pid]
        attrs = dict(self._pattrs[k], subscriptions=self._psubs[k])
        if predictive:
            attrs["predictive_analytics"] = self._ppred[k]
        return {"type": "profile", "id": pid, "attributes": attrs}

    def list_ids(self) -> set[str]:
        return {g.id for g in self._groups.values() if g.kind == "list"}

    def segment_ids(self) -> set[str]:
        return {g.id for g in self._groups.values() if g.kind == "segment"}

    def group(self, gid: str) -> dict:
        """A list's or segment's attributes, with its profile_count."""
        g = self._groups[gid]
        return {"type": g.kind, "id": gid, "attributes": dict(g.attrs, profile_count=len(g.members))}

    def members(self, gid: str) -> dict[str, str]:
        """{profile id: joined_group_at ISO} of a list or segment."""
        return {self._pids[k]: iso(ts) for k, ts in self._groups[gid].members.items()}

    def delete_group(self, gid: str) -> None:
        del self._groups[gid]
        self._bump()

    # ------------------------------------------------------------------ profiles endpoint
    def _profile_doc(self, k: int, fields, additional: set, extra: dict | None = None) -> dict:
        attrs = dict(self._pattrs[k])
        if extra:
            attrs.update(extra)
        if "subscriptions" in additional:
            attrs["subscriptions"] = self._psubs[k]
        if "predictive_analytics" in additional:
            attrs["predictive_analytics"] = self._ppred[k]
        if fields is not None:
            keep = [f for f in fields if f not in ADDITIONAL or f in additional]
            attrs = sparse(attrs, keep)
        pid = self._pids[k]
        pl = f"{self.base_url}/api/profiles/{pid}"
        return {"type": "profile", "id": pid, "attributes": attrs,
                "relationships": {"lists": {"links": {"self": f"{pl}/relationships/lists/", "related": f"{pl}/lists/"}},
                                  "segments": {"links": {"self": f"{pl}/relationships/segments/",
                                                         "related": f"{pl}/segments/"}}},
                "links": {"self": f"{pl}/"}}

    def _additional(self, params, name) -> set:
        v = params.get(name)
        if v is None:
            return set()
        items = v.split(",")
        for it in items:
            if it not in ADDITIONAL:
                raise bad(f"'{it}' is not a valid additional field for '{name}'.", name)
        if "predictive_analytics" in items and self.enforce_limits:
            # predictive analytics lowers the endpoint to the M tier
            self._check_limits(endpoint_bucket("M", "/api/profiles?predictive_analytics"))
        return set(items)

    def _audience_page(self, ctx, params, rows: list, size: int, kind: str, render) -> tuple:
        page, nxt, prv = page_of(params, rows, size, kind)
        body = '{"data":[' + ",".join(dumps(render(k)) for k in page) + '],"links":' + dumps(self._links(ctx, nxt, prv)) + "}"
        return 200, body.encode("utf-8"), []

    def _h_profiles(self, ctx):
        params = query_params(ctx, {"fields[profile]", "additional-fields[profile]", "filter", "sort",
                                    "page[size]", "page[cursor]"})
        fp = fields_param(params, "fields[profile]", PROFILE_LIST_FIELDS)
        additional = self._additional(params, "additional-fields[profile]")
        size = page_size(params, 1, 100, 20)
        flt, sort = params.get("filter"), params.get("sort")
        if sort == "updated" and (flt is None or flt.startswith("greater-than(updated,")):
            return self._profiles_by_updated(ctx, params, flt, size, fp, additional)
        rows = [k for k in range(len(self._pids)) if k not in self._deleted]
        if params.get("filter") is not None:
            for op, field, val, is_list in filter_or_400(params["filter"], PROFILE_FILTERS, max_list=100):
                if field in ("created", "updated"):
                    col = self._pupd if field == "updated" else self._pcre
                    rows = [k for k in rows if cmp(op, col[k], val)]
                else:
                    want = set(val) if is_list else {val}
                    rows = [k for k in rows if (self._pids[k] if field == "id" else self._pattrs[k][field]) in want]
        sort = params.get("sort")
        if sort is not None:
            if sort not in PROFILE_SORTS:
                raise bad(f"'{sort}' is not a valid sort field.", "sort")
            key = sort.lstrip("-")
            keyf = {"updated": lambda k: (self._pupd[k], self._pids[k]),
                    "created": lambda k: (self._pcre[k], self._pids[k]),
                    "id": lambda k: self._pids[k],
                    "email": lambda k: (self._pattrs[k]["email"] or "", self._pids[k])}[key]
            rows.sort(key=keyf, reverse=sort.startswith("-"))
        return self._audience_page(ctx, params, rows, size, "pr", lambda k: self._profile_doc(k, fp, additional))

    def _profiles_by_updated(self, ctx, params, flt, size, fp, additional):
        """The incremental query's fast path (same answer): live profiles ordered by (updated,
        id) once per state of the account, then a bisect per page instead of a sort."""
        key = ("by-updated", self._mutations)
        order = self._json_cache.get(key)
        if order is None:
            live = sorted((k for k in range(len(self._pids)) if k not in self._deleted),
                          key=lambda k: (self._pupd[k], self._pids[k]))
            order = self._json_cache[key] = (live, [self._pupd[k] for k in live])
        live, stamps = order
        start = 0
        if flt is not None:
            ((_, _, val, _),) = filter_or_400(flt, PROFILE_FILTERS)
            start = bisect.bisect_right(stamps, val)
        rows = _Window(live, start)  # no copy of the tail per page
        return self._audience_page(ctx, params, rows, size, "pr", lambda k: self._profile_doc(k, fp, additional))

    # ------------------------------------------------------------------ lists and segments
    def _group_doc(self, g: _Group, fields, count: bool) -> dict:
        attrs = dict(g.attrs)
        if count:
            attrs["profile_count"] = len(g.members)
        if fields is not None:
            attrs = sparse(attrs, [f for f in fields if f != "profile_count" or count])
        gl = f"{self.base_url}/api/{g.kind}s/{g.id}"
        return {"type": g.kind, "id": g.id, "attributes": attrs,
                "relationships": {"profiles": {"links": {"self": f"{gl}/relationships/profiles/",
                                                         "related": f"{gl}/profiles/"}}},
                "links": {"self": f"{gl}/"}}

    def _h_groups(self, ctx, kind: str):
        tags = "tags" in (dict(parse_qsl(ctx.query, keep_blank_values=True)).get("include") or "").split(",")

        def render(g, fields):
            doc = self._group_doc(g, fields, False)
            if tags:
                doc["relationships"]["tags"] = {"data": [{"type": "tag", "id": t} for t in g.tag_ids]}
            return doc

        def included(page, inc, fieldsets):
            if "tags" not in inc:
                return []
            ids = dict.fromkeys(t for g in page for t in g.tag_ids)
            return [self.tag_resource(self._tag_by_id[t], fieldsets["tag"]) for t in ids]

        return GROUP_LISTS[kind].respond(
            self, ctx, [g for g in self._groups.values() if g.kind == kind],
            value=lambda g, f: g.id if f == "id" else g.attrs[f], render=render, included=included)

    def _h_group(self, ctx, kind: str, gid: str):
        params = query_params(ctx, {f"fields[{kind}]", f"additional-fields[{kind}]", "include",
                                    "fields[flow]", "fields[tag]"})
        fg = fields_param(params, f"fields[{kind}]", LIST_FIELDS if kind == "list" else SEGMENT_FIELDS)
        extra = params.get(f"additional-fields[{kind}]")
        if extra is not None and extra != "profile_count":
            raise bad(f"'{extra}' is not a valid additional field for '{kind}'.", f"additional-fields[{kind}]")
        if extra and self.enforce_limits:
            self._check_limits(endpoint_bucket("XS", f"/api/{kind}s?profile_count"))  # 1/s, 15/m
        g = self._groups.get(gid)
        if g is None or g.kind != kind:
            raise not_found(f"A {kind} with id '{gid}' does not exist.")
        doc = {"data": self._group_doc(g, fg, bool(extra)), "links": {"self": f"{self.base_url}{ctx.path}"}}
        return 200, dumps(doc).encode("utf-8"), []

    def _h_members(self, ctx, kind: str, gid: str):
        params = query_params(ctx, {"fields[profile]", "additional-fields[profile]", "filter", "sort",
                                    "page[size]", "page[cursor]"})
        fp = fields_param(params, "fields[profile]", MEMBER_FIELDS)
        additional = self._additional(params, "additional-fields[profile]")
        size = page_size(params, 1, 100, 20)
        g = self._groups.get(gid)
        if g is None or g.kind != kind:
            raise not_found(f"A {kind} with id '{gid}' does not exist.")
        rows = list(g.members)
        if params.get("filter") is not None:
            for op, _field, val, _ in filter_or_400(params["filter"], MEMBER_FILTERS):
                rows = [k for k in rows if cmp(op, g.members[k], val)]
        sort = params.get("sort")
        if sort is not None:
            if sort not in ("joined_group_at", "-joined_group_at"):
                raise bad(f"'{sort}' is not a valid sort field.", "sort")
            rows.sort(key=lambda k: (g.members[k], self._pids[k]), reverse=sort.startswith("-"))
        return self._audience_page(ctx, params, rows, size, "gm", lambda k: self._profile_doc(
            k, fp, additional, {"joined_group_at": iso(g.members[k])}))

    def _h_lists(self, ctx):
        return self._h_groups(ctx, "list")

    def _h_segments(self, ctx):
        return self._h_groups(ctx, "segment")

    def _h_list(self, ctx, gid):
        return self._h_group(ctx, "list", gid)

    def _h_segment(self, ctx, gid):
        return self._h_group(ctx, "segment", gid)

    def _h_list_profiles(self, ctx, gid):
        return self._h_members(ctx, "list", gid)

    def _h_segment_profiles(self, ctx, gid):
        return self._h_members(ctx, "segment", gid)
