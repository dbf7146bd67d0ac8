"""Catalogs: ``GET /api/catalog-items`` (``include=variants``), ``/api/catalog-variants`` and
``/api/catalog-categories`` (OpenAPI: catalogs:read, 350/s and 3500/m, page size 1-100, sort
``created`` only; filters as the spec lists them). Only catalogs built through the API are served, as
from Klaviyo: ``FakeKlaviyo(n_catalog_items=0)`` is an account whose catalog comes from Shopify.

Ground truth: ``catalog_items``, ``catalog_variants`` (each row's ``item_id`` is its item) and
``catalog_categories``, each a ``listing.Collection``."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

from ..data import iso
from ..hosting import Route
from ..jsonapi import sparse
from ..listing import Collection, ListEndpoint
from . import Resource

_COMMON = {"created", "custom_metadata", "description", "external_id", "id", "image_full_url",
           "image_thumbnail_url", "images", "price", "published", "title", "updated", "url"}
VARIANT_FIELDS = frozenset(_COMMON | {"inventory_policy", "inventory_quantity", "sku"})
_IDS = {"list": ("any",), "type": "string"}
_TITLE = {"single": ("contains",), "type": "string"}
_PUBLISHED = {"single": ("equals",), "type": "boolean"}
ITEMS = ListEndpoint("catalog-item", fields=frozenset(_COMMON), sorts=("created",), page=(1, 100, 100),
                     filters={"ids": _IDS, "category.id": {"single": ("equals",), "type": "string"}, "title": _TITLE,
                              "published": _PUBLISHED},
                     includes={"variants": ("catalog-variant", VARIANT_FIELDS)}, default_sort=None, kind="ci")
VARIANTS = ListEndpoint("catalog-variant", fields=VARIANT_FIELDS, sorts=("created",), page=(1, 100, 100),
                        filters={"ids": _IDS, "item.id": {"single": ("equals",), "type": "string"},
                                 "sku": {"single": ("equals",), "type": "string"}, "title": _TITLE,
                                 "published": _PUBLISHED}, default_sort=None, kind="cv")
CATEGORIES = ListEndpoint("catalog-category", fields=frozenset({"external_id", "id", "name", "updated"}),
                          sorts=("created",), page=(1, 100, 100), default_sort=None, kind="cc",
                          filters={"ids": _IDS, "item.id": {"single": ("equals",), "type": "string"},
                                   "name": {"single": ("contains",), "type": "string"}})
KINDS = ["Shirt", "Trousers", "Tote", "Beanie", "Sneakers", "Scarf"]


def _value(row, field):
    row_id, a = row
    return row_id if field in ("id", "ids") else a.get(field)


class CatalogsResource(Resource):
    ROUTES = (Route("GET", "/api/catalog-items", "_h_catalog_items", tier="XL", scope="catalogs:read"),
              Route("GET", "/api/catalog-variants", "_h_catalog_variants", tier="XL", scope="catalogs:read"),
              Route("GET", "/api/catalog-categories", "_h_catalog_categories", tier="XL", scope="catalogs:read"))
    OPTIONS = {"n_catalog_items": 140}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-catalogs")
        stamp = lambda ts: iso(ts).replace("Z", "+00:00")  # noqa: E731
        items, variants, categories = {}, {}, {}
        if self.n_catalog_items:
            for name in ("Apparel", "Accessories", "Sale"):
                categories[f"$custom:::$default:::{name.upper()}"] = {
                    "external_id": name.upper(), "name": name, "updated": stamp(self.now_ts - rng.randint(1, 90) * 86400)}
        for k in range(self.n_catalog_items):
            sku = f"ITEM-{k:04d}"
            created = self.now_ts - rng.randint(86400, 400 * 86400)
            item_id = f"$custom:::$default:::{sku}"
            price = round(rng.uniform(5, 200), 2)
            common = {"url": f"https://shop.example.com/p/{sku}", "image_full_url": None, "image_thumbnail_url": None,
                      "images": [], "custom_metadata": {"season": rng.choice(["SS", "AW"])}, "published": k % 9 != 4,
                      "created": stamp(created), "updated": stamp(created + rng.randint(0, 86400))}
            title = f"{KINDS[k % len(KINDS)]} {k}"
            items[item_id] = {"external_id": sku, "title": title, "description": f"The {title}.", "price": price, **common}
            for size in ("S", "M", "L")[: 1 + k % 3]:
                variants[f"{item_id}-{size}"] = {
                    "item_id": item_id, "external_id": f"{sku}-{size}", "title": f"{title} {size}",
                    "description": f"The {title}, size {size}.", "sku": f"{sku}-{size}", "inventory_policy": 0,
                    "inventory_quantity": rng.randint(0, 40), "price": price, **common}
        self.catalog_items = Collection(ITEMS, "/api/catalog-items", items, updated="updated", clock=self.now_ts)
        self.catalog_variants = Collection(VARIANTS, "/api/catalog-variants", variants, updated="updated",
                                           clock=self.now_ts)
        self.catalog_categories = Collection(CATEGORIES, "/api/catalog-categories", categories, updated="updated",
                                             clock=self.now_ts)

    def _variant(self, row, fields):
        variant_id, a = row
        return {"type": "catalog-variant", "id": variant_id,
                "attributes": sparse({k: v for k, v in a.items() if k != "item_id"}, fields),
                "links": {"self": f"{self.base_url}/api/catalog-variants/{variant_id}/"}}

    def _h_catalog_items(self, ctx):
        with_variants = "variants" in (dict(parse_qsl(ctx.query, keep_blank_values=True)).get("include") or "").split(",")
        variants = [(i, self.catalog_variants.get(i)) for i in sorted(self.catalog_variants.ids())]
        of_item: dict[str, list] = {}
        for row in variants:
            of_item.setdefault(row[1]["item_id"], []).append(row)

        def render(row, fields):
            item_id, a = row
            link = f"{self.base_url}/api/catalog-items/{item_id}"
            rel = {"links": {"self": f"{link}/relationships/variants/", "related": f"{link}/variants/"}}
            if with_variants:
                rel["data"] = [{"type": "catalog-variant", "id": v} for v, _ in of_item.get(item_id, ())]
            return {"type": "catalog-item", "id": item_id, "attributes": sparse(dict(a), fields),
                    "relationships": {"variants": rel}, "links": {"self": f"{link}/"}}

        def included(page, inc, fieldsets):
            return [self._variant(v, fieldsets["catalog-variant"]) for item_id, _ in page for v in of_item.get(item_id, ())]

        rows = [(i, self.catalog_items.get(i)) for i in sorted(self.catalog_items.ids())]
        return ITEMS.respond(self, ctx, rows, value=_value, render=render, included=included)

    def _h_catalog_variants(self, ctx):
        rows = [(i, self.catalog_variants.get(i)) for i in sorted(self.catalog_variants.ids())]
        return VARIANTS.respond(self, ctx, rows, render=self._variant,
                                value=lambda r, f: r[1]["item_id"] if f == "item.id" else _value(r, f))

    def _h_catalog_categories(self, ctx):
        def render(row, fields):
            return {"type": "catalog-category", "id": row[0], "attributes": sparse(dict(row[1]), fields),
                    "links": {"self": f"{self.base_url}/api/catalog-categories/{row[0]}/"}}

        rows = [(i, self.catalog_categories.get(i)) for i in sorted(self.catalog_categories.ids())]
        return CATEGORIES.respond(self, ctx, rows, value=_value, render=render)  # item.id: no item links here
