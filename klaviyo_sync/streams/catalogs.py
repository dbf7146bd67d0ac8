"""Catalogs: items with their variants (``include=variants``: a variant's item comes with it, no request
per item) and categories, a full pass each run; what the account no longer has is removed. The API
serves only catalogs built through the API: a catalog Klaviyo syncs from Shopify (or another
integration) is not there, and a run that finds none says so."""

from __future__ import annotations

from sqlite_utils import Database

from ..db import to_json
from ..timeutil import normalize_iso
from .declare import CATALOGS_READ, INTEGER, REAL, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import Stream, SyncResult, delete_unseen, related, remove_unseen, run_stream

NONE_FOUND = ("found no catalog: the API returns only catalogs built through the API, "
              "not one Klaviyo syncs from Shopify or another integration")
_SHARED = (
    Column("external_id", TEXT, "Its id in the shop platform or feed."),
    Column("title", TEXT, "The title."),
    Column("description", TEXT, "The description."),
)
_MORE = (
    Column("price", REAL, "The price shown in emails."),
    Column("url", TEXT, "Its page on the shop's website."),
    Column("image_full_url", TEXT, "A full-size image."),
    Column("image_thumbnail_url", TEXT, "A thumbnail image."),
    Column("images", TEXT, "JSON: the URLs of its images."),
    Column("custom_metadata", TEXT, "JSON: custom metadata, as sent to Klaviyo."),
    Column("published", INTEGER, "1 if published, else 0."),
    Column("created", TEXT, "When it was created (UTC)."),
    Column("updated", TEXT, "When it last changed (UTC)."),
)
ITEMS_TABLE = TableSpec("catalog_items", "Catalog items built through the API (sync-catalogs).", (
    Column("id", TEXT, "Klaviyo's id (primary key), e.g. $custom:::$default:::SKU-1."), *_SHARED, *_MORE))
VARIANTS_TABLE = TableSpec("catalog_variants", "Variants of catalog items (sync-catalogs).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("item_id", TEXT, "The item it is a variant of (catalog_items.id)."),
    *_SHARED,
    Column("sku", TEXT, "The SKU."),
    Column("inventory_policy", INTEGER, "0, 1 or 2: how stock decides its visibility in product feeds."),
    Column("inventory_quantity", REAL, "How many are in stock."),
    *_MORE))
CATEGORIES_TABLE = TableSpec("catalog_categories", "Catalog categories (sync-catalogs).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("external_id", TEXT, "Its id in the shop platform or feed."),
    Column("name", TEXT, "The category's name."),
    Column("updated", TEXT, "When it last changed (UTC)."),
))


def _tail(a: dict) -> tuple:
    return (a.get("price"), a.get("url"), a.get("image_full_url"), a.get("image_thumbnail_url"),
            to_json(a.get("images")), to_json(a.get("custom_metadata")), flag(a.get("published")),
            normalize_iso(a.get("created")), normalize_iso(a.get("updated")))


def item_row(r: dict) -> tuple:
    a = r.get("attributes") or {}
    return (r["id"], a.get("external_id"), a.get("title"), a.get("description"), *_tail(a))


def variant_row(r: dict, item_id: str | None) -> tuple:
    a = r.get("attributes") or {}
    return (r["id"], item_id, a.get("external_id"), a.get("title"), a.get("description"), a.get("sku"),
            a.get("inventory_policy"), a.get("inventory_quantity"), *_tail(a))


def category_row(r: dict) -> tuple:
    a = r.get("attributes") or {}
    return (r["id"], a.get("external_id"), a.get("name"), normalize_iso(a.get("updated")))


CATEGORIES = Stream(name="catalog_categories", path="/api/catalog-categories", table=CATEGORIES_TABLE.table,
                    row=category_row, type="catalog-category", page_size=100)


def sync_catalogs(client, db: Database, result: SyncResult | None = None) -> SyncResult:
    result = SyncResult.begin(result, ["catalog_items", "catalog_variants", "catalog_categories"])
    items, variants = ITEMS_TABLE.table, VARIANTS_TABLE.table
    seen_items: set[tuple] = set()
    seen_variants: set[tuple] = set()
    params = {"include": "variants", "page[size]": "100"}
    for page in client.paginate("/api/catalog-items", params):
        item_of = {v["id"]: r["id"] for r in page.data for v in related(r, "variants")}
        item_rows = [item_row(r) for r in page.data if r.get("type") == "catalog-item"]
        variant_rows = [variant_row(v, item_of.get(v["id"])) for v in page.included
                        if v.get("type") == "catalog-variant"]
        with db.atomic():
            result.add_rows("catalog_items", items.write(db, item_rows))
            result.add_rows("catalog_variants", variants.write(db, variant_rows))
        seen_items.update((r[0],) for r in item_rows)
        seen_variants.update((r[0],) for r in variant_rows)
        result.pages += 1
    run_stream(client, db, CATEGORIES, result, on_missing=remove_unseen(CATEGORIES.table))
    with db.atomic():
        for table, seen in ((items, seen_items), (variants, seen_variants)):
            result.extra[f"{table.name}_removed"] = delete_unseen(db, table, seen)
    result.extra.setdefault("catalog_categories_removed", 0)
    if not seen_items and not db.execute("SELECT 1 FROM catalog_categories LIMIT 1").fetchone():
        result.extra["note"] = NONE_FOUND
    return result


SYNC_CATALOGS = declare(Declaration(
    command="sync-catalogs",
    help="Sync catalog items, their variants and the categories; what the account no longer has is removed. "
         "Only catalogs built through the API: one synced from Shopify is not served by the API.",
    scope=CATALOGS_READ,
    tier="XL",  # 350/s, 3500/m
    paths=("/api/catalog-items", "/api/catalog-categories"),
    tables=(ITEMS_TABLE, VARIANTS_TABLE, CATEGORIES_TABLE),
    run=sync_catalogs,
    sync_all=140,
))
