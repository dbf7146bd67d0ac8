"""The audience: every profile, lists, segments and their members, as declared streams.

- ``PROFILES``: ``/api/profiles`` incrementally on ``greater-than(updated, mark - 1 s)`` sorted
  by ``updated``, 100 a page, subscriptions always (predictive analytics only when asked: it
  drops the endpoint to 10/s). A pass over everything (first run, ``--full``) also tombstones the
  profiles the account no longer has: personal data NULLed, ``deleted_at`` set, the row kept so
  events keep their ``profile_id``.
- ``LISTS`` / ``SEGMENTS``: a full pass each run (they are few; 10 a page at most); a list gone
  from the account is removed with its members. ``profile_count`` is a separate 1/s, 15/m call.
- Membership (child streams of a list or segment): incremental on ``joined_group_at`` (a day of
  lookback), and a full pass that removes whoever left (the cursor cannot see a removal) in one
  transaction after the last page. Each member's profile lands in ``profiles`` too.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient
from ..db import to_json
from ..errors import RemovalsRefused, UsageError
from ..timeutil import iso, normalize_iso, parse_datetime, utcnow
from ..transform import profile_row
from .declare import (
    INTEGER, LISTS_READ, PROFILES_READ, SEGMENTS_READ, TEXT, Column, Declaration, TableSpec, declare, flag,
)
from .engine import Cursor, Included, Stream, SyncResult, Table, full_pass_key, run_stream

PROFILE_PAGE_SIZE = 100
PERSONAL_COLUMNS = [c for c in store.PROFILE_COLUMNS if c not in ("id", "created", "updated")] + [
    *store.PROFILE_AUDIENCE_COLUMNS, "predictive_analytics"]

# The account's own listing restores a tombstoned profile that reappears (events' included
# profiles, streams/events.py, never do).
PROFILES_TABLE = Table("profiles", (*store.PROFILE_COLUMNS, *store.PROFILE_AUDIENCE_COLUMNS),
                       newer="updated", tombstone="deleted_at", restores=True)
PREDICTIVE_TABLE = dataclasses.replace(PROFILES_TABLE, columns=(*PROFILES_TABLE.columns, "predictive_analytics"))
LISTS_TABLE = Table("lists", tuple(store.LIST_COLUMNS))
SEGMENTS_TABLE = Table("segments", tuple(store.SEGMENT_COLUMNS))


_flag = flag


def subscription_values(subscriptions: dict | None) -> tuple:
    """The consent columns an analyst filters on, from a profile's ``subscriptions`` object."""
    subs = subscriptions or {}
    email = ((subs.get("email") or {}).get("marketing")) or {}
    sms = ((subs.get("sms") or {}).get("marketing")) or {}
    push = ((subs.get("mobile_push") or {}).get("marketing")) or {}
    reasons = sorted({s.get("reason") for s in email.get("suppression") or [] if s.get("reason")})
    return (email.get("consent"), _flag(email.get("can_receive_email_marketing")),
            ",".join(reasons) or None, normalize_iso(email.get("consent_timestamp")),
            sms.get("consent"), _flag(sms.get("can_receive_sms_marketing")),
            normalize_iso(sms.get("consent_timestamp")),
            push.get("consent"), _flag(push.get("can_receive_push_marketing")),
            to_json(subscriptions))


def audience_profile_row(resource: dict) -> tuple:
    return profile_row(resource) + subscription_values((resource.get("attributes") or {}).get("subscriptions"))


def predictive_profile_row(resource: dict) -> tuple:
    return audience_profile_row(resource) + (to_json((resource.get("attributes") or {}).get("predictive_analytics")),)


def list_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    return (resource["id"], a.get("name"), normalize_iso(a.get("created")), normalize_iso(a.get("updated")),
            a.get("opt_in_process"))


def segment_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    return (resource["id"], a.get("name"), to_json(a.get("definition")), normalize_iso(a.get("created")),
            normalize_iso(a.get("updated")), _flag(a.get("is_active")), _flag(a.get("is_processing")),
            _flag(a.get("is_starred")))


PROFILES = Stream(
    name="profiles",
    path="/api/profiles",
    table=PROFILES_TABLE,
    row=audience_profile_row,
    type="profile",
    scope=PROFILES_READ,
    params={"additional-fields[profile]": "subscriptions"},
    page_size=PROFILE_PAGE_SIZE,
    # `updated` takes greater-than / less-than only; same-second ties are re-read and upserted.
    cursor=Cursor("updated", op="greater-than", lookback=timedelta(seconds=1)),
)
PROFILES_PREDICTIVE = dataclasses.replace(
    PROFILES, table=PREDICTIVE_TABLE, row=predictive_profile_row,
    params={"additional-fields[profile]": "subscriptions,predictive_analytics"})

LISTS = Stream(name="lists", path="/api/lists", table=LISTS_TABLE, row=list_row, type="list",
               scope=LISTS_READ, page_size=10, sort="id",
               params={"fields[list]": "name,created,updated,opt_in_process"})
SEGMENTS = Stream(name="segments", path="/api/segments", table=SEGMENTS_TABLE, row=segment_row, type="segment",
                  scope=SEGMENTS_READ, page_size=10, sort="id",
                  params={"fields[segment]": "name,definition,created,updated,is_active,is_processing,is_starred"})


GROUP_SCOPES = {"list": LISTS_READ, "segment": SEGMENTS_READ}


def _members_stream(group: str) -> Stream:
    table = Table(f"{group}_members", (f"{group}_id", "profile_id", "joined_group_at"), key=(f"{group}_id", "profile_id"))
    return Stream(
        name=f"{group}_members",
        path=f"/api/{group}s/{{parent}}/profiles",
        table=table,
        row=lambda r, parent: (parent, r["id"], normalize_iso((r.get("attributes") or {}).get("joined_group_at"))),
        type="profile",
        scope=f"{GROUP_SCOPES[group]} and {PROFILES_READ}",
        params={"additional-fields[profile]": "subscriptions"},
        page_size=PROFILE_PAGE_SIZE,
        # joined_group_at is "most recently joined": a rejoin moves it; a day back is cheap insurance.
        cursor=Cursor("joined_group_at", op="greater-than", lookback=timedelta(days=1)),
        included=(Included("profile", PROFILES_TABLE, audience_profile_row, from_data=True),),
    )


LIST_MEMBERS = _members_stream("list")
SEGMENT_MEMBERS = _members_stream("segment")
GROUPS = {"list": (LISTS, LIST_MEMBERS), "segment": (SEGMENTS, SEGMENT_MEMBERS)}


# -- the removal guard -------------------------------------------------------------------------
# A full pass that would remove more than REMOVAL_SHARE of the stored rows (when more than
# REMOVAL_FLOOR are stored) stops before removing anything: an account emptied by mistake (a
# wrong key, a broken answer) must not empty the database. --allow-removals lets it through.
REMOVAL_SHARE = 0.5
REMOVAL_FLOOR = 10
ALLOW_REMOVALS: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_removals", default=False)


def guard_removals(what: str, removing: int, stored: int) -> None:
    if ALLOW_REMOVALS.get() or stored <= REMOVAL_FLOOR or removing <= stored * REMOVAL_SHARE:
        return
    raise RemovalsRefused(
        f"this full pass would remove {removing} of the {stored} stored {what} (more than "
        f"{REMOVAL_SHARE:.0%}); nothing was removed. If the account really lost them, run again with "
        "--allow-removals")


# -- profiles ---------------------------------------------------------------------------------
def _tombstone_missing(db: Database, seen: str) -> int:
    """Profiles the account no longer has: personal data removed, the row kept."""
    sets = ", ".join(f"{c} = NULL" for c in PERSONAL_COLUMNS)
    gone = f"deleted_at IS NULL AND id NOT IN (SELECT id FROM {seen})"
    guard_removals("profiles", db.execute(f"SELECT count(*) FROM profiles WHERE {gone}").fetchone()[0],
                   db.execute("SELECT count(*) FROM profiles WHERE deleted_at IS NULL").fetchone()[0])
    db.execute(f"DELETE FROM list_members WHERE profile_id IN (SELECT id FROM profiles WHERE {gone})")
    db.execute(f"DELETE FROM segment_members WHERE profile_id IN (SELECT id FROM profiles WHERE {gone})")
    return db.execute(f"UPDATE profiles SET {sets}, deleted_at = ? WHERE {gone}", [iso(utcnow())]).rowcount


PROFILE_WORKERS = 8  # parallel ranges of `updated`: at 300 ms a request, 8 keep 750 requests a minute busy


def sync_profiles(client: KlaviyoClient, db: Database, *, full: bool = False, predictive: bool = False,
                  result: SyncResult | None = None, on_page: Callable | None = None,
                  workers: int = PROFILE_WORKERS) -> SyncResult:
    """Profiles changed since the mark (everything on a first run or with ``full``); a pass over
    everything tombstones the profiles it did not see. A read longer than one page goes on in
    ``workers`` parallel ranges of ``updated`` (streams/sliced.py)."""
    result = SyncResult.begin(result, ["profiles"])
    stream = PROFILES_PREDICTIVE if predictive else PROFILES
    run_stream(client, db, stream, result, full=full, on_missing=_tombstone_missing, on_page=on_page,
               workers=workers)
    result.extra["profiles_removed"] = result.extra.pop("profiles_removed", 0)
    result.extra["mark"] = store.get_state(db, stream.mark_key())
    return result


# -- lists and segments -----------------------------------------------------------------------
def sync_groups(client: KlaviyoClient, db: Database, group: str, *, result: SyncResult | None = None) -> SyncResult:
    """Every list (or segment) of the account; those gone are removed with their members."""
    stream, members = GROUPS[group]
    result = SyncResult.begin(result, [stream.table.name])

    def remove_missing(db: Database, seen: str) -> int:
        guard_removals(f"{group}s", db.execute(f"SELECT count(*) FROM {stream.table.name} WHERE id NOT IN "
                                               f"(SELECT id FROM {seen})").fetchone()[0],
                       db.execute(f"SELECT count(*) FROM {stream.table.name}").fetchone()[0])
        db.execute(f"DELETE FROM {members.table.name} WHERE {group}_id NOT IN (SELECT id FROM {seen})")
        return db.execute(f"DELETE FROM {stream.table.name} WHERE id NOT IN (SELECT id FROM {seen})").rowcount

    run_stream(client, db, stream, result, on_missing=remove_missing)
    result.extra[f"{group}s_removed"] = result.extra.pop(f"{group}s_removed", 0)
    result.extra[f"{group}s"] = db.execute(f"SELECT count(*) FROM {stream.table.name}").fetchone()[0]
    return result


def group_ids(db: Database, group: str) -> list[str]:
    return [r[0] for r in db.execute(f"SELECT id FROM {group}s ORDER BY name, id")]


def fetch_counts(client: KlaviyoClient, db: Database, group: str, ids: Iterable[str], result: SyncResult,
                 on_count: Callable[[int], None] | None = None) -> None:
    """``profile_count`` of each list or segment: one call each on a 1/s, 15/m endpoint."""
    for n, gid in enumerate(ids, 1):
        body = client.request("GET", f"/api/{group}s/{gid}", params={f"additional-fields[{group}]": "profile_count"}, expect="object")
        count = ((body.get("data") or {}).get("attributes") or {}).get("profile_count")
        with db.atomic():
            db.execute(f"UPDATE {group}s SET profile_count = ?, profile_count_at = ? WHERE id = ?",
                       [count, iso(utcnow()), gid])
        result.extra["counts"] = n
        if on_count:
            on_count(n)


def resolve_groups(db: Database, group: str, names_or_ids: list[str]) -> list[str]:
    """Ids for ``--members`` values (names or ids; ``all`` for every one), from the local table."""
    if "all" in names_or_ids:
        return group_ids(db, group)
    found, missing = [], []
    for value in names_or_ids:
        rows = {r[0] for r in db.execute(f"SELECT id FROM {group}s WHERE id = ? OR name = ?", [value, value])}
        if len(rows) > 1:
            raise UsageError(f"{group} name {value!r} is ambiguous ({', '.join(sorted(rows))}): pass the id")
        (found if rows else missing).append(rows.pop() if rows else value)
    if missing:
        known = [f"{name} ({gid})" for gid, name in db.execute(f"SELECT id, name FROM {group}s ORDER BY name")]
        raise UsageError(f"unknown {group} {', '.join(repr(m) for m in missing)}; the account's {group}s: "
                         f"{', '.join(known) or 'none'}")
    return list(dict.fromkeys(found))


def sync_members(client: KlaviyoClient, db: Database, group: str, gid: str, *, full: bool = False,
                 full_every: timedelta = timedelta(days=7), result: SyncResult | None = None) -> bool:
    """One list's (or segment's) members. Incremental on joined_group_at, or a full pass (asked
    for, first run, or the last one older than ``full_every``) that also removes who left, in
    one transaction after its last page. Returns whether the pass was full."""
    _, stream = GROUPS[group]
    result = SyncResult.begin(result, [stream.table.name, "profiles"])
    last_full = store.get_state(db, full_pass_key(stream, gid))
    if not full and (last_full is None or utcnow() - parse_datetime(last_full) >= full_every):
        full = True
    table, column = stream.table.name, f"{group}_id"

    def remove_left(db: Database, seen: str) -> int:
        guard_removals(f"members of {group} {gid}",
                       db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ? AND profile_id NOT IN "
                                  f"(SELECT profile_id FROM {seen} WHERE {column} = ?)", [gid, gid]).fetchone()[0],
                       db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", [gid]).fetchone()[0])
        return db.execute(f"DELETE FROM {table} WHERE {column} = ? AND profile_id NOT IN "
                          f"(SELECT profile_id FROM {seen} WHERE {column} = ?)", [gid, gid]).rowcount

    run_stream(client, db, stream, result, full=full, parent=gid, on_missing=remove_left)
    result.extra["members_removed"] = result.extra.get("members_removed", 0) + result.extra.pop(f"{table}_removed", 0)
    key = "full_passes" if full else "incremental_passes"
    result.extra[key] = result.extra.get(key, 0) + 1
    return full


PROFILES_SPEC = TableSpec("profiles", "The profiles that events point at (customers and subscribers).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("email", TEXT, "Email address."),
    Column("phone_number", TEXT, "Phone number (E.164)."),
    Column("external_id", TEXT, "Your own id for the profile, if set."),
    Column("first_name", TEXT, "First name."),
    Column("last_name", TEXT, "Last name."),
    Column("organization", TEXT, "Organization."),
    Column("locale", TEXT, "Locale, e.g. en-US."),
    Column("title", TEXT, "Job title."),
    Column("image", TEXT, "Image URL."),
    Column("created", TEXT, "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("updated", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("last_event_date", TEXT, "When the profile's latest event happened (UTC)."),
    Column("location", TEXT, "Address and coordinates (JSON)."),
    Column("properties", TEXT, "Custom properties (JSON)."),
    Column("email_consent", TEXT, "SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED (sync-profiles)."),
    Column("email_can_receive", INTEGER, "1 if email marketing can reach the profile."),
    Column("email_suppression", TEXT, "Suppression reasons, comma-separated, e.g. HARD_BOUNCE."),
    Column("email_consent_at", TEXT, "When email consent was given or changed (UTC)."),
    Column("sms_consent", TEXT, "SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED."),
    Column("sms_can_receive", INTEGER, "1 if SMS marketing can reach the profile."),
    Column("sms_consent_at", TEXT, "When SMS consent was given or changed (UTC)."),
    Column("push_consent", TEXT, "SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED."),
    Column("push_can_receive", INTEGER, "1 if push can reach the profile."),
    Column("subscriptions", TEXT, "Subscriptions as Klaviyo returned them (JSON)."),
    Column("predictive_analytics", TEXT, "Predictive analytics (JSON, with --predictive)."),
    Column("deleted_at", TEXT, "Set when the profile was deleted in Klaviyo (UTC)."),
))

LISTS_SPEC = TableSpec("lists", "Lists of the account.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "List name."),
    Column("created", TEXT, "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("updated", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("opt_in_process", TEXT, "single_opt_in or double_opt_in."),
    Column("profile_count", INTEGER, "Members, as Klaviyo counted them."),
    Column("profile_count_at", TEXT, "When it was counted (UTC)."),
))

SEGMENTS_SPEC = TableSpec("segments", "Segments of the account.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "Segment name."),
    Column("definition", TEXT, "Its conditions (JSON)."),
    Column("created", TEXT, "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("updated", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("is_active", INTEGER, "1 if active."),
    Column("is_processing", INTEGER, "1 while Klaviyo is (re)computing it."),
    Column("is_starred", INTEGER, "1 if starred."),
    Column("profile_count", INTEGER, "Members, as Klaviyo counted them."),
    Column("profile_count_at", TEXT, "When it was counted (UTC)."),
))


def _members_spec(group: str) -> TableSpec:
    """list_members or segment_members (the same columns, as migration m002 made them)."""
    return TableSpec(f"{group}_members", f"Which profiles are members of which {group}.", (
        Column(f"{group}_id", TEXT, f"The {group}: {group}s.id."),
        Column("profile_id", TEXT, "The profile: profiles.id."),
        Column("joined_group_at", TEXT, "When the profile most recently joined (UTC)."),
    ), key=(f"{group}_id", "profile_id"))


LIST_MEMBERS_SPEC, SEGMENT_MEMBERS_SPEC = _members_spec("list"), _members_spec("segment")


SYNC_PROFILES = declare(Declaration(
    command="sync-profiles", help="", scope=PROFILES_READ, tier="profiles", paths=("/api/profiles",),
    tables=(PROFILES_SPEC,),
    run=lambda client, db, result: sync_profiles(client, db, result=result), sync_all=20, core=True,
    arguments={"full": False},
))
SYNC_LISTS = declare(Declaration(
    command="sync-lists", help="", scope=LISTS_READ, tier="lists",
    paths=("/api/lists", "/api/lists/{id}", "/api/lists/{id}/profiles"),
    tables=(LISTS_SPEC, LIST_MEMBERS_SPEC),
    run=lambda client, db, result: sync_groups(client, db, "list", result=result), sync_all=40, core=True,
    arguments={"counts": False, "members": []},
))
SYNC_SEGMENTS = declare(Declaration(
    command="sync-segments", help="", scope=SEGMENTS_READ, tier="segments",
    paths=("/api/segments", "/api/segments/{id}", "/api/segments/{id}/profiles"),
    tables=(SEGMENTS_SPEC, SEGMENT_MEMBERS_SPEC),
    run=lambda client, db, result: sync_groups(client, db, "segment", result=result), sync_all=50, core=True,
    arguments={"counts": False, "members": []},
))
SYNC_GROUPS = {"list": SYNC_LISTS, "segment": SYNC_SEGMENTS}
