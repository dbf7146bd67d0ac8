"""Images of the account's image library: a full pass each run (100 a page, the API's maximum),
and the images gone from the account are removed."""

from __future__ import annotations

from ..timeutil import normalize_iso
from .declare import IMAGES_READ, INTEGER, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import Stream

IMAGES_TABLE = TableSpec("images", "The images of the account's image library (sync-images).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "The image's name."),
    Column("image_url", TEXT, "Where Klaviyo serves the image."),
    Column("format", TEXT, "The file format, e.g. jpeg, png, gif."),
    Column("size", INTEGER, "Size in bytes."),
    Column("hidden", INTEGER, "1 if hidden from the image library, else 0."),
    Column("updated_at", TEXT, "When it last changed in Klaviyo (UTC)."),
))


def image_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    return (resource["id"], a.get("name"), a.get("image_url"), a.get("format"), a.get("size"),
            flag(a.get("hidden")), normalize_iso(a.get("updated_at")))


SYNC_IMAGES = declare(Declaration(
    command="sync-images",
    help="Sync every image of the account's image library; images gone from the account are removed.",
    scope=IMAGES_READ,
    tier="M",  # 10/s, 150/m
    tables=(IMAGES_TABLE,),
    stream=Stream(name="images", path="/api/images", table=IMAGES_TABLE.table, row=image_row, type="image",
                  page_size=100, sort="id",
                  params={"fields[image]": "name,image_url,format,size,hidden,updated_at"}),
    sync_all=90,
))
