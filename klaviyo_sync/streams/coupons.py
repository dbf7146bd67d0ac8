"""Coupons, and (opt-in) their codes.

``GET /api/coupons`` is a full pass each run (100 a page). A code's id holds the code itself, a
secret an analyst may not need, and ``GET /api/coupon-codes`` answers only filtered by one coupon
(or profile) and needs its own scope, ``coupon-codes:read``: codes are read only with
``sync-coupons --codes``, one filtered pass per coupon; ``sync-all`` never reads them."""

from __future__ import annotations

from sqlite_utils import Database

from .. import ratelimit
from ..client import KlaviyoClient
from ..timeutil import normalize_iso
from ..db import to_json
from .declare import COUPONS_READ, TEXT, Column, Declaration, TableSpec, declare
from .engine import Stream, SyncResult, remove_unseen, run_stream

COUPONS_TABLE = TableSpec("coupons", "Coupons of the account (sync-coupons).", (
    Column("id", TEXT, "Klaviyo's id (primary key): the coupon's name in Klaviyo, e.g. SUMMER20."),
    Column("external_id", TEXT, "The coupon's id in the shop platform."),
    Column("description", TEXT, "The coupon's description."),
    Column("monitor_configuration", TEXT, "JSON: when Klaviyo warns of few codes left (low_balance_threshold)."),
))
CODES_TABLE = TableSpec("coupon_codes", "Coupon codes, opt-in: sync-coupons --codes (a code is a secret).", (
    Column("id", TEXT, "Klaviyo's id (primary key): {coupon id}-{the code}, so it holds the code."),
    Column("coupon_id", TEXT, "The coupon (coupons.id)."),
    Column("unique_code", TEXT, "The code a customer enters."),
    Column("status", TEXT, "UNASSIGNED, ASSIGNED_TO_PROFILE, USED, DELETING ..."),
    Column("expires_at", TEXT, "When the code expires (UTC), or null."),
))
CODES_PATH = "/api/coupon-codes"
ratelimit.declare_bucket("coupon-codes", (CODES_PATH,), "XL")  # 350/s, 3500/m: its own bucket


def coupon_row(r: dict) -> tuple:
    a = r.get("attributes") or {}
    config = a.get("monitor_configuration")
    return (r["id"], a.get("external_id"), a.get("description"), to_json(config))


def code_row(r: dict, coupon_id: str) -> tuple:
    a = r.get("attributes") or {}
    return (r["id"], coupon_id, a.get("unique_code"), a.get("status"), normalize_iso(a.get("expires_at")))


COUPONS = Stream(name="coupons", path="/api/coupons", table=COUPONS_TABLE.table, row=coupon_row, type="coupon",
                 page_size=100, params={"fields[coupon]": "external_id,description,monitor_configuration"})


def sync_coupons(client: KlaviyoClient, db: Database, result: SyncResult | None = None) -> SyncResult:
    result = SyncResult.begin(result, ["coupons"])
    run_stream(client, db, COUPONS, result, on_missing=remove_unseen(COUPONS.table))
    result.extra.setdefault("coupons_removed", 0)
    return result


def sync_coupon_codes(client: KlaviyoClient, db: Database, result: SyncResult) -> SyncResult:
    """Every code of every stored coupon (one filtered pass each); codes gone are removed, with
    the codes of coupons gone, in one transaction after the last page."""
    result.rows.setdefault("coupon_codes", 0)
    table = CODES_TABLE.table
    seen: set[str] = set()
    for (coupon_id,) in db.execute("SELECT id FROM coupons ORDER BY id").fetchall():
        params = {"filter": f"equals(coupon.id,'{coupon_id}')", "page[size]": "100",
                  "fields[coupon-code]": "unique_code,status,expires_at"}
        for page in client.paginate(CODES_PATH, params):
            rows = [code_row(r, coupon_id) for r in page.data if r.get("type") == "coupon-code"]
            seen.update(r[0] for r in rows)
            with db.atomic():
                result.add_rows("coupon_codes", table.write(db, rows))
            result.pages += 1
    with db.atomic():
        gone = sorted({r[0] for r in db.execute("SELECT id FROM coupon_codes").fetchall()} - seen)
        db.conn.executemany("DELETE FROM coupon_codes WHERE id = ?", [(i,) for i in gone])
    result.extra["coupon_codes_removed"] = len(gone)
    return result


SYNC_COUPONS = declare(Declaration(
    command="sync-coupons", help="", scope=COUPONS_READ, tier="L",  # 75/s, 750/m
    paths=("/api/coupons",), tables=(COUPONS_TABLE, CODES_TABLE), run=sync_coupons, sync_all=110,
    arguments={"codes": False},
))
