"""Campaigns, their messages and tags (shared/klaviyo-api.md 4.4).

``GET /api/campaigns`` (a ``messages.channel`` filter is required; ``archived`` defaults to
false), ``GET /api/campaigns/{id}``, ``GET /api/campaigns/{id}/campaign-messages`` and
``GET /api/campaign-messages/{id}``.
"""

from __future__ import annotations

import json
import random
import uuid

from ..data import CAMPAIGN_THEMES, SUBJECTS, TAG_NAMES, b62, dumps, iso, to_epoch, ulid
from ..errors import bad, not_found
from ..filters import CMP, cmp, filter_or_400
from ..hosting import Route
from ..listing import page_of
from ..jsonapi import (fields_param, include_param, page_size, query_params,
                       sparse)
from . import Resource

CAMPAIGN_FIELDS = {
    "archived", "audiences", "audiences.excluded", "audiences.included", "created_at", "id",
    "name", "scheduled_at", "send_options", "send_options.use_smart_sending", "send_strategy",
    "send_strategy.date", "send_strategy.datetime", "send_strategy.method",
    "send_strategy.options", "send_strategy.options.is_local",
    "send_strategy.options.send_past_recipients_immediately",
    "send_strategy.throttle_percentage", "send_time", "status", "tracking_options",
    "tracking_options.add_tracking_params", "tracking_options.custom_tracking_params",
    "tracking_options.is_tracking_clicks", "tracking_options.is_tracking_opens", "updated_at",
}
CAMPAIGN_MESSAGE_FIELDS = {
    "created_at", "definition", "definition.channel", "definition.content",
    "definition.content.action_buttons", "definition.content.bcc_email",
    "definition.content.body", "definition.content.cc_email",
    "definition.content.dynamic_image", "definition.content.from_email",
    "definition.content.from_label", "definition.content.media_url",
    "definition.content.preview_text", "definition.content.reply_to_email",
    "definition.content.subject", "definition.content.title", "definition.kv_pairs",
    "definition.label", "definition.notification_type", "definition.options",
    "definition.options.badge", "definition.options.badge.badge_options",
    "definition.options.badge.badge_options.badge_config",
    "definition.options.badge.badge_options.set_from_property",
    "definition.options.badge.badge_options.value", "definition.options.badge.display",
    "definition.options.on_open", "definition.options.on_open.android_deep_link",
    "definition.options.on_open.ios_deep_link", "definition.options.on_open.type",
    "definition.options.on_open.web_url", "definition.options.play_sound",
    "definition.render_options", "definition.render_options.add_info_link",
    "definition.render_options.add_opt_out_language",
    "definition.render_options.add_org_prefix", "definition.render_options.shorten_links",
    "id", "send_times", "updated_at",
}
TAG_FIELDS = {"id", "name"}
IMAGE_FIELDS = {"format", "hidden", "id", "image_url", "name", "size", "updated_at"}
TEMPLATE_FIELDS = {"amp", "created", "editor_type", "html", "id", "name", "text", "updated"}
CAMPAIGN_SORTS = ("created_at", "-created_at", "id", "-id", "name", "-name",
                  "scheduled_at", "-scheduled_at", "updated_at", "-updated_at")
CAMPAIGN_STATUSES = [
    "Scheduled", "Sent", "Draft", "Cancelled", "Adding Recipients", "Sending",
    "Variations Sent", "Sending Segments", "Cancelled: Smart Sending", "Preparing to send",
    "Cancelled: Account Disabled", "Cancelled: No Recipients", "Preparing to schedule",
    "Cancelled: Internal Error", "Queued without Recipients", "Cancelled: Billing Limit",
    "Cancelled: Misconfigured", "Unknown",
]
CHANNELS = ("email", "sms", "mobile_push")
CAMPAIGN_FILTERS = {
    "id": {"list": ("any",), "type": "string"},
    "messages.channel": {"single": ("equals",), "type": "string", "enum": list(CHANNELS)},
    "name": {"single": ("contains",), "type": "string"},
    "status": {"single": ("equals",), "list": ("any", "equals"), "type": "string",
               "enum": CAMPAIGN_STATUSES},
    "archived": {"single": ("equals",), "type": "boolean"},
    "created_at": {"single": CMP, "type": "datetime"},
    "scheduled_at": {"single": CMP, "type": "datetime"},
    "updated_at": {"single": CMP, "type": "datetime"},
}


class CampaignsResource(Resource):
    """``n_campaigns_per_channel`` campaigns per channel, with one or two messages each."""

    ROUTES = (
        Route("GET", "/api/campaigns", "_h_campaigns", tier="campaigns", scope="campaigns:read"),
        Route("GET", "/api/campaigns/{id}", "_h_campaign", tier="campaigns",
              scope="campaigns:read"),
        Route("GET", "/api/campaigns/{id}/campaign-messages", "_h_campaign_messages",
              tier="campaigns", scope="campaigns:read"),
        Route("GET", "/api/campaign-messages/{id}", "_h_campaign_message", tier="campaigns",
              scope="campaigns:read"),
    )

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-campaigns")
        now = self.now_ts
        self._tags = []
        for k, name in enumerate(TAG_NAMES):
            tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            self._tags.append({"id": tid, "name": name})
        self._tag_by_id = {t["id"]: t for t in self._tags}
        self._campaigns: list[dict] = []
        self._messages: dict[str, dict] = {}
        self._campaign_by_id: dict[str, dict] = {}
        seen = set()
        for ch in CHANNELS:
            for j in range(self.n_campaigns_per_channel):
                archived = j % 4 == 1
                if j % 8 == 6:
                    status = "Draft"
                elif j % 8 == 3:
                    status = "Scheduled"
                else:
                    status = "Sent"
                theme = CAMPAIGN_THEMES[(j + CHANNELS.index(ch)) % len(CAMPAIGN_THEMES)]
                label = {"email": "Email", "sms": "SMS", "mobile_push": "Push"}[ch]
                name = f"{theme} ({label}) #{j + 1}"
                if status == "Sent":
                    send_ts = now - rng.randint(3600, 60 * 86400)
                    created = send_ts - rng.randint(3600, 7 * 86400)
                    if rng.random() < 0.3:
                        scheduled = send_ts
                        strategy = {"method": "immediate"}
                    else:
                        scheduled = send_ts - rng.randint(600, 2 * 86400)
                        strategy = {"method": "static", "datetime": iso(send_ts),
                                    "options": {"is_local": False,
                                                "send_past_recipients_immediately": None}}
                    updated = min(now - 1, send_ts + rng.randint(60, 3600))
                elif status == "Scheduled":
                    send_ts = None
                    created = now - rng.randint(86400, 30 * 86400)
                    scheduled = now - rng.randint(3600, 86400 // 2)
                    strategy = {"method": "static",
                                "datetime": iso(now + rng.randint(86400, 10 * 86400)),
                                "options": {"is_local": False,
                                            "send_past_recipients_immediately": None}}
                    updated = scheduled
                else:
                    send_ts = None
                    created = now - rng.randint(3600, 60 * 86400)
                    scheduled = None
                    strategy = {"method": "immediate"}
                    updated = min(now - 1, created + rng.randint(60, 86400))
                while True:
                    cid = ulid(rng, created)
                    if cid not in seen:
                        seen.add(cid)
                        break
                if ch == "email":
                    tracking = {"add_tracking_params": False, "custom_tracking_params": None,
                                "is_tracking_clicks": True, "is_tracking_opens": True}
                elif ch == "sms":
                    tracking = {"add_tracking_params": False, "custom_tracking_params": None}
                else:
                    tracking = None
                attrs = {
                    "name": name,
                    "status": status,
                    "archived": archived,
                    "audiences": {"included": ["Y6nRLr"], "excluded": [] if j % 3 else ["UTd5ui"]},
                    "send_options": {"use_smart_sending": bool(j % 2)},
                    "tracking_options": tracking,
                    "send_strategy": strategy,
                    "created_at": iso(created),
                    "scheduled_at": iso(scheduled),
                    "updated_at": iso(updated),
                    "send_time": iso(send_ts),
                }
                n_msgs = 2 if (ch == "email" and j % 5 == 2) else 1
                mids = []
                for v in range(n_msgs):
                    while True:
                        mid = ulid(rng, created + 1)
                        if mid not in seen:
                            seen.add(mid)
                            break
                    mlabel = name if n_msgs == 1 else f"{name} - variant {'AB'[v]}"
                    if ch == "email":
                        definition = {
                            "channel": "email", "label": mlabel,
                            "content": {
                                "subject": json.loads(SUBJECTS[(j + v) % len(SUBJECTS)]),
                                "preview_text": f"{theme}: see what's new",
                                "from_email": "store@example.com",
                                "from_label": "Example Store",
                                "reply_to_email": None, "cc_email": None, "bcc_email": None,
                            },
                        }
                    elif ch == "sms":
                        definition = {
                            "channel": "sms", "label": mlabel,
                            "content": {"body": f"Example Store: {theme}! Shop now: https://ex.co/s{j}"
                                                " Reply STOP to opt out.",
                                        "media_url": None},
                            "render_options": {"shorten_links": True, "add_org_prefix": True,
                                               "add_info_link": True,
                                               "add_opt_out_language": False},
                        }
                    else:
                        definition = {
                            "channel": "mobile_push", "label": mlabel,
                            "notification_type": "standard",
                            "content": {"title": theme, "body": f"{theme} starts now",
                                        "dynamic_image": None, "action_buttons": None},
                            "kv_pairs": None,
                            "options": {"on_open": {"type": "open_app"},
                                        "badge": {"display": False}, "play_sound": False},
                        }
                    mattrs = {
                        "definition": definition,
                        "send_times": ([{"datetime": iso(send_ts), "is_local": False}]
                                       if send_ts is not None else []),
                        "created_at": iso(created + 1),
                        "updated_at": iso(updated),
                    }
                    self._messages[mid] = {"id": mid, "campaign_id": cid, "channel": ch,
                                           "label": mlabel, "attributes": mattrs,
                                           "template_id": b62(rng.getrandbits(64))[:6]
                                           if ch == "email" else None}
                    mids.append(mid)
                tag_ids = [t["id"] for t in rng.sample(self._tags, rng.randint(0, 2))]
                c = {"id": cid, "channel": ch, "archived": archived, "status": status,
                     "name": name, "send_ts": send_ts, "created_ts": created,
                     "scheduled_ts": scheduled, "updated_ts": updated,
                     "message_ids": mids, "tag_ids": tag_ids, "attributes": attrs}
                self._campaigns.append(c)
                self._campaign_by_id[cid] = c

    # ------------------------------------------------------------------ resources
    def _campaign_res(self, c: dict, base: str, fc) -> dict:
        cl = f"{base}/api/campaigns/{c['id']}"
        return {
            "type": "campaign", "id": c["id"], "attributes": sparse(c["attributes"], fc),
            "relationships": {
                "campaign-messages": {
                    "data": [{"type": "campaign-message", "id": m} for m in c["message_ids"]],
                    "links": {"self": f"{cl}/relationships/campaign-messages/",
                              "related": f"{cl}/campaign-messages/"}},
                "tags": {
                    "data": [{"type": "tag", "id": t} for t in c["tag_ids"]],
                    "links": {"self": f"{cl}/relationships/tags/", "related": f"{cl}/tags/"}},
            },
            "links": {"self": f"{cl}/"},
        }

    def _message_res(self, m: dict, base: str, fcm) -> dict:
        ml = f"{base}/api/campaign-messages/{m['id']}"
        rel = {"campaign": {"data": {"type": "campaign", "id": m["campaign_id"]},
                            "links": {"self": f"{ml}/relationships/campaign/",
                                      "related": f"{ml}/campaign/"}}}
        if m["template_id"]:
            rel["template"] = {"data": {"type": "template", "id": m["template_id"]},
                               "links": {"self": f"{ml}/relationships/template/",
                                         "related": f"{ml}/template/"}}
        return {"type": "campaign-message", "id": m["id"],
                "attributes": sparse(m["attributes"], fcm),
                "relationships": rel, "links": {"self": f"{ml}/"}}

    def _tag_res(self, t: dict, base: str, ft) -> dict:
        return {"type": "tag", "id": t["id"], "attributes": sparse({"name": t["name"]}, ft),
                "links": {"self": f"{base}/api/tags/{t['id']}/"}}

    # ------------------------------------------------------------------ ground truth
    def campaign_ids(self, channel=None) -> set[str]:
        return {c["id"] for c in self._campaigns if channel is None or c["channel"] == channel}

    def campaign_ids_sent(self, since, until, channel=None) -> set[str]:
        lo, hi = to_epoch(since), to_epoch(until)
        return {c["id"] for c in self._campaigns
                if c["send_ts"] is not None and lo <= c["send_ts"] < hi
                and (channel is None or c["channel"] == channel)}

    def campaign_message_ids(self, campaign_id: str) -> list[str]:
        return list(self._campaign_by_id[campaign_id]["message_ids"])

    def campaign(self, campaign_id: str) -> dict:
        return self._campaign_res(self._campaign_by_id[campaign_id],
                                  self.base_url or "http://127.0.0.1", None)

    def campaign_message(self, message_id: str) -> dict:
        """The campaign message as ``GET /api/campaign-messages/{id}`` serves it (all fields)."""
        return self._message_res(self._messages[message_id], self.base_url or "http://127.0.0.1",
                                 None)

    # ------------------------------------------------------------------ handlers
    def _campaign_ok(self, c, conds) -> bool:
        for op, field, val, is_list in conds:
            if field == "messages.channel":
                if c["channel"] != val:
                    return False
            elif field == "archived":
                if c["archived"] != val:
                    return False
            elif field == "status":
                if is_list:
                    if c["status"] not in val:
                        return False
                elif c["status"] != val:
                    return False
            elif field == "id":
                if c["id"] not in val:
                    return False
            elif field == "name":
                if val.lower() not in c["name"].lower():
                    return False
            else:
                key = {"created_at": "created_ts", "scheduled_at": "scheduled_ts",
                       "updated_at": "updated_ts"}[field]
                if not cmp(op, c[key], val):
                    return False
        return True

    def _h_campaigns(self, ctx):
        params = query_params(ctx, {"fields[campaign]", "fields[campaign-message]", "fields[tag]",
                                    "filter", "include", "page[cursor]", "page[size]", "sort"})
        fc = fields_param(params, "fields[campaign]", CAMPAIGN_FIELDS)
        fcm = fields_param(params, "fields[campaign-message]", CAMPAIGN_MESSAGE_FIELDS)
        ft = fields_param(params, "fields[tag]", TAG_FIELDS)
        inc = include_param(params, {"campaign-messages", "tags"})
        sort = params.get("sort")
        if sort is not None and sort not in CAMPAIGN_SORTS:
            raise bad(f"'{sort}' is not a valid sort field.", "sort")
        size = page_size(params, 1, 100, 100)
        text = params.get("filter")
        if not text:
            raise bad("A filter on messages.channel is required, e.g. "
                       "equals(messages.channel,'email').", "filter")
        conds = filter_or_400(text, CAMPAIGN_FILTERS)
        if not any(f == "messages.channel" for _, f, _, _ in conds):
            raise bad("Invalid filter provided: a messages.channel filter is required.", "filter")
        if not any(f == "archived" for _, f, _, _ in conds):
            conds = conds + [("equals", "archived", False, False)]
        rows = [c for c in self._campaigns if self._campaign_ok(c, conds)]
        key_name = (sort or "created_at").lstrip("-")
        kmap = {"created_at": "created_ts", "scheduled_at": "scheduled_ts",
                "updated_at": "updated_ts", "id": "id", "name": "name"}[key_name]
        if kmap in ("id", "name"):
            rows.sort(key=lambda c: (c[kmap], c["id"]), reverse=bool(sort and sort[0] == "-"))
        else:
            rows.sort(key=lambda c: (c[kmap] is None, c[kmap] or 0, c["id"]),
                      reverse=bool(sort and sort[0] == "-"))
        page, nxt, prv = page_of(params, rows, size, "cp")
        base = self.base_url
        doc = {"data": [self._campaign_res(c, base, fc) for c in page],
               "links": self._links(ctx, nxt, prv)}
        if inc:
            doc["included"] = self._campaign_included(page, inc, base, fcm, ft)
        return 200, dumps(doc).encode("utf-8"), []

    def _campaign_included(self, campaigns, inc, base, fcm, ft) -> list:
        out = []
        tags_seen: dict = {}
        for c in campaigns:
            if "campaign-messages" in inc:
                out.extend(self._message_res(self._messages[m], base, fcm) for m in c["message_ids"])
            if "tags" in inc:
                for t in c["tag_ids"]:
                    tags_seen[t] = None
        out.extend(self._tag_res(self._tag_by_id[t], base, ft) for t in tags_seen)
        return out

    def _h_campaign(self, ctx, campaign_id):
        params = query_params(ctx, {"fields[campaign]", "fields[campaign-message]", "fields[tag]",
                                    "include"})
        fc = fields_param(params, "fields[campaign]", CAMPAIGN_FIELDS)
        fcm = fields_param(params, "fields[campaign-message]", CAMPAIGN_MESSAGE_FIELDS)
        ft = fields_param(params, "fields[tag]", TAG_FIELDS)
        inc = include_param(params, {"campaign-messages", "tags"})
        c = self._campaign_by_id.get(campaign_id)
        if c is None:
            raise not_found(f"A campaign with id '{campaign_id}' does not exist.")
        base = self.base_url
        doc = {"data": self._campaign_res(c, base, fc), "links": {"self": f"{base}{ctx.path}"}}
        if inc:
            doc["included"] = self._campaign_included([c], inc, base, fcm, ft)
        return 200, dumps(doc).encode("utf-8"), []

    _MSG_PARAMS = {"fields[campaign-message]", "fields[campaign]", "fields[image]",
                   "fields[template]", "include"}

    def _msg_params(self, ctx):
        params = query_params(ctx, self._MSG_PARAMS)
        fcm = fields_param(params, "fields[campaign-message]", CAMPAIGN_MESSAGE_FIELDS)
        fc = fields_param(params, "fields[campaign]", CAMPAIGN_FIELDS)
        fields_param(params, "fields[image]", IMAGE_FIELDS)
        fields_param(params, "fields[template]", TEMPLATE_FIELDS)
        inc = include_param(params, {"campaign", "image", "template"})
        return fcm, fc, inc

    def _h_campaign_messages(self, ctx, campaign_id):
        fcm, fc, inc = self._msg_params(ctx)
        c = self._campaign_by_id.get(campaign_id)
        if c is None:
            raise not_found(f"A campaign with id '{campaign_id}' does not exist.")
        base = self.base_url
        doc = {"data": [self._message_res(self._messages[m], base, fcm) for m in c["message_ids"]],
               "links": {"self": f"{base}{ctx.path}" + (f"?{ctx.query}" if ctx.query else ""),
                         "next": None, "prev": None}}
        if inc:
            doc["included"] = [self._campaign_res(c, base, fc)] if "campaign" in inc else []
        return 200, dumps(doc).encode("utf-8"), []

    def _h_campaign_message(self, ctx, message_id):
        fcm, fc, inc = self._msg_params(ctx)
        m = self._messages.get(message_id)
        if m is None:
            raise not_found(f"A campaign message with id '{message_id}' does not exist.")
        base = self.base_url
        doc = {"data": self._message_res(m, base, fcm), "links": {"self": f"{base}{ctx.path}"}}
        if inc:
            doc["included"] = ([self._campaign_res(self._campaign_by_id[m["campaign_id"]], base, fc)]
                               if "campaign" in inc else [])
        return 200, dumps(doc).encode("utf-8"), []
