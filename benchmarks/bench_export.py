"""Time and peak RSS of `klaviyo-sync export` on a big database built with SQL (no API involved):
every format, then a second export after a sync-like change (one old day and today), then the
Fivetran DuckDB file. Run by hand; it reports, it asserts nothing but exit codes.

    .venv/bin/python benchmarks/bench_export.py [--events 5000000] [--days 90] [--formats csv,jsonl,parquet,duckdb]

The database is cached in benchmarks/.cache/export_<N>.db (a few GB at 5M); outputs go to a
temporary directory next to it and are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BENCH_DIR, PYTHON, code_version, emit_result, run_measured, system_busy_s, table  # noqa: E402

from klaviyo_sync import db as store  # noqa: E402

START = 1_740_000_000  # 2025-02-19T21:20:00Z: fixed, so the file is the same every time


def build(path: Path, events: int, days: int, profiles: int) -> None:
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        if p.exists():
            p.unlink()
    db = store.open_db(tmp)
    db.close()
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.execute("""INSERT INTO metrics (id, name, created, updated, integration_id, integration_name,
                    integration_category, attributes)
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19)
        SELECT 'M' || i, CASE i WHEN 0 THEN 'Placed Order' WHEN 1 THEN 'Opened Email' ELSE 'Metric ' || i END,
               '2024-01-01T00:00:00Z', '2024-06-01T00:00:00Z', 'int' || (i % 3), 'Shopify', 'eCommerce', '{}'
        FROM n""")
    conn.execute(f"""INSERT INTO profiles (id, email, first_name, last_name, created, updated, location, properties)
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {profiles - 1})
        SELECT 'P' || i, 'p' || i || '@example.com', 'First' || i, 'Last' || i,
               strftime('%Y-%m-%dT%H:%M:%SZ', {START} - i * 60, 'unixepoch'),
               strftime('%Y-%m-%dT%H:%M:%SZ', {START} + i, 'unixepoch'),
               '{{"city":"Boston","country":"United States","latitude":42.36,"longitude":-71.06,"zip":"02110"}}',
               '{{"loyalty_tier":"gold","utm_source":"newsletter","points":' || (i % 1000) || '}}'
        FROM n""")
    step = days * 86400 / events
    conn.execute(f"""INSERT INTO events (id, metric_id, profile_id, datetime, timestamp, uuid, value, properties)
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {events - 1})
        SELECT printf('E%09d', i), 'M' || (i % 20), 'P' || ((i * 7919) % {profiles}),
               strftime('%Y-%m-%dT%H:%M:%SZ', {START} + CAST(i * {step} AS INTEGER), 'unixepoch'),
               {START} + CAST(i * {step} AS INTEGER), printf('%08x-0000-4000-8000-%012d', i, i),
               CASE WHEN i % 20 = 0 THEN (i % 5000) / 10.0 END,
               '{{"$value":' || ((i % 5000) / 10.0) || ',"ProductName":"Classic Tee","ProductID":"' || (i % 997)
                 || '","Categories":["Apparel","Sale"],"URL":"https://shop.example.com/products/' || (i % 997)
                 || '","$message":"MSG' || (i % 50) || '"}}'
        FROM n""")
    conn.execute("INSERT INTO sync_runs (command, started_at, finished_at, status) "
                 "VALUES ('sync-events', '2025-05-20T00:00:00Z', '2025-05-20T00:10:00Z', 'ok')")
    conn.execute("COMMIT")
    conn.close()
    os.replace(tmp, path)


def change(path: Path) -> str:
    """What an hourly sync does: new events today, one late event on an old day, one profile."""
    conn = sqlite3.connect(path, isolation_level=None)
    last = conn.execute("SELECT max(datetime) FROM events").fetchone()[0]
    conn.execute("BEGIN")
    conn.execute("INSERT INTO events (id, metric_id, profile_id, datetime, timestamp, value, properties) "
                 "VALUES ('late-1', 'M0', 'P1', '2025-03-01T12:00:00Z', 1740830400, 9.5, '{\"$value\":9.5}')")
    conn.execute("INSERT INTO events (id, metric_id, profile_id, datetime, timestamp, properties) "
                 "SELECT 'new-' || id, metric_id, profile_id, ?, timestamp, properties FROM events "
                 "ORDER BY datetime DESC LIMIT 1000", [last])
    conn.execute("UPDATE profiles SET updated = '2025-05-21T00:00:00Z' WHERE id = 'P1'")
    conn.execute("COMMIT")
    conn.close()
    return last[:10]


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--profiles", type=int, default=250_000)
    ap.add_argument("--formats", default="csv,jsonl,parquet,duckdb")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    cache = BENCH_DIR / ".cache"
    cache.mkdir(exist_ok=True)
    base = cache / f"export_{args.events}_{args.days}d.db"
    if not base.exists():
        t0 = time.monotonic()
        build(base, args.events, args.days, args.profiles)
        print(f"built {base} ({base.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    work = cache / "export_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    db = work / "k.db"
    shutil.copyfile(base, db)

    rows = []

    def measure(label: str, fmt: str, target: Path, *extra: str) -> None:
        busy0 = time.monotonic(), system_busy_s()
        m = run_measured([PYTHON, "-m", "klaviyo_sync", "export", "--db", str(db), "--to", str(target),
                          "--format", fmt, "--report", "json", *extra])
        wall = time.monotonic() - busy0[0]
        other = max(0.0, system_busy_s() - busy0[1] - m.user_s - m.sys_s)
        written = None
        if m.rc != 0:
            print(m.stderr, file=sys.stderr)
        else:
            report = json.loads(m.stdout)
            # What was rewritten: "events 2/90" = 2 of 90 days; tables listed when rewritten.
            parts = {t["table"]: (t["written"], t["written"] + t["unchanged"]) for t in report["tables"]}
            written = " ".join(f"{t} {w}/{n}" if n > 1 else t for t, (w, n) in parts.items() if w)
        rows.append({"run": label, "format": fmt, "rc": m.rc, "wall_s": m.wall_s, "cpu_s": m.user_s + m.sys_s,
                     "maxrss_mb": m.maxrss_mb, "out_mb": du(target) / 1e6 if target.exists() else None,
                     "other_load": other / wall if wall else None, "written": written,
                     "rss_timeline": m.rss_timeline_mb(8)})

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for fmt in formats:
        target = work / (f"out.{fmt}" if fmt == "duckdb" else f"out_{fmt}")
        measure("first", fmt, target)
    day = change(db)
    for fmt in formats:
        target = work / (f"out.{fmt}" if fmt == "duckdb" else f"out_{fmt}")
        measure(f"second (changed: 2025-03-01, {day}, profiles)", fmt, target)
    if "duckdb" in formats:
        measure("first", "duckdb", work / "fivetran.duckdb", "--schema", "fivetran")
        rows[-1]["format"] = "duckdb fivetran"

    print(f"export of {args.events:,} events over {args.days} days, {args.profiles:,} profiles "
          f"(SQLite file {base.stat().st_size / 1e6:.0f} MB); {os.cpu_count()} cores")
    print(table(rows, [("run", "run", ""), ("format", "format", ""), ("rc", "rc", "d"), ("wall_s", "wall s", ".1f"),
                       ("cpu_s", "CPU s", ".1f"), ("maxrss_mb", "peak RSS MB", ".0f"), ("out_mb", "output MB", ".0f"),
                       ("other_load", "other load (cores)", ".2f")]))
    for r in rows:
        print(f"  written ({r['run'][:6]} {r['format']}): {r['written']}")
    for r in rows:
        print(f"  RSS over time ({r['run'][:6]} {r['format']}): {r['rss_timeline']}")
    emit_result({"bench": "export", "events": args.events, "days": args.days, **code_version(), "rows": rows},
                args.json_out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
