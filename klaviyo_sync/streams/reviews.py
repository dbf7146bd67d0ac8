"""Reviews (Klaviyo Reviews): a full pass each run (100 a page), reviews gone are removed. An account
without Klaviyo Reviews answers 403 although the key has ``reviews:read``: that is "not available",
said in the summary, not an error (exit 0, and a sync-all step ``ok``). A 403 naming the missing
scope stays the scope policy (exit 4 alone, ``skipped`` in sync-all)."""

from __future__ import annotations

from sqlite_utils import Database

from ..db import to_json
from ..errors import AuthError
from ..timeutil import normalize_iso
from .declare import INTEGER, REVIEWS_READ, TEXT, Column, Declaration, TableSpec, declare, flag, sync_declared
from .engine import Stream, SyncResult

NOT_AVAILABLE = "Klaviyo Reviews is not available on this account (HTTP 403 with the scope granted): nothing to sync"
REVIEWS_TABLE = TableSpec("reviews", "Product reviews, questions and ratings from Klaviyo Reviews (sync-reviews).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("review_type", TEXT, "review, question or rating."),
    Column("rating", INTEGER, "1-5; null for a question."),
    Column("title", TEXT, "The review's title."),
    Column("content", TEXT, "The review's text."),
    Column("author", TEXT, "The author's display name."),
    Column("email", TEXT, "The author's email address."),
    Column("verified", INTEGER, "1 if Klaviyo confirmed the author bought the product, else 0."),
    Column("status", TEXT, "published, pending, rejected ... (status.value)."),
    Column("product_external_id", TEXT, "The product's id in the shop platform."),
    Column("product_name", TEXT, "The product's name."),
    Column("product_url", TEXT, "The product's page."),
    Column("smart_quote", TEXT, "A quote summarizing the review."),
    Column("public_reply", TEXT, "JSON: the shop's public reply (author, content, updated), or null."),
    Column("images", TEXT, "JSON: the URLs of images submitted with the review."),
    Column("created", TEXT, "When the review was written (UTC)."),
    Column("updated", TEXT, "When it last changed (UTC)."),
))


def review_row(r: dict) -> tuple:
    a = r.get("attributes") or {}
    product = a.get("product") or {}
    return (r["id"], a.get("review_type"), a.get("rating"), a.get("title"), a.get("content"), a.get("author"),
            a.get("email"), flag(a.get("verified")), (a.get("status") or {}).get("value"), product.get("external_id"),
            product.get("name"), product.get("url"), a.get("smart_quote"), to_json(a.get("public_reply")),
            to_json(a.get("images")), normalize_iso(a.get("created")), normalize_iso(a.get("updated")))


STREAM = Stream(name="reviews", path="/api/reviews", table=REVIEWS_TABLE.table, row=review_row, type="review",
                page_size=100, sort="created")


def sync_reviews(client, db: Database, result: SyncResult | None = None) -> SyncResult:
    result = SyncResult.begin(result, ["reviews"])
    try:
        return sync_declared(client, db, SYNC_REVIEWS, result=result)
    except AuthError as exc:
        if exc.status != 403 or "missing required scopes" in str(exc):
            raise
        result.extra["note"] = NOT_AVAILABLE
        return result


SYNC_REVIEWS = declare(Declaration(
    command="sync-reviews",
    help="Sync every review, question and rating of Klaviyo Reviews; reviews gone from the account are removed. "
         "An account without Klaviyo Reviews is 'not available' (exit 0).",
    scope=REVIEWS_READ,
    tier="M",  # 10/s, 150/m
    tables=(REVIEWS_TABLE,),
    stream=STREAM,
    run=sync_reviews,
    sync_all=130,
))
