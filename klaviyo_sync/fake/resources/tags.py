"""Tags and tag groups: ``GET /api/tags`` (OpenAPI get_tags: tags:read, 3/s and 60/m, page size 1-50,
``include=tag-group``) and ``GET /api/tag-groups`` (page size 1-25). The campaigns' tags (built by
campaigns.py) are the account's tags, with three more; this family puts each in a tag group and tags
flows (archived ones too), lists and segments, which serve their tags with ``include=tags``.

Ground truth: ``tag_ids()``, ``tag(id)`` (name, tag_group_id), ``tag_group_ids()``,
``tag_group(id)``, ``tag_links()`` ((tag_id, resource_type, resource_id), resource_type one of
campaign, flow, list, segment); changes: ``rename_tag``, ``untag``, ``delete_tag``."""

from __future__ import annotations

import random
import uuid
from urllib.parse import parse_qsl

from ..hosting import Route
from ..listing import ListEndpoint
from ..jsonapi import sparse
from . import Resource

_NAME = {"single": ("contains", "ends-with", "equals", "starts-with"), "type": "string"}
GROUP_FIELDS = frozenset({"default", "exclusive", "id", "name"})
TAGS = ListEndpoint("tag", fields=frozenset({"id", "name"}), filters={"name": _NAME}, sorts=("id", "name"),
                    page=(1, 50, 50), includes={"tag-group": ("tag-group", GROUP_FIELDS)}, kind="tg")
TAG_GROUPS = ListEndpoint("tag-group", fields=GROUP_FIELDS, sorts=("id", "name"), page=(1, 25, 25), kind="tgg",
                          filters={"name": _NAME, "exclusive": {"single": ("equals",), "type": "boolean"},
                                   "default": {"single": ("equals",), "type": "boolean"}})
GROUPS = [("Tags", False, True), ("Season", True, False), ("Audience", False, False), ("Archive", False, False)]
MORE_TAGS = ["Evergreen", "Black Friday", "Retention"]


def tags_relationship(base: str, path: str, tag_ids, included: bool) -> dict:
    """A parent's ``tags`` relationship: links always, ``data`` when ``include=tags`` asked for it."""
    rel = {"links": {"self": f"{base}{path}/relationships/tags/", "related": f"{base}{path}/tags/"}}
    if included:
        rel["data"] = [{"type": "tag", "id": t} for t in tag_ids]
    return rel


def asked(ctx, relationship: str) -> bool:
    return relationship in (dict(parse_qsl(ctx.query, keep_blank_values=True)).get("include") or "").split(",")


class TagsResource(Resource):
    """``fake.tag_ids()`` ...: see the module docstring."""

    ROUTES = (Route("GET", "/api/tags", "_h_tags", tier="S", scope="tags:read"),
              Route("GET", "/api/tag-groups", "_h_tag_groups", tier="S", scope="tags:read"))

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-tags")
        self._tag_groups = {str(uuid.UUID(int=rng.getrandbits(128), version=4)): {
            "name": name, "exclusive": exclusive, "default": default} for name, exclusive, default in GROUPS}
        group_ids = list(self._tag_groups)
        for name in MORE_TAGS:
            tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            self._tags.append({"id": tid, "name": name})
            self._tag_by_id[tid] = self._tags[-1]
        # Every tag is in a group: the default one unless put in another (the last group stays empty).
        self._tag_group_of = {t["id"]: group_ids[k % 3] for k, t in enumerate(self._tags)}
        tag_ids = [t["id"] for t in self._tags]
        for f in self._flows:
            f["tag_ids"] = rng.sample(tag_ids, rng.randint(0, 2))
        archived = [f for f in self._flows if f["archived"]]
        if archived and not archived[0]["tag_ids"]:
            archived[0]["tag_ids"] = [tag_ids[-1]]
        for g in self._groups.values():
            g.tag_ids = rng.sample(tag_ids, rng.randint(0, 2))

    # ------------------------------------------------------------------ ground truth
    def tag_ids(self) -> set[str]:
        return {t["id"] for t in self._tags}

    def tag(self, tag_id: str) -> dict:
        return {"name": self._tag_by_id[tag_id]["name"], "tag_group_id": self._tag_group_of[tag_id]}

    def tag_group_ids(self) -> set[str]:
        return set(self._tag_groups)

    def tag_group(self, group_id: str) -> dict:
        return dict(self._tag_groups[group_id])

    def _tagged(self):
        """(resource_type, id, its tag id list) of every campaign, flow (archived too), list and segment."""
        yield from (("campaign", c["id"], c["tag_ids"]) for c in self._campaigns)
        yield from (("flow", f["id"], f["tag_ids"]) for f in self._flows if not f["deleted"])
        yield from ((g.kind, g.id, g.tag_ids) for g in self._groups.values())

    def tag_links(self) -> set[tuple[str, str, str]]:
        return {(t, kind, rid) for kind, rid, tags in self._tagged() for t in tags}

    def rename_tag(self, tag_id: str, name: str) -> None:
        self._tag_by_id[tag_id]["name"] = name

    def untag(self, resource_type: str, resource_id: str, tag_id: str) -> None:
        for kind, rid, tags in self._tagged():
            if (kind, rid) == (resource_type, resource_id):
                tags.remove(tag_id)
                return
        raise KeyError(resource_id)

    def delete_tag(self, tag_id: str) -> None:
        """Delete a tag: it leaves every campaign, flow, list and segment."""
        for _kind, _rid, tags in self._tagged():
            if tag_id in tags:
                tags.remove(tag_id)
        self._tags[:] = [t for t in self._tags if t["id"] != tag_id]
        del self._tag_by_id[tag_id], self._tag_group_of[tag_id]

    # ------------------------------------------------------------------ handlers
    def tag_resource(self, tag: dict, fields, *, group: bool = False) -> dict:
        link = f"{self.base_url}/api/tags/{tag['id']}"
        rel = {"tag-group": {"links": {"self": f"{link}/relationships/tag-group/", "related": f"{link}/tag-group/"}}}
        if group:
            rel["tag-group"]["data"] = {"type": "tag-group", "id": self._tag_group_of[tag["id"]]}
        return {"type": "tag", "id": tag["id"], "attributes": sparse({"name": tag["name"]}, fields),
                "relationships": rel, "links": {"self": f"{link}/"}}

    def _group_resource(self, group_id: str, fields) -> dict:
        return {"type": "tag-group", "id": group_id, "attributes": sparse(dict(self._tag_groups[group_id]), fields),
                "links": {"self": f"{self.base_url}/api/tag-groups/{group_id}/"}}

    def _h_tags(self, ctx):
        group = asked(ctx, "tag-group")

        def included(page, inc, fieldsets):
            ids = dict.fromkeys(self._tag_group_of[t["id"]] for t in page)
            return [self._group_resource(g, fieldsets["tag-group"]) for g in ids]

        return TAGS.respond(self, ctx, list(self._tags), value=lambda t, f: t[f],
                            render=lambda t, fields: self.tag_resource(t, fields, group=group), included=included)

    def _h_tag_groups(self, ctx):
        return TAG_GROUPS.respond(self, ctx, list(self._tag_groups),
                                  value=lambda g, f: g if f == "id" else self._tag_groups[g][f],
                                  render=self._group_resource)
