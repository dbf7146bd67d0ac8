"""Images: ``GET /api/images`` (OpenAPI get_images: images:read, 10/s and 150/m, page size 1-100,
default 20; filters and sorts below as the spec lists them)."""

from __future__ import annotations

import random
import threading

from ..data import iso
from ..hosting import Route
from ..jsonapi import sparse
from ..listing import ListEndpoint
from . import Resource

_CMP = ("greater-or-equal", "greater-than", "less-or-equal", "less-than")
IMAGES = ListEndpoint(
    "image",
    fields=frozenset({"format", "hidden", "id", "image_url", "name", "size", "updated_at"}),
    filters={
        "id": {"single": ("equals",), "list": ("any", "equals"), "type": "string"},
        "updated_at": {"single": _CMP, "type": "datetime"},
        "format": {"single": ("equals",), "list": ("any", "equals"), "type": "string"},
        "name": {"single": ("contains", "ends-with", "equals", "starts-with"), "list": ("any", "equals"),
                 "type": "string"},
        "size": {"single": _CMP, "type": "number"},
        "hidden": {"single": ("equals",), "list": ("any", "equals"), "type": "boolean"},
    },
    sorts=("format", "id", "name", "size", "updated_at"),
    page=(1, 100, 20),
    kind="im",
)
FORMATS = ("jpeg", "png", "gif")


class ImagesResource(Resource):
    ROUTES = (Route("GET", "/api/images", "_h_images", tier="M", scope="images:read"),)
    OPTIONS = {"n_images": 130}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-images")
        self._images_lock = threading.Lock()
        self._images_clock = self.now_ts - 60
        self._images: dict[str, dict] = {}
        ids = rng.sample(range(10_000_000, 99_999_999), self.n_images)
        for k, n in enumerate(ids):
            fmt = FORMATS[k % len(FORMATS)]
            self._images[str(n)] = {
                "name": f"image-{k:04d}.{fmt.replace('jpeg', 'jpg')}",
                "image_url": f"https://d3k81ch9hvuctc.cloudfront.net/company/FAKE/images/{n}.{fmt}",
                "format": fmt,
                "size": rng.randint(2_000, 4_000_000),
                "hidden": k % 11 == 7,
                "updated_at": iso(self.now_ts - rng.randint(3600, 400 * 86400)).replace("Z", "+00:00"),
            }

    # ------------------------------------------------------------------ ground truth
    def image_ids(self) -> set[str]:
        with self._images_lock:
            return set(self._images)

    def image(self, image_id: str) -> dict:
        """An image's attributes as the API serves them."""
        with self._images_lock:
            return dict(self._images[image_id])

    def remove_image(self, image_id: str) -> None:
        with self._images_lock:
            del self._images[image_id]

    def rename_image(self, image_id: str, name: str) -> None:
        with self._images_lock:
            self._images_clock += 1
            self._images[image_id] = {**self._images[image_id], "name": name,
                                      "updated_at": iso(self._images_clock).replace("Z", "+00:00")}

    # ------------------------------------------------------------------ handler
    def _h_images(self, ctx):
        base = self.base_url

        def render(row, fields):
            image_id, attrs = row
            return {"type": "image", "id": image_id, "attributes": sparse(dict(attrs), fields),
                    "links": {"self": f"{base}/api/images/{image_id}/"}}

        with self._images_lock:
            rows = list(self._images.items())
        return IMAGES.respond(self, ctx, rows, render=render,
                              value=lambda row, name: row[0] if name == "id" else row[1][name])
