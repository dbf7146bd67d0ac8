"""What a sync prints at its end: the summary (a JSON line or one human line), and the
progress bar on a terminal."""

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import typer

from .. import db as store
from .. import errors, output, queries
from ..client import KlaviyoClient
from ..errors import UsageError
from ..streams.engine import SyncResult
from ..timeutil import humanize_age, parse_datetime, utcnow
from .settings import Settings

PROG = "klaviyo-sync"


def _summary(command: str, run: dict) -> dict:
    result: SyncResult | None = run.get("result")
    client: KlaviyoClient | None = run.get("client")
    summary = {"command": command, "status": "partial" if result and result.partial else "ok"}
    if result is not None:
        if result.window:
            summary["window"] = result.window.as_dict()
        summary["rows"] = result.rows
        summary["pages"] = result.pages
    if client is not None:
        summary.update(client.stats.as_dict())
    summary["seconds"] = round(time.monotonic() - run["started"], 3)
    if result is not None:
        summary.update({k: v for k, v in result.extra.items() if k not in summary})
    return summary


SUMMARY_FORMATS = ("auto", "json", "text")


def _report(settings: Settings, run: dict, fmt: str = "auto") -> None:
    """The end-of-run report on stdout: a short human summary on a terminal, the JSON line when
    piped (cron, `| jq`) or with --format json; nothing with -q."""
    summary = run["summary"]
    print_summary(settings, summary, fmt)
    if summary["status"] == "partial":
        print(f"{PROG}: warning: {run['result'].partial}", file=sys.stderr)
        raise typer.Exit(errors.PARTIAL)


def local_or_api(settings: Settings, refresh: bool, read: Callable[[bool], tuple], fetch: Callable[[], dict],
                 noun: str, note: Callable[[list], str] = lambda rows: "") -> tuple[list, object, str | None]:
    """The body the range commands share (campaigns, flows, forms): the rows of a range from the
    database when it covers the range, else (and with --refresh) from a sync first. ``read(warn)``
    gives (covered, rows, context), ``fetch()`` runs the sync and returns its run, ``note(rows)``
    adds to the local line (e.g. the sync's age). Says on stderr where the rows came from; returns
    (rows, context, why the sync was partial or None): write the rows, then ``exit_if_partial``."""
    covered, rows, context = False, [], None
    if not refresh and settings.db.exists():
        covered, rows, context = read(True)
        if covered and not settings.quiet:
            print(f"{len(rows)} {noun} from the local database{note(rows)}; --refresh fetches from the API",
                  file=sys.stderr)
    partial = None
    if refresh or not covered:
        partial = fetch()["result"].partial
        _, rows, context = read(False)
        if not settings.quiet:
            print(f"{len(rows)} {noun} fetched from the API", file=sys.stderr)
    return rows, context, partial


def sync_age(settings: Settings, command: str) -> str:
    """How long ago ``command`` last finished on the database: "synced 5m ago", or "sync time
    unknown"."""
    database = store.open_db(settings.db)
    try:
        at = queries.last_run_finished(database, command)
    finally:
        database.close()
    return f"synced {humanize_age((utcnow() - parse_datetime(at)).total_seconds())} ago" if at else "sync time unknown"


def exit_if_partial(partial: str | None) -> None:
    """After the rows are written: a partial sync behind them is a warning and exit 3."""
    if partial:
        print(f"{PROG}: warning: {partial}", file=sys.stderr)
        raise typer.Exit(errors.PARTIAL)


def print_summary(settings: Settings, summary: dict, fmt: str = "auto") -> None:
    """One run's summary on stdout: human on a terminal, a JSON line when piped or asked."""
    if settings.quiet:
        return
    if output.resolve_format(fmt) == "json":
        output.write_json_line(summary)
    else:
        print(human_summary(summary), flush=True)


def check_format(fmt: str, allowed=output.FORMATS) -> str:
    """Exit 2 with one line unless ``--format`` is one of ``allowed``."""
    if fmt not in allowed:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(allowed)}")
    return fmt


def _check_summary_format(fmt: str) -> None:
    check_format(fmt, SUMMARY_FORMATS)


def human_summary(summary: dict) -> str:
    """``sync-events ok: 249 events, 154 profiles, 0 metrics written; 8 pages, 8 requests in
    0.02 s (11,318 events/s)`` and, when there were any, retries and rate-limit waits; a
    skipped sync-all step: ``sync-images skipped: the API key lacks the images:read scope``."""
    if summary.get("status") == "skipped":
        return f"{summary['command']} skipped: {summary.get('reason', '')}"
    rows = summary.get("rows") or {}
    seconds = summary.get("seconds") or 0.0
    written = ", ".join(f"{n:,} {table}" for table, n in rows.items()) or "nothing"
    # The rate of what was received (events_seen, metrics_seen ...), else of rows written.
    seen = [(k[: -len("_seen")], v) for k, v in summary.items() if k.endswith("_seen") and isinstance(v, int)]
    unit, received = seen[0] if seen else ("rows", sum(rows.values()))
    rate = f"{received / seconds:,.0f} {unit}/s" if seconds > 0 else f"- {unit}/s"
    line = (f"{summary['command']} {summary['status']}: {written} written; "
            f"{summary.get('pages', 0):,} pages, {summary.get('requests', 0):,} requests in "
            f"{seconds:.2f} s ({rate})")
    extras = [f"{n:,} {k[: -len('_removed')]} removed" for k, n in summary.items()
              if k.endswith("_removed") and isinstance(n, int) and n]
    if summary.get("retries"):
        extras.append(f"{summary['retries']} retries")
    if summary.get("rate_limited"):
        extras.append(f"{summary['rate_limited']} rate-limited, {summary.get('rate_limit_wait_s', 0):.1f} s waited")
    if summary.get("window"):
        extras.append(f"window {summary['window']['start']} .. {summary['window']['end']}")
    if summary.get("note"):  # e.g. sync-reviews: Klaviyo Reviews is not available on this account
        extras.append(summary["note"])
    return line + ("; " + "; ".join(extras) if extras else "")



@contextmanager
def _progress(settings: Settings):
    """A rich progress bar on stderr, only on a terminal and without -q."""
    if settings.quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("events"), BarColumn(), TextColumn("{task.percentage:>3.0f}% of window"),
        TextColumn("{task.fields[events]:,} events, {task.fields[pages]} pages, {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=False,
    )
    with progress:
        task = progress.add_task("events", total=1.0, events=0, pages=0, rate=0.0)

        def update(info: dict) -> None:
            rate = info["events"] / info["elapsed"] if info["elapsed"] > 0 else 0.0
            progress.update(task, completed=info["covered"], events=info["events"], pages=info["pages"], rate=rate)

        yield update
