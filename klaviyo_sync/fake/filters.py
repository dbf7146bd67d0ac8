"""Klaviyo's filter language: a parser, and validation against per-field operator specs.

A spec table maps a field to ``{"single": ops, "list": ops, "none": ops, "type": ..., "enum": ...}``;
each resource module keeps the tables of its own endpoints (e.g. ``EVENT_FILTERS``).
"""

from __future__ import annotations

import math

from .data import parse_iso
from .errors import bad


class FilterError(ValueError):
    pass


CMP = ("greater-or-equal", "greater-than", "less-or-equal", "less-than")
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
        v = parse_iso(raw)
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


def parse_filter(text: str, specs: dict, max_list: int | None = None):
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


def cmp(op: str, a, b) -> bool:
    if a is None:
        return False
    if op == "greater-or-equal":
        return a >= b
    if op == "greater-than":
        return a > b
    if op == "less-or-equal":
        return a <= b
    return a < b


def filter_or_400(text, specs, max_list=None):
    """``parse_filter``, with a filter error turned into Klaviyo's 400 on ``filter``."""
    try:
        return parse_filter(text, specs, max_list)
    except FilterError as e:
        raise bad(f"Invalid filter provided: {e}", "filter") from None
