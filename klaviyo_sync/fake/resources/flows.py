"""Flows, their definitions (actions and messages), and templates (shared/klaviyo-api.md 4.7,
10.4, 10.5).

``GET /api/flows`` (archived flows are hidden unless the filter asks ``equals(archived,true)``),
``GET /api/flows/{id}`` (``additional-fields[flow]=definition`` adds the whole definition:
triggers, profile_filter, actions[] linked by id, entry_action_id) and ``GET /api/templates``.
Every flow endpoint is S tier (3/s, 60/m); templates are L tier.

Public mutations (``touch_flow``, ``archive_flow``, ``delete_flow``, ``touch_template``) change
the account the way an edit in Klaviyo would: the flow's ``updated`` moves forward.
"""

from __future__ import annotations

import copy
import random
import threading

from ..data import b62, dumps, iso
from ..errors import bad, not_found
from ..filters import CMP, cmp, filter_or_400
from ..hosting import Route
from ..listing import ListEndpoint, page_of
from ..jsonapi import fields_param, include_param, page_size, query_params, sparse
from . import Resource

FLOW_FIELDS = {"archived", "created", "name", "status", "trigger_type", "updated"}
FLOW_ACTION_FIELDS = {"action_type", "created", "settings", "status", "updated"}
TAG_FIELDS = {"id", "name"}
TEMPLATE_FIELDS = {"amp", "created", "editor_type", "html", "name", "text", "updated"}
_DT = ("equals", *CMP)
FLOW_FILTERS = {
    "id": {"list": ("any",), "type": "string"},
    "name": {"single": ("equals", "contains", "starts-with", "ends-with"), "type": "string"},
    "status": {"single": ("equals",), "type": "string", "enum": ["draft", "live", "manual"]},
    "archived": {"single": ("equals",), "type": "boolean"},
    "created": {"single": _DT, "type": "datetime"},
    "updated": {"single": _DT, "type": "datetime"},
    "trigger_type": {"single": ("equals",), "type": "string"},
}
FLOW_SORTS = tuple(s for f in ("created", "id", "name", "status", "trigger_type", "updated")
                   for s in (f, f"-{f}"))
TEMPLATE_FILTERS = {
    "id": {"single": ("equals",), "list": ("any",), "type": "string"},
    "name": {"single": ("equals",), "list": ("any",), "type": "string"},
    "created": {"single": _DT, "type": "datetime"},
    "updated": {"single": _DT, "type": "datetime"},
}
TEMPLATE_SORTS = tuple(s for f in ("created", "id", "name", "updated") for s in (f, f"-{f}"))
TEMPLATES = ListEndpoint("template", fields=frozenset(TEMPLATE_FIELDS), filters=TEMPLATE_FILTERS,
                         sorts=("created", "id", "name", "updated"), page=(1, 10, 10), kind="tp")
FLOW_THEMES = [
    ("Welcome Series", "Added to List"), ("Abandoned Cart", "Metric"),
    ("Browse Abandonment", "Metric"), ("Post-Purchase Thank You", "Metric"),
    ("Win-back", "Added to Segment"), ("Birthday", "Date Based"),
    ("Back in Stock", "Low Inventory"), ("Price Drop", "Price Drop"),
    ("Replenishment", "Metric"), ("Sunset Unengaged", "Added to Segment"),
]
TRIGGER = {"Added to List": "list", "Metric": "metric", "Added to Segment": "segment",
           "Date Based": "profile-property-date", "Low Inventory": "low-inventory",
           "Price Drop": "price-drop"}
# The shape of a flow: a chain of steps, one flow in three with a conditional split.
PLANS = [
    ["email", "delay", "email", "delay", "sms"],
    ["email"],
    ["delay", "email", "split", "email", "sms"],
    ["sms", "delay", "email"],
    ["email", "delay", "email", "delay", "email"],
]


def _day_ts(ts: int) -> int:
    return ts - ts % 86400


class FlowsResource(Resource):
    """``n_flows`` flows (one in seven archived) whose send actions carry messages, and the
    templates their emails use."""

    ROUTES = (
        Route("GET", "/api/flows", "_h_flows", tier="S", scope="flows:read"),
        Route("GET", "/api/flows/{id}", "_h_flow", tier="S", scope="flows:read"),
        Route("GET", "/api/templates", "_h_templates", tier="L", scope="templates:read"),
    )

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-flows")
        now = self.now_ts
        self._flows_lock = threading.RLock()
        self._clock = now  # mutations move `updated` past every value served so far
        self._templates: list[dict] = []
        self._template_by_id: dict[str, dict] = {}
        self._flows: list[dict] = []
        self._flow_by_id: dict[str, dict] = {}
        self._flow_messages: dict[str, dict] = {}  # message id -> {flow_id, action_id, channel, ...}
        seen: set[str] = set()

        def new_id(n=6):
            while True:
                x = b62(rng.getrandbits(64))[-n:]
                if x not in seen:
                    seen.add(x)
                    return x

        metric_ids = sorted(self._metric_index) if getattr(self, "_metric_index", None) else ["X"]
        action_no = 10_000_000 + rng.randrange(1_000_000)
        for k in range(self.n_flows):
            theme, trigger_type = FLOW_THEMES[k % len(FLOW_THEMES)]
            name = theme if k < len(FLOW_THEMES) else f"{theme} #{k // len(FLOW_THEMES) + 1}"
            created = now - rng.randint(90 * 86400, 400 * 86400)
            updated = min(now - 60, created + rng.randint(3600, 80 * 86400))
            status = "draft" if k % 6 == 5 else ("manual" if k % 9 == 4 else "live")
            fid = new_id()
            actions = []
            plan = PLANS[k % len(PLANS)]
            for step in plan:
                action_no += rng.randint(1, 50)
                aid = str(action_no)
                a_status = "live" if status == "live" else ("manual" if status == "manual" else "draft")
                if step == "delay":
                    data = {"unit": rng.choice(["days", "hours"]), "value": rng.randint(1, 4),
                            "secondary_value": None, "timezone": "profile",
                            "delay_until_time": None, "delay_until_weekdays": None}
                    actions.append({"id": aid, "type": "time-delay", "links": {"next": None}, "data": data})
                elif step == "split":
                    data = {"profile_filter": {"condition_groups": [{"conditions": [
                        {"type": "profile-property", "property": "properties['vip']",
                         "filter": {"type": "boolean", "operator": "equals", "value": True}}]}]}}
                    actions.append({"id": aid, "type": "conditional-split",
                                    "links": {"next_if_true": None, "next_if_false": None}, "data": data})
                else:
                    mid = new_id()
                    n = sum(1 for a in actions if a["type"].startswith("send-")) + 1
                    mname = f"{name}: {'Email' if step == 'email' else 'SMS'} {n}"
                    if step == "email":
                        tpl = self._new_template(rng, new_id(), f"{name} email {n}", created)
                        message = {"id": mid, "name": mname, "from_email": "store@example.com",
                                   "from_label": "Example Store", "reply_to_email": None,
                                   "cc_email": None, "bcc_email": None,
                                   "subject_line": f"{theme}: step {n}",
                                   "preview_text": f"A note from Example Store ({n})",
                                   "template_id": tpl["id"], "smart_sending_enabled": True,
                                   "transactional": False, "add_tracking_params": False,
                                   "custom_tracking_params": None, "additional_filters": None}
                        atype = "send-email"
                    else:
                        message = {"id": mid, "name": mname,
                                   "body": f"Example Store: {theme} ({n}). Reply STOP to opt out.",
                                   "image_id": None, "dynamic_image": None, "shorten_links": True,
                                   "include_contact_card": False, "add_org_prefix": True,
                                   "add_info_link": True, "add_opt_out_language": False,
                                   "smart_sending_enabled": True, "sms_quiet_hours_enabled": True,
                                   "transactional": False, "add_tracking_params": False,
                                   "custom_tracking_params": None, "template_id": None,
                                   "additional_filters": None}
                        atype = "send-sms"
                    actions.append({"id": aid, "type": atype, "links": {"next": None},
                                    "data": {"message": message, "status": a_status}})
                    self._flow_messages[mid] = {"id": mid, "flow_id": fid, "action_id": aid,
                                                "channel": step, "name": mname}
            # Link the chain; a split sends both branches to the next step.
            for i, a in enumerate(actions[:-1]):
                nxt = actions[i + 1]["id"]
                if a["type"] == "conditional-split":
                    a["links"] = {"next_if_true": nxt, "next_if_false": actions[i + 2]["id"]
                                  if i + 2 < len(actions) else None}
                else:
                    a["links"] = {"next": nxt}
            trig = TRIGGER[trigger_type]
            trigger = {"type": trig, "id": (rng.choice(metric_ids) if trig == "metric" else
                                            (new_id() if trig in ("list", "segment") else None))}
            definition = {"triggers": [trigger],
                          "profile_filter": None if k % 2 else {"condition_groups": [{"conditions": [
                              {"type": "profile-marketing-consent", "consent": {
                                  "channel": "email", "can_receive_marketing": True}}]}]},
                          "actions": actions, "entry_action_id": actions[0]["id"],
                          "reentry_criteria": None}
            f = {"id": fid, "name": name, "status": status, "archived": k % 7 == 3,
                 "trigger_type": trigger_type, "created_ts": created, "updated_ts": updated,
                 "definition": definition, "deleted": False,
                 "first_send_day": _day_ts(created) + 86400}
            self._flows.append(f)
            self._flow_by_id[fid] = f
        # Templates not used by any flow (made in the editor, used by campaigns)
        for j in range(3):
            self._new_template(rng, new_id(), f"Newsletter layout {j + 1}", now - 200 * 86400)

    def _new_template(self, rng, tid, name, created):
        created = created - rng.randint(0, 30 * 86400)
        updated = min(self.now_ts - 30, created + rng.randint(0, 60 * 86400))
        body = "".join(f"<p>{name}: paragraph {i} with café ✓ and some filler text.</p>" for i in range(40))
        t = {"id": tid, "created_ts": created, "updated_ts": updated,
             "attributes": {"name": name, "editor_type": rng.choice(["CODE", "SYSTEM_DRAGGABLE"]),
                            "html": f"<html><body>{body}</body></html>",
                            "text": f"{name}\n\nPlain text version.", "amp": None}}
        self._templates.append(t)
        self._template_by_id[tid] = t
        return t

    # ------------------------------------------------------------------ public mutations
    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def touch_flow(self, flow_id: str, *, rename: str | None = None, subject: str | None = None) -> None:
        """Edit a flow (its name and/or its first email's subject line); its ``updated`` moves."""
        with self._flows_lock:
            f = self._flow_by_id[flow_id]
            if rename is not None:
                f["name"] = rename
            if subject is not None:
                for a in f["definition"]["actions"]:
                    if a["type"] == "send-email":
                        a["data"]["message"]["subject_line"] = subject
                        break
            f["updated_ts"] = self._tick()

    def archive_flow(self, flow_id: str, archived: bool = True) -> None:
        with self._flows_lock:
            f = self._flow_by_id[flow_id]
            f["archived"] = archived
            f["updated_ts"] = self._tick()

    def delete_flow(self, flow_id: str) -> None:
        """The flow disappears from the listing and its GET answers 404."""
        with self._flows_lock:
            self._flow_by_id[flow_id]["deleted"] = True

    def touch_template(self, template_id: str, html: str | None = None) -> None:
        with self._flows_lock:
            t = self._template_by_id[template_id]
            if html is not None:
                t["attributes"]["html"] = html
            t["updated_ts"] = self._tick()

    # ------------------------------------------------------------------ ground truth
    def flow_ids(self, *, archived: bool | None = None) -> set[str]:
        """Flows in the account (deleted ones excluded); ``archived`` narrows to one kind."""
        return {f["id"] for f in self._flows if not f["deleted"]
                and (archived is None or f["archived"] == archived)}

    def flow(self, flow_id: str) -> dict:
        """``GET /api/flows/{id}?additional-fields[flow]=definition`` as served (all fields)."""
        f = self._flow_by_id[flow_id]
        return self._flow_res(f, self.base_url or "http://127.0.0.1", None, definition=True)

    def flow_definition(self, flow_id: str) -> dict:
        return copy.deepcopy(self._flow_by_id[flow_id]["definition"])

    def flow_message_ids(self, flow_id: str | None = None) -> set[str]:
        return {m["id"] for m in self._flow_messages.values()
                if flow_id is None or m["flow_id"] == flow_id}

    def flow_message(self, message_id: str) -> dict:
        """{id, flow_id, action_id, channel, name} of a flow message."""
        return dict(self._flow_messages[message_id])

    def template_ids(self) -> set[str]:
        return {t["id"] for t in self._templates}

    def template(self, template_id: str) -> dict:
        t = self._template_by_id[template_id]
        return self._template_res(t, self.base_url or "http://127.0.0.1", None)

    # ------------------------------------------------------------------ resources
    def _flow_res(self, f: dict, base: str, ff, definition: bool = False) -> dict:
        attrs = {"name": f["name"], "status": f["status"], "archived": f["archived"],
                 "created": iso(f["created_ts"]), "updated": iso(f["updated_ts"]),
                 "trigger_type": f["trigger_type"]}
        attrs = sparse(attrs, ff)
        if definition:
            attrs["definition"] = copy.deepcopy(f["definition"])
        fl = f"{base}/api/flows/{f['id']}"
        return {"type": "flow", "id": f["id"], "attributes": attrs,
                "relationships": {
                    "flow-actions": {"links": {"self": f"{fl}/relationships/flow-actions/",
                                               "related": f"{fl}/flow-actions/"}},
                    "tags": {"links": {"self": f"{fl}/relationships/tags/", "related": f"{fl}/tags/"}}},
                "links": {"self": f"{fl}/"}}

    def _action_res(self, f: dict, a: dict, base: str, fa) -> dict:
        status = (a.get("data") or {}).get("status") or ("live" if f["status"] == "live" else "draft")
        attrs = {"action_type": a["type"].upper().replace("-", "_"), "status": status,
                 "created": iso(f["created_ts"]), "updated": iso(f["updated_ts"]), "settings": {}}
        return {"type": "flow-action", "id": a["id"], "attributes": sparse(attrs, fa),
                "links": {"self": f"{base}/api/flow-actions/{a['id']}/"}}

    def _template_res(self, t: dict, base: str, ft) -> dict:
        attrs = dict(t["attributes"], created=iso(t["created_ts"]), updated=iso(t["updated_ts"]))
        return {"type": "template", "id": t["id"], "attributes": sparse(attrs, ft),
                "links": {"self": f"{base}/api/templates/{t['id']}/"}}

    # ------------------------------------------------------------------ handlers
    def _flow_ok(self, f, conds) -> bool:
        for op, field, val, is_list in conds:
            if field == "id":
                ok = f["id"] in val
            elif field == "name":
                name, v = f["name"], val
                ok = {"equals": name == v, "contains": v in name, "starts-with": name.startswith(v),
                      "ends-with": name.endswith(v)}[op]
            elif field in ("status", "archived", "trigger_type"):
                ok = f[field] == val
            else:
                have = f[f"{field}_ts"]
                ok = have == val if op == "equals" else cmp(op, have, val)
            if not ok:
                return False
        return True

    @staticmethod
    def _sorted(rows, sort, keys):
        name = (sort or "id").lstrip("-")
        key = keys[name]
        return sorted(rows, key=lambda r: (key(r), r["id"]), reverse=bool(sort and sort[0] == "-"))

    def _h_flows(self, ctx):
        params = query_params(ctx, {"fields[flow]", "fields[flow-action]", "fields[tag]", "filter",
                                    "include", "page[cursor]", "page[size]", "sort"})
        ff = fields_param(params, "fields[flow]", FLOW_FIELDS)
        fa = fields_param(params, "fields[flow-action]", FLOW_ACTION_FIELDS)
        ft = fields_param(params, "fields[tag]", TAG_FIELDS)
        inc = include_param(params, {"flow-actions", "tags"})
        sort = params.get("sort")
        if sort is not None and sort not in FLOW_SORTS:
            raise bad(f"'{sort}' is not a valid sort field.", "sort")
        size = page_size(params, 1, 50, 50)
        conds = filter_or_400(params["filter"], FLOW_FILTERS) if params.get("filter") else []
        if not any(f == "archived" for _, f, _, _ in conds):
            conds = conds + [("equals", "archived", False, False)]
        with self._flows_lock:
            rows = [f for f in self._flows if not f["deleted"] and self._flow_ok(f, conds)]
            rows = self._sorted(rows, sort, {
                "created": lambda f: f["created_ts"], "updated": lambda f: f["updated_ts"],
                "id": lambda f: f["id"], "name": lambda f: f["name"],
                "status": lambda f: f["status"], "trigger_type": lambda f: f["trigger_type"]})
            page, nxt, prv = page_of(params, rows, size, "fl")
            base = self.base_url
            doc = {"data": [self._flow_res(f, base, ff) for f in page], "links": self._links(ctx, nxt, prv)}
            if "flow-actions" in inc:
                doc["included"] = [self._action_res(f, a, base, fa)
                                   for f in page for a in f["definition"]["actions"]]
            elif inc:
                doc["included"] = []
            if "tags" in inc:  # fake/resources/tags.py tags flows
                for f, res in zip(page, doc["data"]):
                    res["relationships"]["tags"]["data"] = [{"type": "tag", "id": t} for t in f.get("tag_ids", ())]
                tags = dict.fromkeys(t for f in page for t in f.get("tag_ids", ()))
                doc["included"] += [self.tag_resource(self._tag_by_id[t], ft) for t in tags]
        return 200, dumps(doc).encode("utf-8"), []

    def _h_flow(self, ctx, flow_id):
        params = query_params(ctx, {"fields[flow]", "fields[flow-action]", "fields[tag]",
                                    "additional-fields[flow]", "include"})
        ff = fields_param(params, "fields[flow]", FLOW_FIELDS)
        fa = fields_param(params, "fields[flow-action]", FLOW_ACTION_FIELDS)
        fields_param(params, "fields[tag]", TAG_FIELDS)
        extra = fields_param(params, "additional-fields[flow]", {"definition"}) or []
        inc = include_param(params, {"flow-actions", "tags"})
        with self._flows_lock:
            f = self._flow_by_id.get(flow_id)
            if f is None or f["deleted"]:
                raise not_found(f"A flow with id '{flow_id}' does not exist.")
            base = self.base_url
            doc = {"data": self._flow_res(f, base, ff, definition="definition" in extra),
                   "links": {"self": f"{base}{ctx.path}"}}
            if inc:
                doc["included"] = ([self._action_res(f, a, base, fa) for a in f["definition"]["actions"]]
                                   if "flow-actions" in inc else [])
        return 200, dumps(doc).encode("utf-8"), []

    def _h_templates(self, ctx):
        with self._flows_lock:
            return TEMPLATES.respond(self, ctx, self._templates,
                                     value=lambda t, f: (t["id"] if f == "id" else t["attributes"]["name"]
                                                         if f == "name" else t[f"{f}_ts"]),
                                     render=lambda t, fields: self._template_res(t, self.base_url, fields))
