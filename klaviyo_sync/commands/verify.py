"""verify: is the copy complete? Per metric and day, the local count against Klaviyo's."""

import sqlite3
import sys
import time
from datetime import timedelta
from urllib.parse import quote
from typing import Annotated, Optional

import typer
from sqlite_utils import Database

from .. import db as store
from .. import errors, output
from ..errors import UsageError
from .. import verify as v
from ..streams.events import sync_events
from ..streams.metrics import resolve_metrics, sync_metrics
from ..timeutil import RANGE_FORMS, iso, parse_datetime, utcnow
from .base import PROG, Settings, WaitOpt, app, check_format, common, locked_db, run_record

TABLE = [("metric", "Metric", "text"), ("day", "Day", "text"), ("local", "Local", "int"),
         ("klaviyo", "Klaviyo", "int"), ("difference", "Difference", "int"), ("status", "Status", "text")]
REPAIR_TABLE = [*TABLE[:2], ("local_before", "Local before", "int"), *TABLE[2:], ("repaired", "Re-synced", "bool")]


def _metrics(client, db, wanted: list[str] | None) -> list[tuple[str, str]]:
    if db.execute("SELECT count(*) FROM metrics").fetchone()[0] == 0:
        sync_metrics(client, db)  # a database that never synced metrics: learn them first
    ids = resolve_metrics(client, db, wanted) if wanted else None
    rows = db.execute("SELECT id, coalesce(name, id) FROM metrics ORDER BY name, id").fetchall()
    return [(i, n) for i, n in rows if ids is None or i in ids]


def _validate_metrics(settings: Settings, client, wanted: list[str] | None) -> None:
    """An unknown --metric exits 2 before the lock is taken or a run recorded: looked up in the
    database (read-only), else in the account's metric list read into memory."""
    if not wanted:
        return
    path = settings.db
    if path.is_file() and path.stat().st_size:
        conn = None
        try:
            conn = sqlite3.connect("file:" + quote(str(path.resolve())) + "?mode=ro", uri=True)
            resolve_metrics(None, Database(conn), wanted)
            return
        except (UsageError, sqlite3.Error):
            pass  # not all known locally: ask the account
        finally:
            if conn is not None:
                conn.close()
    memory = store.open_db(":memory:")
    try:
        sync_metrics(client, memory)
        resolve_metrics(None, memory, wanted)
    finally:
        memory.close()


def _shown(rows: list[dict], show_all: bool, repaired: bool) -> list[dict]:
    if show_all:
        return rows
    return [r for r in rows
            if r["status"] in (v.MISSING, v.EXTRA)
            or (r["status"] == v.UNSETTLED and r["difference"])
            or (repaired and r.get("repaired"))]


def _summary_line(plan: v.Plan, out: v.Outcome, before: list[dict] | None) -> str:
    rows = out.rows
    count = {s: sum(1 for r in rows if r["status"] == s) for s in (v.OK, v.MISSING, v.EXTRA, v.UNSETTLED)}
    missing = sum(-r["difference"] for r in rows if r["status"] == v.MISSING)
    extra = sum(r["difference"] for r in rows if r["status"] == v.EXTRA)
    differ = count[v.MISSING] + count[v.EXTRA]
    line = (f"{PROG}: verify: {len(plan.metrics)} metrics x {len(plan.days)} days {plan.days[0]}..{plan.days[-1]} "
            f"({plan.zone.key}): {count[v.OK]} ok, {differ} differ ({missing} events missing locally, "
            f"{extra} extra locally), {count[v.UNSETTLED]} unsettled, {len(out.unverifiable)} "
            f"unverifiable; {out.requests} requests")
    if before is not None:
        fixed = sum(1 for b, r in zip(before, rows) if b in (v.MISSING, v.EXTRA) and r["status"] == v.OK)
        line += (f"; repair: {len(out.repaired_hours)} windows re-synced "
                 f"({sum(int((b - a).total_seconds() // 3600) for a, b, _ in out.repaired_hours)} hours), "
                 f"{fixed} of {sum(1 for b in before if b in (v.MISSING, v.EXTRA))} differing days fixed, "
                 f"{differ} still differ")
    return line


def _unverifiable_lines(plan: v.Plan, out: v.Outcome) -> list[str]:
    """Which refused metrics were not asked this time, and which were asked again (and how it went)."""
    names = dict(plan.metrics)

    def listed(ids) -> str:
        return ", ".join(names.get(m, m) for m in sorted(ids))

    lines = []
    if out.not_asked:
        after = (min(parse_datetime(t) for t in out.not_asked.values())
                 + timedelta(days=v.RETRY_UNVERIFIABLE_DAYS)).date()
        lines.append(f"{PROG}: verify: not asked again ({len(out.not_asked)}, refused within the last "
                     f"{v.RETRY_UNVERIFIABLE_DAYS} days; asked again from {after}, or with --retry-unverifiable): "
                     f"{listed(out.not_asked)}")
    if out.asked_again:
        still = [m for m in out.asked_again if m in out.unverifiable]
        lines.append(f"{PROG}: verify: asked again ({len(out.asked_again)}, refused before, last on "
                     f"{max(out.asked_again.values())[:10]}): {len(still)} still refused, "
                     f"{len(out.asked_again) - len(still)} now checked: {listed(out.asked_again)}")
    return lines


@app.command("verify")
@common
def verify_cmd(
    settings: Settings,
    range_: Annotated[str, typer.Option("--range", metavar="RANGE", help=f"Days to check: {RANGE_FORMS}; "
                                        "absolute dates are days in --timezone.")] = "30d",
    tz: Annotated[str, typer.Option("--timezone", metavar="ZONE", help="IANA zone the days are counted in.")] = "UTC",
    settle: Annotated[int, typer.Option("--settle", min=0, metavar="DAYS",
                                        help="The most recent DAYS days are reported unsettled and never fail.")] = 2,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", metavar="NAME_OR_ID",
                                                        help="Only this metric (repeatable; default: every metric).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every metric and day, not only those that differ.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="auto, table, json, jsonl or csv.")] = "auto",
    do_repair: Annotated[bool, typer.Option("--repair", help="Re-sync the hours that differ, then check those days again.")] = False,
    retry_unverifiable: Annotated[bool, typer.Option(
        "--retry-unverifiable", help=f"Ask Klaviyo again about metrics it refused to aggregate (custom ones) "
        f"within the last {v.RETRY_UNVERIFIABLE_DAYS} days; they are asked again after that anyway.")] = False,
    wait: WaitOpt = 0.0,
) -> None:
    """Compare local event counts per metric and day with Klaviyo's; exit 9 if a settled day differs.

    Example: klaviyo-sync verify --range 7d --repair
    """
    check_format(fmt)
    zone = v.zone_for(tz)
    now = utcnow()
    days, unsettled_from = v.plan_days(range_, zone, now, settle)
    client = settings.client()
    _validate_metrics(settings, client, metric)
    arguments = {"range": range_, "timezone": zone.key, "settle": settle, "metric": metric or [],
                 "repair": do_repair, "base_url": settings.base_url}
    started = time.monotonic()
    before = None
    # verify writes (its results, and re-synced events with --repair): it holds the sync lock.
    with locked_db(settings, wait) as db:
        out = v.Outcome()
        try:
            plan = v.Plan(zone, days, unsettled_from, _metrics(client, db, metric))
            v.plan_unverifiable(db, plan, now, retry_unverifiable, out)
            v.check(client, db, plan, outcome=out)
            if do_repair:
                before = [r["status"] for r in out.rows]

                def resync(window, metric_ids):
                    rclient = settings.client()
                    try:
                        with run_record(settings, db, "sync-events", {
                                "since": iso(window.start), "until": iso(window.end), "metric": metric_ids,
                                "repair": True, "base_url": settings.base_url}) as run:
                            run["client"] = rclient
                            sync_events(rclient, db, window, metric_ids=metric_ids, workers=1,
                                        result=run["result"], advance_mark=False)
                    finally:
                        rclient.close()

                v.repair(client, db, plan, out, resync)
        except BaseException:
            with run_record(settings, db, "verify", arguments) as run:  # records the failure, re-raises
                run["client"], run["started"] = client, started
                raise
        with run_record(settings, db, "verify", arguments) as run:
            run["client"], run["started"] = client, started
            v.save_results(db, run["id"], zone, out.rows, utcnow())
            v.remember_unverifiable(db, plan, out, now)
            differ = out.differing()
            run["result"].extra.update({
                "days": len(days), "metrics": len(plan.metrics), "days_differ": len(differ),
                "unverifiable": sorted(out.unverifiable), "unverifiable_not_asked": sorted(out.not_asked),
                "unverifiable_asked_again": sorted(out.asked_again), "repaired_windows": len(out.repaired_hours)})
    rows = [{k: r[k] for k in v.FIELDS + (v.REPAIR_FIELDS if do_repair else [])}
            for r in _shown(out.rows, show_all, do_repair)]
    kind = output.resolve_format(fmt)
    title = f"verify {days[0]}..{days[-1]} ({zone.key})"
    if kind == "table":
        display = [{**r, "status": r["status"].replace("_", " ")} for r in rows]
        output.write_rows(display, "table", REPAIR_TABLE if do_repair else TABLE, title=title)
    else:
        output.write_rows(rows, kind, TABLE, title=title)
    if not settings.quiet:
        if out.unverifiable:
            names = dict(plan.metrics)
            print(f"{PROG}: verify: unverifiable (Klaviyo refuses to aggregate them, e.g. custom metrics): "
                  f"{', '.join(names.get(m, m) for m in sorted(out.unverifiable))}", file=sys.stderr)
        for line in _unverifiable_lines(plan, out):
            print(line, file=sys.stderr)
        print(_summary_line(plan, out, before), file=sys.stderr)
    if differ:
        raise typer.Exit(errors.DIFFERS)
