"""A fake Klaviyo REST API on 127.0.0.1, for tests and benchmarks.

Standard library only.  ``FakeKlaviyo`` serves a deterministic, synthetic account
(metrics, profiles, events, campaigns, campaign messages, campaign-values reports)
following the revision 2026-07-15 OpenAPI slices in shared/klaviyo-openapi/apis/
and the checklist in shared/klaviyo-api.md section 9.

Data model (all deterministic for a given constructor call):

* Events are numbered ``0 .. n_events-1`` in *time order* (index 0 is the oldest).
  Their timestamps (integer seconds in ``[now - span_hours, now)``) are stored
  compactly: ``_sec`` holds the distinct seconds used and ``_cum`` the index of the
  first event of each of those seconds, so several events share a second (ties).
  An event's metric is one byte in ``_mb``; its id, uuid, profile and properties
  are computed from ``(seed, index)`` with a bijective 64-bit mixer, so nothing
  else is stored per event and 5 million events cost a few MB.
* Within one second, events are ordered by index; ``sort=-datetime`` reverses
  the whole order.  Cursors are opaque base64 of a position in that order, so
  paging is exact under ties.

Run ``python -m klaviyo_sync.fake_api --port 0`` to serve from the command line.
"""

from __future__ import annotations

import argparse
import array
import base64
import bisect
import calendar
import hashlib
import http.server
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from itertools import islice
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["FAKE_API_KEY", "FakeKlaviyo", "RecordingServer"]

FAKE_API_KEY = "pk_fake_0123456789abcdef0123456789"
REVISION = "2026-07-15"
JSONAPI = "application/vnd.api+json"

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_C1_INV = pow(_C1, -1, 1 << 64)
_C2_INV = pow(_C2, -1, 1 << 64)


def _mix(x: int) -> int:
    """splitmix64 finalizer: a bijection on 64-bit integers."""
    x = (x + _GOLDEN) & _M64
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def _unmix(y: int) -> int:
    y = y ^ (y >> 31) ^ (y >> 62)
    y = (y * _C2_INV) & _M64
    y = y ^ (y >> 27) ^ (y >> 54)
    y = (y * _C1_INV) & _M64
    y = y ^ (y >> 30) ^ (y >> 60)
    return (y - _GOLDEN) & _M64


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_IDX = {c: i for i, c in enumerate(_B62)}
_B62_2 = [a + b for a in _B62 for b in _B62]


def _b62(x: int) -> str:
    """64-bit integer -> 12 base62 characters (fixed width)."""
    x, a = divmod(x, 3844)
    x, b = divmod(x, 3844)
    x, c = divmod(x, 3844)
    x, d = divmod(x, 3844)
    x, e = divmod(x, 3844)
    t = _B62_2
    return t[x] + t[e] + t[d] + t[c] + t[b] + t[a]


def _unb62(s: str) -> int | None:
    if len(s) != 12:
        return None
    x = 0
    for ch in s:
        v = _B62_IDX.get(ch)
        if v is None:
            return None
        x = x * 62 + v
    return x if x <= _M64 else None


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid(rng: random.Random, ts: int) -> str:
    """A ULID-looking id (26 chars) whose time part is ``ts`` (seconds)."""
    ms = ts * 1000 + rng.randrange(1000)
    out = []
    for _ in range(10):
        ms, r = divmod(ms, 32)
        out.append(_CROCKFORD[r])
    head = "".join(reversed(out))
    return head + "".join(rng.choice(_CROCKFORD) for _ in range(16))


_DAY_CACHE: dict[int, str] = {}


def _iso(ts: int | None) -> str | None:
    """Epoch seconds -> 'YYYY-MM-DDTHH:MM:SS+00:00'."""
    if ts is None:
        return None
    d, s = divmod(int(ts), 86400)
    day = _DAY_CACHE.get(d)
    if day is None:
        day = time.strftime("%Y-%m-%d", time.gmtime(d * 86400))
        _DAY_CACHE[d] = day
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{day}T{h:02d}:{m:02d}:{s:02d}+00:00"


_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?")


def _parse_iso(text: str) -> float | None:
    """ISO-8601 (Z / offset / naive=UTC / date only / fraction) -> epoch seconds."""
    m = _ISO_RE.fullmatch(text or "")
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0),
                      tzinfo=timezone.utc)
    except ValueError:
        return None
    t = dt.timestamp()
    if frac:
        t += int(frac) / 10 ** len(frac)
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        off_h, off_m = int(digits[:2]), int(digits[2:] or 0)
        if off_h > 23 or off_m > 59:
            return None
        t -= sign * (off_h * 3600 + off_m * 60)
    return t


def _to_epoch(value) -> float:
    """datetime (aware, or naive = UTC) or number -> epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        v = _parse_iso(value)
        if v is None:
            raise ValueError(f"not an ISO datetime: {value!r}")
        return v
    return float(value)


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str,
                 source: dict | None = None, headers: list | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.source = source if source is not None else {"pointer": "/data/"}
        self.headers = headers or []

    def body(self) -> bytes:
        return _error_body(self.status, self.code, self.title, self.detail, self.source)


def _error_body(status, code, title, detail, source=None, links=None) -> bytes:
    err = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": source if source is not None else {"pointer": "/data/"},
    }
    if links is not None:
        err["links"] = links
    err["meta"] = {}
    return _dumps({"errors": [err]}).encode("utf-8")


def _bad(detail: str, parameter: str | None = None, pointer: str | None = None) -> ApiError:
    if parameter is not None:
        source = {"parameter": parameter}
    else:
        source = {"pointer": pointer or "/data/"}
    return ApiError(400, "invalid", "Invalid input.", detail, source)


def _not_found(detail="Not found.") -> ApiError:
    return ApiError(404, "not_found", "Not found.", detail, {"pointer": "/data/"})


class FilterError(ValueError):
    pass


# --------------------------------------------------------------------------- filters

_CMP = ("greater-or-equal", "greater-than", "less-or-equal", "less-than")
_KNOWN_OPS = {
    "equals", "less-than", "less-or-equal", "greater-than", "greater-or-equal",
    "contains", "contains-any", "contains-all", "starts-with", "ends-with", "any", "has",
}


class _FilterParser:
    """Parses Klaviyo filter strings into [(op, field, kind, raw)].

    kind: "none" (no value), "str" (quoted), "bare" (unquoted token), "list"
    (raw is then a list of (kind, raw) items).  Top-level commas and and(...)
    are flattened (both mean AND).
    """

    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def err(self, msg: str):
        raise FilterError(msg)

    def ws(self):
        s, i = self.s, self.i
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        self.i = i

    def peek(self) -> str:
        self.ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def expect(self, ch: str):
        if self.peek() != ch:
            self.err(f"expected {ch!r} at position {self.i}")
        self.i += 1

    def parse(self):
        if not self.s.strip():
            self.err("empty filter")
        conds = self.cond()
        while self.peek() == ",":
            self.i += 1
            conds.extend(self.cond())
        if self.peek() != "":
            self.err(f"unexpected text at position {self.i}")
        return conds

    def ident(self, allowed: str) -> str:
        self.ws()
        j = self.i
        s = self.s
        while j < len(s) and (s[j].isalnum() or s[j] in allowed):
            j += 1
        if j == self.i:
            self.err(f"expected a name at position {self.i}")
        word = s[self.i:j]
        self.i = j
        return word

    def cond(self):
        op = self.ident("-_")
        self.expect("(")
        if op == "and":
            conds = self.cond()
            while self.peek() == ",":
                self.i += 1
                conds.extend(self.cond())
            self.expect(")")
            return conds
        if op in ("or", "not"):
            self.err(f"operator '{op}' is not supported")
        if op not in _KNOWN_OPS:
            self.err(f"unknown operator '{op}'")
        field = self.ident("._$-")
        if self.peek() == ")":
            self.i += 1
            return [(op, field, "none", None)]
        self.expect(",")
        kind, raw = self.value(allow_list=True)
        self.expect(")")
        return [(op, field, kind, raw)]

    def value(self, allow_list: bool):
        c = self.peek()
        if c in ("'", '"'):
            return "str", self.quoted(c)
        if c == "[":
            if not allow_list:
                self.err("nested lists are not allowed")
            self.i += 1
            items = []
            if self.peek() == "]":
                self.i += 1
                return "list", items
            while True:
                items.append(self.value(allow_list=False))
                c = self.peek()
                if c == ",":
                    self.i += 1
                    continue
                if c == "]":
                    self.i += 1
                    return "list", items
                self.err(f"expected ',' or ']' at position {self.i}")
        s = self.s
        j = self.i
        while j < len(s) and s[j] not in ",)]([\"' ":
            j += 1
        tok = s[self.i:j]
        if not tok:
            self.err(f"expected a value at position {self.i}")
        self.i = j
        return "bare", tok

    def quoted(self, q: str) -> str:
        s = self.s
        i = self.i + 1
        out = []
        while i < len(s):
            ch = s[i]
            if ch == "\\" and i + 1 < len(s):
                out.append(s[i + 1])
                i += 2
                continue
            if ch == q:
                self.i = i + 1
                return "".join(out)
            out.append(ch)
            i += 1
        self.err("unterminated string")


def _convert(spec: dict, field: str, kind: str, raw):
    typ = spec.get("type", "string")
    if typ == "string":
        if kind != "str":
            raise FilterError(f"the value for '{field}' must be a quoted string")
        enum = spec.get("enum")
        if enum is not None and raw not in enum:
            raise FilterError(f"'{raw}' is not a valid value for '{field}'")
        return raw
    if typ == "datetime":
        if kind == "str":
            raise FilterError(f"datetime values for '{field}' must not be quoted")
        v = _parse_iso(raw)
        if v is None:
            raise FilterError(f"'{raw}' is not a valid datetime for '{field}'")
        return v
    if typ == "number":
        if kind != "bare":
            raise FilterError(f"the value for '{field}' must be a bare number")
        try:
            v = float(raw)
        except ValueError:
            raise FilterError(f"'{raw}' is not a number") from None
        if not math.isfinite(v):
            raise FilterError(f"'{raw}' is not a number")
        return v
    if typ == "boolean":
        if kind != "bare" or raw not in ("true", "false"):
            raise FilterError(f"the value for '{field}' must be true or false")
        return raw == "true"
    raise FilterError("unsupported value type")  # pragma: no cover


def _parse_filter(text: str, specs: dict, max_list: int | None = None):
    """Parse and validate a filter against a field -> spec table.

    Returns [(op, field, value, is_list)]; raises FilterError.
    """
    conds = _FilterParser(text).parse()
    out = []
    for op, field, kind, raw in conds:
        spec = specs.get(field)
        if spec is None:
            raise FilterError(f"'{field}' is not a valid field for this filter")
        if kind == "none":
            if op not in spec.get("none", ()):
                raise FilterError(f"'{op}' with no value is not valid for '{field}'")
            out.append((op, field, None, False))
        elif kind == "list":
            if op not in spec.get("list", ()):
                raise FilterError(f"'{op}' with a list is not valid for '{field}'")
            if max_list is not None and len(raw) > max_list:
                raise FilterError(f"at most {max_list} items are allowed in a list filter")
            if not raw:
                raise FilterError("empty list")
            out.append((op, field, [_convert(spec, field, k, r) for k, r in raw], True))
        else:
            if op not in spec.get("single", ()):
                raise FilterError(f"'{op}' is not a valid operator for '{field}'")
            out.append((op, field, _convert(spec, field, kind, raw), False))
    return out


def _cmp(op: str, a, b) -> bool:
    if a is None:
        return False
    if op == "greater-or-equal":
        return a >= b
    if op == "greater-than":
        return a > b
    if op == "less-or-equal":
        return a <= b
    return a < b


# --------------------------------------------------------------------------- spec tables

EVENT_FIELDS = {"datetime", "event_properties", "id", "timestamp", "uuid"}
METRIC_FIELDS = {"created", "id", "integration", "name", "updated"}
FLOW_FIELDS = {"archived", "created", "id", "name", "status", "trigger_type", "updated"}
PROFILE_FIELDS = {
    "created", "email", "external_id", "first_name", "id", "image", "last_event_date",
    "last_name", "locale", "location", "location.address1", "location.address2",
    "location.city", "location.country", "location.ip", "location.latitude",
    "location.longitude", "location.region", "location.timezone", "location.zip",
    "organization", "phone_number", "properties", "title", "updated",
}
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
EVENT_SORTS = ("datetime", "-datetime", "timestamp", "-timestamp")
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
REPORT_CHANNEL = {"email": "email", "sms": "sms", "mobile_push": "push-notification"}

EVENT_FILTERS = {
    "metric_id": {"single": ("equals",), "list": ("equals",), "type": "string"},
    "profile_id": {"single": ("equals",), "type": "string"},
    "profile": {"none": ("has",)},
    "metric": {"none": ("has",)},
    "datetime": {"single": _CMP, "type": "datetime"},
    "timestamp": {"single": _CMP, "type": "number"},
}
METRIC_FILTERS = {
    "integration.name": {"single": ("equals",), "type": "string"},
    "integration.category": {"single": ("equals",), "type": "string"},
}
CAMPAIGN_FILTERS = {
    "id": {"list": ("any",), "type": "string"},
    "messages.channel": {"single": ("equals",), "type": "string", "enum": list(CHANNELS)},
    "name": {"single": ("contains",), "type": "string"},
    "status": {"single": ("equals",), "list": ("any", "equals"), "type": "string",
               "enum": CAMPAIGN_STATUSES},
    "archived": {"single": ("equals",), "type": "boolean"},
    "created_at": {"single": _CMP, "type": "datetime"},
    "scheduled_at": {"single": _CMP, "type": "datetime"},
    "updated_at": {"single": _CMP, "type": "datetime"},
}
_SCALAR = {"single": ("equals",), "list": ("contains-any",), "type": "string"}
REPORT_FILTERS = {
    "send_channel": dict(_SCALAR, enum=["email", "sms", "push-notification", "whatsapp"]),
    "campaign_id": _SCALAR,
    "campaign_message_id": _SCALAR,
    "campaign_message_name": _SCALAR,
    "variation": _SCALAR,
    "variation_name": _SCALAR,
    "text_message_format": _SCALAR,
    "tag_id": {"list": ("contains-any", "contains-all"), "type": "string"},
    "tag_name": {"list": ("contains-any", "contains-all"), "type": "string"},
}
REPORT_STATISTICS = [
    "average_order_value", "bounce_rate", "bounced", "bounced_or_failed",
    "bounced_or_failed_rate", "click_rate", "click_to_open_rate", "clicks", "clicks_unique",
    "conversion_rate", "conversion_uniques", "conversion_value", "conversions", "delivered",
    "delivery_rate", "failed", "failed_rate", "message_segment_count_sum", "open_rate", "opens",
    "opens_unique", "recipients", "revenue_per_recipient", "spam_complaint_rate",
    "spam_complaints", "text_message_credit_usage_amount", "text_message_roi",
    "text_message_spend", "unsubscribe_rate", "unsubscribe_uniques", "unsubscribes",
]
REPORT_GROUP_BY = [
    "campaign_id", "campaign_message_id", "campaign_message_name", "group", "group_name",
    "send_channel", "tag_id", "tag_name", "text_message_format", "variation", "variation_name",
]
REPORT_TIMEFRAME_KEYS = [
    "last_12_months", "last_30_days", "last_365_days", "last_3_months", "last_7_days",
    "last_90_days", "last_month", "last_week", "last_year", "this_month", "this_week",
    "this_year", "today", "yesterday",
]

# bucket -> (burst per 1 s, steady per 60 s)
RATE_LIMITS = {
    "events": (350, 3500),
    "event": (10, 150),
    "metrics": (10, 150),
    "campaigns": (10, 150),
    "reports": (1, 2),
}

_INTEGRATIONS = {
    "shopify": {"object": "integration", "id": "0eMvjm", "key": "shopify",
                "name": "Shopify", "category": "eCommerce"},
    "klaviyo": {"object": "integration", "id": "0rG4eQ", "key": "klaviyo",
                "name": "Klaviyo", "category": "Internal"},
    "api": {"object": "integration", "id": "7FtS4J", "key": "api",
            "name": "API", "category": "API"},
}

# name, integration, property kind, weight (relative frequency of events)
_METRIC_CATALOG = [
    ("Placed Order", "shopify", "order", 6),
    ("Viewed Product", "shopify", "product", 12),
    ("Received Email", "klaviyo", "email", 20),
    ("Opened Email", "klaviyo", "email", 11),
    ("Active on Site", "api", "site", 14),
    ("Added to Cart", "shopify", "product", 5),
    ("Clicked Email", "klaviyo", "email_click", 4),
    ("Started Checkout", "shopify", "checkout", 3),
    ("Ordered Product", "shopify", "product", 6),
    ("Fulfilled Order", "shopify", "fulfilled", 4),
    ("Received SMS", "klaviyo", "sms", 5),
    ("Unsubscribed", "klaviyo", "email", 1),
    ("Clicked SMS", "klaviyo", "sms", 2),
    ("Bounced Email", "klaviyo", "email", 1),
    ("Subscribed to List", "klaviyo", "list", 2),
    ("Received Push", "klaviyo", "push", 3),
    ("Opened Push", "klaviyo", "push", 2),
    ("Marked Email as Spam", "klaviyo", "email", 1),
]

_PRODUCTS = [_dumps(x) for x in [
    "Classic Tee", "Crème Brûlée Candle", "Trail Runner 2", 'The "Everyday" Tote',
    "Wool Beanie", "Ceramic Mug", "Café Blend 1kg", "Linen Shirt", "Yoga Mat",
    "Water Bottle", "Rain Jacket", "Desk Lamp", "Notebook A5", "Sunglasses",
    "Socks 3-pack", "Garden Gloves",
]]
_CATEGORIES = [_dumps(x) for x in ["Apparel", "Home", "Outdoor", "Kitchen", "Accessories"]]
_PAGES = [_dumps(x) for x in [
    "https://shop.example.com/", "https://shop.example.com/collections/new",
    "https://shop.example.com/cart", "https://shop.example.com/pages/about",
    "https://shop.example.com/search?q=mug&sort=price",
]]
_SUBJECTS = [_dumps(x) for x in [
    "Our biggest sale of the season", "New arrivals just for you", "Don't miss out ⏰",
    "Your weekly picks", "Free shipping ends tonight", "A gift, from us",
]]
_FIRST = ["Ada", "Grace", "Linus", "Zoë", "José", "Mia", "Noah", "Olivia", "Liam", "Emma",
          "Ava", "Lucas", "Chloé", "Hiro", "Amara", "Søren", "Priya", "Mateo", "Fatima", "Ivan"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Smith", "García", "Nguyen", "Müller", "O'Brien",
         "Kowalski", "Tanaka", "Okafor", "Dubois", "Rossi", "Johansson", "Patel", "Silva"]
_CITIES = [("Boston", "Massachusetts", "United States", "02110", "America/New_York", 42.36, -71.06),
           ("Austin", "Texas", "United States", "73301", "America/Chicago", 30.27, -97.74),
           ("Toronto", "Ontario", "Canada", "M5H 2N2", "America/Toronto", 43.65, -79.38),
           ("London", "England", "United Kingdom", "EC1A 1BB", "Europe/London", 51.51, -0.13),
           ("Berlin", "Berlin", "Germany", "10115", "Europe/Berlin", 52.52, 13.40),
           ("Sydney", "New South Wales", "Australia", "2000", "Australia/Sydney", -33.87, 151.21)]
_CAMPAIGN_THEMES = ["Spring Sale", "Weekly Newsletter", "New Arrivals", "Flash Sale",
                    "VIP Early Access", "Back in Stock", "Holiday Gift Guide", "Win-back",
                    "Product Launch", "Free Shipping Weekend"]
_TAG_NAMES = ["Newsletter", "Promo", "Holiday", "VIP", "Launch"]


def _pick(src, parts, dst):
    k = parts[0]
    if not isinstance(src, dict) or k not in src:
        return
    v = src[k]
    if len(parts) == 1 or not isinstance(v, dict):
        dst[k] = v
        return
    sub = dst.get(k)
    if sub is None:
        sub = dst[k] = {}
    elif sub is v:
        return  # the whole object was already selected
    _pick(v, parts[1:], sub)


def _sparse(attrs: dict, fields) -> dict:
    """Apply a sparse fieldset (possibly with dotted names) to an attributes dict."""
    if fields is None:
        return attrs
    out: dict = {}
    for f in fields:
        if f == "id":
            continue
        _pick(attrs, f.split("."), out)
    return out


def _enc_cursor(*parts) -> str:
    raw = "|".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dec_cursor(text: str, kind: str) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        parts = raw.split("|")
        if parts[0] != kind:
            raise ValueError
        return parts[1:]
    except Exception:
        raise _bad("Invalid cursor provided.", "page[cursor]") from None


# --------------------------------------------------------------------------- http plumbing


class _Ctx:
    __slots__ = ("method", "path", "npath", "query", "headers", "body", "params", "pairs",
                 "base")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, owner):
        self.owner = owner
        self.conns: set = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):  # never print tracebacks
        pass

    def close_all(self):
        with self.conns_lock:
            conns = list(self.conns)
            self.conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _BaseHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-klaviyo/1.0"
    sys_version = ""
    timeout = 120

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, format, *args):  # silence
        pass

    def _read_body(self) -> bytes:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        return self.rfile.read(n) if n > 0 else b""

    def _write(self, status: int, ctype: str | None, body: bytes, extra=(), cut: int | None = None):
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        head = [f"HTTP/1.1 {status} {reason}", f"Server: {self.server_version}",
                f"Date: {self.date_time_string()}"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head.append(f"Content-Length: {len(body)}")
        for k, v in extra:
            head.append(f"{k}: {v}")
        if cut is not None:
            self.close_connection = True  # a mid-body drop does not announce itself
        elif self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        data += body if cut is None else body[:cut]
        self.wfile.write(data)
        if cut is not None:
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(_BaseHandler):
    def _do(self):
        try:
            self.server.owner._serve(self)
        except (ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True
        except Exception:  # pragma: no cover - last resort, keep the server alive
            self.close_connection = True
            try:
                self._write(500, JSONAPI, _error_body(500, "error", "A server error occurred.",
                                                      "Internal error in the fake."))
            except Exception:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do


# --------------------------------------------------------------------------- the fake


class _Hosted:
    """Start/stop of a server thread on 127.0.0.1, shared by the fake API and the sink."""

    _handler: type
    host: str
    port: int

    def start(self):
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self._handler, self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        srv = self._server
        if srv is None:
            return
        self._server = None
        try:
            srv.shutdown()
        finally:
            srv.server_close()
            srv.close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class FakeKlaviyo(_Hosted):
    """A deterministic fake Klaviyo account served over HTTP on 127.0.0.1."""

    _handler = _Handler

    def __init__(self, *, api_key=FAKE_API_KEY, seed=1, n_metrics=12, n_profiles=300,
                 n_events=2000, span_hours=24 * 7, now=None, n_campaigns_per_channel=8,
                 metrics_page_size=200, host="127.0.0.1", port=0):
        if not 1 <= n_metrics <= 255:
            raise ValueError("n_metrics must be in 1..255")
        if n_events < 0 or n_profiles < 0 or n_campaigns_per_channel < 0:
            raise ValueError("counts must be >= 0")
        if now is None:
            now = datetime.now(timezone.utc).replace(microsecond=0)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        self.api_key = api_key
        self.seed = seed
        self.n_metrics = n_metrics
        self.n_profiles = n_profiles
        self.n_events = n_events
        self.span_hours = span_hours
        self.now = now.astimezone(timezone.utc)
        self.now_ts = int(math.floor(self.now.timestamp()))
        self.n_campaigns_per_channel = n_campaigns_per_channel
        self.metrics_page_size = metrics_page_size
        self.host = host
        self.port = port

        # knobs
        self.latency = 0.0
        self.rate_limit_every = 0
        self.retry_after = 1
        self.server_error_every = 0
        self.drop_every = 0
        self.truncate_every = 0
        self.html_403_every = 0
        self.next_link_base = None
        self.enforce_limits = False
        self.report_daily_quota = 225

        # observations
        self.requests: list[dict] = []
        self.throttled = 0
        self._lock = threading.Lock()
        self._n = 0
        self._by_path: dict[str, int] = {}
        self._windows: dict[str, list] = {}
        self._report_day = None
        self._report_count = 0

        self._server = None
        self._thread = None
        self.base_url = None
        self._json_cache: dict = {}

        self._build()

    # ------------------------------------------------------------------ data build
    def _build(self):
        seed = self.seed
        # one generator per table, so e.g. changing n_events leaves campaigns alone
        rng = random.Random(f"klaviyo-fake-{seed}-metrics")
        s0 = _mix(hash_seed(seed))
        self._salt_id = _mix(s0 ^ 1)
        self._salt_u = _mix(s0 ^ 2)
        self._salt_p = _mix(s0 ^ 3)
        self._salt_v = _mix(s0 ^ 4)

        # metrics
        cat = list(_METRIC_CATALOG)
        chosen = cat[: self.n_metrics]
        for k in range(len(chosen), self.n_metrics):
            chosen.append((f"Custom Event {k - len(cat) + 1}", "api", "custom", 2))
        ids = set()
        self._metrics = []
        for k, (name, integ, kind, weight) in enumerate(chosen):
            while True:
                mid = "".join(rng.choice(_B62) for _ in range(6))
                if mid not in ids:
                    ids.add(mid)
                    break
            created = self.now_ts - 86400 * rng.randint(400, 1500) - rng.randrange(86400)
            updated = created + rng.randrange(86400 * 300)
            self._metrics.append({
                "id": mid, "name": name, "kind": kind, "weight": weight,
                "attributes": {"name": name, "created": _iso(created), "updated": _iso(updated),
                               "integration": dict(_INTEGRATIONS[integ])},
            })
        self._mids = [m["id"] for m in self._metrics]
        self._mkind = [m["kind"] for m in self._metrics]
        self._metric_index = {m["id"]: k for k, m in enumerate(self._metrics)}
        self._metric_by_name = {m["name"]: m["id"] for m in self._metrics}

        # 256-entry table mapping a random byte to a metric index (weighted)
        total = sum(m["weight"] for m in self._metrics)
        slots = [max(1, round(256 * m["weight"] / total)) for m in self._metrics]
        while sum(slots) > 256:
            slots[slots.index(max(slots))] -= 1
        while sum(slots) < 256:
            slots[slots.index(max(slots))] += 1
        table = bytearray()
        for k, c in enumerate(slots):
            table.extend([k] * c)
        table = bytes(table[:256])

        # profiles
        rng = random.Random(f"klaviyo-fake-{seed}-profiles")
        self._pids: list[str] = []
        self._pattrs: list[dict] = []
        self._profile_index: dict[str, int] = {}
        pseen = set()
        for k in range(self.n_profiles):
            created = self.now_ts - 86400 * rng.randint(30, 900) - rng.randrange(86400)
            while True:
                pid = _ulid(rng, created)
                if pid not in pseen:
                    pseen.add(pid)
                    break
            first = rng.choice(_FIRST)
            last = rng.choice(_LAST)
            ascii_name = (first + "." + last).encode("ascii", "ignore").decode().lower()
            ascii_name = ascii_name.replace("'", "")
            city = rng.choice(_CITIES)
            email = None if rng.random() < 0.08 else f"{ascii_name}.{k}@example.com"
            phone = f"+1555{rng.randrange(10**7):07d}" if (email is None or rng.random() < 0.4) else None
            updated = min(self.now_ts - 1, created + rng.randrange(86400 * 30))
            attrs = {
                "email": email,
                "phone_number": phone,
                "external_id": f"cust_{100000 + k}" if rng.random() < 0.5 else None,
                "first_name": first,
                "last_name": last,
                "organization": rng.choice([None, None, "Acme Inc.", "Globex", "Initech"]),
                "locale": rng.choice(["en-US", "en-GB", "de-DE", "fr-CA"]),
                "title": rng.choice([None, None, "Buyer", "Manager"]),
                "image": None,
                "created": _iso(created),
                "updated": _iso(updated),
                "last_event_date": _iso(self.now_ts - rng.randrange(86400 * 7)),
                "location": {
                    "address1": f"{rng.randint(1, 999)} Main St",
                    "address2": None,
                    "city": city[0], "country": city[2], "region": city[1], "zip": city[3],
                    "timezone": city[4],
                    "ip": f"203.0.113.{rng.randint(1, 254)}",
                    "latitude": round(city[5] + rng.uniform(-0.05, 0.05), 4),
                    "longitude": round(city[6] + rng.uniform(-0.05, 0.05), 4),
                },
                "properties": {"$source": rng.choice(["Shopify", "Signup Form", "API"]),
                               "Accepts Marketing": rng.random() < 0.7,
                               "Favorite Color": rng.choice(["red", "green", "blue", None])},
            }
            self._pids.append(pid)
            self._pattrs.append(attrs)
            self._profile_index[pid] = k
        self._np = self.n_profiles

        # events: compact time index
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
            cuts = sorted(rng.sample(range(1, n), K - 1)) if K > 1 else []
            cum = array.array("q", [0])
            cum.extend(cuts)
            cum.append(n)
            self._cum = cum
            self._mb = random.Random(f"klaviyo-fake-{seed}-event-metrics").randbytes(n).translate(table)

        self._build_campaigns(random.Random(f"klaviyo-fake-{seed}-campaigns"))

    def _build_campaigns(self, rng: random.Random):
        now = self.now_ts
        self._tags = []
        for k, name in enumerate(_TAG_NAMES):
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
                theme = _CAMPAIGN_THEMES[(j + CHANNELS.index(ch)) % len(_CAMPAIGN_THEMES)]
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
                        strategy = {"method": "static", "datetime": _iso(send_ts),
                                    "options": {"is_local": False,
                                                "send_past_recipients_immediately": None}}
                    updated = min(now - 1, send_ts + rng.randint(60, 3600))
                elif status == "Scheduled":
                    send_ts = None
                    created = now - rng.randint(86400, 30 * 86400)
                    scheduled = now - rng.randint(3600, 86400 // 2)
                    strategy = {"method": "static",
                                "datetime": _iso(now + rng.randint(86400, 10 * 86400)),
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
                    cid = _ulid(rng, created)
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
                    "created_at": _iso(created),
                    "scheduled_at": _iso(scheduled),
                    "updated_at": _iso(updated),
                    "send_time": _iso(send_ts),
                }
                n_msgs = 2 if (ch == "email" and j % 5 == 2) else 1
                mids = []
                for v in range(n_msgs):
                    while True:
                        mid = _ulid(rng, created + 1)
                        if mid not in seen:
                            seen.add(mid)
                            break
                    mlabel = name if n_msgs == 1 else f"{name} - variant {'AB'[v]}"
                    if ch == "email":
                        definition = {
                            "channel": "email", "label": mlabel,
                            "content": {
                                "subject": json.loads(_SUBJECTS[(j + v) % len(_SUBJECTS)]),
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
                        "send_times": ([{"datetime": _iso(send_ts), "is_local": False}]
                                       if send_ts is not None else []),
                        "created_at": _iso(created + 1),
                        "updated_at": _iso(updated),
                    }
                    self._messages[mid] = {"id": mid, "campaign_id": cid, "channel": ch,
                                           "label": mlabel, "attributes": mattrs,
                                           "template_id": _b62(rng.getrandbits(64))[:6]
                                           if ch == "email" else None}
                    mids.append(mid)
                tag_ids = [t["id"] for t in rng.sample(self._tags, rng.randint(0, 2))]
                c = {"id": cid, "channel": ch, "archived": archived, "status": status,
                     "name": name, "send_ts": send_ts, "created_ts": created,
                     "scheduled_ts": scheduled, "updated_ts": updated,
                     "message_ids": mids, "tag_ids": tag_ids, "attributes": attrs}
                self._campaigns.append(c)
                self._campaign_by_id[cid] = c

    # ------------------------------------------------------------------ per-event functions
    def _ts(self, i: int) -> int:
        return self._start + self._sec[bisect.bisect_right(self._cum, i) - 1]

    def _pidx(self, i: int) -> int:
        if not self._np:
            return -1
        h = _mix((self._salt_p + i) & _M64)
        return -1 if h % 17 == 0 else (h >> 5) % self._np

    def _eid(self, i: int) -> str:
        return _b62(_mix((self._salt_id + i) & _M64))

    def _index_of_eid(self, eid: str) -> int | None:
        x = _unb62(eid)
        if x is None:
            return None
        i = (_unmix(x) - self._salt_id) & _M64
        if i < self.n_events and self._eid(i) == eid:
            return i
        return None

    def _pos_at(self, t: int) -> int:
        """First event position whose timestamp >= t."""
        off = t - self._start
        if off <= 0:
            return 0
        k = bisect.bisect_left(self._sec, off)
        return self._cum[k]

    def _props(self, m: int, i: int, h2: int, eid: str) -> str:
        kind = self._mkind[m]
        P = _PRODUCTS
        if kind == "order":
            cnt = 1 + (h2 >> 20) % 3
            items = ",".join(P[(h2 >> (24 + 4 * j)) % len(P)] for j in range(cnt))
            value = (h2 % 40000 + 500) / 100
            return (f'{{"$value":{value:.2f},"$event_id":"{1000000 + i}","OrderId":"#{1000000 + i}",'
                    f'"ItemCount":{cnt},"ItemNames":[{items}],"$currency_code":"USD"}}')
        if kind == "product":
            pn = (h2 >> 8) % len(P)
            return (f'{{"ProductName":{P[pn]},"ProductID":"{7000 + pn}",'
                    f'"Categories":[{_CATEGORIES[pn % len(_CATEGORIES)]}],'
                    f'"URL":"https://shop.example.com/products/{7000 + pn}"}}')
        if kind == "checkout":
            cnt = 1 + (h2 >> 20) % 3
            items = ",".join(P[(h2 >> (24 + 4 * j)) % len(P)] for j in range(cnt))
            return (f'{{"$event_id":"co-{eid}","ItemNames":[{items}],'
                    f'"CheckoutURL":"https://shop.example.com/checkouts/{eid}"}}')
        if kind == "fulfilled":
            return f'{{"$event_id":"{1000000 + (h2 % (i + 1))}","FulfillmentStatus":"fulfilled"}}'
        if kind == "site":
            return f'{{"page":{_PAGES[(h2 >> 8) % len(_PAGES)]},"os":"{("iOS", "Android", "Mac OS X", "Windows")[h2 % 4]}"}}'
        if kind in ("email", "email_click"):
            sub = _SUBJECTS[(h2 >> 8) % len(_SUBJECTS)]
            extra = f',"URL":"https://shop.example.com/?utm_source=email&e={eid}"' if kind == "email_click" else ""
            return (f'{{"Subject":{sub},"Campaign Name":"Campaign {(h2 >> 16) % 40}",'
                    f'"Email Domain":"example.com","$message":"M{(h2 >> 24) % 999:03d}"{extra}}}')
        if kind == "sms":
            return f'{{"Message Name":"SMS {(h2 >> 16) % 20}","Carrier":"{("Verizon", "T-Mobile", "AT&T")[h2 % 3]}"}}'
        if kind == "push":
            return f'{{"Message Name":"Push {(h2 >> 16) % 20}","Platform":"{("ios", "android")[h2 % 2]}"}}'
        if kind == "list":
            return f'{{"List":"Newsletter","$source":{(h2 >> 8) % 100}}}'
        return f'{{"source":"api","n":{h2 % 1000},"flag":{"true" if h2 & 1 else "false"}}}'

    def _event_json(self, i: int, base: str, fe, with_attr: bool):
        """(json text, profile index or -1, metric index) of event i."""
        ts = self._start + self._sec[bisect.bisect_right(self._cum, i) - 1]
        m = self._mb[i]
        h = _mix((self._salt_p + i) & _M64)
        pidx = -1 if (not self._np or h % 17 == 0) else (h >> 5) % self._np
        eid = _b62(_mix((self._salt_id + i) & _M64))
        if fe is None:
            u = _mix((self._salt_u + i) & _M64)
            hx = f"{u:016x}{h:016x}"
            props = self._props(m, i, _mix((self._salt_v + i) & _M64), eid)
            attrs = (f'"timestamp":{ts},"event_properties":{props},"datetime":"{_iso(ts)}",'
                     f'"uuid":"{hx[:8]}-{hx[8:12]}-{hx[12:16]}-{hx[16:20]}-{hx[20:]}"')
        else:
            pieces = []
            for f in fe:
                if f == "timestamp":
                    pieces.append(f'"timestamp":{ts}')
                elif f == "event_properties":
                    props = self._props(m, i, _mix((self._salt_v + i) & _M64), eid)
                    pieces.append(f'"event_properties":{props}')
                elif f == "datetime":
                    pieces.append(f'"datetime":"{_iso(ts)}"')
                elif f == "uuid":
                    u = _mix((self._salt_u + i) & _M64)
                    hx = f"{u:016x}{h:016x}"
                    pieces.append(f'"uuid":"{hx[:8]}-{hx[8:12]}-{hx[12:16]}-{hx[16:20]}-{hx[20:]}"')
            attrs = ",".join(dict.fromkeys(pieces))
        el = f"{base}/api/events/{eid}"
        pd = f'{{"type":"profile","id":"{self._pids[pidx]}"}}' if pidx >= 0 else "null"
        at = (f',"attributions":{{"data":[],"links":{{"self":"{el}/relationships/attributions/",'
              f'"related":"{el}/attributions/"}}}}') if with_attr else ""
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

    # ------------------------------------------------------------------ cached resources
    def _cache_list(self, key, size):
        c = self._json_cache.get(key)
        if c is None:
            if len(self._json_cache) > 64:
                self._json_cache.clear()
            c = self._json_cache[key] = [None] * size
        return c

    def _profile_json(self, k: int, base: str, fp) -> str:
        cache = self._cache_list(("p", base, tuple(fp) if fp is not None else None), self._np)
        s = cache[k]
        if s is None:
            pid = self._pids[k]
            pl = f"{base}/api/profiles/{pid}"
            s = cache[k] = _dumps({
                "type": "profile", "id": pid, "attributes": _sparse(self._pattrs[k], fp),
                "relationships": {
                    "lists": {"links": {"self": f"{pl}/relationships/lists/", "related": f"{pl}/lists/"}},
                    "segments": {"links": {"self": f"{pl}/relationships/segments/",
                                           "related": f"{pl}/segments/"}},
                },
                "links": {"self": f"{pl}/"},
            })
        return s

    def _metric_res(self, k: int, base: str, fm) -> dict:
        m = self._metrics[k]
        ml = f"{base}/api/metrics/{m['id']}"
        return {
            "type": "metric", "id": m["id"], "attributes": _sparse(m["attributes"], fm),
            "relationships": {"flow-triggers": {"links": {
                "self": f"{ml}/relationships/flow-triggers/", "related": f"{ml}/flow-triggers/"}}},
            "links": {"self": f"{ml}/"},
        }

    def _metric_json(self, k: int, base: str, fm) -> str:
        cache = self._cache_list(("m", base, tuple(fm) if fm is not None else None), len(self._metrics))
        s = cache[k]
        if s is None:
            s = cache[k] = _dumps(self._metric_res(k, base, fm))
        return s

    def _campaign_res(self, c: dict, base: str, fc) -> dict:
        cl = f"{base}/api/campaigns/{c['id']}"
        return {
            "type": "campaign", "id": c["id"], "attributes": _sparse(c["attributes"], fc),
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
                "attributes": _sparse(m["attributes"], fcm),
                "relationships": rel, "links": {"self": f"{ml}/"}}

    def _tag_res(self, t: dict, base: str, ft) -> dict:
        return {"type": "tag", "id": t["id"], "attributes": _sparse({"name": t["name"]}, ft),
                "links": {"self": f"{base}/api/tags/{t['id']}/"}}

    # ------------------------------------------------------------------ lifecycle: _Hosted

    # ------------------------------------------------------------------ observations
    def count(self, path_prefix: str = "/api/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].startswith(path_prefix))

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self._n, "throttled": self.throttled,
                    "by_path": dict(self._by_path)}

    # ------------------------------------------------------------------ ground truth
    def _window(self, since, until) -> tuple[int, int]:
        lo = math.ceil(_to_epoch(since))
        hi = math.ceil(_to_epoch(until))
        plo, phi = self._pos_at(lo), self._pos_at(hi)
        return plo, max(plo, phi)

    def metric_ids(self) -> set[str]:
        return set(self._mids)

    def metric_id(self, name: str) -> str:
        return self._metric_by_name[name]

    def event_ids(self, since, until, metric_ids=None) -> set[str]:
        plo, phi = self._window(since, until)
        if metric_ids is None:
            return {self._eid(i) for i in range(plo, phi)}
        want = {self._metric_index[m] for m in metric_ids if m in self._metric_index}
        mb = self._mb
        return {self._eid(i) for i in range(plo, phi) if mb[i] in want}

    def profile_ids(self, since, until) -> set[str]:
        plo, phi = self._window(since, until)
        out = set()
        for i in range(plo, phi):
            k = self._pidx(i)
            if k >= 0:
                out.add(self._pids[k])
        return out

    def event_metric_ids(self, since, until) -> set[str]:
        plo, phi = self._window(since, until)
        return {self._mids[k] for k in set(self._mb[plo:phi])}

    def event_count(self, since, until) -> int:
        plo, phi = self._window(since, until)
        return phi - plo

    def all_profile_ids(self) -> set[str]:
        return set(self._pids)

    def campaign_ids(self, channel=None) -> set[str]:
        return {c["id"] for c in self._campaigns if channel is None or c["channel"] == channel}

    def campaign_ids_sent(self, since, until, channel=None) -> set[str]:
        lo, hi = _to_epoch(since), _to_epoch(until)
        return {c["id"] for c in self._campaigns
                if c["send_ts"] is not None and lo <= c["send_ts"] < hi
                and (channel is None or c["channel"] == channel)}

    def campaign_message_ids(self, campaign_id: str) -> list[str]:
        return list(self._campaign_by_id[campaign_id]["message_ids"])

    def campaign(self, campaign_id: str) -> dict:
        return self._campaign_res(self._campaign_by_id[campaign_id],
                                  self.base_url or "http://127.0.0.1", None)

    def event(self, i) -> dict:
        if not 0 <= i < self.n_events:
            raise IndexError(i)
        s, _, _ = self._event_json(i, self.base_url or "http://127.0.0.1", None, False)
        return json.loads(s)

    def event_index(self, event_id: str) -> int | None:
        return self._index_of_eid(event_id)

    # ------------------------------------------------------------------ request pipeline
    def _every(self, every, n) -> bool:
        return bool(every) and every > 0 and n % every == 0

    def _serve(self, h: _BaseHandler):
        method = h.command
        parts = urlsplit(h.path)
        path, query = parts.path, parts.query
        body = h._read_body()
        npath = path.rstrip("/") or "/"
        if npath == "/_fake/stats":
            h._write(200, "application/json", _dumps(self.stats()).encode())
            return
        auth = h.headers.get("Authorization")
        revision = h.headers.get("revision")
        with self._lock:
            self._n += 1
            n = self._n
        if self.latency:
            time.sleep(self.latency)

        extra: list = []
        ctype = JSONAPI
        cut = None
        if self._every(self.html_403_every, n):
            status = 403
            ctype = "text/html; charset=UTF-8"
            extra = [("cf-mitigated", "challenge"), ("Cache-Control", "no-store")]
            payload = (b"<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>"
                       b"</head><body><noscript>Enable JavaScript and cookies to continue"
                       b"</noscript></body></html>")
        elif self._every(self.rate_limit_every, n):
            ra = self.retry_after
            status, payload = 429, self._throttle_body(ra if ra is not None else 1)
            if ra is not None:
                extra = [("Retry-After", str(ra))]
            with self._lock:
                self.throttled += 1
        elif self._every(self.server_error_every, n):
            status = 503
            payload = _error_body(503, "service_unavailable", "Service unavailable.",
                                  "The service is temporarily unavailable. Please try again later.")
        else:
            ctx = _Ctx()
            ctx.method, ctx.path, ctx.npath, ctx.query = method, path, npath, query
            ctx.headers, ctx.body = h.headers, body
            ctx.base = self.base_url
            try:
                status, payload, extra = self._route(ctx, auth, revision)
            except ApiError as e:
                status, payload, extra = e.status, e.body(), list(e.headers)
                if status == 429:
                    with self._lock:
                        self.throttled += 1
            except Exception as e:  # never let a bug kill the connection silently
                status = 500
                payload = _error_body(500, "error", "A server error occurred.",
                                      f"Internal error in the fake: {type(e).__name__}: {e}")
            if self._every(self.drop_every, n):
                cut = max(0, len(payload) // 2 - 1) if len(payload) > 1 else 0
            elif self._every(self.truncate_every, n) and status == 200:
                payload = payload[: len(payload) // 2]

        rec = {"method": method, "path": path, "query": query, "status": status,
               "authorization": auth, "revision": revision}
        with self._lock:
            self.requests.append(rec)
            self._by_path[path] = self._by_path.get(path, 0) + 1
        h._write(status, ctype, payload, extra, cut)

    @staticmethod
    def _throttle_body(seconds: int) -> bytes:
        unit = "second" if seconds == 1 else "seconds"
        return _error_body(429, "throttled", "Request was throttled.",
                           f"Request was throttled. Expected available in {seconds} {unit}.",
                           {"pointer": "/data/"},
                           links={"type": "https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling"})

    def _check_limits(self, bucket: str):
        burst, steady = RATE_LIMITS[bucket]
        now = time.monotonic()
        with self._lock:
            wins = self._windows.get(bucket)
            if wins is None:
                wins = self._windows[bucket] = [[now, 0], [now, 0]]
            wait = 0
            for win, limit, length in ((wins[0], burst, 1.0), (wins[1], steady, 60.0)):
                if now >= win[0] + length:
                    win[0], win[1] = now, 0
                if win[1] >= limit:
                    wait = max(wait, max(1, math.ceil(win[0] + length - now)))
            if wait:
                raise ApiError(429, "throttled", "Request was throttled.",
                               f"Request was throttled. Expected available in {wait} "
                               f"second{'s' if wait != 1 else ''}.",
                               {"pointer": "/data/"}, headers=[("Retry-After", str(wait))])
            wins[0][1] += 1
            wins[1][1] += 1

    def _check_daily(self):
        t = time.time()
        day = int(t // 86400)
        with self._lock:
            if self._report_day != day:
                self._report_day, self._report_count = day, 0
            if self._report_count >= self.report_daily_quota:
                wait = max(1, math.ceil((day + 1) * 86400 - t))
                raise ApiError(429, "throttled", "Request was throttled.",
                               f"Request was throttled. Expected available in {wait} seconds.",
                               {"pointer": "/data/"}, headers=[("Retry-After", str(wait))])
            self._report_count += 1

    def _route(self, ctx: _Ctx, auth, revision):
        if auth != f"Klaviyo-API-Key {self.api_key}":
            raise ApiError(401, "not_authenticated",
                           "Authentication credentials were not provided.",
                           "Missing or invalid private key.", {"pointer": "/data/"})
        if not revision:
            raise ApiError(400, "invalid", "Invalid input.",
                           "The 'revision' header is required.", {"parameter": "revision"})
        rev_date = revision.split(".", 1)[0]
        try:
            datetime.strptime(rev_date, "%Y-%m-%d")
        except ValueError:
            raise ApiError(400, "invalid", "Invalid input.",
                           f"Invalid revision '{revision}'.", {"parameter": "revision"}) from None

        seg = ctx.npath.split("/")[1:]  # ['api', 'events', ...]
        if len(seg) < 2 or seg[0] != "api":
            raise _not_found(f"Unknown path {ctx.path}")
        res = seg[1]
        rest = seg[2:]
        method = ctx.method
        if res == "events" and len(rest) <= 1:
            route, bucket = (self._h_events, "events") if not rest else (self._h_event, "event")
            allowed = ("GET",)
        elif res == "metrics" and len(rest) <= 1:
            route = self._h_metrics if not rest else self._h_metric
            bucket, allowed = "metrics", ("GET",)
        elif res == "campaigns" and len(rest) <= 1:
            route = self._h_campaigns if not rest else self._h_campaign
            bucket, allowed = "campaigns", ("GET",)
        elif res == "campaigns" and len(rest) == 2 and rest[1] == "campaign-messages":
            route, bucket, allowed = self._h_campaign_messages, "campaigns", ("GET",)
        elif res == "campaign-messages" and len(rest) == 1:
            route, bucket, allowed = self._h_campaign_message, "campaigns", ("GET",)
        elif res == "campaign-values-reports" and not rest:
            route, bucket, allowed = self._h_report, "reports", ("POST",)
        else:
            raise _not_found(f"Unknown path {ctx.path}")
        if method not in allowed:
            raise ApiError(405, "method_not_allowed", "Method not allowed.",
                           f'Method "{method}" not allowed.', {"pointer": "/data/"})
        if self.enforce_limits:
            self._check_limits(bucket)
        if bucket == "reports":
            self._check_daily()
        return route(ctx, rest)

    # ------------------------------------------------------------------ params helpers
    @staticmethod
    def _params(ctx: _Ctx, allowed: set):
        pairs = parse_qsl(ctx.query, keep_blank_values=True)
        params: dict[str, str] = {}
        for k, v in pairs:
            if k in params:
                raise _bad(f"Parameter '{k}' was specified more than once.", k)
            params[k] = v
        for k in params:
            if k not in allowed:
                raise _bad(f"'{k}' is not a valid query parameter for this endpoint.", k)
        ctx.params, ctx.pairs = params, pairs
        return params

    @staticmethod
    def _fields(params, name, enum):
        v = params.get(name)
        if v is None:
            return None
        items = v.split(",")
        for it in items:
            if it not in enum:
                raise _bad(f"'{it}' is not a valid field for the resource '{name[7:-1]}'.", name)
        return list(dict.fromkeys(items))

    @staticmethod
    def _include(params, enum):
        v = params.get("include")
        if v is None:
            return set()
        items = v.split(",")
        for it in items:
            if it not in enum:
                raise _bad(f"'{it}' is not a valid relationship for include.", "include")
        return set(items)

    @staticmethod
    def _page_size(params, lo, hi, default):
        v = params.get("page[size]")
        if v is None:
            return default
        if not v.isdigit() or not lo <= int(v) <= hi:
            raise _bad(f"page[size] must be an integer between {lo} and {hi}.", "page[size]")
        return int(v)

    def _links(self, ctx: _Ctx, next_cursor, prev_cursor) -> dict:
        base = self.base_url
        self_link = f"{base}{ctx.path}" + (f"?{ctx.query}" if ctx.query else "")
        rest = [(k, v) for k, v in ctx.pairs if k != "page[cursor]"]

        def mk(b, cur):
            return f"{b}{ctx.path}?" + urlencode(rest + [("page[cursor]", cur)])

        nb = self.next_link_base.rstrip("/") if self.next_link_base else base
        return {"self": self_link,
                "next": mk(nb, next_cursor) if next_cursor else None,
                "prev": mk(base, prev_cursor) if prev_cursor else None}

    @staticmethod
    def _filter(text, specs, max_list=None):
        try:
            return _parse_filter(text, specs, max_list)
        except FilterError as e:
            raise _bad(f"Invalid filter provided: {e}", "filter") from None

    # ------------------------------------------------------------------ events
    def _event_filter(self, text):
        lo, hi = self._start, self.now_ts
        msel = None
        prof = None
        has_prof = False
        if text is None:
            return lo, hi, msel, prof, has_prof
        for op, field, val, is_list in self._filter(text, EVENT_FILTERS):
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
                    raise _bad(f"Metric IDs {missing} do not exist.", "filter")
                sel = {self._metric_index[x] for x in ids}
                msel = sel if msel is None else (msel & sel)
            elif field == "profile_id":
                k = self._profile_index.get(val, -2)
                prof = k if prof is None or prof == k else -2
            elif field == "profile":
                has_prof = True
        return lo, hi, msel, prof, has_prof

    def _h_events(self, ctx, rest):
        params = self._params(ctx, {"fields[event]", "fields[profile]", "fields[metric]",
                                    "fields[attribution]", "filter", "include",
                                    "page[cursor]", "page[size]", "sort"})
        fe = self._fields(params, "fields[event]", EVENT_FIELDS)
        fp = self._fields(params, "fields[profile]", PROFILE_FIELDS)
        fm = self._fields(params, "fields[metric]", METRIC_FIELDS)
        self._fields(params, "fields[attribution]", {"id"})
        inc = self._include(params, {"metric", "profile", "attributions"})
        sort = params.get("sort", "datetime")
        if sort not in EVENT_SORTS:
            raise _bad(f"'{sort}' is not a valid sort field.", "sort")
        desc = sort.startswith("-")
        size = self._page_size(params, 1, 1000, 200)
        lo, hi, msel, prof, has_prof = self._event_filter(params.get("filter"))
        plo = self._pos_at(lo)
        phi = max(plo, self._pos_at(hi))
        sk = "d" if desc else "a"
        cur = params.get("page[cursor]")
        if cur is None:
            mode = "n"
            b = phi if desc else plo
        else:
            parts = _dec_cursor(cur, "ev")
            try:
                csk, mode, b = parts[0], parts[1], int(parts[2])
                if csk != sk or mode not in ("n", "p"):
                    raise ValueError
            except (ValueError, IndexError):
                raise _bad("Invalid cursor provided.", "page[cursor]") from None
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
                nxt = _enc_cursor("ev", sk, "n", last if desc else last + 1)
            if has_prev:
                prv = _enc_cursor("ev", sk, "p", first + 1 if desc else first)

        base = self.base_url
        inc_p = "profile" in inc
        inc_m = "metric" in inc
        with_attr = "attributions" in inc
        parts_ = []
        pseen: dict = {}
        mseen: dict = {}
        ej = self._event_json
        for p in got:
            s, pidx, m = ej(p, base, fe, with_attr)
            parts_.append(s)
            if inc_p and pidx >= 0:
                pseen[pidx] = None
            if inc_m:
                mseen[m] = None
        out = ['{"data":[', ",".join(parts_), "]"]
        if inc:
            included = [self._profile_json(k, base, fp) for k in pseen]
            included += [self._metric_json(k, base, fm) for k in mseen]
            out += [',"included":[', ",".join(included), "]"]
        out += [',"links":', _dumps(self._links(ctx, nxt, prv)), "}"]
        return 200, "".join(out).encode("utf-8"), []

    def _h_event(self, ctx, rest):
        params = self._params(ctx, {"fields[event]", "fields[profile]", "fields[metric]",
                                    "fields[attribution]", "include"})
        fe = self._fields(params, "fields[event]", EVENT_FIELDS)
        fp = self._fields(params, "fields[profile]", PROFILE_FIELDS)
        fm = self._fields(params, "fields[metric]", METRIC_FIELDS)
        self._fields(params, "fields[attribution]", {"id"})
        inc = self._include(params, {"metric", "profile", "attributions"})
        i = self._index_of_eid(rest[0])
        if i is None:
            raise _not_found(f"An event with id '{rest[0]}' does not exist.")
        base = self.base_url
        s, pidx, m = self._event_json(i, base, fe, "attributions" in inc)
        out = ['{"data":', s]
        if inc:
            included = []
            if "profile" in inc and pidx >= 0:
                included.append(self._profile_json(pidx, base, fp))
            if "metric" in inc:
                included.append(self._metric_json(m, base, fm))
            out += [',"included":[', ",".join(included), "]"]
        out += [',"links":', _dumps({"self": f"{base}{ctx.path}"}), "}"]
        return 200, "".join(out).encode("utf-8"), []

    # ------------------------------------------------------------------ metrics
    def _h_metrics(self, ctx, rest):
        if "page[size]" in dict(parse_qsl(ctx.query, keep_blank_values=True)):
            raise _bad("'page[size]' is not a valid query parameter for this endpoint.", "page[size]")
        params = self._params(ctx, {"fields[metric]", "fields[flow]", "filter", "include",
                                    "page[cursor]"})
        fm = self._fields(params, "fields[metric]", METRIC_FIELDS)
        self._fields(params, "fields[flow]", FLOW_FIELDS)
        inc = self._include(params, {"flow-triggers"})
        rows = list(range(len(self._metrics)))
        if params.get("filter") is not None:
            for op, field, val, _ in self._filter(params["filter"], METRIC_FILTERS):
                key = field.split(".", 1)[1]
                rows = [k for k in rows
                        if self._metrics[k]["attributes"]["integration"][key] == val]
        off = 0
        if "page[cursor]" in params:
            try:
                off = int(_dec_cursor(params["page[cursor]"], "mt")[0])
                if off < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise _bad("Invalid cursor provided.", "page[cursor]") from None
        size = max(1, int(self.metrics_page_size))
        page = rows[off:off + size]
        nxt = _enc_cursor("mt", off + size) if off + size < len(rows) else None
        prv = _enc_cursor("mt", max(0, off - size)) if off > 0 else None
        base = self.base_url
        data = []
        for k in page:
            r = self._metric_res(k, base, fm)
            if "flow-triggers" in inc:
                r["relationships"]["flow-triggers"]["data"] = []
            data.append(r)
        doc = {"data": data, "links": self._links(ctx, nxt, prv)}
        if inc:
            doc["included"] = []
        return 200, _dumps(doc).encode("utf-8"), []

    def _h_metric(self, ctx, rest):
        params = self._params(ctx, {"fields[metric]", "fields[flow]", "include"})
        fm = self._fields(params, "fields[metric]", METRIC_FIELDS)
        self._fields(params, "fields[flow]", FLOW_FIELDS)
        inc = self._include(params, {"flow-triggers"})
        k = self._metric_index.get(rest[0])
        if k is None:
            raise _not_found(f"A metric with id '{rest[0]}' does not exist.")
        r = self._metric_res(k, self.base_url, fm)
        doc = {"data": r, "links": {"self": f"{self.base_url}{ctx.path}"}}
        if inc:
            r["relationships"]["flow-triggers"]["data"] = []
            doc["included"] = []
        return 200, _dumps(doc).encode("utf-8"), []

    # ------------------------------------------------------------------ campaigns
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
                if not _cmp(op, c[key], val):
                    return False
        return True

    def _h_campaigns(self, ctx, rest):
        params = self._params(ctx, {"fields[campaign]", "fields[campaign-message]", "fields[tag]",
                                    "filter", "include", "page[cursor]", "page[size]", "sort"})
        fc = self._fields(params, "fields[campaign]", CAMPAIGN_FIELDS)
        fcm = self._fields(params, "fields[campaign-message]", CAMPAIGN_MESSAGE_FIELDS)
        ft = self._fields(params, "fields[tag]", TAG_FIELDS)
        inc = self._include(params, {"campaign-messages", "tags"})
        sort = params.get("sort")
        if sort is not None and sort not in CAMPAIGN_SORTS:
            raise _bad(f"'{sort}' is not a valid sort field.", "sort")
        size = self._page_size(params, 1, 100, 100)
        text = params.get("filter")
        if not text:
            raise _bad("A filter on messages.channel is required, e.g. "
                       "equals(messages.channel,'email').", "filter")
        conds = self._filter(text, CAMPAIGN_FILTERS)
        if not any(f == "messages.channel" for _, f, _, _ in conds):
            raise _bad("Invalid filter provided: a messages.channel filter is required.", "filter")
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
        off = 0
        if "page[cursor]" in params:
            try:
                off = int(_dec_cursor(params["page[cursor]"], "cp")[0])
                if off < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise _bad("Invalid cursor provided.", "page[cursor]") from None
        page = rows[off:off + size]
        nxt = _enc_cursor("cp", off + size) if off + size < len(rows) else None
        prv = _enc_cursor("cp", max(0, off - size)) if off > 0 else None
        base = self.base_url
        doc = {"data": [self._campaign_res(c, base, fc) for c in page],
               "links": self._links(ctx, nxt, prv)}
        if inc:
            doc["included"] = self._campaign_included(page, inc, base, fcm, ft)
        return 200, _dumps(doc).encode("utf-8"), []

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

    def _h_campaign(self, ctx, rest):
        params = self._params(ctx, {"fields[campaign]", "fields[campaign-message]", "fields[tag]",
                                    "include"})
        fc = self._fields(params, "fields[campaign]", CAMPAIGN_FIELDS)
        fcm = self._fields(params, "fields[campaign-message]", CAMPAIGN_MESSAGE_FIELDS)
        ft = self._fields(params, "fields[tag]", TAG_FIELDS)
        inc = self._include(params, {"campaign-messages", "tags"})
        c = self._campaign_by_id.get(rest[0])
        if c is None:
            raise _not_found(f"A campaign with id '{rest[0]}' does not exist.")
        base = self.base_url
        doc = {"data": self._campaign_res(c, base, fc), "links": {"self": f"{base}{ctx.path}"}}
        if inc:
            doc["included"] = self._campaign_included([c], inc, base, fcm, ft)
        return 200, _dumps(doc).encode("utf-8"), []

    _MSG_PARAMS = {"fields[campaign-message]", "fields[campaign]", "fields[image]",
                   "fields[template]", "include"}

    def _msg_params(self, ctx):
        params = self._params(ctx, self._MSG_PARAMS)
        fcm = self._fields(params, "fields[campaign-message]", CAMPAIGN_MESSAGE_FIELDS)
        fc = self._fields(params, "fields[campaign]", CAMPAIGN_FIELDS)
        self._fields(params, "fields[image]", IMAGE_FIELDS)
        self._fields(params, "fields[template]", TEMPLATE_FIELDS)
        inc = self._include(params, {"campaign", "image", "template"})
        return fcm, fc, inc

    def _h_campaign_messages(self, ctx, rest):
        fcm, fc, inc = self._msg_params(ctx)
        c = self._campaign_by_id.get(rest[0])
        if c is None:
            raise _not_found(f"A campaign with id '{rest[0]}' does not exist.")
        base = self.base_url
        doc = {"data": [self._message_res(self._messages[m], base, fcm) for m in c["message_ids"]],
               "links": {"self": f"{base}{ctx.path}" + (f"?{ctx.query}" if ctx.query else ""),
                         "next": None, "prev": None}}
        if inc:
            doc["included"] = [self._campaign_res(c, base, fc)] if "campaign" in inc else []
        return 200, _dumps(doc).encode("utf-8"), []

    def _h_campaign_message(self, ctx, rest):
        fcm, fc, inc = self._msg_params(ctx)
        m = self._messages.get(rest[0])
        if m is None:
            raise _not_found(f"A campaign message with id '{rest[0]}' does not exist.")
        base = self.base_url
        doc = {"data": self._message_res(m, base, fcm), "links": {"self": f"{base}{ctx.path}"}}
        if inc:
            doc["included"] = ([self._campaign_res(self._campaign_by_id[m["campaign_id"]], base, fc)]
                               if "campaign" in inc else [])
        return 200, _dumps(doc).encode("utf-8"), []

    # ------------------------------------------------------------------ reports
    def _timeframe(self, tf) -> tuple[float, float, bool]:
        """-> (start, end, end_inclusive) in epoch seconds."""
        ptr = "/data/attributes/timeframe"
        if not isinstance(tf, dict):
            raise _bad("timeframe must be an object.", pointer=ptr)
        if "key" in tf:
            if set(tf) != {"key"}:
                raise _bad("timeframe must have either 'key' or 'start' and 'end'.", pointer=ptr)
            key = tf["key"]
            if key not in REPORT_TIMEFRAME_KEYS:
                raise _bad(f"'{key}' is not a valid timeframe key.", pointer=ptr + "/key")
            now = self.now
            today = now.replace(hour=0, minute=0, second=0, microsecond=0)
            week0 = today - timedelta(days=today.weekday())
            month0 = today.replace(day=1)
            year0 = today.replace(month=1, day=1)

            def months_back(d, k):
                y, m = d.year, d.month - k
                while m <= 0:
                    m += 12
                    y -= 1
                return d.replace(year=y, month=m, day=min(d.day, calendar.monthrange(y, m)[1]))

            ts = lambda d: d.timestamp()  # noqa: E731
            n = now.timestamp()
            table = {
                "today": (ts(today), n, True),
                "yesterday": (ts(today - timedelta(days=1)), ts(today), False),
                "this_week": (ts(week0), n, True),
                "last_week": (ts(week0 - timedelta(days=7)), ts(week0), False),
                "this_month": (ts(month0), n, True),
                "last_month": (ts(months_back(month0, 1)), ts(month0), False),
                "this_year": (ts(year0), n, True),
                "last_year": (ts(year0.replace(year=year0.year - 1)), ts(year0), False),
                "last_7_days": (ts(today - timedelta(days=7)), ts(today), False),
                "last_30_days": (ts(today - timedelta(days=30)), ts(today), False),
                "last_90_days": (ts(today - timedelta(days=90)), ts(today), False),
                "last_365_days": (ts(today - timedelta(days=365)), ts(today), False),
                "last_3_months": (ts(months_back(today, 3)), ts(today), False),
                "last_12_months": (ts(months_back(today, 12)), ts(today), False),
            }
            return table[key]
        if set(tf) != {"start", "end"}:
            raise _bad("timeframe must have either 'key' or 'start' and 'end'.", pointer=ptr)
        if not isinstance(tf["start"], str) or not isinstance(tf["end"], str):
            raise _bad("timeframe start and end must be datetimes.", pointer=ptr)
        start, end = _parse_iso(tf["start"]), _parse_iso(tf["end"])
        if start is None:
            raise _bad("timeframe start is not a valid datetime.", pointer=ptr + "/start")
        if end is None:
            raise _bad("timeframe end is not a valid datetime.", pointer=ptr + "/end")
        if end < start:
            raise _bad("timeframe end must be after start.", pointer=ptr)
        if end - start > 366 * 86400:
            raise _bad("The timeframe cannot be longer than 1 year.", pointer=ptr)
        return start, end, True

    def _msg_stats(self, m: dict, conv_mid: str) -> dict:
        digest = hashlib.blake2b(f"{self.seed}|{m['id']}".encode(), digest_size=16).digest()
        r = random.Random(digest)
        r2 = random.Random(hashlib.blake2b(f"{self.seed}|{m['id']}|{conv_mid}".encode(),
                                           digest_size=16).digest())
        ch = m["channel"]
        email, sms, push = ch == "email", ch == "sms", ch == "mobile_push"
        recipients = r.randint(500, 20000) if email else r.randint(50, 4000)
        bounced = int(recipients * r.uniform(0, 0.03)) if email else 0
        failed = int(recipients * r.uniform(0, 0.03)) if not email else 0
        delivered = recipients - bounced - failed
        if email:
            opens_unique = int(delivered * r.uniform(0.15, 0.55))
        elif push:
            opens_unique = int(delivered * r.uniform(0.03, 0.15))
        else:
            opens_unique = 0
        opens = opens_unique + int(opens_unique * r.uniform(0.1, 0.9))
        clicks_unique = int(delivered * r.uniform(0.005, 0.08))
        if opens_unique:
            clicks_unique = min(clicks_unique, opens_unique)
        clicks = clicks_unique + int(clicks_unique * r.uniform(0, 0.6))
        unsubscribe_uniques = int(delivered * r.uniform(0, 0.004))
        unsubscribes = unsubscribe_uniques + int(unsubscribe_uniques * r.uniform(0, 0.1))
        spam = int(delivered * r.uniform(0, 0.0008)) if email else 0
        conversion_uniques = int(clicks_unique * r2.uniform(0.02, 0.3))
        conversions = conversion_uniques + int(conversion_uniques * r2.uniform(0, 0.3))
        conversion_value = round(conversions * r2.uniform(15, 180), 2)
        segments = (r.randint(1, 3) * delivered) if sms else 0
        spend = round(segments * 0.0079, 2)

        def d(a, b):
            return a / b if b else 0.0

        return {
            "recipients": recipients, "delivered": delivered, "bounced": bounced,
            "failed": failed, "bounced_or_failed": bounced + failed,
            "opens": opens, "opens_unique": opens_unique, "clicks": clicks,
            "clicks_unique": clicks_unique, "conversions": conversions,
            "conversion_uniques": conversion_uniques, "conversion_value": float(conversion_value),
            "unsubscribes": unsubscribes, "unsubscribe_uniques": unsubscribe_uniques,
            "spam_complaints": spam,
            "open_rate": d(opens_unique, delivered), "click_rate": d(clicks_unique, delivered),
            "click_to_open_rate": d(clicks_unique, opens_unique),
            "conversion_rate": d(conversion_uniques, delivered),
            "delivery_rate": d(delivered, recipients), "bounce_rate": d(bounced, recipients),
            "failed_rate": d(failed, recipients),
            "bounced_or_failed_rate": d(bounced + failed, recipients),
            "unsubscribe_rate": d(unsubscribe_uniques, delivered),
            "spam_complaint_rate": d(spam, delivered),
            "average_order_value": d(conversion_value, conversions),
            "revenue_per_recipient": d(conversion_value, recipients),
            "message_segment_count_sum": segments,
            "text_message_credit_usage_amount": segments,
            "text_message_spend": float(spend),
            "text_message_roi": d(conversion_value, spend),
        }

    def _h_report(self, ctx, rest):
        ct = (ctx.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ct != JSONAPI:
            raise ApiError(415, "unsupported_media_type", "Unsupported media type.",
                           f'Unsupported media type "{ct}" in request; use {JSONAPI}.',
                           {"pointer": "/data/"})
        params = self._params(ctx, {"fields[campaign-values-report]", "page_cursor"})
        frep = self._fields(params, "fields[campaign-values-report]", {"id", "results"})
        try:
            doc = json.loads(ctx.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise _bad("The request body is not valid JSON.", pointer="/data") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise _bad("'data' is required.", pointer="/data")
        data = doc["data"]
        if data.get("type") != "campaign-values-report":
            raise _bad("'type' must be 'campaign-values-report'.", pointer="/data/type")
        attrs = data.get("attributes")
        if not isinstance(attrs, dict):
            raise _bad("'attributes' is required.", pointer="/data/attributes")
        unknown = set(attrs) - {"statistics", "timeframe", "conversion_metric_id", "group_by",
                                "filter"}
        if unknown:
            raise _bad(f"Unknown attributes: {sorted(unknown)}.", pointer="/data/attributes")
        stats = attrs.get("statistics")
        if not isinstance(stats, list) or not stats:
            raise _bad("'statistics' is required and must be a non-empty list.",
                       pointer="/data/attributes/statistics")
        for s in stats:
            if s not in REPORT_STATISTICS:
                raise _bad(f"'{s}' is not a valid statistic.", pointer="/data/attributes/statistics")
        if "timeframe" not in attrs:
            raise _bad("'timeframe' is required.", pointer="/data/attributes/timeframe")
        t0, t1, incl = self._timeframe(attrs["timeframe"])
        conv = attrs.get("conversion_metric_id")
        if not isinstance(conv, str) or not conv:
            raise _bad("'conversion_metric_id' is required.",
                       pointer="/data/attributes/conversion_metric_id")
        if conv not in self._metric_index:
            raise _bad(f"Metric IDs ['{conv}'] do not exist.",
                       pointer="/data/attributes/conversion_metric_id")
        group_by = attrs.get("group_by")
        if group_by is None:
            group_by = ["campaign_id", "campaign_message_id", "send_channel"]
        if not isinstance(group_by, list) or any(g not in REPORT_GROUP_BY for g in group_by):
            raise _bad("Invalid group_by.", pointer="/data/attributes/group_by")
        if "campaign_id" not in group_by or "campaign_message_id" not in group_by:
            raise _bad("group_by must include campaign_id and campaign_message_id.",
                       pointer="/data/attributes/group_by")
        conds = []
        ftext = attrs.get("filter")
        if ftext is not None:
            if not isinstance(ftext, str):
                raise _bad("filter must be a string.", pointer="/data/attributes/filter")
            try:
                conds = _parse_filter(ftext, REPORT_FILTERS, max_list=100)
            except FilterError as e:
                raise _bad(f"Invalid filter provided: {e}", pointer="/data/attributes/filter") from None
            fields_used = [f for _, f, _, _ in conds]
            if len(fields_used) != len(set(fields_used)):
                raise _bad("Only one filter can be used per attribute.",
                           pointer="/data/attributes/filter")

        results = []
        campaign_ids: dict = {}
        for c in self._campaigns:
            st = c["send_ts"]
            if st is None or st < t0 or (st > t1 if incl else st >= t1):
                continue
            for mid in c["message_ids"]:
                m = self._messages[mid]
                vals = {
                    "campaign_id": c["id"], "campaign_message_id": mid,
                    "campaign_message_name": m["label"],
                    "send_channel": REPORT_CHANNEL[c["channel"]],
                    "tag_id": list(c["tag_ids"]),
                    "tag_name": [self._tag_by_id[t]["name"] for t in c["tag_ids"]],
                    "group": None, "group_name": None, "variation": None,
                    "variation_name": None,
                    "text_message_format": "SMS" if c["channel"] == "sms" else None,
                }
                ok = True
                for op, field, val, is_list in conds:
                    have = vals[field]
                    if field in ("tag_id", "tag_name"):
                        ok = (set(val) <= set(have)) if op == "contains-all" else bool(set(val) & set(have))
                    elif is_list:
                        ok = have in val
                    else:
                        ok = have == val
                    if not ok:
                        break
                if not ok:
                    continue
                allstats = self._msg_stats(m, conv)
                groupings = {}
                for g in group_by:
                    v = vals[g]
                    groupings[g] = (v[0] if v else None) if isinstance(v, list) else v
                results.append({"groupings": groupings,
                                "statistics": {s: allstats[s] for s in stats}})
                campaign_ids[c["id"]] = None
        rid = hashlib.sha1(ctx.body).hexdigest()[:26]
        base = self.base_url
        attributes = {"results": results}
        out = {"data": {"type": "campaign-values-report", "id": rid,
                        "attributes": attributes if frep is None or "results" in frep else {},
                        "relationships": {"campaigns": {
                            "data": [{"type": "campaign", "id": c} for c in campaign_ids],
                            "links": {"self": f"{base}/api/campaign-values-reports/{rid}/relationships/campaigns/",
                                      "related": f"{base}/api/campaign-values-reports/{rid}/campaigns/"}}}},
               "links": {"self": f"{base}/api/campaign-values-reports/"}}
        return 200, _dumps(out).encode("utf-8"), []


def hash_seed(seed) -> int:
    """Stable 64-bit integer from any seed value (str/int/...)."""
    return int.from_bytes(hashlib.blake2b(repr(seed).encode(), digest_size=8).digest(), "big")


# --------------------------------------------------------------------------- recording sink


class _RecHandler(_BaseHandler):
    def _do(self):
        owner = self.server.owner
        try:
            body = self._read_body()  # noqa: F841
            parts = urlsplit(self.path)
            rec = {"method": self.command, "path": parts.path, "query": parts.query,
                   "status": 200, "authorization": self.headers.get("Authorization"),
                   "revision": self.headers.get("revision")}
            with owner._lock:
                owner.requests.append(rec)
            url = f"{owner.base_url}{self.path}"
            payload = _dumps({"data": [], "links": {"self": url, "next": None}}).encode()
            self._write(200, JSONAPI, payload)
        except Exception:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do


class RecordingServer(_Hosted):
    """Answers every request with an empty JSON:API page and records it.

    Used as "another host" in tests: ``.requests`` shows whether any request
    (and which Authorization header) reached it.
    """

    _handler = _RecHandler

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self.port = port
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.base_url = None

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].startswith(path_prefix))



# --------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m klaviyo_sync.fake_api",
                                 description="Serve a fake Klaviyo API on 127.0.0.1.")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--profiles", type=int, default=300)
    ap.add_argument("--metrics", type=int, default=12)
    ap.add_argument("--campaigns-per-channel", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--span-hours", type=float, default=24 * 7)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--enforce-limits", action="store_true")
    ap.add_argument("--api-key", default=FAKE_API_KEY)
    args = ap.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake = FakeKlaviyo(api_key=args.api_key, seed=args.seed, n_events=args.events,
                       n_profiles=args.profiles, n_metrics=args.metrics,
                       n_campaigns_per_channel=args.campaigns_per_channel,
                       span_hours=args.span_hours, port=args.port)
    fake.latency = args.latency
    fake.enforce_limits = args.enforce_limits
    fake.start()
    try:
        sys.stdout.write(fake.base_url + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
