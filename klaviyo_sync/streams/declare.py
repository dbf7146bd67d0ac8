"""A stream, declared once: ``Declaration`` says everything the rest of the tool needs to know
about one ``sync-*`` command, and every place that used to repeat it reads it from here.

- the API: the endpoint and its query (``stream``, an engine ``Stream``), the ``paths`` it
  requests, the ``scope`` a key needs (the 403 message names it) and the rate ``tier``;
- the tables: each column's name, SQL type and description (``describe`` and
  ``datasette-metadata`` read them), the key; ``TableSpec.create`` builds a new table from it
  in a migration;
- the command: its name and help (a simple stream's Typer command is generated from the
  declaration, see commands/declared.py; special engines such as events keep their own
  command and still declare the rest);
- ``sync-all``: whether and where it runs (``sync_all``, an order) and whether it is ``core``
  (a missing scope fails sync-all, exit 4) or optional (a 403 makes the step ``skipped``).

Every module of ``klaviyo_sync/streams/`` is imported by ``klaviyo_sync.streams.declarations()``,
so a new declaration needs no import anywhere else; tests/test_declarations.py fails when a
declared stream lacks a rate tier, a column description, a fake route or a README section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlite_utils import Database

from .. import ratelimit
from ..transform import flag  # noqa: F401 - the 0/1 helper, for declarations
from .engine import Stream, SyncResult, Table, remove_unseen, run_stream

# The API key scopes, written once (Klaviyo's names).
ACCOUNTS_READ = "accounts:read"
CAMPAIGNS_READ = "campaigns:read"
CATALOGS_READ = "catalogs:read"
COUPONS_READ = "coupons:read"
COUPON_CODES_READ = "coupon-codes:read"
EVENTS_READ = "events:read"
FLOWS_READ = "flows:read"
FORMS_READ = "forms:read"
IMAGES_READ = "images:read"
LISTS_READ = "lists:read"
METRICS_READ = "metrics:read"
PROFILES_READ = "profiles:read"
PUSH_TOKENS_READ = "push-tokens:read"
REVIEWS_READ = "reviews:read"
SEGMENTS_READ = "segments:read"
TAGS_READ = "tags:read"
TEMPLATES_READ = "templates:read"

TEXT, INTEGER, REAL = "TEXT", "INTEGER", "REAL"
_PY_TYPES = {TEXT: str, INTEGER: int, REAL: float}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # TEXT, INTEGER or REAL
    description: str

    def __post_init__(self) -> None:
        if self.type not in _PY_TYPES:
            raise ValueError(f"column {self.name}: type must be one of {', '.join(_PY_TYPES)}")


@dataclass(frozen=True)
class TableSpec:
    """A table a stream owns: its description, columns (in row order) and key."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ("id",)
    newer: str | None = None
    tombstone: str | None = None

    @property
    def table(self) -> Table:
        """The engine's ``Table`` (what rows are upserted into)."""
        return Table(self.name, tuple(c.name for c in self.columns), key=self.key, newer=self.newer,
                     tombstone=self.tombstone)

    def descriptions(self) -> dict[str, str]:
        return {c.name: c.description for c in self.columns}

    def create(self, db: Database) -> None:
        """Create the table in a migration (a migration stays history: call this from the
        migration that first adds the table, never change the declaration's columns without
        a new migration that adds them)."""
        db[self.name].create({c.name: _PY_TYPES[c.type] for c in self.columns},
                             pk=self.key[0] if len(self.key) == 1 else self.key)


@dataclass(frozen=True)
class Declaration:
    """One ``sync-*`` command and everything about it. A *simple* stream gives ``stream`` and
    no ``run``: its command and ``sync-all`` step are generated (a full pass each run, and the
    rows the account no longer has are removed when ``removals``). A special engine gives
    ``run`` (the ``sync-all`` step: ``run(client, db, result)``) and keeps its own command."""

    command: str  # e.g. "sync-images"
    help: str  # a generated command's --help (first line: its summary); "" for a special engine,
    # whose command module keeps its help in the command's docstring
    scope: str  # the key's scope every request needs; named in the 403 message
    tier: str  # the rate tier: a bucket of ratelimit.DEFAULT_LIMITS, or XL/L/M/S/XS for a new path
    paths: tuple[str, ...] = ()  # every API path it requests ("{id}" for a path parameter); default: stream.path
    tables: tuple[TableSpec, ...] = ()  # the tables it owns (describe reads their descriptions)
    stream: Stream | None = None
    run: Callable | None = None
    sync_all: int | None = None  # its position in sync-all (None: not a step)
    core: bool = False  # core: a missing scope fails sync-all (exit 4); optional: the step is skipped
    arguments: Mapping = field(default_factory=dict)  # what sync_runs records for the sync-all step
    removals: bool = True  # a simple stream's full pass removes rows gone from the account
    example: str = ""  # an example command line for --help (default: the command alone)

    def __post_init__(self) -> None:
        if self.stream is None and self.run is None:
            raise ValueError(f"{self.command}: declare stream= (a simple stream) or run= (a special engine)")
        if not self.command.startswith("sync-"):
            raise ValueError(f"{self.command}: a stream's command is named sync-...")
        if not self.paths and self.stream is not None:
            object.__setattr__(self, "paths", (self.stream.path,))
        if not self.paths:
            raise ValueError(f"{self.command}: declare the paths it requests")
        if self.tier in ratelimit.TIERS:
            ratelimit.declare_bucket(self.bucket, self.paths, self.tier)

    @property
    def bucket(self) -> str:
        """The rate-limit bucket of its first path (--rate-limit BUCKET=S/M)."""
        return self.command[len("sync-"):] if self.tier in ratelimit.TIERS else self.tier

    @property
    def simple(self) -> bool:
        """Its command is generated from the declaration."""
        return self.run is None

    def step(self, client, db: Database, result: SyncResult) -> None:
        """What sync-all (and a generated command) runs."""
        if self.run is not None:
            self.run(client, db, result)
        else:
            sync_declared(client, db, self, result=result)

    def forbidden(self) -> str:
        """The one line a 403 becomes."""
        return f"{self.command}: permission denied: the API key lacks the {self.scope} scope"


def sync_declared(client, db: Database, decl: Declaration, *, full: bool = False,
                  result: SyncResult | None = None) -> SyncResult:
    """Run a simple stream: to its last page, and (a pass over everything, with ``removals``)
    remove the rows of its table whose key the pass did not see, in one transaction after the
    last page."""
    stream = decl.stream
    result = SyncResult.begin(result, stream.tables())
    table = stream.table
    removed = f"{table.name}_removed"
    run_stream(client, db, stream, result, full=full, on_missing=remove_unseen(table) if decl.removals else None)
    if decl.removals:
        result.extra[removed] = result.extra.pop(removed, 0)
    result.extra[table.name] = db.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
    return result


_REGISTRY: dict[str, Declaration] = {}


def declare(decl: Declaration) -> Declaration:
    """Register a declaration (at import of its module); a command declared twice is an error."""
    old = _REGISTRY.get(decl.command)
    if old is not None and old is not decl:
        raise ValueError(f"{decl.command} is declared twice")
    _REGISTRY[decl.command] = decl
    return decl


def registered() -> list[Declaration]:
    return list(_REGISTRY.values())
