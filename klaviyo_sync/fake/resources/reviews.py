"""Reviews (Klaviyo Reviews): ``GET /api/reviews`` (OpenAPI get_reviews: reviews:read, 10/s and 150/m,
page size 1-100, default 20; sorts created, rating, updated; filters as the spec lists them).
``FakeKlaviyo(reviews_enabled=False)`` is an account without Klaviyo Reviews: the endpoint answers 403
(not a missing scope)."""

from __future__ import annotations

import random

from ..data import iso
from ..errors import ApiError
from ..hosting import Route
from ..listing import Collection, ListEndpoint
from . import Resource

_ANY = {"single": ("equals",), "list": ("any",)}
REVIEWS = ListEndpoint(
    "review", fields=frozenset({
        "author", "content", "created", "email", "id", "images", "product", "product.external_id",
        "product.image_url", "product.name", "product.url", "public_reply", "public_reply.author",
        "public_reply.content", "public_reply.updated", "rating", "review_type", "smart_quote", "status",
        "status.rejection_reason", "status.rejection_reason.reason", "status.rejection_reason.status_explanation",
        "status.value", "title", "updated", "verified"}),
    filters={"created": {"single": ("greater-or-equal", "less-or-equal"), "type": "datetime"},
             "rating": {"single": ("equals", "greater-or-equal", "less-or-equal"), "list": ("any",), "type": "number"},
             "id": {**_ANY, "type": "string"}, "item.id": {**_ANY, "type": "string"},
             "content": {"single": ("contains",), "type": "string"}, "status": {"single": ("equals",), "type": "string"},
             "review_type": {"single": ("equals",), "type": "string"},
             "verified": {"single": ("equals",), "type": "boolean"}},
    sorts=("created", "rating", "updated"), page=(1, 100, 20), includes={"events": ("event", frozenset(
        {"datetime", "event_properties", "id", "timestamp", "uuid"}))}, default_sort=None, kind="rv")
PRODUCTS = ["Ocean Blue Shirt", "Linen Trousers", "Canvas Tote", "Wool Beanie"]


class ReviewsResource(Resource):
    """``fake.reviews``: a ``listing.Collection`` (ids(), get(), remove(), update())."""

    ROUTES = (Route("GET", "/api/reviews", "_h_reviews", tier="M", scope="reviews:read"),)
    OPTIONS = {"n_reviews": 120, "reviews_enabled": True}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-reviews")
        rows = {}
        for k in range(self.n_reviews):
            kind = ("review", "review", "review", "question", "rating")[k % 5]
            product = PRODUCTS[k % len(PRODUCTS)]
            created = self.now_ts - rng.randint(3600, 200 * 86400)
            rows[f"rv{rng.getrandbits(48):012x}"] = {
                "email": f"reviewer{k}@example.com", "status": {"value": rng.choice(["published", "pending"])},
                "verified": rng.random() < 0.7, "review_type": kind,
                "created": iso(created).replace("Z", "+00:00"),
                "updated": iso(created + rng.randint(0, 86400)).replace("Z", "+00:00"), "images": [],
                "product": {"url": f"https://shop.example.com/p/{k % 4}", "name": product,
                            "image_url": None, "external_id": f"SKU-{k % 4}"},
                "rating": None if kind == "question" else rng.randint(1, 5), "author": f"Reviewer {k}",
                "content": f"About the {product}.", "title": None if kind == "rating" else f"{product} #{k}",
                "smart_quote": None, "public_reply": None}
        self.reviews = Collection(REVIEWS, "/api/reviews", rows, updated="updated", clock=self.now_ts)

    def _h_reviews(self, ctx):
        if not self.reviews_enabled:
            raise ApiError(403, "permission_denied", "You do not have permission to perform this action.",
                           "Klaviyo Reviews is not enabled for this account.", {"pointer": "/data/"}, links={})
        return self.reviews.respond(self, ctx)
