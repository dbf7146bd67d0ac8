"""Profiles: no endpoint yet; events include them (``include=profile``, ``fields[profile]``)."""

from __future__ import annotations

import random

from ..data import CITIES, FIRST_NAMES, LAST_NAMES, dumps, iso, ulid
from ..jsonapi import sparse
from . import Resource

PROFILE_FIELDS = {
    "created", "email", "external_id", "first_name", "id", "image", "last_event_date",
    "last_name", "locale", "location", "location.address1", "location.address2",
    "location.city", "location.country", "location.ip", "location.latitude",
    "location.longitude", "location.region", "location.timezone", "location.zip",
    "organization", "phone_number", "properties", "title", "updated",
}


class ProfilesResource(Resource):
    """The account's profiles (``n_profiles`` of them), referenced by events."""

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-profiles")
        self._pids: list[str] = []
        self._pattrs: list[dict] = []
        self._profile_index: dict[str, int] = {}
        pseen = set()
        if self.profile_shape not in ("small", "realistic"):
            raise ValueError("profile_shape must be 'small' or 'realistic'")
        # Its own generator: the default ("small") account stays exactly as it was.
        rng_big = random.Random(f"klaviyo-fake-{self.seed}-profile-shape")
        for k in range(self.n_profiles):
            created = self.now_ts - 86400 * rng.randint(30, 900) - rng.randrange(86400)
            while True:
                pid = ulid(rng, created)
                if pid not in pseen:
                    pseen.add(pid)
                    break
            first = rng.choice(FIRST_NAMES)
            last = rng.choice(LAST_NAMES)
            ascii_name = (first + "." + last).encode("ascii", "ignore").decode().lower()
            ascii_name = ascii_name.replace("'", "")
            city = rng.choice(CITIES)
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
                "created": iso(created),
                "updated": iso(updated),
                "last_event_date": iso(self.now_ts - rng.randrange(86400 * 7)),
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
            if self.profile_shape == "realistic":
                _realistic(rng_big, attrs, k, created)
            self._pids.append(pid)
            self._pattrs.append(attrs)
            self._profile_index[pid] = k
        self._np = self.n_profiles

    # ------------------------------------------------------------------ resources
    def _profile_json(self, k: int, base: str, fp) -> str:
        cache = self._cache_list(("p", base, tuple(fp) if fp is not None else None), self._np)
        s = cache[k]
        if s is None:
            pid = self._pids[k]
            pl = f"{base}/api/profiles/{pid}"
            s = cache[k] = dumps({
                "type": "profile", "id": pid, "attributes": sparse(self._pattrs[k], fp),
                "relationships": {
                    "lists": {"links": {"self": f"{pl}/relationships/lists/", "related": f"{pl}/lists/"}},
                    "segments": {"links": {"self": f"{pl}/relationships/segments/",
                                           "related": f"{pl}/segments/"}},
                },
                "links": {"self": f"{pl}/"},
            })
        return s

    # ------------------------------------------------------------------ ground truth
    def all_profile_ids(self) -> set[str]:
        return set(self._pids)


_TIERS = ["Bronze", "Silver", "Gold", "Platinum"]
_INTERESTS = ["running", "coffee", "home décor", "outdoor", "yoga", "cooking", "travel", "tech",
              "gardening", "fashion", "kids", "pets"]
_TAGS = ["vip", "wholesale", "newsletter", "returning", "first-order", "high-aov", "sms-optin",
         "review-left", "loyalty", "gift-buyer"]
_SOURCES = ["google", "facebook", "instagram", "tiktok", "newsletter", "direct", "pinterest"]


def _realistic(rng: random.Random, attrs: dict, k: int, created: int) -> None:
    """Properties and location of a real store's profile (about 1 KB of JSON with the
    location): custom properties from a storefront, a loyalty app and UTM capture."""
    attrs["location"]["address2"] = rng.choice([None, f"Apt {rng.randint(1, 40)}", f"Suite {rng.randint(100, 999)}"])
    p = attrs["properties"]
    p.update({
        "Customer Tier": rng.choice(_TIERS),
        "Loyalty Points": rng.randrange(20000),
        "Lifetime Orders": rng.randrange(40),
        "Lifetime Value": round(rng.uniform(0, 4000), 2),
        "Average Order Value": round(rng.uniform(15, 180), 2),
        "Last Order Id": f"#{1000000 + rng.randrange(900000)}",
        "Birthday": f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "Preferred Store": rng.choice(["Boston Seaport", "Austin Domain", "Online", "Toronto Eaton", "London Soho"]),
        "Shoe Size": rng.choice(["7", "8", "8.5", "9", "10", "11", None]),
        "Interests": rng.sample(_INTERESTS, rng.randint(1, 5)),
        "Shopify Tags": rng.sample(_TAGS, rng.randint(0, 6)),
        "Signup Form": f"Popup {rng.randrange(12)} - {rng.choice(['10% off', 'Free shipping', 'Newsletter'])}",
        "utm_source": rng.choice(_SOURCES),
        "utm_medium": rng.choice(["cpc", "email", "social", "organic"]),
        "utm_campaign": f"{rng.choice(['spring', 'summer', 'bfcm', 'holiday', 'launch'])}-{rng.randint(2022, 2026)}",
        "First Purchase Date": f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z",
        "Quiz Answers": {"skin_type": rng.choice(["dry", "oily", "mixed"]),
                         "budget": rng.choice(["$", "$$", "$$$"]),
                         "goal": rng.choice(["gift", "self", "business"])},
        "Referral Code": "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8)),
        "Notes": rng.choice(["", "Prefers SMS after 6pm", "Wholesale inquiry pending",
                             "Asked about gift wrapping", "VIP event attendee 2025"]),
        "Last Viewed Products": [f"{7000 + rng.randrange(400)}" for _ in range(rng.randint(0, 6))],
        "Email Engagement": {"opens_30d": rng.randrange(30), "clicks_30d": rng.randrange(10),
                             "last_open": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
    })
