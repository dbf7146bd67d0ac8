"""Push tokens: ``GET /api/push-tokens`` (OpenAPI get_push_tokens: profiles:read and push-tokens:read,
10/s and 150/m, page size 1-100, default 20; no sort; filters as the spec lists them; the profile
relationship's ``data`` only with ``include=profile``)."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

from ..data import iso
from ..hosting import Route
from ..jsonapi import sparse
from ..listing import Collection, ListEndpoint
from . import Resource

_META = ("app_build", "app_id", "app_name", "app_version", "device_id", "device_model", "environment",
         "klaviyo_sdk", "manufacturer", "os_name", "os_version", "sdk_version")
_EQ = {"single": ("equals",), "type": "string"}
PUSH_TOKENS = ListEndpoint(
    "push-token", fields=frozenset({"background", "created", "enablement_status", "id", "metadata", "platform",
                                    "recorded_date", "token", "vendor", *(f"metadata.{m}" for m in _META)}),
    filters={"id": _EQ, "profile.id": _EQ, "enablement_status": _EQ, "platform": _EQ}, page=(1, 100, 20),
    includes={"profile": ("profile", frozenset({"email", "external_id", "first_name", "id", "last_name",
                                                "phone_number"}))}, default_sort=None, kind="pt")


class PushTokensResource(Resource):
    """``fake.push_tokens``: a ``listing.Collection`` (each row's ``profile_id`` is its profile)."""

    ROUTES = (Route("GET", "/api/push-tokens", "_h_push_tokens", tier="M", scope=("profiles:read", "push-tokens:read")),)
    OPTIONS = {"n_push_tokens": 150}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-push-tokens")
        rows = {}
        for k in range(self.n_push_tokens if self._pids else 0):
            ios = k % 3 != 0
            rows[f"{rng.getrandbits(64):016x}"] = {
                "profile_id": rng.choice(self._pids), "token": f"{rng.getrandbits(128):032x}",
                "platform": "ios" if ios else "android", "vendor": "APNs" if ios else "FCM",
                "enablement_status": rng.choice(["AUTHORIZED", "AUTHORIZED", "DENIED", "NOT_DETERMINED"]),
                "background": rng.choice(["AVAILABLE", "DENIED"]),
                "created": iso(self.now_ts - rng.randint(86400, 300 * 86400)).replace("Z", "+00:00"),
                "recorded_date": iso(self.now_ts - rng.randint(0, 86400)).replace("Z", "+00:00"),
                "metadata": {"app_id": "com.example.shop", "os_name": "ios" if ios else "android",
                             "device_model": rng.choice(["iPhone15,2", "Pixel 8", "SM-S911B"]),
                             "app_version": "4.2.0"}}
        self.push_tokens = Collection(PUSH_TOKENS, "/api/push-tokens", rows)

    def _h_push_tokens(self, ctx):
        base = self.base_url
        with_profile = "profile" in (dict(parse_qsl(ctx.query, keep_blank_values=True)).get("include") or "").split(",")

        def render(row, fields):
            token_id, a = row
            link = f"{base}/api/push-tokens/{token_id}"
            rel = {"links": {"self": f"{link}/relationships/profile/", "related": f"{link}/profile/"}}
            if with_profile:
                rel["data"] = {"type": "profile", "id": a["profile_id"]}
            attrs = {k: v for k, v in a.items() if k != "profile_id"}
            return {"type": "push-token", "id": token_id, "attributes": sparse(attrs, fields),
                    "relationships": {"profile": rel}, "links": {"self": f"{link}/"}}

        def included(page, inc, fieldsets):
            ids = dict.fromkeys(a["profile_id"] for _, a in page)
            return [{"type": "profile", "id": p, "attributes": {}} for p in ids]

        rows = [(i, self.push_tokens.get(i)) for i in sorted(self.push_tokens.ids())]
        return PUSH_TOKENS.respond(self, ctx, rows, render=render, included=included,
                                   value=lambda r, f: r[0] if f == "id" else r[1]["profile_id"] if f == "profile.id"
                                   else r[1].get(f))
