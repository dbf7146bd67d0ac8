#!/usr/bin/env python
"""What Klaviyo's attributions cost an events backfill, part by part, next to the least each
part can cost (issue 20, target 2: "their cost must stay under 10%").

Against a fresh fake API (the realistic shape of bench_events.py), the window's events pages are
fetched twice, as `sync-events` asks for them (`include=metric,profile,attributions`) and without
attributions (`include=metric,profile`), and kept on disk. Then, in this process, for each variant
and on the same bytes, the CPU seconds of:

  decode   the tool's typed decoder (events_fetch.decode_events_page)
  rows     the tool's rows of each page (events_fetch._page_rows)
  write    the tool's writer (events_write.apply_page, 8 pages a transaction, as a backfill:
           secondary indexes dropped), and
  indexes  building those indexes at the end.

And the floors, what the same work costs with nothing of the tool's in the way:

  scan     decoding each page into a type with no fields: every byte parsed, nothing built
  insert   the page's attribution rows into a table without any index (executemany), and a
           unique index on the id and an index on the event built once at the end.

Reading the answers off the socket is not measured here (no socket): bench_events.py's user
and system CPU show it (the pages with attributions are ~60% larger).

    python benchmarks/attribution_cost.py --events 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import msgspec
import requests

from _harness import FAKE_API_KEY, Fake, code_version, emit_result, system_busy_s
from bench_events import profiles_for, shape_args, window_for

from klaviyo_sync import db as store
from klaviyo_sync.client import DEFAULT_REVISION
from klaviyo_sync.streams.engine import SyncResult
from klaviyo_sync.streams.events_fetch import EventSlice, SeenCache, _page_rows, decode_events_page, events_params
from klaviyo_sync.streams.events_write import _event_indexes, apply_page

VARIANTS = {"without": "metric,profile", "with": "metric,profile,attributions"}
PAGES_PER_COMMIT = 8  # as the writer commits a backfill (MAX_PAGES_PER_COMMIT)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fetch_pages(url: str, since: str, until: str, include: str, into: Path) -> list[Path]:
    """Every page of the window, as the tool asks for it (only ``include`` differs), on disk."""
    into.mkdir(parents=True, exist_ok=True)
    span = EventSlice(0, datetime.fromisoformat(since.replace("Z", "+00:00")),
                      datetime.fromisoformat(until.replace("Z", "+00:00")))
    params = {**events_params(span), "include": include}
    headers = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": DEFAULT_REVISION,
               "accept": "application/vnd.api+json"}
    paths, next_url = [], f"{url}/api/events"
    with requests.Session() as session:
        while next_url:
            resp = session.get(next_url, params=params, headers=headers, timeout=120)
            resp.raise_for_status()
            path = into / f"{len(paths):05d}.json"
            path.write_bytes(resp.content)
            paths.append(path)
            next_url, params = resp.json()["links"].get("next"), None
    return paths


class _Nothing(msgspec.Struct):
    pass


_SCAN = msgspec.json.Decoder(_Nothing)


def fresh_db(path: Path):
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return store.open_db(path)


def measure(paths: list[Path], workdir: Path) -> dict:
    """CPU seconds of each part over every page of one variant, page by page as the tool goes
    (a page is decoded, made rows and written before the next is read: memory stays flat)."""
    out = dict.fromkeys(("scan", "decode", "rows", "write", "indexes", "insert"), 0.0)
    out["bytes"] = out["attributions"] = 0
    for path in paths:
        body = path.read_bytes()
        t = cpu()
        _SCAN.decode(body)
        out["scan"] += cpu() - t

    db = fresh_db(workdir / "tool.db")
    floor = sqlite3.connect(workdir / "floor.db", isolation_level=None)  # the same rows, no index
    floor.execute("DROP TABLE IF EXISTS a")
    floor.execute("PRAGMA journal_mode = WAL")
    floor.execute("PRAGMA synchronous = NORMAL")
    floor.execute(f"CREATE TABLE a ({', '.join(f'c{i} TEXT' for i in range(8))})")
    insert = f"INSERT INTO a VALUES ({', '.join('?' * 8)})"
    seen, result = SeenCache(), SyncResult()
    piece = SimpleNamespace(done_until=datetime(2000, 1, 1, tzinfo=timezone.utc))
    events = 0
    with _event_indexes(db):
        for i in range(0, len(paths), PAGES_PER_COMMIT):
            batch = []
            for path in paths[i:i + PAGES_PER_COMMIT]:
                body = path.read_bytes()
                out["bytes"] += len(body)
                t = cpu()
                page = decode_events_page(body)
                t2 = cpu()
                batch.append(_page_rows(SimpleNamespace(data=page["data"], included=page["included"]), "0", "9", seen))
                out["rows"] += cpu() - t2
                out["decode"] += t2 - t
                del page, body
            t = cpu()
            with db.atomic():
                for rows in batch:
                    apply_page(db, result, piece, rows)
            t2 = cpu()
            floor.execute("BEGIN")
            for rows in batch:
                floor.executemany(insert, rows.attributions)
            floor.execute("COMMIT")
            out["insert"] += cpu() - t2
            out["write"] += t2 - t
            out["attributions"] += sum(len(r.attributions) for r in batch)
            events += sum(len(r.events) for r in batch)
        t = cpu()
    out["indexes"] = cpu() - t  # _event_indexes builds them on leaving
    t = cpu()
    floor.execute("CREATE UNIQUE INDEX a_id ON a (c0)")
    floor.execute("CREATE INDEX a_event ON a (c1)")
    out["insert"] += cpu() - t
    floor.close()
    db.conn.close()
    if result.rows.get("events") != events:
        sys.exit(f"the writer stored {result.rows.get('events')} events, expected {events}")
    return out


PARTS = ("decode", "rows", "write", "indexes")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="measurements of each variant, alternating; medians (default 3)")
    ap.add_argument("--span-hours", type=float, default=168.0)
    ap.add_argument("--profiles-per-event", type=float, default=0.05)
    ap.add_argument("--events-per-visit", type=int, default=4)
    ap.add_argument("--metrics", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    args.shape, args.profiles = "realistic", None

    with tempfile.TemporaryDirectory(prefix="attribution-cost-") as tmp:
        workdir = Path(tmp)
        with Fake(events=args.events, span_hours=args.span_hours, seed=args.seed,
                  profiles=profiles_for(args.events, args), extra=shape_args(args)).start() as fake:
            since, until = window_for(fake, args.span_hours)
            files = {v: fetch_pages(fake.url, since, until, inc, workdir / v) for v, inc in VARIANTS.items()}
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        busy0, mine0, wall0 = system_busy_s(), cpu(), time.monotonic()
        for _ in range(args.repeat):
            for v in VARIANTS:
                runs[v].append(measure(files[v], workdir))
                print(f"  {v:8s} " + ", ".join(f"{k} {x:.3f}" for k, x in runs[v][-1].items()
                                                 if isinstance(x, float)), file=sys.stderr)
        other = max(0.0, system_busy_s() - busy0 - (cpu() - mine0)) / (time.monotonic() - wall0)

    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    w, wo = med["with"], med["without"]
    print(f"attributions' cost, {args.events:,} events ({len(files['with'])} pages; "
          f"{w['bytes'] / 1e6:,.0f} MB with, {wo['bytes'] / 1e6:,.0f} MB without; {w['attributions']:,.0f} "
          f"attributions), CPU seconds, medians of {args.repeat}:\n")
    print(f"{'part':10s} {'without':>8s} {'with':>8s} {'cost':>8s} {'floor':>8s}  floor is")
    floors = {"decode": (w["scan"] - wo["scan"], "scanning the added bytes"),
              "rows": (0.0, "(not measured: 0)"),
              "write": (w["insert"], "inserting the rows, no index (indexes built after)"),
              "indexes": (0.0, "(in write's floor)")}
    for part in PARTS:
        floor, what = floors[part]
        print(f"{part:10s} {wo[part]:8.3f} {w[part]:8.3f} {w[part] - wo[part]:+8.3f} {floor:+8.3f}  {what}")
    cost = sum(w[p] - wo[p] for p in PARTS)
    floor = sum(f for f, _ in floors.values())
    base = sum(wo[p] for p in PARTS)
    print(f"{'total':10s} {base:8.3f} {base + cost:8.3f} {cost:+8.3f} {floor:+8.3f}")
    print(f"\nother load while measuring: {100 * other:.0f}% of a core; commit {code_version()['commit']}")
    emit_result({"bench": "attribution_cost", "events": args.events, "repeat": args.repeat, "medians": med,
                 "cost_s": round(cost, 3), "floor_s": round(floor, 3), "code": code_version(),
                 "other_load_pct": round(100 * other)}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
