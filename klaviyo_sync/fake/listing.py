"""The one list-endpoint implementation of the fake: every resource family pages through it.

- ``page_of``: a page of an ordered list and its ``links`` cursors. A cursor is bound to the
  query that made it (filter, sort, page size, fieldsets ...): the same cursor under another
  query is a 400 ``Invalid cursor provided.``, as from Klaviyo, so a client must follow
  ``links.next`` as given.
- ``ListEndpoint``: a whole ``GET`` collection declared as data: its parameters, sparse
  fieldsets, filters (operators per field, as the OpenAPI spec lists them), sorts, page-size
  cap and includes. A new resource family declares one and hands it its rows::

      IMAGES = ListEndpoint("image", fields={"name", ...}, filters={...}, sorts=("id", "name"),
                            page=(1, 100, 20))
      def _h_images(self, ctx):
          return IMAGES.respond(self, ctx, self._images.values(), value=lambda r, f: ..., render=...)

- ``Collection``: a simple collection's rows, its ``ListEndpoint`` and its public ground truth
  (``ids``, ``get``, ``remove``, ``update``): all a simple stream's fake needs.

Every family pages with ``page_of``. Images, metrics, lists, segments and templates are whole
``ListEndpoint``s; profiles, members, campaigns, flows and events keep their own filtering (fast
paths, a required channel filter, a default ``archived`` filter, keyset cursors over positions)
and page or bind their cursors here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .data import dumps, parse_iso
from .errors import bad
from .filters import cmp, filter_or_400
from .jsonapi import dec_cursor, enc_cursor, fields_param, include_param, page_size, query_params


def query_key(params: Mapping[str, str]) -> str:
    """What a cursor is bound to: every parameter of the request but the cursor itself."""
    rest = sorted((k, v) for k, v in params.items() if k != "page[cursor]")
    return hashlib.blake2b(repr(rest).encode(), digest_size=6).hexdigest()


def offset(params: Mapping[str, str], kind: str) -> int:
    """Where a page starts: 0, or the offset in ``page[cursor]`` (400 if it is not a cursor of
    this endpoint made by this same query)."""
    cur = params.get("page[cursor]")
    if cur is None:
        return 0
    parts = dec_cursor(cur, kind)
    try:
        off, qk = int(parts[0]), parts[1]
        if off < 0 or qk != query_key(params):
            raise ValueError
        return off
    except (ValueError, IndexError):
        raise bad("Invalid cursor provided.", "page[cursor]") from None


def page_of(params: Mapping[str, str], rows, size: int, kind: str) -> tuple[list, str | None, str | None]:
    """(this page's rows, next cursor, previous cursor) of ``rows`` (a list or anything with
    ``len`` and slicing) for the request's ``page[cursor]``."""
    off = offset(params, kind)
    qk = query_key(params)
    page = list(rows[off:off + size])
    nxt = enc_cursor(kind, off + size, qk) if off + size < len(rows) else None
    prv = enc_cursor(kind, max(0, off - size), qk) if off > 0 else None
    return page, nxt, prv


def matches(op: str, have, want, is_list: bool) -> bool:
    """One filter condition against a value (a datetime given as ISO text is compared as time)."""
    if isinstance(have, str) and isinstance(want, (int, float)) and not isinstance(want, bool):
        have = parse_iso(have)
    if is_list:
        if op in ("any", "equals"):
            return have in want
        if op == "contains-any":
            return any(w in (have or ()) for w in want)
        if op == "contains-all":
            return all(w in (have or ()) for w in want)
        raise AssertionError(op)  # pragma: no cover - the spec table admits no other
    if op == "equals":
        return have == want
    if op == "contains":
        return have is not None and want in have
    if op == "starts-with":
        return isinstance(have, str) and have.startswith(want)
    if op == "ends-with":
        return isinstance(have, str) and have.endswith(want)
    return cmp(op, have, want)


@dataclass(frozen=True)
class ListEndpoint:
    """A ``GET`` collection, declared: ``type`` (the JSON:API type, also ``fields[type]``),
    ``fields`` (the sparse-fieldset enum), ``filters`` (field -> operator spec, see
    filters.py), ``sorts`` (fields that may be sorted on, each also descending with ``-``),
    ``page`` (min, max, default page size; None: the endpoint takes no ``page[size]``),
    ``includes`` (relationship -> (the included resources' type, their field enum), e.g.
    ``{"variants": ("catalog-variant", frozenset({...}))}``), ``extra`` (other
    parameters it accepts), ``default_sort`` and ``required_filter`` (a 400 without one)."""

    type: str
    fields: frozenset
    filters: Mapping = field(default_factory=dict)
    sorts: tuple[str, ...] = ()
    page: tuple[int, int, int] | None = (1, 100, 20)
    includes: Mapping[str, tuple[str, frozenset]] = field(default_factory=dict)
    extra: frozenset = frozenset()
    default_sort: str | None = "id"
    kind: str = ""  # the cursor's tag (default: the type)
    max_list: int = 100

    def params(self, ctx) -> dict[str, str]:
        allowed = {f"fields[{self.type}]", "filter", "page[cursor]", *self.extra}
        if self.sorts:
            allowed.add("sort")
        if self.page is not None:
            allowed.add("page[size]")
        if self.includes:
            allowed.add("include")
            allowed |= {f"fields[{kind}]" for kind, _ in self.includes.values()}
        return query_params(ctx, allowed)

    def respond(self, fake, ctx, rows: Iterable, *, value: Callable, render: Callable,
                included: Callable | None = None, size: int | None = None):
        """The whole answer: ``value(row, field)`` reads a field for filters and sorts,
        ``render(row, fields)`` makes a resource (``fields``: the sparse fieldset or None),
        ``included(page, includes, fieldsets)`` the included resources (``includes``: the
        relationships asked for; ``fieldsets``: included type -> sparse fieldset or None); a
        relationship asked for that ``render`` left without ``data`` gets ``"data": []``.
        ``size``: the page size of an endpoint that takes no ``page[size]``."""
        params = self.params(ctx)
        fieldset = fields_param(params, f"fields[{self.type}]", self.fields)
        inc = include_param(params, set(self.includes)) if self.includes else set()
        inc_fields = {kind: fields_param(params, f"fields[{kind}]", enum) for kind, enum in self.includes.values()}
        if self.page is not None:
            size = page_size(params, *self.page)
        rows = list(rows)
        if params.get("filter") is not None:
            for op, name, want, is_list in filter_or_400(params["filter"], self.filters, max_list=self.max_list):
                rows = [r for r in rows if matches(op, value(r, name), want, is_list)]
        sort = params.get("sort", self.default_sort)
        if sort is not None:
            if sort.lstrip("-") not in self.sorts:
                raise bad(f"'{sort}' is not a valid sort field.", "sort")
            key = sort.lstrip("-")
            # Ties keep the id order, whichever way the sort runs.
            def order(r):
                v = value(r, key)
                return (v is None, 0 if v is None else v, value(r, "id"))

            rows.sort(key=order, reverse=sort.startswith("-"))
        page, nxt, prv = page_of(params, rows, size or len(rows) or 1, self.kind or self.type)
        data = [render(r, fieldset) for r in page]
        for resource in data:
            for rel in inc:
                link = (resource.get("relationships") or {}).get(rel)
                if link is not None and "data" not in link:
                    link["data"] = []
        doc = {"data": data, "links": fake._links(ctx, nxt, prv)}
        if inc:
            doc["included"] = included(page, inc, inc_fields) if included else []
        return 200, dumps(doc).encode("utf-8"), []


class Collection:
    """A simple collection's rows (id -> attributes as the API serves them), its list
    endpoint, and the public ground truth tests read and change: ``ids()``, ``get(id)``,
    ``remove(id)``, ``update(id, **attributes)`` (which moves ``updated``, the name of the
    collection's last-changed attribute, past every value served so far)."""

    def __init__(self, endpoint: ListEndpoint, path: str, rows: dict[str, dict], *, updated: str | None = None,
                 clock: int = 0):
        import threading

        self.endpoint, self.path, self.updated = endpoint, path, updated
        self._rows = dict(rows)
        self._lock = threading.Lock()
        self._clock = clock

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._rows)

    def get(self, row_id: str) -> dict:
        with self._lock:
            return dict(self._rows[row_id])

    def remove(self, row_id: str) -> None:
        with self._lock:
            del self._rows[row_id]

    def update(self, row_id: str, **attributes) -> None:
        from .data import iso

        with self._lock:
            if self.updated:
                self._clock += 1
                attributes[self.updated] = iso(self._clock).replace("Z", "+00:00")
            self._rows[row_id] = {**self._rows[row_id], **attributes}

    def respond(self, fake, ctx):
        from .jsonapi import sparse

        base, kind = fake.base_url, self.endpoint.type

        def render(row, fields):
            row_id, attrs = row
            return {"type": kind, "id": row_id, "attributes": sparse(dict(attrs), fields),
                    "links": {"self": f"{base}{self.path}/{row_id}/"}}

        with self._lock:
            rows = list(self._rows.items())
        return self.endpoint.respond(fake, ctx, rows, render=render,
                                     value=lambda row, name: row[0] if name == "id" else row[1].get(name))
