"""Push tokens of the account's profiles (mobile app push): a full pass each run, 100 a page (the API's
maximum); tokens gone from the account are removed."""

from __future__ import annotations

from ..db import to_json
from ..timeutil import normalize_iso
from .declare import PUSH_TOKENS_READ, TEXT, Column, Declaration, TableSpec, declare
from .engine import Stream

PUSH_TOKENS_TABLE = TableSpec("push_tokens", "Mobile push tokens of profiles (sync-push-tokens).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("profile_id", TEXT, "The profile the device belongs to (profiles.id)."),
    Column("token", TEXT, "The device's push token (APNs or FCM)."),
    Column("platform", TEXT, "ios or android."),
    Column("vendor", TEXT, "APNs or FCM."),
    Column("enablement_status", TEXT, "AUTHORIZED, DENIED, NOT_DETERMINED, PROVISIONAL or UNAUTHORIZED."),
    Column("background", TEXT, "The app's background state, e.g. AVAILABLE."),
    Column("created", TEXT, "When the token was created (UTC)."),
    Column("recorded_date", TEXT, "When the token was last recorded (UTC)."),
    Column("metadata", TEXT, "JSON: the device (app_id, app_version, device_model, os_name ...)."),
))


def push_token_row(r: dict) -> tuple:
    a = r.get("attributes") or {}
    profile = ((r.get("relationships") or {}).get("profile") or {}).get("data") or {}
    return (r["id"], profile.get("id"), a.get("token"), a.get("platform"), a.get("vendor"),
            a.get("enablement_status"), a.get("background"), normalize_iso(a.get("created")),
            normalize_iso(a.get("recorded_date")), to_json(a.get("metadata")))


SYNC_PUSH_TOKENS = declare(Declaration(
    command="sync-push-tokens",
    help="Sync every mobile push token of the account's profiles; tokens gone from the account are removed. "
         "Needs push-tokens:read and profiles:read.",
    scope=PUSH_TOKENS_READ,
    tier="M",  # 10/s, 150/m
    tables=(PUSH_TOKENS_TABLE,),
    stream=Stream(name="push_tokens", path="/api/push-tokens", table=PUSH_TOKENS_TABLE.table, row=push_token_row,
                  type="push-token", page_size=100,
                  params={"fields[push-token]": "token,platform,vendor,enablement_status,background,created,"
                                                "recorded_date,metadata",
                          "include": "profile", "fields[profile]": "id"}),
    sync_all=120,
))
