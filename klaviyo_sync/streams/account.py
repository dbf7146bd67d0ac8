"""The account itself: ``GET /api/accounts`` answers the one account the key belongs to (1/s,
15/m). Its time zone is the one Klaviyo's reports count days in (streams/series.py reads it
from this table)."""

from __future__ import annotations

from .declare import ACCOUNTS_READ, INTEGER, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import Stream

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


SYNC_ACCOUNT = declare(Declaration(
    command="sync-account",
    help="Sync the account the API key belongs to: its time zone (the days Klaviyo's reports count), "
         "currency, locale and contact details.",
    scope=ACCOUNTS_READ,
    tier="accounts",  # 1/s, 15/m
    tables=(ACCOUNT_TABLE,),
    stream=Stream(name="account", path="/api/accounts", table=ACCOUNT_TABLE.table, row=account_row, type="account"),
    sync_all=5,  # first: the other steps count days in its time zone
))
