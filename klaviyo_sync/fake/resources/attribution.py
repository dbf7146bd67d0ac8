"""Attribution: which campaign or flow message earned each event, the way Klaviyo decides it.

Built once, after events, campaigns and flows. Every message event of the account (Received /
Opened / Clicked Email, Received / Clicked SMS, Received / Opened Push ...) carries one message:
``_msg_slot`` picks it from the campaign messages of its channel sent at or before the event
(one of the four most recent) or the flow messages of its channel whose flow was sending then.
Its ``event_properties`` then name it (``$message``, and ``$flow`` for a flow message).

A conversion (an event of a metric whose integration is not Klaviyo's own: Placed Order, Viewed
Product, Active on Site ...) of a profile is attributed to that profile's most recent *eligible
touch* strictly earlier than the conversion among the touches whose window still covers it, the
window's edge included (Klaviyo's help centre, "Understanding Klaviyo message attribution",
https://help.klaviyo.com/hc/en-us/articles/1260804504250: the defaults since 2024-10-09):

* Opened Email, Clicked Email: 5 days;
* Clicked SMS: 5 days; Received SMS: 12 hours;
* Opened Push: 24 hours.

Two touches of the same second: the later one in the account's event order wins. Otherwise the
conversion is organic. Late events (``add_late_events``, imports) are never attributed, and
carry no message. The campaign and flow reports take their ``conversions``, ``conversion_uniques``
and ``conversion_value`` from these attributions (flow reports on the UTC day of the touch, as
Klaviyo credits the send), so reports and events agree.

Stored compactly: three arrays (conversion index, touch index, message slot), sorted by the
conversion's index, so 5 million events cost a few tens of MB and no per-request work.
"""

from __future__ import annotations

import array
import bisect

from ..data import _C1, _C2, _GOLDEN, M64, hash_seed, iso, mix, to_epoch
from . import Resource

# Touch metric name -> (channel, window class). Window classes: 0 = 5 days, 1 = 24 h, 2 = 12 h.
TOUCHES = {
    "Opened Email": ("email", 0), "Clicked Email": ("email", 0),
    "Clicked SMS": ("sms", 0), "Received SMS": ("sms", 2),
    "Opened Push": ("mobile_push", 1),
}
WINDOWS = (5 * 86400, 86400, 12 * 3600)
# Event kinds (metrics.py catalog) of message events, and their channel.
MESSAGE_KINDS = {"email": "email", "email_click": "email", "sms": "sms", "push": "mobile_push"}
RECENT_CAMPAIGNS = 4


class AttributionResource(Resource):
    """Klaviyo's attribution of the base events; no routes of its own (served by /api/events)."""

    def build(self):
        s0 = mix(hash_seed(self.seed))
        self._salt_msg = mix(s0 ^ 11)
        self._salt_aid = mix(s0 ^ 12)
        self._salt_aid2 = mix(s0 ^ 13)
        # The message catalog: slot -> (kind, message id, parent id, channel, parent name)
        slots: list[tuple] = []
        campaigns: dict[str, list] = {ch: [] for ch in ("email", "sms", "mobile_push")}
        flows: dict[str, list] = {ch: [] for ch in ("email", "sms", "mobile_push")}
        for c in self._campaigns:
            if c["status"] != "Sent" or c["send_ts"] is None:
                continue
            for mid in c["message_ids"]:
                campaigns[c["channel"]].append((c["send_ts"], len(slots)))
                slots.append(("campaign", mid, c["id"], c["channel"], c["name"]))
        for m in self._flow_messages.values():
            f = self._flow_by_id[m["flow_id"]]
            if f["status"] == "draft":
                continue
            flows[m["channel"]].append((f["first_send_day"], len(slots)))
            slots.append(("flow", m["id"], f["id"], m["channel"], f["name"]))
        self._msg_slots = slots
        self._slot_of_message = {s[1]: k for k, s in enumerate(slots)}
        self._msg_pick = {}
        for ch in campaigns:
            cs, fs = sorted(campaigns[ch]), sorted(flows[ch])
            self._msg_pick[ch] = ([t for t, _ in cs], [k for _, k in cs], [t for t, _ in fs], [k for _, k in fs])
        self._msg_channel = [MESSAGE_KINDS.get(k) if m["attributes"]["integration"]["key"] == "klaviyo" else None
                             for k, m in zip(self._mkind, self._metrics)]
        self._build_attributions()

    # ------------------------------------------------------------------ per-event functions
    def _msg_slot(self, m: int, i: int, ts: int) -> int:
        """The message (slot) a message event i of metric m at ts carries, or -1 (none, or a
        late event)."""
        ch = self._msg_channel[m]
        if ch is None or i >= self.n_events:
            return -1
        cts, cslots, fts, fslots = self._msg_pick[ch]
        nc = bisect.bisect_right(cts, ts)
        nf = bisect.bisect_right(fts, ts)
        h = mix((self._salt_msg + i) & M64)
        if nf and (h & 1 or not nc):
            return fslots[(h >> 1) % nf]
        if nc:
            lo = max(0, nc - RECENT_CAMPAIGNS)
            return cslots[lo + (h >> 1) % (nc - lo)]
        return -1

    def _message_props(self, m: int, i: int, ts: int) -> str:
        """``"$message":...,"Campaign Name":...`` (and ``"$flow"``) of a message event, or ''."""
        k = self._msg_slot(m, i, ts)
        if k < 0:
            return ""
        kind, mid, parent, _, name = self._msg_slots[k]
        flow = f',"$flow":"{parent}"' if kind == "flow" else ""
        name = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"$message":"{mid}","Campaign Name":"{name}"{flow}'

    def _build_attributions(self):
        n = self.n_events
        self._attr_conv = array.array("q")
        self._attr_touch = array.array("q")
        self._attr_slot = array.array("i")
        self._attr_agg_cache: dict = {}
        if not n or not self._np:
            return
        conv = bytearray(256)  # metric index -> 1 conversion, 2 + window class touch
        for k, mt in enumerate(self._metrics):
            if mt["attributes"]["integration"]["key"] != "klaviyo":
                conv[k] = 1
            elif mt["name"] in TOUCHES and self._msg_channel[k] is not None:
                conv[k] = 2 + TOUCHES[mt["name"]][1]
        codes = self._mb.translate(bytes(conv))
        npf = self._np
        last_ts = [[-1] * npf for _ in WINDOWS]
        last_i = [[-1] * npf for _ in WINDOWS]
        w0, w1, w2 = WINDOWS
        lt0, lt1, lt2 = last_ts
        li0, li1, li2 = last_i
        sec, cum, start = self._sec, self._cum, self._start
        salt_p, epv = self._salt_p, self.events_per_visit
        mb = self._mb
        msg_slot = self._msg_slot
        out_c, out_t, out_s = self._attr_conv, self._attr_touch, self._attr_slot
        slot_of_touch: dict[int, int] = {}
        k = 0
        next_cut = cum[1]
        ts = start + sec[0]
        pending: list = []
        for i in range(n):
            code = codes[i]
            if i >= next_cut:
                for cls, p, j in pending:
                    last_ts[cls][p] = ts
                    last_i[cls][p] = j
                pending.clear()
                while i >= next_cut:
                    k += 1
                    next_cut = cum[k + 1]
                ts = start + sec[k]
            if not code:
                continue
            # h = mix(salt_p + visit), inlined (the hot loop of the build)
            h = (salt_p + (i if epv == 1 else i // epv) + _GOLDEN) & M64
            h = ((h ^ (h >> 30)) * _C1) & M64
            h = ((h ^ (h >> 27)) * _C2) & M64
            h ^= h >> 31
            if h % 17 == 0:
                continue
            p = (h >> 5) % npf
            if code == 1:
                best_t, best_i = -1, -1
                t = lt0[p]
                if t >= 0 and ts - t <= w0:
                    best_t, best_i = t, li0[p]
                t = lt1[p]
                if t >= 0 and ts - t <= w1 and (t, li1[p]) > (best_t, best_i):
                    best_t, best_i = t, li1[p]
                t = lt2[p]
                if t >= 0 and ts - t <= w2 and (t, li2[p]) > (best_t, best_i):
                    best_t, best_i = t, li2[p]
                if best_i >= 0:
                    out_c.append(i)
                    out_t.append(best_i)
                    out_s.append(slot_of_touch[best_i])
            else:
                slot = msg_slot(mb[i], i, ts)
                if slot >= 0:
                    slot_of_touch[i] = slot
                    pending.append((code - 2, p, i))
        # only the touches still referenced are needed, and they are in the arrays
        del slot_of_touch

    def _attribution_at(self, i: int):
        """(attribution id, touch index, slot) of event i, or None (organic)."""
        if i >= self.n_events:
            return None
        c = self._attr_conv
        k = bisect.bisect_left(c, i)
        if k == len(c) or c[k] != i:
            return None
        aid = f"{mix((self._salt_aid + i) & M64):016x}{mix((self._salt_aid2 + i) & M64):016x}"
        return aid, self._attr_touch[k], self._attr_slot[k]

    def _attribution_json(self, i: int, base: str, at=None) -> str | None:
        """The included attribution resource of event i; ``at``: its ``_attribution_at`` when
        the caller already has it (an events page looks each event up once)."""
        if at is None:
            at = self._attribution_at(i)
        if at is None:
            return None
        aid, j, slot = at
        kind, mid, parent, _, _ = self._msg_slots[slot]
        al = f"{base}/api/attributions/{aid}"

        def rel(name, typ, rid):
            return (f'"{name}":{{"data":{{"type":"{typ}","id":"{rid}"}},'
                    f'"links":{{"self":"{al}/relationships/{name}/","related":"{al}/{name}/"}}}}')

        rels = [rel("event", "event", self._eid(i)), rel("attributed-event", "event", self._eid(j))]
        if kind == "campaign":
            rels += [rel("campaign", "campaign", parent), rel("campaign-message", "campaign-message", mid)]
        else:
            rels += [rel("flow", "flow", parent), rel("flow-message", "flow-message", mid),
                     rel("flow-message-variation", "flow-message", mid)]
        return (f'{{"type":"attribution","id":"{aid}","relationships":{{{",".join(rels)}}},'
                f'"links":{{"self":"{al}/"}}}}')

    def _event_value_cents(self, i: int) -> int:
        """The event's $value in cents (0 without one): what events.py serves."""
        if self._mkind[self._mb[i]] != "order":
            return 0
        return mix((self._salt_v + i) & M64) % 40000 + 500

    def _attr_aggregates(self, metric_index: int):
        """{slot: [conversions, cents, uniques]} and {(slot, touch UTC day): [...]} for one
        conversion metric (computed on first use, cached)."""
        got = self._attr_agg_cache.get(metric_index)
        if got is not None:
            return got
        by_slot: dict = {}
        by_day: dict = {}
        seen_slot: set = set()
        seen_day: set = set()
        mb, ts_of, pidx = self._mb, self._ts, self._pidx
        for c, j, s in zip(self._attr_conv, self._attr_touch, self._attr_slot):
            if mb[c] != metric_index:
                continue
            cents = self._event_value_cents(c)
            p = pidx(c)
            tday = ts_of(j) // 86400 * 86400
            for key, table, seen in (((s,), by_slot, seen_slot), ((s, tday), by_day, seen_day)):
                row = table.get(key)
                if row is None:
                    row = table[key] = [0, 0, 0]
                row[0] += 1
                row[1] += cents
                if (key, p) not in seen:
                    seen.add((key, p))
                    row[2] += 1
        got = ({k[0]: v for k, v in by_slot.items()}, by_day)
        with self._lock:
            self._attr_agg_cache[metric_index] = got
        return got

    def _attributed_counts(self, message_id: str, conversion_metric_id: str, day_ts: int | None = None):
        """(conversions, conversion value, uniques) the message earned for that metric (on that
        touch day when given)."""
        slot = self._slot_of_message.get(message_id)
        m = self._metric_index.get(conversion_metric_id)
        if slot is None or m is None:
            return 0, 0.0, 0
        by_slot, by_day = self._attr_aggregates(m)
        row = by_slot.get(slot) if day_ts is None else by_day.get((slot, day_ts))
        if row is None:
            return 0, 0.0, 0
        return row[0], round(row[1] / 100, 2), row[2]

    # ------------------------------------------------------------------ ground truth
    def attribution(self, event_id: str) -> dict | None:
        """Klaviyo's attribution of one event as /api/events?include=attributions serves it:
        {id, event_id, attributed_event_id, campaign_id, campaign_message_id, flow_id,
        flow_message_id, flow_message_variation_id, channel}, or None (organic)."""
        i = self._index_of_eid(event_id)
        if i is None:
            raise KeyError(event_id)
        at = self._attribution_at(i)
        if at is None:
            return None
        aid, j, slot = at
        kind, mid, parent, ch, _ = self._msg_slots[slot]
        camp = kind == "campaign"
        return {"id": aid, "event_id": event_id, "attributed_event_id": self._eid(j),
                "campaign_id": parent if camp else None, "campaign_message_id": mid if camp else None,
                "flow_id": None if camp else parent, "flow_message_id": None if camp else mid,
                "flow_message_variation_id": None if camp else mid, "channel": ch}

    def attributed_conversions(self, conversion_metric_id: str, since, until) -> dict[str, dict]:
        """{event id: {attributed_event_id, message_id, kind ('campaign'|'flow'), parent_id
        (campaign or flow id), channel, value}} of the conversions of that metric with
        since <= datetime < until that Klaviyo attributes (the others are organic)."""
        m = self._metric_index[conversion_metric_id]
        lo, hi = to_epoch(since), to_epoch(until)
        out = {}
        c = self._attr_conv
        # base event indices are in time order: bisect the window
        a = bisect.bisect_left(c, self._pos_at(int(-(-lo // 1))) if self._overlay() is None else 0)
        for k in range(a, len(c)):
            i = c[k]
            ts = self._ts(i)
            if ts >= hi:
                if self._overlay() is None:
                    break
                continue
            if ts < lo or self._mb[i] != m or i in self._forgotten:
                continue
            kind, mid, parent, ch, _ = self._msg_slots[self._attr_slot[k]]
            out[self._eid(i)] = {"attributed_event_id": self._eid(self._attr_touch[k]), "message_id": mid,
                                 "kind": kind, "parent_id": parent, "channel": ch,
                                 "value": self._event_value_cents(i) / 100}
        return out

    def event_datetime(self, event_id: str) -> str:
        i = self._index_of_eid(event_id)
        if i is None:
            raise KeyError(event_id)
        return iso(self._ts(i))
