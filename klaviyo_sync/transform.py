"""Pure functions: one JSON:API resource in, one flat row (a tuple in the db's column order) out."""

from __future__ import annotations

from datetime import datetime, timezone

from .db import CAMPAIGN_COLUMNS, CAMPAIGN_MESSAGE_COLUMNS, METRIC_COLUMNS, PROFILE_COLUMNS, to_json
from .timeutil import normalize_iso


def flag(value) -> int | None:
    """A JSON boolean as SQLite stores it: 1, 0, or NULL when absent (the one 0/1 helper)."""
    return None if value is None else int(bool(value))


def related_id(resource: dict, name: str) -> str | None:
    """The id in ``relationships.<name>.data`` (a to-one link), or None when absent or null."""
    return _to_one(resource.get("relationships") or {}, name)


def related_ids(resource: dict, name: str) -> list[str]:
    rel = (resource.get("relationships") or {}).get(name) or {}
    data = rel.get("data")
    if isinstance(data, list):
        return [d["id"] for d in data if isinstance(d, dict) and d.get("id")]
    return []


def metric_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    integration = a.get("integration") if isinstance(a.get("integration"), dict) else {}
    row = {
        "id": resource["id"],
        "name": a.get("name"),
        "created": normalize_iso(a.get("created")),
        "updated": normalize_iso(a.get("updated")),
        "integration_id": integration.get("id"),
        "integration_key": integration.get("key"),
        "integration_name": integration.get("name"),
        "integration_category": integration.get("category"),
        "attributes": to_json(a),
    }
    return tuple(row[c] for c in METRIC_COLUMNS)


def profile_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    row = {c: a.get(c) for c in PROFILE_COLUMNS}
    row["id"] = resource["id"]
    for c in ("created", "updated", "last_event_date"):
        row[c] = normalize_iso(row[c])
    row["location"] = to_json(a.get("location"))
    row["properties"] = to_json(a.get("properties"))
    return tuple(row[c] for c in PROFILE_COLUMNS)


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _to_one(relationships: dict, name: str) -> str | None:
    rel = relationships.get(name)
    if rel:
        data = rel.get("data")
        if data.__class__ is dict:
            return data.get("id")
    return None


def event_row(resource: dict) -> tuple:
    """The events row of an event resource decoded as plain JSON (a typed page goes straight to
    ``event_tuple``: events_fetch)."""
    a = resource.get("attributes") or {}
    rels = resource.get("relationships") or {}
    return event_tuple(resource["id"], a.get("event_properties"), a.get("datetime"), a.get("timestamp"),
                       a.get("uuid"), _to_one(rels, "metric"), _to_one(rels, "profile"))


def event_tuple(event_id, props, when, stamp, uuid, metric_id, profile_id) -> tuple:
    """The events row of one event's parts (``event_row``'s, or a typed page's: events_fetch)."""
    value = _number(props.get("$value")) if props.__class__ is dict else None
    if when is not None and len(when) == 25 and when.endswith("+00:00"):
        when = when[:19] + "Z"
    else:
        when = normalize_iso(when)
    if when is None and isinstance(stamp, (int, float)):
        when = datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (event_id, metric_id, profile_id, when, stamp, uuid, value, to_json(props))


def message_row(resource: dict, campaign_id: str | None = None) -> tuple:
    a = resource.get("attributes") or {}
    definition = a.get("definition") if isinstance(a.get("definition"), dict) else {}
    content = definition.get("content") if isinstance(definition.get("content"), dict) else {}
    send_times = a.get("send_times") or []
    times = sorted(normalize_iso(t.get("datetime")) for t in send_times if isinstance(t, dict) and t.get("datetime"))
    row = {
        "id": resource["id"],
        "campaign_id": related_id(resource, "campaign") or campaign_id,
        "channel": definition.get("channel"),
        "label": definition.get("label"),
        "subject": content.get("subject") or content.get("title"),
        "preview_text": content.get("preview_text"),
        "from_email": content.get("from_email"),
        "from_label": content.get("from_label"),
        "body": content.get("body") if definition.get("channel") != "email" else None,
        "send_time": times[0] if times else None,
        "send_times": to_json(send_times),
        "created_at": normalize_iso(a.get("created_at")),
        "updated_at": normalize_iso(a.get("updated_at")),
        "definition": to_json(definition),
    }
    return tuple(row[c] for c in CAMPAIGN_MESSAGE_COLUMNS)


def campaign_row(resource: dict, channel: str, messages: list[tuple]) -> tuple:
    """A campaign row; ``messages`` are its message rows (for send time, subject and label)."""
    a = resource.get("attributes") or {}
    msg = [dict(zip(CAMPAIGN_MESSAGE_COLUMNS, m)) for m in messages]
    msg_times = sorted(m["send_time"] for m in msg if m["send_time"])
    first = msg[0] if msg else {}
    strategy = a.get("send_strategy") if isinstance(a.get("send_strategy"), dict) else {}
    row = {
        "id": resource["id"],
        "name": a.get("name"),
        "channel": channel,
        "status": a.get("status"),
        "archived": flag(a.get("archived")),
        "send_time": normalize_iso(a.get("send_time")) or (msg_times[0] if msg_times else None),
        "scheduled_at": normalize_iso(a.get("scheduled_at")),
        "created_at": normalize_iso(a.get("created_at")),
        "updated_at": normalize_iso(a.get("updated_at")),
        "send_strategy": strategy.get("method"),
        "subject": first.get("subject"),
        "label": first.get("label"),
        "attributes": to_json(a),
    }
    return tuple(row[c] for c in CAMPAIGN_COLUMNS)
