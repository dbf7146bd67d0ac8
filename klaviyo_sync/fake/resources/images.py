"""Images: ``GET /api/images`` (OpenAPI get_images: images:read, 10/s and 150/m, page size 1-100,
default 20; filters and sorts as the spec lists them)."""

from __future__ import annotations

import random

from ..data import iso
from ..hosting import Route
from ..listing import Collection, ListEndpoint
from . import Resource

_CMP = ("greater-or-equal", "greater-than", "less-or-equal", "less-than")
_ANY = {"single": ("equals",), "list": ("any", "equals")}
IMAGES = ListEndpoint(
    "image", fields=frozenset({"format", "hidden", "id", "image_url", "name", "size", "updated_at"}),
    filters={"id": {**_ANY, "type": "string"}, "updated_at": {"single": _CMP, "type": "datetime"},
             "format": {**_ANY, "type": "string"}, "size": {"single": _CMP, "type": "number"},
             "name": {"single": ("contains", "ends-with", "equals", "starts-with"), "list": ("any", "equals"),
                      "type": "string"},
             "hidden": {**_ANY, "type": "boolean"}},
    sorts=("format", "id", "name", "size", "updated_at"), page=(1, 100, 20), kind="im")


class ImagesResource(Resource):
    """``fake.images``: the image library (a ``listing.Collection``: ids(), get(), remove(), update())."""

    ROUTES = (Route("GET", "/api/images", "_h_images", tier="M", scope="images:read"),)
    OPTIONS = {"n_images": 130}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-images")
        rows = {}
        for k, n in enumerate(rng.sample(range(10_000_000, 99_999_999), self.n_images)):
            fmt = ("jpeg", "png", "gif")[k % 3]
            rows[str(n)] = {"name": f"image-{k:04d}.{fmt}",
                            "image_url": f"https://d3k81ch9hvuctc.cloudfront.net/company/FAKE/images/{n}.{fmt}",
                            "format": fmt, "size": rng.randint(2_000, 4_000_000), "hidden": k % 11 == 7,
                            "updated_at": iso(self.now_ts - rng.randint(3600, 400 * 86400)).replace("Z", "+00:00")}
        self.images = Collection(IMAGES, "/api/images", rows, updated="updated_at", clock=self.now_ts - 60)

    def _h_images(self, ctx):
        return self.images.respond(self, ctx)
