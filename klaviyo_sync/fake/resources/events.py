"""Events: ``GET /api/events`` and ``GET /api/events/{id}`` (shared/klaviyo-api.md 4.2).

Events are numbered ``0 .. n_events-1`` in *time order* (index 0 is the oldest).  Their
timestamps (integer seconds in ``[now - span_hours, now)``) are stored compactly: ``_sec`` holds
the distinct seconds used and ``_cum`` the index of the first event of each of those seconds, so
several events share a second (ties).  An event's metric is one byte in ``_mb``; its id, uuid,
profile and properties are computed from ``(seed, index)`` with the bijective mixer of
``data.mix``, so nothing else is stored per event and 5 million events cost a few MB.
Within one second, events are ordered by index; ``sort=-datetime`` reverses the whole order.
Cursors are opaque base64 of a position in that order, so paging is exact under ties.

Late events and forgotten events (``add_late_events``, ``forget_events``) switch the family to
an *overlay*: a merged time order of virtual indices (base events ``0 .. n_events-1``, late
events ``n_events ..``) built on the next request, so positions, cursors, filters, includes and
the ground truth all see the account as it is now.  Without them nothing changes (no per-event
memory); with them the overlay costs 16 bytes per event.
"""

from __future__ import annotations

import array
import bisect
import heapq
import json
import math
import random
from itertools import islice

from ..data import (CATEGORIES, M64, PAGES, PRODUCTS, SUBJECTS, b62, dumps, hash_seed, iso, mix,
                    to_epoch, unb62, unmix)
from ..errors import bad, not_found
from ..filters import CMP, filter_or_400
from ..hosting import Route
from ..listing import query_key
from ..jsonapi import dec_cursor, enc_cursor, fields_param, include_param, page_size, query_params
from . import Resource
from .metrics import METRIC_FIELDS
from .profiles import PROFILE_FIELDS

EVENT_FIELDS = {"datetime", "event_properties", "id", "timestamp", "uuid"}
EVENT_SORTS = ("datetime", "-datetime", "timestamp", "-timestamp")
EVENT_FILTERS = {
    "metric_id": {"single": ("equals",), "list": ("equals",), "type": "string"},
    "profile_id": {"single": ("equals",), "type": "string"},
    "profile": {"none": ("has",)},
    "metric": {"none": ("has",)},
    "datetime": {"single": CMP, "type": "datetime"},
    "timestamp": {"single": CMP, "type": "number"},
}


class EventsResource(Resource):
    """Events of the last ``span_hours``; needs metrics and profiles built first."""

    ROUTES = (
        Route("GET", "/api/events", "_h_events", tier="events", scope="events:read"),
        Route("GET", "/api/events/{id}", "_h_event", tier="event", scope="events:read"),
    )

    def build(self):
        seed = self.seed
        s0 = mix(hash_seed(seed))
        self._salt_id = mix(s0 ^ 1)
        self._salt_u = mix(s0 ^ 2)
        self._salt_p = mix(s0 ^ 3)
        self._salt_v = mix(s0 ^ 4)

        span = int(self.span_hours * 3600)
        if span < 1:
            raise ValueError("span_hours must cover at least one second")
        self._span = span
        self._start = self.now_ts - span
        n = self.n_events
        rng = random.Random(f"klaviyo-fake-{seed}-events")
        if n == 0:
            self._sec = array.array("i")
            self._cum = array.array("q", [0])
            self._mb = b""
        else:
            K = min(span, max(1, -(-n * 2 // 5)))  # ~2.5 events per used second
            if K == span:
                self._sec = array.array("i", range(span))
            else:
                self._sec = array.array("i", sorted(rng.sample(range(span), K)))
            if self.diurnal and K > 1:
                cum = self._diurnal_cum(n, K)
            else:
                cuts = sorted(rng.sample(range(1, n), K - 1)) if K > 1 else []
                cum = array.array("q", [0])
                cum.extend(cuts)
                cum.append(n)
            self._cum = cum
            self._mb = random.Random(f"klaviyo-fake-{seed}-event-metrics").randbytes(n).translate(
                self._metric_byte_table)
        self._late: list[tuple[int, int]] = []  # (timestamp, metric index) of late event n_events+k
        self._forgotten: set[int] = set()
        self._ov = None  # (virtual indices in time order, their timestamps), or None: no overlay

    def _diurnal_cum(self, n: int, K: int) -> array.array:
        """First event index of each used second when events follow the day (opt-in): each
        second's share is its hour's weight (evenings ~12x the small hours) times a random
        factor, so busy and quiet hours alternate as in a real store's account."""
        rng = random.Random(f"klaviyo-fake-{self.seed}-diurnal")
        start = self._start
        weights = []
        for sec in self._sec:
            hour = ((start + sec) // 3600) % 24
            w = 0.08 + 0.92 * max(0.0, math.sin(math.pi * (hour - 6) / 18)) ** 2 if hour >= 6 else 0.08
            weights.append(w * rng.expovariate(1.0))
        total = sum(weights)
        cum = array.array("q", [0])
        acc = 0.0
        for w in weights[:-1]:
            acc += w
            cum.append(min(n, int(n * acc / total)))
        cum.append(n)
        return cum

    # ------------------------------------------------------------------ per-event functions
    def _ts(self, i: int) -> int:
        if i >= self.n_events:
            return self._late[i - self.n_events][0]
        return self._start + self._sec[bisect.bisect_right(self._cum, i) - 1]

    def _metric_of(self, i: int) -> int:
        return self._mb[i] if i < self.n_events else self._late[i - self.n_events][1]

    def _overlay(self):
        """The merged time order once late or forgotten events exist, else None."""
        if self._ov is None and (self._late or self._forgotten):
            gone = self._forgotten
            base = ((self._ts(i), i) for i in range(self.n_events) if i not in gone)
            late = sorted((ts, self.n_events + k) for k, (ts, _) in enumerate(self._late)
                          if self.n_events + k not in gone)
            order, tss = array.array("q"), array.array("q")
            for ts, i in heapq.merge(base, late):
                order.append(i)
                tss.append(ts)
            self._ov = (order, tss)
        return self._ov

    def _index_at(self, p: int) -> int:
        ov = self._overlay()
        return p if ov is None else ov[0][p]

    def _pidx(self, i: int) -> int:
        if not self._np:
            return -1
        h = mix((self._salt_p + i // self.events_per_visit) & M64)
        return -1 if h % 17 == 0 else (h >> 5) % self._np

    def _eid(self, i: int) -> str:
        return b62(mix((self._salt_id + i) & M64))

    def _index_of_eid(self, eid: str) -> int | None:
        x = unb62(eid)
        if x is None:
            return None
        i = (unmix(x) - self._salt_id) & M64
        if i < self.n_events + len(self._late) and i not in self._forgotten and self._eid(i) == eid:
            return i
        return None

    def _pos_at(self, t: int) -> int:
        """First event position whose timestamp >= t."""
        ov = self._overlay()
        if ov is not None:
            return bisect.bisect_left(ov[1], t)
        off = t - self._start
        if off <= 0:
            return 0
        k = bisect.bisect_left(self._sec, off)
        return self._cum[k]

    def _props(self, m: int, i: int, h2: int, eid: str, ts: int) -> str:
        kind = self._mkind[m]
        P = PRODUCTS
        if kind == "order":
            cnt = 1 + (h2 >> 20) % 3
            items = ",".join(P[(h2 >> (24 + 4 * j)) % len(P)] for j in range(cnt))
            value = (h2 % 40000 + 500) / 100
            return (f'{{"$value":{value:.2f},"$event_id":"{1000000 + i}","OrderId":"#{1000000 + i}",'
                    f'"ItemCount":{cnt},"ItemNames":[{items}],"$currency_code":"USD"}}')
        if kind == "product":
            pn = (h2 >> 8) % len(P)
            return (f'{{"ProductName":{P[pn]},"ProductID":"{7000 + pn}",'
                    f'"Categories":[{CATEGORIES[pn % len(CATEGORIES)]}],'
                    f'"URL":"https://shop.example.com/products/{7000 + pn}"}}')
        if kind == "checkout":
            cnt = 1 + (h2 >> 20) % 3
            items = ",".join(P[(h2 >> (24 + 4 * j)) % len(P)] for j in range(cnt))
            return (f'{{"$event_id":"co-{eid}","ItemNames":[{items}],'
                    f'"CheckoutURL":"https://shop.example.com/checkouts/{eid}"}}')
        if kind == "fulfilled":
            return f'{{"$event_id":"{1000000 + (h2 % (i + 1))}","FulfillmentStatus":"fulfilled"}}'
        if kind == "site":
            return f'{{"page":{PAGES[(h2 >> 8) % len(PAGES)]},"os":"{("iOS", "Android", "Mac OS X", "Windows")[h2 % 4]}"}}'
        # Message events name their campaign or flow message (attribution.py picks it).
        if kind in ("email", "email_click"):
            sub = SUBJECTS[(h2 >> 8) % len(SUBJECTS)]
            extra = f',"URL":"https://shop.example.com/?utm_source=email&e={eid}"' if kind == "email_click" else ""
            msg = self._message_props(m, i, ts)
            return f'{{"Subject":{sub},{msg + "," if msg else ""}"Email Domain":"example.com"{extra}}}'
        if kind == "sms":
            msg = self._message_props(m, i, ts)
            return (f'{{"Message Name":"SMS {(h2 >> 16) % 20}",{msg + "," if msg else ""}'
                    f'"Carrier":"{("Verizon", "T-Mobile", "AT&T")[h2 % 3]}"}}')
        if kind == "push":
            msg = self._message_props(m, i, ts)
            return (f'{{"Message Name":"Push {(h2 >> 16) % 20}",{msg + "," if msg else ""}'
                    f'"Platform":"{("ios", "android")[h2 % 2]}"}}')
        if kind == "list":
            return f'{{"List":"Newsletter","$source":{(h2 >> 8) % 100}}}'
        return f'{{"source":"api","n":{h2 % 1000},"flag":{"true" if h2 & 1 else "false"}}}'

    def _event_json(self, i: int, base: str, fe, with_attr: bool, got=False):
        """(json text, profile index or -1, metric index) of event i. ``got``: the event's
        ``_attribution_at`` when the caller already looked it up (False: not yet)."""
        if i < self.n_events:
            ts = self._start + self._sec[bisect.bisect_right(self._cum, i) - 1]
            m = self._mb[i]
        else:
            ts, m = self._late[i - self.n_events]
        h = mix((self._salt_p + i) & M64)
        hp = h if self.events_per_visit == 1 else mix((self._salt_p + i // self.events_per_visit) & M64)
        pidx = -1 if (not self._np or hp % 17 == 0) else (hp >> 5) % self._np
        eid = b62(mix((self._salt_id + i) & M64))
        if fe is None:
            u = mix((self._salt_u + i) & M64)
            hx = f"{u:016x}{h:016x}"
            props = self._props(m, i, mix((self._salt_v + i) & M64), eid, ts)
            attrs = (f'"timestamp":{ts},"event_properties":{props},"datetime":"{iso(ts)}",'
                     f'"uuid":"{hx[:8]}-{hx[8:12]}-{hx[12:16]}-{hx[16:20]}-{hx[20:]}"')
        else:
            pieces = []
            for f in fe:
                if f == "timestamp":
                    pieces.append(f'"timestamp":{ts}')
                elif f == "event_properties":
                    props = self._props(m, i, mix((self._salt_v + i) & M64), eid, ts)
                    pieces.append(f'"event_properties":{props}')
                elif f == "datetime":
                    pieces.append(f'"datetime":"{iso(ts)}"')
                elif f == "uuid":
                    u = mix((self._salt_u + i) & M64)
                    hx = f"{u:016x}{h:016x}"
                    pieces.append(f'"uuid":"{hx[:8]}-{hx[8:12]}-{hx[12:16]}-{hx[16:20]}-{hx[20:]}"')
            attrs = ",".join(dict.fromkeys(pieces))
        el = f"{base}/api/events/{eid}"
        pd = f'{{"type":"profile","id":"{self._pids[pidx]}"}}' if pidx >= 0 else "null"
        if with_attr:
            if got is False:
                got = self._attribution_at(i)
            ad = f'{{"type":"attribution","id":"{got[0]}"}}' if got else ""
            at = (f',"attributions":{{"data":[{ad}],"links":{{"self":"{el}/relationships/attributions/",'
                  f'"related":"{el}/attributions/"}}}}')
        else:
            at = ""
        s = (f'{{"type":"event","id":"{eid}","attributes":{{{attrs}}},"relationships":{{'
             f'"profile":{{"data":{pd},"links":{{"self":"{el}/relationships/profile/",'
             f'"related":"{el}/profile/"}}}},'
             f'"metric":{{"data":{{"type":"metric","id":"{self._mids[m]}"}},'
             f'"links":{{"self":"{el}/relationships/metric/","related":"{el}/metric/"}}}}'
             f'{at}}},"links":{{"self":"{el}/"}}}}')
        return s, pidx, m

    def _iter_pos(self, b: int, up: bool, plo: int, phi: int, msel, prof, has_prof):
        """Yield matching positions scanning up from b (b, b+1, .. < phi) or down (b-1 .. >= plo)."""
        if prof == -2 or (msel is not None and not msel):
            return
        need_prof = has_prof or prof is not None
        pidx = self._pidx
        ov = self._overlay()
        if ov is not None:
            order, mof = ov[0], self._metric_of
            for p in (range(b, phi) if up else range(b - 1, plo - 1, -1)):
                i = order[p]
                if msel is not None and mof(i) not in msel:
                    continue
                if need_prof and not ((q := pidx(i)) >= 0 and (prof is None or q == prof)):
                    continue
                yield p
            return
        if msel is None:
            rng_ = range(b, phi) if up else range(b - 1, plo - 1, -1)
            if not need_prof:
                yield from rng_
                return
            for p in rng_:
                q = pidx(p)
                if q >= 0 and (prof is None or q == prof):
                    yield p
            return
        mb = self._mb
        keys = [bytes([k]) for k in msel]
        if len(keys) == 1:
            key = keys[0]
            if up:
                p = mb.find(key, b, phi)
                while p >= 0:
                    if not need_prof or ((q := pidx(p)) >= 0 and (prof is None or q == prof)):
                        yield p
                    p = mb.find(key, p + 1, phi)
            else:
                p = mb.rfind(key, plo, b)
                while p >= 0:
                    if not need_prof or ((q := pidx(p)) >= 0 and (prof is None or q == prof)):
                        yield p
                    p = mb.rfind(key, plo, p)
            return
        if up:
            nxt = {k: mb.find(k, b, phi) for k in keys}
        else:
            nxt = {k: mb.rfind(k, plo, b) for k in keys}
        while True:
            cands = [v for v in nxt.values() if v >= 0]
            if not cands:
                return
            p = min(cands) if up else max(cands)
            k = mb[p:p + 1]
            nxt[k] = mb.find(k, p + 1, phi) if up else mb.rfind(k, plo, p)
            if not need_prof or ((q := pidx(p)) >= 0 and (prof is None or q == prof)):
                yield p

    # ------------------------------------------------------------------ ground truth
    def _window(self, since, until) -> tuple[int, int]:
        lo = math.ceil(to_epoch(since))
        hi = math.ceil(to_epoch(until))
        plo, phi = self._pos_at(lo), self._pos_at(hi)
        return plo, max(plo, phi)

    def _indices(self, since, until):
        """Virtual indices of the events served with since <= datetime < until, in time order."""
        plo, phi = self._window(since, until)
        ov = self._overlay()
        return range(plo, phi) if ov is None else ov[0][plo:phi]

    def event_ids(self, since, until, metric_ids=None) -> set[str]:
        idx = self._indices(since, until)
        if metric_ids is None:
            return {self._eid(i) for i in idx}
        want = {self._metric_index[m] for m in metric_ids if m in self._metric_index}
        mof = self._metric_of
        return {self._eid(i) for i in idx if mof(i) in want}

    def profile_ids(self, since, until) -> set[str]:
        out = set()
        for i in self._indices(since, until):
            k = self._pidx(i)
            if k >= 0:
                out.add(self._pids[k])
        return out

    def event_metric_ids(self, since, until) -> set[str]:
        mof = self._metric_of
        return {self._mids[mof(i)] for i in self._indices(since, until)}

    def event_count(self, since, until) -> int:
        plo, phi = self._window(since, until)
        return phi - plo

    def event(self, i) -> dict:
        if not 0 <= i < self.n_events + len(self._late):
            raise IndexError(i)
        s, _, _ = self._event_json(i, self.base_url or "http://127.0.0.1", None, False)
        return json.loads(s)

    def event_index(self, event_id: str) -> int | None:
        return self._index_of_eid(event_id)

    def add_late_events(self, metric_id: str, at, n: int = 1) -> list[str]:
        """Make ``n`` events of ``metric_id`` appear now with the past datetime ``at`` (as Klaviyo
        accepts imports and integrations that send old timestamps); returns their ids. They are
        served by /api/events (sorted, paged, filtered, included like any other) and counted by
        /api/metric-aggregates. ``at`` must lie in the account's span: [now - span_hours, now)."""
        if metric_id not in self._metric_index:
            raise ValueError(f"unknown metric {metric_id!r}")
        ts = math.floor(to_epoch(at))
        if not self._start <= ts < self.now_ts:
            raise ValueError("a late event's datetime must lie in [now - span_hours, now)")
        if n < 1:
            raise ValueError("n must be >= 1")
        m = self._metric_index[metric_id]
        first = self.n_events + len(self._late)
        with self._lock:
            self._late.extend((ts, m) for _ in range(n))
            self._ov = None
            self._json_cache.clear()
        return [self._eid(i) for i in range(first, first + n)]

    def forget_events(self, event_ids) -> None:
        """Make Klaviyo lose these events (as after a profile deletion): gone from /api/events,
        /api/events/{id} and the counts of /api/metric-aggregates."""
        idx = []
        for eid in event_ids:
            i = self._index_of_eid(eid)
            if i is None:
                raise ValueError(f"unknown event {eid!r}")
            idx.append(i)
        with self._lock:
            self._forgotten.update(idx)
            self._ov = None

    # ------------------------------------------------------------------ handlers
    def _event_filter(self, text):
        lo, hi = self._start, self.now_ts
        msel = None
        prof = None
        has_prof = False
        if text is None:
            return lo, hi, msel, prof, has_prof
        for op, field, val, is_list in filter_or_400(text, EVENT_FILTERS):
            if field in ("datetime", "timestamp"):
                if op == "greater-or-equal":
                    lo = max(lo, math.ceil(val))
                elif op == "greater-than":
                    lo = max(lo, math.floor(val) + 1)
                elif op == "less-than":
                    hi = min(hi, math.ceil(val))
                else:
                    hi = min(hi, math.floor(val) + 1)
            elif field == "metric_id":
                ids = val if is_list else [val]
                missing = [x for x in ids if x not in self._metric_index]
                if missing:
                    raise bad(f"Metric IDs {missing} do not exist.", "filter")
                sel = {self._metric_index[x] for x in ids}
                msel = sel if msel is None else (msel & sel)
            elif field == "profile_id":
                k = self._profile_index.get(val, -2)
                prof = k if prof is None or prof == k else -2
            elif field == "profile":
                has_prof = True
        return lo, hi, msel, prof, has_prof

    def _h_events(self, ctx):
        params = query_params(ctx, {"fields[event]", "fields[profile]", "fields[metric]",
                                    "fields[attribution]", "filter", "include",
                                    "page[cursor]", "page[size]", "sort"})
        fe = fields_param(params, "fields[event]", EVENT_FIELDS)
        fp = fields_param(params, "fields[profile]", PROFILE_FIELDS)
        fm = fields_param(params, "fields[metric]", METRIC_FIELDS)
        fields_param(params, "fields[attribution]", {"id"})
        inc = include_param(params, {"metric", "profile", "attributions"})
        sort = params.get("sort", "datetime")
        if sort not in EVENT_SORTS:
            raise bad(f"'{sort}' is not a valid sort field.", "sort")
        desc = sort.startswith("-")
        size = page_size(params, 1, 1000, 200)
        lo, hi, msel, prof, has_prof = self._event_filter(params.get("filter"))
        plo = self._pos_at(lo)
        phi = max(plo, self._pos_at(hi))
        sk = "d" if desc else "a"
        # Klaviyo's cursor belongs to the query that made it: the same cursor under another
        # filter, sort or page size is refused, so a client must follow links.next as given.
        qk = query_key(params)
        cur = params.get("page[cursor]")
        if cur is None:
            mode = "n"
            b = phi if desc else plo
        else:
            parts = dec_cursor(cur, "ev")
            try:
                csk, mode, b, cqk = parts[0], parts[1], int(parts[2]), parts[3]
                if csk != sk or mode not in ("n", "p") or cqk != qk:
                    raise ValueError
            except (ValueError, IndexError):
                raise bad("Invalid cursor provided.", "page[cursor]") from None
            b = min(max(b, plo), phi)
        up = (mode == "n") != desc
        got = list(islice(self._iter_pos(b, up, plo, phi, msel, prof, has_prof), size + 1))
        more = len(got) > size
        got = got[:size]
        if mode == "p":
            got.reverse()
        nxt = prv = None
        if got:
            first, last = got[0], got[-1]
            has_next = more if mode == "n" else True
            has_prev = (cur is not None) if mode == "n" else more
            if has_next:
                nxt = enc_cursor("ev", sk, "n", last if desc else last + 1, qk)
            if has_prev:
                prv = enc_cursor("ev", sk, "p", first + 1 if desc else first, qk)

        base = self.base_url
        inc_p = "profile" in inc
        inc_m = "metric" in inc
        with_attr = "attributions" in inc
        parts_ = []
        pseen: dict = {}
        mseen: dict = {}
        ej = self._event_json
        attribution_at, attribution_json = self._attribution_at, self._attribution_json
        ov = self._overlay()
        at = int if ov is None else ov[0].__getitem__
        attrs_ = []
        for p in got:
            i = at(p)
            if with_attr:  # looked up once for the event's relationship and its included resource
                a = attribution_at(i)
                s, pidx, m = ej(i, base, fe, True, a)
                if a is not None:
                    attrs_.append(attribution_json(i, base, a))
            else:
                s, pidx, m = ej(i, base, fe, False)
            parts_.append(s)
            if inc_p and pidx >= 0:
                pseen[pidx] = None
            if inc_m:
                mseen[m] = None
        out = ['{"data":[', ",".join(parts_), "]"]
        if inc:
            included = [self._profile_json(k, base, fp) for k in pseen]
            included += [self._metric_json(k, base, fm) for k in mseen]
            included += attrs_
            out += [',"included":[', ",".join(included), "]"]
        out += [',"links":', dumps(self._links(ctx, nxt, prv)), "}"]
        return 200, "".join(out).encode("utf-8"), []

    def _h_event(self, ctx, event_id):
        params = query_params(ctx, {"fields[event]", "fields[profile]", "fields[metric]",
                                    "fields[attribution]", "include"})
        fe = fields_param(params, "fields[event]", EVENT_FIELDS)
        fp = fields_param(params, "fields[profile]", PROFILE_FIELDS)
        fm = fields_param(params, "fields[metric]", METRIC_FIELDS)
        fields_param(params, "fields[attribution]", {"id"})
        inc = include_param(params, {"metric", "profile", "attributions"})
        i = self._index_of_eid(event_id)
        if i is None:
            raise not_found(f"An event with id '{event_id}' does not exist.")
        base = self.base_url
        s, pidx, m = self._event_json(i, base, fe, "attributions" in inc)
        out = ['{"data":', s]
        if inc:
            included = []
            if "profile" in inc and pidx >= 0:
                included.append(self._profile_json(pidx, base, fp))
            if "metric" in inc:
                included.append(self._metric_json(m, base, fm))
            if "attributions" in inc and (a := self._attribution_json(i, base)) is not None:
                included.append(a)
            out += [',"included":[', ",".join(included), "]"]
        out += [',"links":', dumps({"self": f"{base}{ctx.path}"}), "}"]
        return 200, "".join(out).encode("utf-8"), []
