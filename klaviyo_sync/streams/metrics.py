"""Metrics: every metric of the account, a full pass each run (accounts have dozens)."""

from __future__ import annotations

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient
from ..errors import UsageError
from ..transform import metric_row
from .declare import METRICS_READ, TEXT, Column, Declaration, TableSpec, declare
from .engine import Stream, SyncResult, Table, run_stream

METRIC_FIELDS = "name,created,updated,integration"
METRICS_TABLE = Table("metrics", tuple(store.METRIC_COLUMNS))

METRICS = Stream(
    name="metrics",
    path="/api/metrics",  # no page[size] and no sort: at most 200 a page
    table=METRICS_TABLE,
    row=metric_row,
    type="metric",
    scope=METRICS_READ,
    params={"fields[metric]": METRIC_FIELDS},
)


def sync_metrics(client: KlaviyoClient, db: Database, *, result: SyncResult | None = None) -> SyncResult:
    result = SyncResult.begin(result, ["metrics"])
    run_stream(client, db, METRICS, result)
    result.extra["metrics_seen"] = db.execute("SELECT count(*) FROM metrics").fetchone()[0]
    return result


METRICS_SPEC = TableSpec("metrics", "Every metric (event type) of the account, e.g. Placed Order, Opened Email.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "The metric's name, e.g. Placed Order."),
    Column("created", TEXT, "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("updated", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("integration_id", TEXT, "The integration that sends it (id)."),
    Column("integration_key", TEXT, "The integration's key, e.g. shopify."),
    Column("integration_name", TEXT, "The integration's name."),
    Column("integration_category", TEXT, "The integration's category."),
    Column("attributes", TEXT, "Every attribute as Klaviyo returned it (JSON)."),
))


SYNC_METRICS = declare(Declaration(
    command="sync-metrics", help="", scope=METRICS_READ, tier="metrics", paths=("/api/metrics",),
    tables=(METRICS_SPEC,),
    run=lambda client, db, result: sync_metrics(client, db, result=result), sync_all=10, core=True,
))


def resolve_metrics(client: KlaviyoClient | None, db: Database, names_or_ids: list[str]) -> list[str]:
    """Metric ids for names or ids, from the local table; syncs metrics once if any is unknown."""

    def lookup() -> tuple[list[str], list[str]]:
        found, missing = [], []
        for value in names_or_ids:
            row = db.execute(
                "SELECT id FROM metrics WHERE id = ? UNION ALL SELECT id FROM metrics WHERE name = ? LIMIT 2",
                [value, value],
            ).fetchall()
            ids = sorted({r[0] for r in row})
            if len(ids) == 1:
                found.append(ids[0])
            elif len(ids) > 1:
                raise UsageError(f"metric name {value!r} is ambiguous ({', '.join(ids)}): pass the id")
            else:
                missing.append(value)
        return found, missing

    found, missing = lookup()
    if missing and client is not None:
        sync_metrics(client, db)
        found, missing = lookup()
    if missing:
        raise UsageError(f"unknown metric {', '.join(repr(m) for m in missing)}: not a metric name or id in this account")
    return sorted(set(found))
