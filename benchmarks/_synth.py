"""Synthetic databases in the tool's own schema, for the benchmarks that need a big one
(bench_analytics.py, bench_incremental.py): the shared steps of building one fast with direct
sqlite3 (bulk inserts with the secondary indexes dropped, then each index built once), and the
cache under benchmarks/.cache/ keyed by the tool's schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from _harness import BENCH_DIR, remove_db

from klaviyo_sync.fake.data import b62, mix  # noqa: E402  (after _harness puts the repo on the path)

CACHE = BENCH_DIR / ".cache"
PROFILE_TIME = ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", "2025-01-01T00:00:00Z")


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def schema_fingerprint(build_version: int, *, views: bool = True) -> str:
    """Changes when the tool's tables, indexes, triggers or migrations change (then a cached
    file is rebuilt), or the builder's ``build_version``; with ``views``, when a view changes too."""
    from klaviyo_sync.db import open_db

    db = open_db(":memory:")
    try:
        sql = sorted(r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
                                              + ("" if views else " AND type != 'view'")))
        names = sorted(r[0] for r in db.execute("SELECT name FROM _sqlite_migrations"))
    finally:
        db.close()
    return hashlib.sha256(json.dumps([sql, names, build_version]).encode()).hexdigest()[:12]


def bulk_open(path: Path, tables: tuple[str, ...]) -> tuple[sqlite3.Connection, Path, list]:
    """A connection to ``path``.building, made by the tool (schema and migrations), tuned for a
    bulk load, with the secondary indexes of ``tables`` dropped; give its indexes to bulk_close."""
    from klaviyo_sync.db import open_db

    tmp = path.with_name(path.name + ".building")
    remove_db(tmp)
    open_db(tmp).close()
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1048576")  # 1 GiB
    conn.execute("PRAGMA temp_store = MEMORY")
    marks = ", ".join("?" * len(tables))
    indexes = conn.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                           f"AND tbl_name IN ({marks})", tables).fetchall()
    for name, _ in indexes:  # bulk insert first, index after: much faster; same indexes in the end
        conn.execute(f'DROP INDEX "{name}"')
    return conn, tmp, indexes


def bulk_close(conn: sqlite3.Connection, tmp: Path, path: Path, indexes: list) -> None:
    """Build the dropped indexes, ANALYZE, leave the file in WAL mode (as the tool does), and
    move it to ``path``."""
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    os.replace(tmp, path)


def profile_ids(n: int) -> list[str]:
    return [f"01SYN{b62(mix(0xABCDEF0000 + k))}{k:09d}" for k in range(n)]


def insert_profiles(conn: sqlite3.Connection, pids: list[str]) -> None:
    from klaviyo_sync.db import PROFILE_COLUMNS

    # Named columns: later migrations add columns (consent, deleted_at ...) that stay NULL here.
    conn.executemany(f"INSERT INTO profiles ({', '.join(PROFILE_COLUMNS)}) VALUES ({', '.join('?' * 15)})", (
        (pid, f"user.{k}@example.com", None, f"cust_{k}", "Ada", "Lovelace", None, "en-US", None, None,
         *PROFILE_TIME, '{"city":"Boston","country":"United States","zip":"02110"}', '{"$source":"Shopify"}')
        for k, pid in enumerate(pids)))


def cached(prefix: str, fingerprint: str, describe: str, build: Callable[[Path], dict],
           rebuild: bool = False) -> tuple[Path, dict]:
    """The cached database ``prefix``-``fingerprint``.db and its metadata, built by ``build(path)``
    when missing or with ``rebuild`` (older ones of the same prefix are removed)."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = CACHE / f"{prefix}-{fingerprint}.db"
    meta_path = path.with_name(path.name + ".json")
    if path.exists() and meta_path.exists() and not rebuild:
        return path, json.loads(meta_path.read_text())
    for old in CACHE.glob(f"{prefix}-*.db*"):
        old.unlink()
    print(f"building {path.name}: {describe} (cached for later runs)", flush=True)
    meta = build(path)
    meta["bytes"] = path.stat().st_size
    meta_path.write_text(json.dumps(meta))
    return path, meta
