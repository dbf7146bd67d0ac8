#!/usr/bin/env python
"""The plain baseline for bench_events.py: what a short hand-written script would do.

A sequential loop: requests.Session GET, json.loads, build tuples, sqlite3 executemany of plain
INSERT OR REPLACE into the same events / profiles / metrics tables (same columns, same indexes as
klaviyo_sync/db.py creates), one transaction per page, following links.next. The query is the one
the tool sends (klaviyo_sync/streams/events.py events_params): filter greater-or-equal / less-than datetime,
include=metric,profile, the same fields[...] lists, page[size]=1000, sort=datetime.

The database uses the tool's pragmas (WAL, synchronous=NORMAL), so both pay for the same
durability. A 429 is waited out (Retry-After) and retried, and counted.

    python benchmarks/baseline_events.py --base-url URL --api-key KEY --db out.db \
        --since 2026-01-01T00:00:00Z --until 2026-01-02T00:00:00Z

--mode fetch (HTTP only) and --mode decode (HTTP + json.loads) measure how fast the fake can
serve a plain client, without the database. Prints one JSON line with its own figures.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

import requests

# The same strings as klaviyo_sync/streams/events.py (bench_events.py checks they still match).
METRIC_FIELDS = "name,created,updated,integration"
EVENT_FIELDS = "datetime,event_properties,timestamp,uuid"
PROFILE_FIELDS = ("email,phone_number,external_id,first_name,last_name,organization,locale,title,"
                  "image,created,updated,last_event_date,location,properties")
PAGE_SIZE = 1000
REVISION = "2026-07-15"

# The DDL that klaviyo_sync/db.py (via sqlite-utils) creates for these three tables.
SCHEMA = [
    'CREATE TABLE IF NOT EXISTS "metrics" ("id" TEXT PRIMARY KEY, "name" TEXT, "created" TEXT, "updated" TEXT, '
    '"integration_id" TEXT, "integration_key" TEXT, "integration_name" TEXT, "integration_category" TEXT, '
    '"attributes" TEXT)',
    'CREATE TABLE IF NOT EXISTS "profiles" ("id" TEXT PRIMARY KEY, "email" TEXT, "phone_number" TEXT, '
    '"external_id" TEXT, "first_name" TEXT, "last_name" TEXT, "organization" TEXT, "locale" TEXT, '
    '"title" TEXT, "image" TEXT, "created" TEXT, "updated" TEXT, "last_event_date" TEXT, "location" TEXT, '
    '"properties" TEXT)',
    'CREATE TABLE IF NOT EXISTS "events" ("id" TEXT PRIMARY KEY, "metric_id" TEXT REFERENCES "metrics"("id"), '
    '"profile_id" TEXT REFERENCES "profiles"("id"), "datetime" TEXT NOT NULL, "timestamp" INTEGER, '
    '"uuid" TEXT, "value" REAL, "properties" TEXT)',
    'CREATE INDEX IF NOT EXISTS "idx_events_datetime" ON "events" ("datetime")',
    'CREATE INDEX IF NOT EXISTS "idx_events_metric_id_datetime" ON "events" ("metric_id", "datetime")',
    'CREATE INDEX IF NOT EXISTS "idx_events_profile_id" ON "events" ("profile_id")',
    'CREATE INDEX IF NOT EXISTS "idx_profiles_email" ON "profiles" ("email")',
    'CREATE INDEX IF NOT EXISTS "idx_metrics_name" ON "metrics" ("name")',
]
PROFILE_COLS = ["email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale",
                "title", "image", "created", "updated", "last_event_date"]

EVENT_SQL = "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
PROFILE_SQL = f"INSERT OR REPLACE INTO profiles VALUES ({', '.join('?' * 15)})"
METRIC_SQL = f"INSERT OR REPLACE INTO metrics VALUES ({', '.join('?' * 9)})"


def dumps(value):
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def z(value):
    """'...+00:00' -> '...Z', the form the tool stores (a slice, as a plain script would)."""
    if value and value.endswith("+00:00"):
        return value[:19] + "Z"
    return value


def query(since: str, until: str, page_size: int = PAGE_SIZE) -> dict:
    return {
        "filter": f"greater-or-equal(datetime,{since}),less-than(datetime,{until})",
        "include": "metric,profile",
        "fields[event]": EVENT_FIELDS,
        "fields[profile]": PROFILE_FIELDS,
        "fields[metric]": METRIC_FIELDS,
        "page[size]": str(page_size),
        "sort": "datetime",
    }


def session(api_key: str) -> requests.Session:
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {api_key}", "revision": REVISION,
                      "Accept": "application/vnd.api+json"})
    return s


def pages(s: requests.Session, base_url: str, params: dict, stats: dict, decode: bool = True):
    """Yield each page body (decoded, or raw bytes), following links.next; waits out 429s."""
    url = base_url.rstrip("/") + "/api/events"
    first = True
    while url:
        resp = s.get(url, params=params if first else None, timeout=(10, 120))
        if resp.status_code == 429:
            stats["throttled"] += 1
            time.sleep(float(resp.headers.get("Retry-After") or 1))
            continue
        resp.raise_for_status()
        first = False
        stats["pages"] += 1
        content = resp.content
        if decode:
            body = json.loads(content)
            yield body
            url = (body.get("links") or {}).get("next")
        else:
            yield content
            # fetch-only mode still has to find the next link: a plain text search, no parse.
            i = content.rfind(b'"next":')
            j = content.find(b'"', i + 7) if i >= 0 else -1
            url = content[j + 1:content.find(b'"', j + 1)].decode() if j >= 0 and content[i + 7:i + 11] != b"null" else None


def event_ids(base_url: str, api_key: str, since: str, until: str) -> set[str]:
    """Every event id the fake serves in [since, until) (for verification, not timed)."""
    stats = {"pages": 0, "throttled": 0}
    out: set[str] = set()
    with session(api_key) as s:
        for body in pages(s, base_url, query(since, until), stats):
            out.update(e["id"] for e in body["data"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--db", help="SQLite file to write (required in --mode full)")
    ap.add_argument("--since", required=True, help="ISO datetime, inclusive")
    ap.add_argument("--until", required=True, help="ISO datetime, exclusive")
    ap.add_argument("--page-size", type=int, default=PAGE_SIZE)
    ap.add_argument("--mode", choices=["full", "fetch", "decode"], default="full")
    # Knobs for experiments (what would a different SQLite setup save?); the baseline uses none.
    ap.add_argument("--pragma", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra PRAGMA after the tool's two, e.g. cache_size=-32768 (repeatable)")
    ap.add_argument("--pages-per-commit", type=int, default=1, help="pages per transaction (default 1)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    stats = {"pages": 0, "throttled": 0}
    n_events = n_bytes = 0
    params = query(args.since, args.until, args.page_size)
    s = session(args.api_key)

    if args.mode == "fetch":
        for content in pages(s, args.base_url, params, stats, decode=False):
            n_bytes += len(content)
            n_events += content.count(b'{"type":"event",')
    elif args.mode == "decode":
        for body in pages(s, args.base_url, params, stats):
            n_events += len(body["data"])
    else:
        if not args.db:
            ap.error("--db is required in --mode full")
        conn = sqlite3.connect(args.db, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        for pragma in args.pragma:
            conn.execute(f"PRAGMA {pragma}")
        for ddl in SCHEMA:
            conn.execute(ddl)
        in_tx = 0
        for body in pages(s, args.base_url, params, stats):
            events, profiles, metrics = [], [], []
            for e in body["data"]:
                a = e["attributes"]
                rel = e.get("relationships") or {}
                props = a.get("event_properties")
                value = props.get("$value") if isinstance(props, dict) else None
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    value = None
                metric = (rel.get("metric") or {}).get("data")
                profile = (rel.get("profile") or {}).get("data")
                events.append((e["id"], metric["id"] if metric else None, profile["id"] if profile else None,
                               z(a.get("datetime")), a.get("timestamp"), a.get("uuid"), value, dumps(props)))
            for inc in body.get("included") or []:
                a = inc.get("attributes") or {}
                if inc["type"] == "profile":
                    profiles.append((inc["id"], *[a.get(c) for c in PROFILE_COLS[:9]],
                                     z(a.get("created")), z(a.get("updated")), z(a.get("last_event_date")),
                                     dumps(a.get("location")), dumps(a.get("properties"))))
                elif inc["type"] == "metric":
                    integ = a.get("integration") or {}
                    metrics.append((inc["id"], a.get("name"), z(a.get("created")), z(a.get("updated")),
                                    integ.get("id"), integ.get("key"), integ.get("name"), integ.get("category"),
                                    dumps(a)))
            if not in_tx:
                conn.execute("BEGIN")
            conn.executemany(METRIC_SQL, metrics)
            conn.executemany(PROFILE_SQL, profiles)
            conn.executemany(EVENT_SQL, events)
            in_tx += 1
            if in_tx >= args.pages_per_commit:
                conn.execute("COMMIT")
                in_tx = 0
            n_events += len(events)
        if in_tx:
            conn.execute("COMMIT")
        conn.close()
    s.close()
    print(json.dumps({"mode": args.mode, "pragma": args.pragma, "pages_per_commit": args.pages_per_commit, "events": n_events, "pages": stats["pages"], "throttled": stats["throttled"],
                      "bytes": n_bytes or None, "seconds": round(time.perf_counter() - t0, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
