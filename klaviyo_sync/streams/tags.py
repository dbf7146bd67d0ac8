"""Tags, tag groups and which campaigns, flows, lists and segments carry which tag.

The tag endpoints allow 60 requests a minute and would need four relationship requests per tag
(its campaigns, flows, lists, segments). The parents' own list endpoints take ``include=tags``
(campaigns, flows, lists and segments all do, per the OpenAPI spec), so the links cost a request
per page of parents instead: campaigns per channel and per ``archived`` (the API hides archived
ones otherwise), flows per ``archived``, lists and segments. Every pass is a pass over
everything: tags, groups and links the account no longer has are removed, in the transaction
that writes the links."""

from __future__ import annotations

from sqlite_utils import Database

from ..client import KlaviyoClient
from .declare import INTEGER, TAGS_READ, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import Stream, SyncResult, delete_unseen, related, remove_unseen, run_stream

TAG_GROUPS_TABLE = TableSpec("tag_groups", "Tag groups: every tag is in one (sync-tags).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "The group's name."),
    Column("exclusive", INTEGER, "1 if a resource may carry only one tag of this group, else 0."),
    Column("default", INTEGER, "1 for the account's default group (tags created without a group), else 0."),
))
TAGS_TABLE = TableSpec("tags", "Tags of campaigns, flows, lists and segments (sync-tags).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "The tag's name."),
    Column("tag_group_id", TEXT, "The tag group it is in (tag_groups.id)."),
))
TAG_LINKS_TABLE = TableSpec("tag_links", "Which campaign, flow (archived too), list or segment carries which "
                            "tag (sync-tags).", (
    Column("tag_id", TEXT, "The tag (tags.id)."),
    Column("resource_type", TEXT, "campaign, flow, list or segment."),
    Column("resource_id", TEXT, "The campaign's, flow's, list's or segment's id."),
), key=("tag_id", "resource_type", "resource_id"))

GROUPS = Stream(name="tag_groups", path="/api/tag-groups", table=TAG_GROUPS_TABLE.table, type="tag-group",
                page_size=25, sort="id", params={"fields[tag-group]": "name,exclusive,default"},
                row=lambda r: (r["id"], r["attributes"].get("name"), flag(r["attributes"].get("exclusive")),
                               flag(r["attributes"].get("default"))))
TAGS = Stream(name="tags", path="/api/tags", table=TAGS_TABLE.table, type="tag", page_size=50, sort="id",
              params={"fields[tag]": "name", "include": "tag-group", "fields[tag-group]": "name"},
              row=lambda r: (r["id"], r["attributes"].get("name"),
                             next(iter(related(r, "tag-group")), {}).get("id")))


def _parents() -> list[tuple[str, str, dict]]:
    """(resource_type, path, query) of every pass that reads the parents' tags."""
    tags = {"include": "tags", "fields[tag]": "name"}
    passes = [("campaign", "/api/campaigns", {**tags, "fields[campaign]": "name", "page[size]": "100",
                                              "filter": f"and(equals(messages.channel,'{channel}'),"
                                                        f"equals(archived,{archived}))"})
              for channel in ("email", "sms", "mobile_push") for archived in ("false", "true")]
    passes += [("flow", "/api/flows", {**tags, "fields[flow]": "name", "page[size]": "50",
                                       "filter": f"equals(archived,{archived})"}) for archived in ("false", "true")]
    passes += [(kind, f"/api/{kind}s", {**tags, f"fields[{kind}]": "name", "page[size]": "10"})
               for kind in ("list", "segment")]
    return passes


def sync_tags(client: KlaviyoClient, db: Database, result: SyncResult | None = None) -> SyncResult:
    result = SyncResult.begin(result, ["tag_groups", "tags", "tag_links"])
    for stream in (GROUPS, TAGS):
        run_stream(client, db, stream, result, on_missing=remove_unseen(stream.table))
    links: set[tuple[str, str, str]] = set()
    for kind, path, params in _parents():
        for page in client.paginate(path, params):
            result.pages += 1
            for parent in page.data:
                links.update((t["id"], kind, parent["id"]) for t in related(parent, "tags"))
    table = TAG_LINKS_TABLE.table
    with db.atomic():
        result.add_rows("tag_links", table.write(db, sorted(links)))
        result.extra["tag_links_removed"] = delete_unseen(db, table, links)
    for name in ("tag_groups", "tags"):
        result.extra.setdefault(f"{name}_removed", 0)
    return result


SYNC_TAGS = declare(Declaration(
    command="sync-tags",
    help="Sync tags, tag groups and which campaigns, flows (archived too), lists and segments carry which tag; "
         "what the account no longer has is removed. Needs tags:read and the four parents' read scopes.",
    scope=TAGS_READ,
    tier="S",  # 3/s, 60/m
    paths=("/api/tags", "/api/tag-groups"),
    tables=(TAG_GROUPS_TABLE, TAGS_TABLE, TAG_LINKS_TABLE),
    run=sync_tags,
    sync_all=100,
))
