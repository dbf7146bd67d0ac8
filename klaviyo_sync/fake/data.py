"""Deterministic building blocks of the fake account: ids, ISO datetimes, synthetic catalogs.

Ids are computed, not stored: ``mix`` is a bijective 64-bit mixer (splitmix64's finalizer),
so an event's id is ``b62(mix(salt + index))`` and ``unmix`` turns an id back into its index.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from datetime import datetime, timezone

M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_C1_INV = pow(_C1, -1, 1 << 64)
_C2_INV = pow(_C2, -1, 1 << 64)


def mix(x: int) -> int:
    """splitmix64 finalizer: a bijection on 64-bit integers."""
    x = (x + _GOLDEN) & M64
    x = ((x ^ (x >> 30)) * _C1) & M64
    x = ((x ^ (x >> 27)) * _C2) & M64
    return x ^ (x >> 31)


def unmix(y: int) -> int:
    y = y ^ (y >> 31) ^ (y >> 62)
    y = (y * _C2_INV) & M64
    y = y ^ (y >> 27) ^ (y >> 54)
    y = (y * _C1_INV) & M64
    y = y ^ (y >> 30) ^ (y >> 60)
    return (y - _GOLDEN) & M64


B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_IDX = {c: i for i, c in enumerate(B62)}
_B62_2 = [a + b for a in B62 for b in B62]


def b62(x: int) -> str:
    """64-bit integer -> 12 base62 characters (fixed width)."""
    x, a = divmod(x, 3844)
    x, b = divmod(x, 3844)
    x, c = divmod(x, 3844)
    x, d = divmod(x, 3844)
    x, e = divmod(x, 3844)
    t = _B62_2
    return t[x] + t[e] + t[d] + t[c] + t[b] + t[a]


def unb62(s: str) -> int | None:
    if len(s) != 12:
        return None
    x = 0
    for ch in s:
        v = _B62_IDX.get(ch)
        if v is None:
            return None
        x = x * 62 + v
    return x if x <= M64 else None


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(rng: random.Random, ts: int) -> str:
    """A ULID-looking id (26 chars) whose time part is ``ts`` (seconds)."""
    ms = ts * 1000 + rng.randrange(1000)
    out = []
    for _ in range(10):
        ms, r = divmod(ms, 32)
        out.append(_CROCKFORD[r])
    head = "".join(reversed(out))
    return head + "".join(rng.choice(_CROCKFORD) for _ in range(16))


_DAY_CACHE: dict[int, str] = {}


def iso(ts: int | None) -> str | None:
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


def parse_iso(text: str) -> float | None:
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


def to_epoch(value) -> float:
    """datetime (aware, or naive = UTC) or number -> epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        v = parse_iso(value)
        if v is None:
            raise ValueError(f"not an ISO datetime: {value!r}")
        return v
    return float(value)


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def hash_seed(seed) -> int:
    """Stable 64-bit integer from any seed value (str/int/...)."""
    return int.from_bytes(hashlib.blake2b(repr(seed).encode(), digest_size=8).digest(), "big")


# --------------------------------------------------------------------------- catalogs

INTEGRATIONS = {
    "shopify": {"object": "integration", "id": "0eMvjm", "key": "shopify",
                "name": "Shopify", "category": "eCommerce"},
    "klaviyo": {"object": "integration", "id": "0rG4eQ", "key": "klaviyo",
                "name": "Klaviyo", "category": "Internal"},
    "api": {"object": "integration", "id": "7FtS4J", "key": "api",
            "name": "API", "category": "API"},
}

# name, integration, property kind, weight (relative frequency of events)
METRIC_CATALOG = [
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

PRODUCTS = [dumps(x) for x in [
    "Classic Tee", "Crème Brûlée Candle", "Trail Runner 2", 'The "Everyday" Tote',
    "Wool Beanie", "Ceramic Mug", "Café Blend 1kg", "Linen Shirt", "Yoga Mat",
    "Water Bottle", "Rain Jacket", "Desk Lamp", "Notebook A5", "Sunglasses",
    "Socks 3-pack", "Garden Gloves",
]]
CATEGORIES = [dumps(x) for x in ["Apparel", "Home", "Outdoor", "Kitchen", "Accessories"]]
PAGES = [dumps(x) for x in [
    "https://shop.example.com/", "https://shop.example.com/collections/new",
    "https://shop.example.com/cart", "https://shop.example.com/pages/about",
    "https://shop.example.com/search?q=mug&sort=price",
]]
SUBJECTS = [dumps(x) for x in [
    "Our biggest sale of the season", "New arrivals just for you", "Don't miss out ⏰",
    "Your weekly picks", "Free shipping ends tonight", "A gift, from us",
]]
FIRST_NAMES = ["Ada", "Grace", "Linus", "Zoë", "José", "Mia", "Noah", "Olivia", "Liam", "Emma",
          "Ava", "Lucas", "Chloé", "Hiro", "Amara", "Søren", "Priya", "Mateo", "Fatima", "Ivan"]
LAST_NAMES = ["Lovelace", "Hopper", "Torvalds", "Smith", "García", "Nguyen", "Müller", "O'Brien",
         "Kowalski", "Tanaka", "Okafor", "Dubois", "Rossi", "Johansson", "Patel", "Silva"]
CITIES = [("Boston", "Massachusetts", "United States", "02110", "America/New_York", 42.36, -71.06),
           ("Austin", "Texas", "United States", "73301", "America/Chicago", 30.27, -97.74),
           ("Toronto", "Ontario", "Canada", "M5H 2N2", "America/Toronto", 43.65, -79.38),
           ("London", "England", "United Kingdom", "EC1A 1BB", "Europe/London", 51.51, -0.13),
           ("Berlin", "Berlin", "Germany", "10115", "Europe/Berlin", 52.52, 13.40),
           ("Sydney", "New South Wales", "Australia", "2000", "Australia/Sydney", -33.87, 151.21)]
CAMPAIGN_THEMES = ["Spring Sale", "Weekly Newsletter", "New Arrivals", "Flash Sale",
                    "VIP Early Access", "Back in Stock", "Holiday Gift Guide", "Win-back",
                    "Product Launch", "Free Shipping Weekend"]
TAG_NAMES = ["Newsletter", "Promo", "Holiday", "VIP", "Launch"]
