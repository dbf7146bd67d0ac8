"""export: the database as CSV, JSONL or Parquet files, or as one DuckDB file, incrementally.

Every selected table or view is a *source*: a SELECT on the SQLite file and its columns, each with
a declared type (text, integer, real, timestamp, date, boolean). `events` is split by UTC day.
Each source (each day of events) has a fingerprint: its row count and the sum of a CRC-32 of every
row, read in one pass inside the same read transaction as the export itself. A second export
rewrites only the sources and days whose fingerprint changed; what was written is recorded in the
export itself (``_klaviyo_export.json`` in a directory, table ``_klaviyo_export`` in a DuckDB
file), written last, so a killed export leaves the previous record and the next one redoes the
difference.

Rows stream: SQLite cursor -> csv/jsonl writer. Parquet and DuckDB go through a temporary CSV
file that DuckDB reads with explicit column types (no DuckDB extension, nothing from the network).
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import shutil
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson

from .. import db as store
from ..errors import DatabaseError, UsageError
from ..timeutil import iso, utcnow

FORMATS = ("csv", "jsonl", "parquet", "duckdb")
SCHEMAS = ("native", "fivetran")
MANIFEST = "_klaviyo_export.json"
MANIFEST_TABLE = "_klaviyo_export"
MANIFEST_VERSION = 1
EXTRA_HINT = "pip install 'klaviyo-sync[export]'"
# Views left out unless named in --tables: event_details is events joined to two small tables,
# as big as events and rewritten whole whenever any event changes; so are the attribution views
# and the customer timeline (one row per event; the table event_attributions they read is exported).
NOT_BY_DEFAULT = {"event_details", "attributed_conversions", "session_attributed_conversions",
                  "session_touches", "conversion_lag", "customer_timeline"}
FETCH = 5000

DUCK_TYPES = {"text": "VARCHAR", "integer": "BIGINT", "real": "DOUBLE", "timestamp": "TIMESTAMP",
              "date": "DATE", "boolean": "BOOLEAN"}
_TIME_NAMES = {"datetime", "created", "updated", "last_event_date", "definition_updated"}
_TIME_SUFFIXES = ("_at", "_time", "_start", "_end")


def column_kind(name: str, declared: str) -> str:
    """The exported type of a SQLite column from its declared type and, for text, its name:
    the store keeps datetimes as ISO-8601 UTC text in columns named like these."""
    declared = (declared or "").upper()
    if "INT" in declared:
        return "integer"
    if any(t in declared for t in ("REAL", "FLOA", "DOUB", "NUMERIC")):
        return "real"
    if name in _TIME_NAMES or name.endswith(_TIME_SUFFIXES):
        return "timestamp"
    if name == "day":
        return "date"
    return "text"


@dataclass
class Source:
    name: str
    select: str                      # SELECT producing exactly `columns`, in order
    columns: list[tuple[str, str]]   # (name, kind)
    by_day: bool = False             # split on substr(datetime, 1, 10)
    deps: tuple[str, ...] = ()       # tables a view (or a Fivetran table) reads
    schema: str | None = None        # DuckDB schema (fivetran: "klaviyo")

    @property
    def signature(self) -> str:
        """Changes when the query or the columns change (a new column after an upgrade)."""
        return f"{zlib.crc32(orjson.dumps([self.select, self.columns])):08x}"


@dataclass
class Report:
    rows: dict = field(default_factory=dict)       # source -> rows in the export
    written: dict = field(default_factory=dict)    # source -> parts (days) rewritten
    unchanged: dict = field(default_factory=dict)  # source -> parts left as they were
    removed: dict = field(default_factory=dict)    # source -> parts deleted (days now empty)
    seconds: float = 0.0


# -- reading SQLite -------------------------------------------------------------------------
def open_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise DatabaseError(f"no database at {path}: run a sync first (or pass --db)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None
    conn.create_function("_kfp", -1, _row_crc, deterministic=True)
    return conn


def _row_crc(*values) -> int:
    return zlib.crc32(orjson.dumps(values))


def _names(conn: sqlite3.Connection, kind: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name", [kind])]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _view_deps(conn: sqlite3.Connection, name: str, tables: list[str], views: list[str]) -> tuple[str, ...]:
    """The tables a view reads, also through the views it reads (customer_summary reads events
    through attributed_conversions)."""
    found: set[str] = set()
    todo, seen = [name], set()
    while todo:
        view = todo.pop()
        seen.add(view)
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", [view]).fetchone()[0]
        found.update(t for t in tables if re.search(rf"\b{re.escape(t)}\b", sql))
        todo += [v for v in views if v not in seen and v != view and re.search(rf"\b{re.escape(v)}\b", sql)]
    return tuple(t for t in tables if t in found)


def native_sources(conn: sqlite3.Connection, wanted: list[str] | None) -> list[Source]:
    tables, views = _names(conn, "table"), _names(conn, "view")
    known = tables + views
    if wanted:
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise UsageError(f"--tables: no table or view named {', '.join(map(repr, unknown))} "
                             f"(there are: {', '.join(known)})")
        names = [n for n in known if n in wanted]
    else:
        names = [n for n in known if n not in NOT_BY_DEFAULT]
    out = []
    for name in names:
        info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()
        if name in views:
            deps = _view_deps(conn, name, tables, views)
            kinds = _view_kinds(conn, name, info)
        else:
            deps = ()
            kinds = [column_kind(r[1], r[2]) for r in info]
        columns = [(r[1], k) for r, k in zip(info, kinds)]
        select = f"SELECT {', '.join(_q(c) for c, _ in columns)} FROM {_q(name)}"
        out.append(Source(name, select, columns, by_day=(name == "events"), deps=deps))
    return out


def _view_kinds(conn, name: str, info) -> list[str]:
    """A view's column that is an expression has no declared type: its type is what its values
    are (integer when every value is, real when some are real, text otherwise)."""
    kinds = [column_kind(r[1], r[2]) if r[2] else None for r in info]
    missing = [i for i, k in enumerate(kinds) if k is None]
    if missing:
        probe = ", ".join(f"max(typeof({_q(info[i][1])}) = 'text'), max(typeof({_q(info[i][1])}) = 'real')"
                          for i in missing)
        row = conn.execute(f"SELECT {probe} FROM {_q(name)}").fetchone()
        for j, i in enumerate(missing):
            text, real = row[2 * j], row[2 * j + 1]
            kinds[i] = column_kind(info[i][1], "TEXT") if text else ("real" if real else "integer")
    return kinds


def fingerprints(conn: sqlite3.Connection, sources: list[Source]) -> dict[str, dict[str, list]]:
    """{source: {part: [rows, crc-sum]}}; part is "" or a day. A view's is its tables'."""
    tables: dict[str, dict[str, list]] = {}

    def of_table(name: str) -> dict[str, list]:
        if name not in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({_q(name)})")]
            args = ", ".join(_q(c) for c in cols)
            if name == "events":
                rows = conn.execute(f"SELECT substr(datetime, 1, 10) AS day, count(*), total(_kfp({args})) "
                                    f"FROM events GROUP BY day ORDER BY day").fetchall()
                tables[name] = {r[0]: [r[1], int(r[2])] for r in rows}
            else:
                n, s = conn.execute(f"SELECT count(*), total(_kfp({args})) FROM {_q(name)}").fetchone()
                tables[name] = {"": [n, int(s)]}
        return tables[name]

    out = {}
    for src in sources:
        if src.by_day:
            out[src.name] = {day: fp + [src.signature] for day, fp in of_table(src.name).items()}
        elif src.deps:
            deps = {d: of_table(d) for d in src.deps}
            rows = None
            out[src.name] = {"": [rows, zlib.crc32(orjson.dumps(deps)), src.signature]}
        else:
            out[src.name] = {"": of_table(src.name)[""] + [src.signature]}
    return out


def rows_of(conn: sqlite3.Connection, src: Source, part: str) -> Iterator[tuple]:
    if src.by_day and _is_day(part):
        # The range lets SQLite use idx_events_datetime; substr keeps exactly the day's rows.
        end = (date.fromisoformat(part) + timedelta(days=1)).isoformat()
        cur = conn.execute(f"SELECT * FROM ({src.select}) WHERE datetime >= ? AND datetime < ? "
                           f"AND substr(datetime, 1, 10) = ?", [part, end, part])
    elif src.by_day:
        cur = conn.execute(f"SELECT * FROM ({src.select}) WHERE substr(datetime, 1, 10) IS ?", [part])
    else:
        cur = conn.execute(src.select)
    while True:
        batch = cur.fetchmany(FETCH)
        if not batch:
            return
        yield from batch


def _is_day(part: str) -> bool:
    try:
        date.fromisoformat(part)
        return len(part) == 10
    except (TypeError, ValueError):
        return False


# -- writers --------------------------------------------------------------------------------
class _Null(float):
    """None for csv.writer: QUOTE_NONNUMERIC leaves numbers unquoted, and this "number" prints
    as nothing, so NULL is an unquoted empty field and an empty string is "" (Postgres' and
    DuckDB's CSV convention)."""

    def __str__(self) -> str:
        return ""


_NULL = _Null()


def write_csv(path: Path, columns: list[tuple[str, str]], rows, header: bool = True) -> int:
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        if header:
            w.writerow([c for c, _ in columns])
        for row in rows:
            w.writerow([_NULL if v is None else v for v in row])
            n += 1
    return n


def write_jsonl(path: Path, columns: list[tuple[str, str]], rows) -> int:
    names = [c for c, _ in columns]
    n = 0
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(dict(zip(names, row))))
            f.write(b"\n")
            n += 1
    return n


def duck_select(columns: list[tuple[str, str]], csv_path: Path) -> str:
    """DuckDB SELECT over a temporary CSV (every column read as text) casting to the types."""
    spec = ", ".join(f"'{c.replace(chr(39), chr(39) * 2)}': 'VARCHAR'" for c, _ in columns)
    exprs = []
    for c, kind in columns:
        col = _q(c)
        if kind == "timestamp":
            expr = f"CAST(CAST({col} AS TIMESTAMPTZ) AS TIMESTAMP)"
        elif kind == "boolean":
            expr = f"CAST(CAST({col} AS DOUBLE) <> 0 AS BOOLEAN)"
        else:
            expr = f"CAST({col} AS {DUCK_TYPES[kind]})"
        exprs.append(f"{expr} AS {col}")
    path = str(csv_path).replace("'", "''")
    return (f"SELECT {', '.join(exprs)} FROM read_csv('{path}', header = true, columns = {{{spec}}}, "
            f"quote = '\"', escape = '\"', nullstr = '', allow_quoted_nulls = false, "
            f"auto_detect = false, delim = ',', new_line = '\\n', buffer_size = {DUCK_CSV_BUFFER})")


def require_duckdb():
    try:
        import duckdb
    except ImportError:
        raise UsageError(f"Parquet and DuckDB exports need the export extra: {EXTRA_HINT}") from None
    return duckdb


# DuckDB's share of an export's memory (peak RSS: about 65 MB of Python and SQLite, 15 MB of
# DuckDB's library, then this): one thread, no insertion order to keep, a 4 MB CSV read buffer and
# Parquet row groups of 30,000 rows; what does not fit spills to the export's temporary directory.
# Measured (benchmarks/bench_export.py): 256 MB and two threads peaked at 274-370 MB.
DUCK_MEMORY = "24MB"
DUCK_CSV_BUFFER = 2 * 1024 * 1024  # DuckDB's max_line_size (2 MB): the longest row it reads
PARQUET_ROW_GROUP = 10_000
DUCK_CHUNK = 100_000  # rows per INSERT into a DuckDB file


def _duck_connect(duckdb, path: str, spill: Path):
    con = duckdb.connect(path)
    # UTC for the TIMESTAMPTZ -> TIMESTAMP cast; the rest keeps the peak flat and low.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads = 1")
    con.execute(f"SET memory_limit = '{DUCK_MEMORY}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
    return con


# -- the export -----------------------------------------------------------------------------
def export(db_path: Path, to: Path, fmt: str, schema: str = "native", tables: list[str] | None = None,
           progress=None) -> Report:
    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if schema not in SCHEMAS:
        raise UsageError(f"--schema: {schema!r} is not one of {', '.join(SCHEMAS)}")
    if schema == "fivetran" and fmt != "duckdb":
        raise UsageError("--schema fivetran writes a DuckDB file: use --format duckdb")
    duckdb = require_duckdb() if fmt in ("parquet", "duckdb") else None
    # Profiles are personal data: what the export writes is its owner's only, like the database.
    umask = os.umask(0o077)
    try:
        return _export(db_path, to, fmt, schema, tables, progress, duckdb)
    finally:
        os.umask(umask)


def _export(db_path: Path, to: Path, fmt: str, schema: str, tables, progress, duckdb) -> Report:
    started = time.monotonic()
    if not db_path.exists():
        raise DatabaseError(f"no database at {db_path}: run a sync first (or pass --db)")
    # Bring an older file's schema up to date (as every reading command does), then read it only.
    store.open_db(db_path).close()
    conn = open_readonly(db_path)
    try:
        # One read transaction: the fingerprints and the rows are the same snapshot of the file,
        # whatever a sync writes meanwhile.
        conn.execute("BEGIN")
        if schema == "fivetran":
            from .fivetran import fivetran_sources
            sources = fivetran_sources(conn, tables)
        else:
            sources = native_sources(conn, tables)
        fps = fingerprints(conn, sources)
        if fmt == "duckdb":
            report = _export_duckdb(duckdb, conn, sources, fps, to, fmt, schema, progress)
        else:
            report = _export_files(duckdb, conn, sources, fps, to, fmt, schema, progress)
        conn.execute("COMMIT")
    finally:
        conn.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _header(fmt: str, schema: str) -> dict:
    return {"version": MANIFEST_VERSION, "format": fmt, "schema": schema}


def _check_previous(previous: dict | None, fmt: str, schema: str, where: str) -> dict:
    if previous is None:
        return {}
    if previous.get("version") != MANIFEST_VERSION or previous.get("format") != fmt \
            or previous.get("schema", "native") != schema:
        raise UsageError(f"{where} holds a {previous.get('format')} export with schema "
                         f"{previous.get('schema')}: export {fmt} ({schema}) somewhere else")
    return previous.get("sources", {})


def _plan(src: Source, fp: dict, before: dict) -> tuple[list[str], list[str], list[str]]:
    old = {p: v.get("fp") for p, v in (before.get(src.name) or {}).get("parts", {}).items()}
    write = [p for p in sorted(fp) if old.get(p) != fp[p]]
    same = [p for p in sorted(fp) if old.get(p) == fp[p]]
    gone = [p for p in sorted(old) if p not in fp]
    return write, same, gone


def _tally(report: Report, name: str, write, same, gone, parts: dict) -> None:
    report.written[name] = len(write)
    report.unchanged[name] = len(same)
    report.removed[name] = len(gone)
    report.rows[name] = sum(v["rows"] for v in parts.values())


def _file_name(fmt: str) -> str:
    return {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[fmt]


def _export_files(duckdb, conn, sources, fps, to: Path, fmt, schema, progress) -> Report:
    manifest_path = to / MANIFEST
    if to.exists() and not to.is_dir():
        raise UsageError(f"--to: {to} is a file; --format {fmt} writes a directory")
    previous = None
    if manifest_path.exists():
        try:
            previous = orjson.loads(manifest_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UsageError(f"--to: cannot read {manifest_path}: {exc}") from None
    elif to.exists() and any(to.iterdir()):
        raise UsageError(f"--to: {to} is not empty and holds no klaviyo-sync export ({MANIFEST})")
    before = _check_previous(previous, fmt, schema, str(to))
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--to: cannot create {to}: {exc.strerror}") from None
    ext = _file_name(fmt)
    report = Report()
    record = dict(before)
    tmpdir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=to))
    duck = None
    try:
        duck = _duck_connect(duckdb, ":memory:", tmpdir / "spill") if fmt == "parquet" else None
        for src in sources:
            fp = fps[src.name]
            write, same, gone = _plan(src, fp, before)
            parts = dict((before.get(src.name) or {}).get("parts", {}))
            for part in write:
                if src.by_day:
                    target_dir = to / src.name / f"day={part}"
                    target = target_dir / f"{src.name}.{ext}"
                else:
                    target_dir = to
                    target = to / f"{src.name}.{ext}"
                tmp = tmpdir / f"part.{ext}"
                rows = rows_of(conn, src, part)
                if fmt == "csv":
                    n = write_csv(tmp, src.columns, rows)
                elif fmt == "jsonl":
                    n = write_jsonl(tmp, src.columns, rows)
                else:
                    staged = tmpdir / "rows.csv"
                    n = write_csv(staged, src.columns, rows)
                    out = str(tmp).replace("'", "''")
                    duck.execute(f"COPY ({duck_select(src.columns, staged)}) TO '{out}' "
                                 f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {PARQUET_ROW_GROUP})")
                    staged.unlink()
                target_dir.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                parts[part] = {"fp": fp[part], "rows": n}
                if progress:
                    progress(src.name, part)
            for part in gone:
                shutil.rmtree(to / src.name / f"day={part}", ignore_errors=True)
                parts.pop(part, None)
            _tally(report, src.name, write, same, gone, parts)
            record[src.name] = {"columns": src.columns, "by_day": src.by_day, "parts": parts,
                                "path": f"{src.name}/day=*/{src.name}.{ext}" if src.by_day else f"{src.name}.{ext}"}
            # The record after every source: a killed export redoes only what it had not recorded.
            _write_manifest(manifest_path, {**_header(fmt, schema), "exported_at": iso(utcnow()),
                                            "sources": record})
        if fmt == "csv":
            _write_schema_sql(to, record)
    finally:
        if duck is not None:
            duck.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report


PG_TYPES = {"text": "text", "integer": "bigint", "real": "double precision",
            "timestamp": "timestamp with time zone", "date": "date", "boolean": "boolean"}
SCHEMA_SQL = "_schema.sql"


def _write_schema_sql(to: Path, record: dict) -> None:
    """CREATE TABLE statements for PostgreSQL (next to a CSV export, for `psql -f` then `\\copy`)."""
    out = ["-- klaviyo-sync export: the tables of this CSV export, for PostgreSQL (psql -f _schema.sql)"]
    for name, src in sorted(record.items()):
        cols = ",\n".join(f"    {_q(c)} {PG_TYPES[k]}" for c, k in src["columns"])
        out.append(f"CREATE TABLE IF NOT EXISTS {_q(name)} (\n{cols}\n);")
    tmp = to / (SCHEMA_SQL + ".tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
    os.replace(tmp, to / SCHEMA_SQL)


def _write_manifest(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(tmp, path)


def _export_duckdb(duckdb, conn, sources, fps, to: Path, fmt, schema, progress) -> Report:
    if to.exists() and to.is_dir():
        raise UsageError(f"--to: {to} is a directory; --format duckdb writes one file")
    if not to.parent.exists():
        raise UsageError(f"--to: directory {to.parent} does not exist")
    existed = to.exists()
    tmpdir = Path(tempfile.mkdtemp(prefix=".klaviyo-export-", dir=to.parent))
    try:
        duck = _duck_connect(duckdb, str(to), tmpdir / "spill")
    except duckdb.Error as exc:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise DatabaseError(f"--to: cannot open {to}: {str(exc).splitlines()[0]}") from None
    # Names qualified with the catalog: a file named klaviyo.duckdb is also a catalog "klaviyo".
    catalog = _q(duck.execute("SELECT current_database()").fetchone()[0])
    manifest_table = f"{catalog}.main.{MANIFEST_TABLE}"
    previous = None
    if existed:
        has = duck.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                           "AND table_schema = 'main' AND table_name = ?", [MANIFEST_TABLE]).fetchone()[0]
        if has:
            previous = orjson.loads(duck.execute(f"SELECT manifest FROM {manifest_table}").fetchone()[0])
        elif duck.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0]:
            duck.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise UsageError(f"--to: {to} holds tables but no klaviyo-sync export ({MANIFEST_TABLE})")
    try:
        before = _check_previous(previous, fmt, schema, str(to))
    except UsageError:
        duck.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    report = Report()
    record = dict(before)
    try:
        # One DuckDB transaction: a failed or killed export leaves the file as it was.
        duck.execute("BEGIN TRANSACTION")
        schemas = {s.schema for s in sources if s.schema}
        for s in schemas:
            duck.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{_q(s)}")
        for src in sources:
            fp = fps[src.name]
            table = f"{catalog}.{_q(src.schema or 'main')}.{_q(src.name)}"
            old = before.get(src.name) or {}
            parts = dict(old.get("parts", {}))
            if [list(c) for c in src.columns] != old.get("columns"):
                parts = {}  # new, or its columns changed: the whole table again
            write, same, gone = _plan(src, fp, {src.name: {"parts": parts}})
            if not parts:
                cols = ", ".join(f"{_q(c)} {DUCK_TYPES[k]}" for c, k in src.columns)
                duck.execute(f"CREATE OR REPLACE TABLE {table} ({cols})")
            elif src.by_day and (write or gone):
                days = ", ".join(f"DATE '{d}'" for d in write + gone if _is_day(d))
                if days:
                    duck.execute(f"DELETE FROM {table} WHERE CAST(datetime AS DATE) IN ({days})")
            elif write:
                duck.execute(f"DELETE FROM {table}")
            for part in write:
                staged = tmpdir / "rows.csv"
                rows = rows_of(conn, src, part)
                n = 0
                # In chunks: one INSERT of a whole big table (Fivetran's event) grows DuckDB's peak.
                while True:
                    got = write_csv(staged, src.columns, itertools.islice(rows, DUCK_CHUNK))
                    if got or not n:
                        duck.execute(f"INSERT INTO {table} {duck_select(src.columns, staged)}")
                    staged.unlink()
                    n += got
                    if got < DUCK_CHUNK:
                        break
                parts[part] = {"fp": fp[part], "rows": n}
                if progress:
                    progress(src.name, part)
            for part in gone:
                parts.pop(part, None)
            _tally(report, src.name, write, same, gone, parts)
            record[src.name] = {"columns": src.columns, "by_day": src.by_day, "parts": parts,
                                "table": f"{src.schema}.{src.name}" if src.schema else src.name}
        manifest = orjson.dumps({**_header(fmt, schema), "exported_at": iso(utcnow()),
                                 "sources": record}).decode()
        duck.execute(f"CREATE OR REPLACE TABLE {manifest_table} (manifest VARCHAR)")
        duck.execute(f"INSERT INTO {manifest_table} VALUES (?)", [manifest])
        duck.execute("COMMIT")
    except BaseException:
        try:
            duck.execute("ROLLBACK")
        except Exception:
            pass
        raise
    finally:
        duck.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report
