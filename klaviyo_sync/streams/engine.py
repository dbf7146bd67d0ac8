"""The stream engine: a stream is a declaration, this module runs it.

A ``Stream`` says where its records come from (endpoint, fixed params and filters, page size,
partitions such as one pass per channel), how they are kept (a ``Table`` and a row function, plus
tables for included resources) and how it is incremental (a ``Cursor``: the field, the operator
the endpoint accepts for it, how far to step back). ``run_stream`` does the rest, the same way
for every stream:

- pages are read by following ``links.next`` to the last page;
- each page's rows and the stream's high-water mark commit in one transaction, so a killed run
  resumes where it stopped and never skips what it did not store;
- a full pass (first run, ``--full``) can also learn which stored rows the account no longer
  has: the keys it saw go to a temporary table and ``on_missing`` runs once, after the last page,
  in one transaction.

The parallel events backfill and the report-quota engines are separate (streams/events.py and
streams/campaigns.py): they earn their own code with measurements and quota rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient, Page
from ..timeutil import Window, iso, normalize_iso, parse_datetime, utcnow
from .sliced import pages_of


@dataclass
class SyncResult:
    """What a run did: rows written per table, pages read, and anything else worth reporting."""

    rows: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    window: Window | None = None
    extra: dict = field(default_factory=dict)
    partial: str | None = None  # set when the run stored its data but something is missing

    def add_rows(self, table: str, n: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + n

    @classmethod
    def begin(cls, result: "SyncResult | None", tables: Sequence[str], window: Window | None = None) -> "SyncResult":
        """The caller's result object (so a run that fails still reports what it committed),
        or a new one."""
        result = result if result is not None else cls()
        for table in tables:
            result.rows.setdefault(table, 0)
        if window is not None:
            result.window = window
        return result


@dataclass(frozen=True)
class Table:
    """A table rows are upserted into. ``newer`` names a column (ISO text) that must not go
    backwards: a row is never replaced by an older version of itself. ``tombstone`` names a
    column that, once set (e.g. ``deleted_at``), freezes the row: no upsert rewrites it, unless
    the table ``restores``: then a row written again (the record reappeared in the account's own
    listing) clears the tombstone and gets its data back."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...] = ("id",)
    newer: str | None = None
    immutable: bool = False
    tombstone: str | None = None
    restores: bool = False

    @property
    def upsert(self) -> str:
        return _upsert_sql(self)

    def write(self, db: Database, rows: Sequence[Sequence]) -> int:
        """Upsert rows; return how many were inserted or changed."""
        if not rows:
            return 0
        return store.write_rows(db, self.upsert, rows)


_SQL_CACHE: dict[Table, str] = {}


def _upsert_sql(table: Table) -> str:
    sql = _SQL_CACHE.get(table)
    if sql is None:
        sql = store.upsert_sql(table.name, table.columns, table.key, immutable=table.immutable)
        if " WHERE " in sql:
            head, differs = sql.split(" WHERE ", 1)
            guards = []
            if table.newer:
                # NULL in the stored row (e.g. a profile first seen without `updated`) never blocks.
                t, n = store.quote(table.name), store.quote(table.newer)
                guards.append(f"({t}.{n} IS NULL OR excluded.{n} >= {t}.{n})")
            if table.tombstone and table.restores:
                tomb = store.quote(table.tombstone)
                head += f", {tomb} = NULL"
                differs += f" OR {store.quote(table.name)}.{tomb} IS NOT NULL"
            elif table.tombstone:
                guards.append(f"{store.quote(table.name)}.{store.quote(table.tombstone)} IS NULL")
            if guards:
                sql = f"{head} WHERE {' AND '.join(guards)} AND ({differs})"
        _SQL_CACHE[table] = sql
    return sql


@dataclass(frozen=True)
class Cursor:
    """Incremental reads: ``op(field, mark - lookback)`` with results sorted ascending on field.

    The mark is the largest ``field`` value on pages already committed. Stepping back covers
    records sharing the mark's second (``greater-than`` alone would skip them); rows are
    upserted by key, so the overlap never duplicates anything."""

    field: str
    op: str = "greater-than"
    lookback: timedelta = timedelta(seconds=1)


@dataclass(frozen=True)
class Included:
    """How to keep one type of resource from a page's ``included`` (or from ``data`` itself,
    with ``from_data``: e.g. a list's members are profiles, kept in ``profiles`` as well as in
    ``list_members``)."""

    type: str
    table: Table
    row: Callable[[dict], tuple]
    from_data: bool = False


@dataclass(frozen=True)
class Stream:
    """One kind of record, declared. See the module docstring."""

    name: str
    path: str  # may hold "{parent}" for a child stream, e.g. "/api/lists/{parent}/profiles"
    table: Table
    scope: str = ""  # the API key scope it needs (a declared stream's is its Declaration's)
    row: Callable[..., tuple] | None = None  # (resource) -> row, or (resource, parent) for a child stream
    type: str | None = None  # keep only data[] items of this type
    params: Mapping[str, str] = field(default_factory=dict)
    filters: tuple[str, ...] = ()
    partitions: tuple[tuple[str, ...], ...] = ((),)  # extra filter conditions, one pass each
    page_size: int | None = None
    cursor: Cursor | None = None
    sort: str | None = None  # default: the cursor field, ascending
    included: tuple[Included, ...] = ()
    rows: Callable[[Page, tuple[str, ...]], list[tuple[Table, list]]] | None = None  # a custom page split

    def __post_init__(self) -> None:
        if (self.row is None) == (self.rows is None):
            raise ValueError(f"stream {self.name}: declare either row= or rows=")

    def mark_key(self, parent: str | None = None) -> str:
        return f"{self.name}.mark" if parent is None else f"{self.name}.mark:{parent}"

    def tables(self) -> list[str]:
        return list(dict.fromkeys([*(i.table.name for i in self.included), self.table.name]))

    def query(self, partition: tuple[str, ...], since: str | None) -> dict:
        params = dict(self.params)
        conditions = [*self.filters, *partition]
        if self.cursor and since:
            conditions.append(f"{self.cursor.op}({self.cursor.field},{since})")
        if conditions:
            params["filter"] = conditions[0] if len(conditions) == 1 else f"and({','.join(conditions)})"
        sort = self.sort or (self.cursor.field if self.cursor else None)
        if sort:
            params["sort"] = sort
        if self.page_size:
            params["page[size]"] = str(self.page_size)
        return params

    def page_rows(self, page: Page, partition: tuple[str, ...], parent: str | None) -> list[tuple[Table, list]]:
        if self.rows is not None:
            return self.rows(page, partition)
        out: list[tuple[Table, list]] = []
        for inc in self.included:
            source = page.data if inc.from_data else page.included
            out.append((inc.table, [inc.row(r) for r in source if r.get("type") == inc.type]))
        data = [r for r in page.data if self.type is None or r.get("type") == self.type]
        rows = [self.row(r) for r in data] if parent is None else [self.row(r, parent) for r in data]
        out.append((self.table, rows))
        return out

    def cursor_value(self, page: Page) -> str | None:
        if not self.cursor:
            return None
        values = [normalize_iso((r.get("attributes") or {}).get(self.cursor.field)) for r in page.data]
        return max((v for v in values if v), default=None)


def seen_table(table: Table) -> str:
    """The temporary table that holds the keys a full pass saw."""
    return f"temp.seen_{table.name}"


def related(resource: dict, name: str) -> list[dict]:
    """The resource identifiers (``{"type", "id"}``) of a resource's relationship ``name`` as a
    list: a to-many's, a to-one's only one, none when the page did not include it. This is how
    a page's ``included`` resources (or another listing's) are tied to the resource naming them."""
    data = ((resource.get("relationships") or {}).get(name) or {}).get("data")
    if isinstance(data, dict):
        data = [data]
    return [d for d in data if isinstance(d, dict) and d.get("id")] if isinstance(data, list) else []


def remove_unseen(table: Table) -> Callable[[Database, str], int]:
    """``run_stream``'s ``on_missing`` for a pass over everything: delete the rows of ``table``
    whose key the pass did not see (the keys it saw are in the temporary table ``seen``)."""
    def remove(db: Database, seen: str) -> int:
        key = ", ".join(store.quote(c) for c in table.key)
        return db.execute(f"DELETE FROM {store.quote(table.name)} WHERE ({key}) NOT IN (SELECT {key} FROM {seen})"
                          ).rowcount
    return remove


def delete_unseen(db: Database, table: Table, seen: set[tuple]) -> int:
    """The same for a pass read without ``run_stream``: delete the rows of ``table`` whose key (a
    tuple in ``table.key`` order) is not in ``seen``. Call it in the transaction that writes the
    pass's last rows; returns how many rows it deleted."""
    key = ", ".join(store.quote(c) for c in table.key)
    gone = sorted(set(db.execute(f"SELECT {key} FROM {store.quote(table.name)}").fetchall()) - seen)
    where = " AND ".join(f"{store.quote(c)} = ?" for c in table.key)
    db.conn.executemany(f"DELETE FROM {store.quote(table.name)} WHERE {where}", gone)
    return len(gone)


def run_stream(
    client: KlaviyoClient,
    db: Database,
    stream: Stream,
    result: SyncResult,
    *,
    full: bool = False,
    parent: str | None = None,
    on_missing: Callable[[Database, str], int] | None = None,
    on_page: Callable[[SyncResult], None] | None = None,
    workers: int = 1,
) -> None:
    """Run one stream to its last page: incremental from the stored mark, or everything when
    ``full``, on a first run, or for a stream with no cursor. With ``workers`` > 1 a read longer
    than one page goes on in parallel ranges of the cursor field (streams/sliced.py); the mark
    then moves only below what every range has committed.

    With ``on_missing``, a pass over everything keeps the keys it saw in a temporary table
    (``seen_table(stream.table)``, the table's key columns) and ``on_missing(db, seen)`` runs
    after the last page in one transaction; it returns how many rows it changed."""
    key = stream.mark_key(parent)
    mark = None if (full or not stream.cursor) else store.get_state(db, key)
    since = iso(parse_datetime(mark) - stream.cursor.lookback) if mark else None
    everything = since is None
    seen = seen_table(stream.table)
    key_at = [stream.table.columns.index(c) for c in stream.table.key]
    track = on_missing is not None and everything
    if track:
        cols = ", ".join(store.quote(c) for c in stream.table.key)
        db.execute(f"DROP TABLE IF EXISTS {seen}")
        db.execute(f"CREATE TEMP TABLE {seen.split('.')[1]} ({cols}, PRIMARY KEY ({cols}))")
        insert_seen = f"INSERT OR IGNORE INTO {seen} VALUES ({', '.join('?' for _ in key_at)})"
    path = stream.path.format(parent=parent) if parent is not None else stream.path
    for table in stream.tables():
        result.rows.setdefault(table, 0)
    # With several passes (partitions) the mark may only move once all of them are done.
    one_pass = len(stream.partitions) == 1
    newest_seen = mark
    for partition in stream.partitions:
        for page, safe in pages_of(client, path, stream, partition, since, workers if one_pass else 1):
            if page is None:  # a parallel range finished: only the mark moves
                if safe and (mark is None or safe > mark):
                    with db.atomic():
                        store.set_state(db, key, safe)
                    mark = safe
                continue
            batches = stream.page_rows(page, partition, parent)
            newest = stream.cursor_value(page)
            if newest and (newest_seen is None or newest > newest_seen):
                newest_seen = newest
            commit_mark = newest_seen if safe is None else safe
            with db.atomic():
                for table, rows in batches:
                    result.add_rows(table.name, table.write(db, rows))
                if track:
                    own = next((rows for table, rows in batches if table == stream.table), [])
                    db.conn.executemany(insert_seen, [tuple(r[i] for i in key_at) for r in own])
                if one_pass and commit_mark and commit_mark != mark and (safe is None or mark is None or safe > mark):
                    store.set_state(db, key, commit_mark)
                    mark = commit_mark
            result.pages += 1
            if on_page:
                on_page(result)
    with db.atomic():
        if track:
            changed = on_missing(db, seen)
            if changed:
                name = f"{stream.table.name}_removed"
                result.extra[name] = result.extra.get(name, 0) + changed
        if newest_seen and newest_seen != mark:
            store.set_state(db, key, newest_seen)
        if everything and (stream.cursor or track):
            store.set_state(db, full_pass_key(stream, parent), iso(utcnow()))
    if track:
        db.execute(f"DROP TABLE IF EXISTS {seen}")


def full_pass_key(stream: Stream, parent: str | None = None) -> str:
    """The sync_state key holding when the last complete pass over everything finished."""
    return f"{stream.name}.full_pass_at" + (f":{parent}" if parent is not None else "")
