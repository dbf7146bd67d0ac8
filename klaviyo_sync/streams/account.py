"""The account itself: ``GET /api/accounts`` answers the one account the key belongs to (1/s,
15/m). Its time zone is the one Klaviyo's reports count days in (streams/series.py reads it
from this table). The run's account check (klaviyo_sync/account.py) reads the same resource
before anything is written; this step stores what that read got, so a run asks once."""

from __future__ import annotations

from sqlite_utils import Database

from ..account import ACCOUNTS_PATH, fetch_account
from ..errors import AuthError
from .declare import ACCOUNTS_READ, INTEGER, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import SyncResult

ACCOUNT_TABLE = TableSpec("account", "The Klaviyo account the API key belongs to (sync-account).", (
    Column("id", TEXT, "Klaviyo's account id (primary key; also its public API key, the site id)."),
    Column("organization_name", TEXT, "The organization's name."),
    Column("timezone", TEXT, "The account's IANA time zone: Klaviyo's reports count days in it."),
    Column("preferred_currency", TEXT, "The account's currency (ISO 4217), e.g. USD."),
    Column("locale", TEXT, "The account's locale, e.g. en-US."),
    Column("industry", TEXT, "The industry the account gave Klaviyo."),
    Column("test_account", INTEGER, "1 if it is a test account, else 0."),
    Column("default_sender_name", TEXT, "The default sender name of its messages."),
    Column("default_sender_email", TEXT, "The default sender email address."),
    Column("website_url", TEXT, "The account's website."),
    Column("country", TEXT, "The country of its street address."),
))


def account_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    contact = a.get("contact_information") or {}
    address = contact.get("street_address") or {}
    return (resource["id"], contact.get("organization_name"), a.get("timezone"), a.get("preferred_currency"),
            a.get("locale"), a.get("industry"), flag(a.get("test_account")), contact.get("default_sender_name"),
            contact.get("default_sender_email"), contact.get("website_url"), address.get("country"))


def sync_account(client, db: Database, result: SyncResult | None = None, *, reuse: bool = True) -> SyncResult:
    """Store the key's account (the one row of ``account``); with ``reuse``, the resource this
    process already read for the account check. A key without accounts:read: a 403 AuthError."""
    result = SyncResult.begin(result, ["account"])
    resource = fetch_account(client, reuse=reuse)
    if resource is None:
        raise AuthError(f"GET {ACCOUNTS_PATH}: permission denied", status=403, endpoint=ACCOUNTS_PATH)
    with db.atomic():
        result.add_rows("account", ACCOUNT_TABLE.table.write(db, [account_row(resource)]))
        result.extra["account_removed"] = db.execute("DELETE FROM account WHERE id IS NOT ?",
                                                     [resource["id"]]).rowcount
    result.extra["timezone"] = (resource.get("attributes") or {}).get("timezone")
    return result


SYNC_ACCOUNT = declare(Declaration(
    command="sync-account", help="", scope=ACCOUNTS_READ,
    tier="accounts",  # 1/s, 15/m
    paths=(ACCOUNTS_PATH,), tables=(ACCOUNT_TABLE,),
    run=lambda client, db, result: sync_account(client, db, result),
    sync_all=5,  # first: the other steps count days in its time zone
))
