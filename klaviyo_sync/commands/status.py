"""status and demo."""

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import db as store
from .. import errors, output, queries
from ..client import DEFAULT_REVISION, revision_age_warning
from ..streams.attributions import COVERED_KEY, refill_args, uncovered_events
from ..errors import UsageError
from ..streams.events import sync_events
from ..streams.audience import group_ids, sync_members
from ..timeutil import Window, floor_second, parse_duration, parse_range, utcnow
from ..verify import last_verify
from .base import (
    _STATE,
    SYNC_ALL_STEPS,
    DEFAULT_WORKERS,
    Settings,
    _parse,
    app,
    common,
    recorded_run,
    sync_commands,
)


def attribution_status(database, covered_raw: str | None) -> dict:
    """Which event windows were fetched with Klaviyo's attributions, and the stored events that
    were not (synced before attributions were kept: they look organic until re-synced)."""
    return {"covered": json.loads(covered_raw) if covered_raw else [], "missing": uncovered_events(database)}


def attribution_hint(missing: dict) -> str:
    return (f"attributions: {missing['events']:,} events from {missing['first']} to {missing['last']} were synced "
            f"before attributions were kept (they count as organic): run sync-events {refill_args(missing)}")


@app.command("status")
@common
def status_cmd(
    settings: Settings,
    fmt: Annotated[str, typer.Option("--format", help="auto, table or json.")] = "auto",
    max_age: Annotated[Optional[str], typer.Option("--max-age", help="Exit 7 if a sync command's last success is older (e.g. 3h).")] = None,
    command: Annotated[Optional[list[str]], typer.Option("--command", help="With --max-age: check only this sync command (repeatable).")] = None,
    runs: Annotated[int, typer.Option("--runs", min=0, help="How many recent runs to show.")] = 10,
) -> None:
    """Row counts, high-water marks and recent runs; --max-age for monitoring from cron."""
    if fmt not in ("auto", "table", "json"):
        raise UsageError(f"--format: {fmt!r} is not one of auto, table, json")
    age_limit = _parse(parse_duration, max_age, "--max-age") if max_age else None
    known = sync_commands()
    for name in command or []:
        if name not in known:
            raise UsageError(f"--command: {name!r} is not one of {', '.join(known)}")
    if not settings.db.exists():
        raise errors.DatabaseError(f"no database at {settings.db}: run a sync first (or pass --db)")
    database = store.open_db(settings.db)
    try:
        now = utcnow()
        report = queries.status_report(database, now, runs)
        report["last_verify"] = last_verify(database)
        report["attributions"] = attribution_status(database, report["marks"].pop(COVERED_KEY, None))
        report["events_per_day"] = queries.events_per_day(database, now.date())
    finally:
        database.close()
    _with_kept_failures(report, settings.db, runs)
    # The revision-age warning, which `-q` syncs do not print (see README, Configuration).
    warning = revision_age_warning(settings.revision)
    report["warnings"] = [warning] if warning else []
    stale = queries.stale_commands(report, age_limit, command) if age_limit else []
    if age_limit:
        report["stale"] = stale
    kind = output.resolve_format(fmt)
    if kind == "json":
        output.write_json(report)
    else:
        _status_tables(report)
    if stale:
        raise errors.StaleError(f"stale (older than {max_age}): {'; '.join(stale)}")


def _with_kept_failures(report: dict, path: Path, runs: int) -> None:
    """Runs that could not write their end into the database (a full disk, a held write lock)
    kept it in <db>.lastfail until the next run records it: show them as they ended."""
    kept = store.kept_failures(path)
    report["unrecorded_failures"] = len(kept)
    by_id = {e["run_id"]: e for e in kept if e.get("run_id") is not None}
    for row in report["runs"]:
        e = by_id.get(row["id"])
        if e and row["status"] == "running":
            row.update(status=e.get("status") or "failed", error=e.get("error"), finished_at=e.get("finished_at"))
    unstarted = [{**dict.fromkeys(("window_start", "window_end", "pages", "requests", "retries",
                                   "rate_limit_wait_s", "seconds")),
                  "id": None, "command": e["command"], "status": e.get("status") or "failed",
                  "started_at": e.get("finished_at"), "finished_at": e.get("finished_at"), "rows_written": {},
                  "error": e.get("error")}
                 for e in reversed(kept) if e.get("run_id") is None]
    report["runs"] = (unstarted + report["runs"])[:max(runs, len(unstarted))]


def _status_tables(report: dict) -> None:
    title = f"Tables (Klaviyo account {report['account']})" if report.get("account") else "Tables"
    output.write_table([{"table": k, "rows": v} for k, v in report["tables"].items()],
                       [("table", "Table", "text"), ("rows", "Rows", "int")], title)
    per_day = report.get("events_per_day")
    if per_day:
        counts = [d["events"] for d in per_day]
        print(f"Events per day {per_day[0]['day']} .. {per_day[-1]['day']} (UTC): {output.sparkline(counts)}  "
              f"busiest {max(counts):,}, {sum(counts):,} in all")
    if report["marks"]:
        output.write_table([{"key": k, "value": v} for k, v in report["marks"].items()],
                           [("key", "Mark", "text"), ("value", "Synced up to", "text")], "High-water marks")
    lv = report.get("last_verify")
    if lv:
        output.write_table([lv], [("checked_at", "Checked", "text"), ("first_day", "From", "text"),
                                  ("last_day", "To", "text"), ("timezone", "Zone", "text"),
                                  ("metrics", "Metrics", "int"), ("days_differ", "Days differing", "int"),
                                  ("events_missing_locally", "Missing locally", "int"),
                                  ("events_extra_locally", "Extra locally", "int"),
                                  ("unverifiable_metrics", "Unverifiable", "int")], "Last verify")
    for warning in report.get("warnings", []):
        print(warning)
    missing = (report.get("attributions") or {}).get("missing")
    if missing:
        print(attribution_hint(missing))
    if report.get("unrecorded_failures"):
        print(f"{report['unrecorded_failures']} run failure(s) could not be written into the database: shown "
              "from <db>.lastfail below; the next sync records them")
    runs = [{**r, "rows_written": ", ".join(f"{k} {v}" for k, v in r["rows_written"].items())} for r in report["runs"]]
    output.write_table(runs, [("id", "Run", "int"), ("command", "Command", "text"), ("status", "Status", "text"),
                              ("started_at", "Started", "text"), ("seconds", "Seconds", "seconds"),
                              ("rows_written", "Rows written", "text"), ("requests", "Requests", "int"),
                              ("retries", "Retries", "int"), ("error", "Error", "text")], "Recent runs")


@app.command("datasette-metadata")
@common
def datasette_metadata_cmd(
    settings: Settings,
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Datasette's metadata.json (table and column descriptions, canned queries, a dashboard for
    datasette-dashboards), generated from the database's schema.

    Example: klaviyo-sync datasette-metadata -o metadata.json && datasette klaviyo.db -m metadata.json
    """
    from ..describe import datasette_metadata

    if not settings.db.exists():
        raise errors.DatabaseError(f"no database at {settings.db}: run a sync first (or pass --db)")
    database = store.open_db(settings.db)
    try:
        metadata = datasette_metadata(database, settings.db.stem)
    finally:
        database.close()
    if out is None:
        output.write_json(metadata)
        return
    try:
        with open(out, "w", encoding="utf-8") as fh:
            output.write_json(metadata, fh)
    except OSError as exc:
        raise UsageError(f"--output: cannot write {out}: {exc.strerror}") from None


@app.command("demo")
def demo_cmd(
    db: Annotated[Path, typer.Option("--db", help="Database file for the demo.")] = Path("demo.db"),
    events: Annotated[int, typer.Option("--events", min=1, max=2_000_000, help="Synthetic events to serve.")] = 20_000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = DEFAULT_WORKERS,
) -> None:
    """Run every sync against a fake Klaviyo API on 127.0.0.1 (synthetic data, no account or network needed)."""
    from ..fake import FAKE_API_KEY, FakeKlaviyo

    with FakeKlaviyo(n_events=events, span_hours=24 * 14) as fake:
        print(f"klaviyo-sync demo: SYNTHETIC data from a fake Klaviyo API at {fake.base_url} "
              "(nothing is sent to Klaviyo)")
        settings = Settings(db=db, api_key=FAKE_API_KEY, base_url=fake.base_url, revision=DEFAULT_REVISION,
                            quiet=False, verbose=False)
        _STATE["api_key"] = FAKE_API_KEY
        now = floor_second(utcnow())
        for step in SYNC_ALL_STEPS:  # what `sync-all` runs, with a week of events
            run_step, arguments = step.run, step.arguments
            if step.command == "sync-events":
                arguments = {"hours": 168, "workers": workers}

                def run_step(c, d, r):
                    sync_events(c, d, Window(now - timedelta(days=7), now, "last 7 days"), workers=workers, result=r)
            elif step.command in ("sync-lists", "sync-segments"):
                # A newcomer should see memberships too: every list's and segment's members.
                group = step.command[len("sync-"):-1]
                arguments = {**arguments, "members": ["all"]}

                def run_step(c, d, r, group=group, inner=step.run):
                    inner(c, d, r)
                    for gid in group_ids(d, group):
                        sync_members(c, d, group, gid, result=r)
            client = settings.client(pool_size=max(16, workers * 2))
            with recorded_run(settings, step.command, {**arguments, "demo": True}, 0.0) as run:
                run["client"] = client
                run_step(client, run["db"], run["result"])
            s = run["summary"]
            rows = ", ".join(f"{v:,} {k}" for k, v in s["rows"].items())
            print(f"  {step.command:<19} {rows}  ({s['pages']} pages, {s['requests']} requests, {s['seconds']:.1f} s)")
    database = store.open_db(db)
    try:
        report = queries.status_report(database, utcnow(), runs=0)
        campaigns = queries.campaigns_in_range(database, parse_range("30d"))
    finally:
        database.close()
    output.write_table([{"table": k, "rows": v} for k, v in report["tables"].items()],
                       [("table", "Table", "text"), ("rows", "Rows", "int")], f"Stored in {db}")
    output.write_rows(campaigns, "table", queries.CAMPAIGN_TABLE, title="klaviyo-sync campaigns --range 30d (synthetic)")
    print(f"Try: sqlite3 {db} 'SELECT metric, count(*) FROM event_details GROUP BY metric'")
    print(f"     klaviyo-sync flows --range 30d --db {db}")
    print(f"     klaviyo-sync attribution --range 7d --by channel --db {db}")


