"""Which Klaviyo account a key belongs to, and which one a database holds.

``fetch_account`` reads ``GET /api/accounts`` (1/s, 15/min, scope ``accounts:read``): reusable by a
stream that keeps an ``account`` table. ``check_account`` runs once per run, before anything is
written: the first sync of a database remembers the account id (``sync_state`` key
``account.id``); a later run whose key belongs to another account is refused (exit 4), so that a
wrong key or env file cannot mix two accounts in one file, or remove one account's rows because
the other account does not have them.
"""

from __future__ import annotations

import logging
import sys

from sqlite_utils import Database

from . import db as store
from .client import KlaviyoClient
from .errors import ApiError, AuthError

log = logging.getLogger("klaviyo_sync")

ACCOUNTS_PATH = "/api/accounts"
STATE_KEY = "account.id"


class AccountMismatch(AuthError):
    """The key belongs to another account than the one the database holds."""


# What this process read from GET /api/accounts, per base URL (one key a process): the account
# check and sync-account share one request a run (the endpoint allows 15 a minute).
_READ: dict[str, dict | AuthError] = {}


def fetch_account(client: KlaviyoClient, *, reuse: bool = False) -> dict | None:
    """The key's account resource (``id``, ``attributes``), or None when the key may not read it
    (a 403: the key lacks ``accounts:read``). With ``reuse``, what this process already read."""
    if reuse and client.base_url in _READ:
        got = _READ[client.base_url]
        return None if isinstance(got, AuthError) else got
    try:
        body = client.request("GET", ACCOUNTS_PATH, expect="list")
    except AuthError as exc:
        if exc.status == 403:
            _READ[client.base_url] = exc
            return None
        raise
    data = body["data"]
    if len(data) != 1 or not isinstance(data[0], dict) or not isinstance(data[0].get("id"), str) \
            or not data[0]["id"]:
        raise ApiError(f"GET {ACCOUNTS_PATH}: expected exactly one account, got {len(data)} items "
                       "(a malformed answer)", endpoint=ACCOUNTS_PATH)
    _READ[client.base_url] = data[0]
    return data[0]


def stored_account_id(db: Database) -> str | None:
    if not db["sync_state"].exists():
        return None
    return store.get_state(db, STATE_KEY)


def check_account(client: KlaviyoClient, db: Database) -> dict | None:
    """Refuse (AccountMismatch, exit 4) a key of another account than the database's; remember
    the account of a database's first sync. Returns the account, or None when the key cannot
    read it (a warning is logged: the database's account is then not checked)."""
    account = fetch_account(client)
    stored = stored_account_id(db)
    if account is None:
        # Said like every other warning of the tool (not through the log's timestamped format).
        print(f"klaviyo-sync: warning: the API key cannot read {ACCOUNTS_PATH} (scope accounts:read): "
              "cannot check that it belongs to the account this database holds"
              f"{f' ({stored})' if stored else ''}", file=sys.stderr)
        return None
    if stored is not None and stored != account["id"]:
        raise AccountMismatch(
            f"this database holds Klaviyo account {stored}, but the API key belongs to account "
            f"{account['id']}: refusing to write one account's data into another's database "
            "(check KLAVIYO_API_KEY and --db)", status=None, endpoint=ACCOUNTS_PATH)
    if stored is None:
        with db.atomic():
            store.set_state(db, STATE_KEY, account["id"])
    return account
