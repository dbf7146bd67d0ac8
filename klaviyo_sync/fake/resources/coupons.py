"""Coupons: ``GET /api/coupons`` (OpenAPI get_coupons: coupons:read, 75/s and 750/m, page size 1-100, no
filter, no sort) and their codes, ``GET /api/coupon-codes`` (coupon-codes:read, 350/s and 3500/m, page size
1-100), which answers only filtered by a coupon or a profile (``coupon.id`` / ``profile.id``), as Klaviyo
does. A code's id is ``{coupon id}-{the code}``.

Ground truth: ``coupons`` (a ``listing.Collection``), ``coupon_code_ids()``, ``coupon_code(id)``,
``remove_coupon_code(id)``."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

from ..data import iso
from ..errors import bad
from ..hosting import Route
from ..jsonapi import sparse
from ..listing import Collection, ListEndpoint
from . import Resource

_CMP = ("greater-or-equal", "greater-than", "less-or-equal", "less-than")
COUPONS = ListEndpoint("coupon", fields=frozenset({"description", "external_id", "id", "monitor_configuration"}),
                       page=(1, 100, 100), default_sort=None, kind="cpn")
CODES = ListEndpoint(
    "coupon-code", fields=frozenset({"expires_at", "id", "status", "unique_code"}), page=(1, 100, 100),
    filters={"expires_at": {"single": _CMP, "type": "datetime"}, "status": {"single": ("equals",), "type": "string"},
             "coupon.id": {"single": ("equals",), "list": ("any",), "type": "string"},
             "profile.id": {"single": ("equals",), "list": ("any",), "type": "string"}},
    includes={"coupon": ("coupon", COUPONS.fields)}, default_sort=None, kind="cc")
NAMES = ["WELCOME10", "SUMMER20", "VIPFREESHIP", "WINBACK15", "BIRTHDAY"]


class CouponsResource(Resource):
    ROUTES = (Route("GET", "/api/coupons", "_h_coupons", tier="L", scope="coupons:read"),
              Route("GET", "/api/coupon-codes", "_h_coupon_codes", tier="XL", scope="coupon-codes:read"))
    OPTIONS = {"n_codes_per_coupon": 130}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-coupons")
        rows = {name: {"external_id": name, "description": f"{name[:-2].title()} offer",
                       "monitor_configuration": {"low_balance_threshold": rng.choice([10, 50, 100])}}
                for name in NAMES}
        self.coupons = Collection(COUPONS, "/api/coupons", rows)
        self._codes = {}
        for k, name in enumerate(NAMES):
            for _ in range(self.n_codes_per_coupon if k % 2 == 0 else 7):
                code = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(10))
                profile = rng.choice(self._pids) if self._pids and rng.random() < 0.4 else None
                self._codes[f"{name}-{code}"] = {
                    "coupon_id": name, "profile_id": profile, "unique_code": code,
                    "status": "ASSIGNED_TO_PROFILE" if profile else rng.choice(["UNASSIGNED", "USED"]),
                    "expires_at": iso(self.now_ts + rng.randint(1, 90) * 86400).replace("Z", "+00:00")}

    def coupon_code_ids(self) -> set[str]:
        return {i for i, c in self._codes.items() if c["coupon_id"] in self.coupons.ids()}

    def coupon_code(self, code_id: str) -> dict:
        return dict(self._codes[code_id])

    def remove_coupon_code(self, code_id: str) -> None:
        del self._codes[code_id]

    def _h_coupons(self, ctx):
        return self.coupons.respond(self, ctx)

    def _h_coupon_codes(self, ctx):
        text = dict(parse_qsl(ctx.query, keep_blank_values=True)).get("filter")
        if not text or ("coupon.id" not in text and "profile.id" not in text):
            raise bad("A filter on coupon.id or profile.id is required, e.g. equals(coupon.id,'SUMMER20').",
                      "filter")
        base, live = self.base_url, self.coupons.ids()

        def value(row, field):
            code_id, c = row
            return {"id": code_id, "coupon.id": c["coupon_id"], "profile.id": c["profile_id"]}.get(field, c.get(field))

        def render(row, fields):
            code_id, c = row
            attrs = {"unique_code": c["unique_code"], "expires_at": c["expires_at"], "status": c["status"]}
            return {"type": "coupon-code", "id": code_id, "attributes": sparse(attrs, fields),
                    "relationships": {"coupon": {"data": {"type": "coupon", "id": c["coupon_id"]}}},
                    "links": {"self": f"{base}/api/coupon-codes/{code_id}/"}}

        rows = [(i, c) for i, c in sorted(self._codes.items()) if c["coupon_id"] in live]
        return CODES.respond(self, ctx, rows, value=value, render=render)
