"""Check requests against Klaviyo's OpenAPI spec (the subset derived into
tests/fixtures/openapi/klaviyo-requests.json by tests/fixtures/openapi/extract.py).

A small hand-written validator: the spec's request side needs only query-parameter checks, the
filter grammar (whose allowed fields and operators Klaviyo writes in prose), and a JSON-schema
subset for three request bodies; the jsonschema package would cover only the last and is not a
dependency of this project.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

SPEC = json.loads((Path(__file__).parent / "fixtures" / "openapi" / "klaviyo-requests.json").read_text())
_TEMPLATES = []
for _key in SPEC["operations"]:
    _method, _path = _key.split(" ", 1)
    _TEMPLATES.append((_method, re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", _path) + "/?$"), _key))
_TERM = re.compile(r"^([a-z][a-z-]*)\((.*)\)$", re.S)


def operation_for(method: str, path: str) -> str | None:
    # The most specific template first: /api/lists/{id}/profiles before /api/lists/{id}.
    for m, pattern, key in sorted(_TEMPLATES, key=lambda t: -len(t[2])):
        if m == method and pattern.match(path):
            return key
    return None


def split_top(text: str) -> list[str]:
    """Split on commas outside parentheses, brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def filter_problems(expression: str, allowed: dict[str, list[str]]) -> list[str]:
    problems = []
    for term in split_top(expression):
        m = _TERM.match(term)
        if not m:
            problems.append(f"filter term {term!r} is not op(field,value)")
            continue
        op, inner = m.groups()
        if op in ("and", "or", "not"):
            problems += filter_problems(inner, allowed)
            continue
        field = split_top(inner)[0]
        if field not in allowed:
            problems.append(f"filter field {field!r} is not filterable here (allowed: {', '.join(sorted(allowed))})")
        elif op not in allowed[field]:
            problems.append(f"filter operator {op!r} is not allowed on {field!r} (allowed: {', '.join(allowed[field])})")
    return problems


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def schema_problems(value, schema: dict, where: str = "body") -> list[str]:
    if not schema:
        return []
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null is not allowed"]
    for word in ("oneOf", "anyOf"):
        if word in schema:
            options = [schema_problems(value, s, where) for s in schema[word]]
            if not any(not p for p in options):
                return [f"{where}: matches none of its {word} schemas: {min(options, key=len)}"]
    for sub in schema.get("allOf", []):
        problems = schema_problems(value, sub, where)
        if problems:
            return problems
    t = schema.get("type")
    if t in _TYPES and not isinstance(value, _TYPES[t]):
        return [f"{where}: expected {t}, got {type(value).__name__}"]
    if t == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{where}: expected integer, got {value!r}"]
    if t == "number" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return [f"{where}: expected number, got {value!r}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum'][:12]}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}: required property {name!r} is missing")
        props = schema.get("properties")
        for name, v in value.items():
            if props is not None and name in props:
                problems += schema_problems(v, props[name], f"{where}.{name}")
            elif props is not None and schema.get("additionalProperties") in (None, False):
                problems.append(f"{where}: property {name!r} is not in the spec")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{where}: more than {schema['maxItems']} items")
        for i, v in enumerate(value):
            problems += schema_problems(v, schema.get("items", {}), f"{where}[{i}]")
    return problems


def request_problems(method: str, path: str, query: str, body: str | None) -> list[str]:
    """Every way one request departs from the spec (empty when it conforms)."""
    key = operation_for(method, path)
    if key is None:
        return [f"{method} {path}: no such operation in the spec subset "
                "(a new endpoint? add it to tests/fixtures/openapi/extract.py)"]
    op = SPEC["operations"][key]
    problems = []
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [n for n, _ in pairs]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"query parameter {name!r} given more than once")
    for name, value in pairs:
        p = op["params"].get(name)
        if p is None:
            problems.append(f"unknown query parameter {name!r}")
            continue
        values = value.split(",") if p.get("type") == "array" else [value]
        if "enum" in p:
            problems += [f"{name}: {v!r} is not one of {p['enum']}" for v in values if v not in p["enum"]]
        if p.get("type") == "integer":
            if not re.fullmatch(r"-?\d+", value):
                problems.append(f"{name}: {value!r} is not an integer")
            elif not p.get("minimum", -1e18) <= int(value) <= p.get("maximum", 1e18):
                problems.append(f"{name}: {value} is outside {p.get('minimum')}..{p.get('maximum')}")
        if name == "filter":
            problems += filter_problems(value, p.get("filters", {}))
    for name, p in op["params"].items():
        if p["required"] and name not in names:
            problems.append(f"required query parameter {name!r} is missing")
    if method == "POST":
        if "body" not in op:
            problems.append("a body where the spec declares none")
        else:
            try:
                doc = json.loads(body or "")
            except ValueError:
                problems.append("the body is not JSON")
            else:
                problems += schema_problems(doc, op["body"])
    return [f"{key} ({path}?{query[:200]}): {p}" for p in problems]
