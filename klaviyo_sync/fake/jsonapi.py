"""JSON:API request and response helpers: query parameters, sparse fieldsets, cursors, links.

The query helpers are strict like the real API: an unknown parameter, a repeated one, a field
outside the resource's enum or a ``page[size]`` out of range is a 400 ``invalid``.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlencode

from .errors import ApiError, bad

JSONAPI = "application/vnd.api+json"


def query_params(ctx, allowed: set) -> dict[str, str]:
    """The request's query parameters; sets ``ctx.params`` and ``ctx.pairs`` (for links)."""
    pairs = parse_qsl(ctx.query, keep_blank_values=True)
    params: dict[str, str] = {}
    for k, v in pairs:
        if k in params:
            raise bad(f"Parameter '{k}' was specified more than once.", k)
        params[k] = v
    for k in params:
        if k not in allowed:
            raise bad(f"'{k}' is not a valid query parameter for this endpoint.", k)
    ctx.params, ctx.pairs = params, pairs
    return params


def fields_param(params, name, enum):
    """``fields[type]`` as a list in request order (duplicates dropped), or None if absent."""
    v = params.get(name)
    if v is None:
        return None
    items = v.split(",")
    for it in items:
        if it not in enum:
            raise bad(f"'{it}' is not a valid field for the resource '{name[7:-1]}'.", name)
    return list(dict.fromkeys(items))


def include_param(params, enum) -> set:
    v = params.get("include")
    if v is None:
        return set()
    items = v.split(",")
    for it in items:
        if it not in enum:
            raise bad(f"'{it}' is not a valid relationship for include.", "include")
    return set(items)


def page_size(params, lo, hi, default) -> int:
    v = params.get("page[size]")
    if v is None:
        return default
    if not v.isdigit() or not lo <= int(v) <= hi:
        raise bad(f"page[size] must be an integer between {lo} and {hi}.", "page[size]")
    return int(v)


def page_links(ctx, base: str, next_base: str | None, next_cursor, prev_cursor) -> dict:
    """``links`` of a collection page: ``next``/``prev`` repeat every parameter but the cursor."""
    self_link = f"{base}{ctx.path}" + (f"?{ctx.query}" if ctx.query else "")
    rest = [(k, v) for k, v in ctx.pairs if k != "page[cursor]"]

    def mk(b, cur):
        return f"{b}{ctx.path}?" + urlencode(rest + [("page[cursor]", cur)])

    nb = next_base.rstrip("/") if next_base else base
    return {"self": self_link,
            "next": mk(nb, next_cursor) if next_cursor else None,
            "prev": mk(base, prev_cursor) if prev_cursor else None}


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


def sparse(attrs: dict, fields) -> dict:
    """Apply a sparse fieldset (possibly with dotted names) to an attributes dict."""
    if fields is None:
        return attrs
    out: dict = {}
    for f in fields:
        if f == "id":
            continue
        _pick(attrs, f.split("."), out)
    return out


def enc_cursor(*parts) -> str:
    raw = "|".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def dec_cursor(text: str, kind: str) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        parts = raw.split("|")
        if parts[0] != kind:
            raise ValueError
        return parts[1:]
    except Exception:
        raise bad("Invalid cursor provided.", "page[cursor]") from None


def post_attributes(ctx, kind: str, allowed: set[str]) -> dict:
    """The ``data.attributes`` of a JSON:API POST body of type ``kind``, checked as Klaviyo
    checks it: the content type (415), valid JSON, ``data``, ``type`` and ``attributes``
    present, and no attribute outside ``allowed`` (400 with a JSON pointer)."""
    ct = (ctx.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ct != JSONAPI:
        raise ApiError(415, "unsupported_media_type", "Unsupported media type.",
                       f'Unsupported media type "{ct}" in request; use {JSONAPI}.',
                       {"pointer": "/data/"})
    try:
        doc = json.loads(ctx.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON.", pointer="/data") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise bad("'data' is required.", pointer="/data")
    data = doc["data"]
    if data.get("type") != kind:
        raise bad(f"'type' must be '{kind}'.", pointer="/data/type")
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        raise bad("'attributes' is required.", pointer="/data/attributes")
    unknown = set(attrs) - allowed
    if unknown:
        raise bad(f"Unknown attributes: {sorted(unknown)}.", pointer="/data/attributes")
    return attrs
