"""The command line. Commands read options, call a sync function, report, and map errors to exit codes."""

import functools
import inspect
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from . import __version__
from . import db as store
from . import errors, output, queries
from .client import DEFAULT_BASE_URL, DEFAULT_REVISION, KlaviyoClient, revision_age_warning
from .errors import KlaviyoSyncError, UsageError, redact
from .lock import SyncLock
from .ratelimit import RateLimiter, parse_limits
from .sync import CHANNELS, SyncResult, resolve_metrics, resume_window, sync_campaigns, sync_events, sync_metrics
from .timeutil import RANGE_FORMS, Window, ceil_second, floor_second, humanize_age, iso, parse_datetime, parse_duration, parse_range, utcnow

log = logging.getLogger("klaviyo_sync")
PROG = "klaviyo-sync"
DEFAULT_WORKERS = 12  # measured: see README, Performance


class Interrupted(KlaviyoSyncError):
    exit_code = errors.INTERRUPTED


class Terminated(Interrupted):
    exit_code = errors.TERMINATED


@dataclass
class Settings:
    db: Path
    api_key: str | None
    base_url: str
    revision: str
    quiet: bool
    verbose: bool
    rate_limit: str | None = None

    def client(self, **kw) -> KlaviyoClient:
        if not self.api_key:
            raise UsageError("no API key: set KLAVIYO_API_KEY (or pass --api-key)")
        warning = revision_age_warning(self.revision)
        if warning:
            print(warning, file=sys.stderr)
        try:
            limits = parse_limits(self.rate_limit) if self.rate_limit else None
        except ValueError as exc:
            raise UsageError(f"--rate-limit: {exc}") from None
        try:
            return KlaviyoClient(self.api_key, base_url=self.base_url, revision=self.revision,
                                 limiter=RateLimiter(limits), **kw)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


_STATE = {"verbose": False, "api_key": None}


class App(TyperGroup):
    """Turns every failure into one line on stderr and a documented exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        previous = signal.getsignal(signal.SIGTERM)
        if threading_main():
            # cron and systemd stop jobs with SIGTERM: record the run as failed, then exit 143.
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            rv = super().main(args=args, prog_name=prog_name or PROG, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.Exit as exc:
            code = exc.exit_code
        except getattr(click_exc, "NoArgsIsHelpError", ()) as exc:
            print(exc.format_message(), file=sys.stderr)
            code = errors.USAGE
        except click_exc.UsageError as exc:
            _fail(" ".join(exc.format_message().split()), errors.USAGE)
        except (typer.Abort, KeyboardInterrupt):
            _fail("interrupted", errors.INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as a tool killed by SIGPIPE would.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = errors.BROKEN_PIPE
        except SystemExit as exc:
            # Typer turns a broken pipe into a bare exit 1, our code for a bug: keep 141.
            if not isinstance(exc.__context__, BrokenPipeError):
                raise
            code = errors.BROKEN_PIPE
        except Exception as exc:
            if _STATE["verbose"]:
                traceback.print_exc()
            if isinstance(exc, KlaviyoSyncError):
                _fail(str(exc), exc.exit_code)
            elif isinstance(exc, sqlite3.Error):  # disk full, read-only file, corruption mid-run
                _fail(f"database error: {exc}", errors.DATABASE)
            else:  # a bug: one line unless -v
                _fail(f"unexpected error: {type(exc).__name__}: {exc} (run with -v for details)", errors.INTERNAL)
        finally:
            if threading_main():
                signal.signal(signal.SIGTERM, previous)
        sys.exit(code)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM")


def _fail(message: str, code: int) -> None:
    message = redact(message, _STATE["api_key"])
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


app = typer.Typer(
    cls=App,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Copy a Klaviyo account (metrics, events, profiles, campaigns) into one SQLite file.",
)


def _version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


# -- options every command takes, declared once -------------------------------------------------
DbOpt = Annotated[Path, typer.Option("--db", envvar="KLAVIYO_SYNC_DB", help="SQLite database file.",
                                     show_envvar=True)]
KeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="KLAVIYO_API_KEY", show_default=False,
                                               help="Klaviyo private API key (prefer the environment variable).",
                                               show_envvar=True)]
BaseUrlOpt = Annotated[str, typer.Option("--base-url", envvar="KLAVIYO_BASE_URL", help="API base URL.",
                                         show_envvar=True)]
RevisionOpt = Annotated[str, typer.Option("--revision", envvar="KLAVIYO_REVISION",
                                          help="API revision header.", show_envvar=True)]
RateLimitOpt = Annotated[Optional[str], typer.Option(
    "--rate-limit", envvar="KLAVIYO_RATE_LIMITS", metavar="ENDPOINT=S/M,...", show_envvar=True,
    help="Lower this client's request budget, e.g. events=100/1000 (per second/per minute); "
         "default: Klaviyo's published limits less 10%.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing on success.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Log requests and retries; tracebacks on errors.")]
WaitOpt = Annotated[float, typer.Option("--wait", min=0, metavar="SECONDS",
                                        help="Wait up to SECONDS for another sync to finish instead of exiting.")]

_COMMON = [
    ("db", DbOpt, Path("klaviyo.db")),
    ("api_key", KeyOpt, None),
    ("base_url", BaseUrlOpt, DEFAULT_BASE_URL),
    ("revision", RevisionOpt, DEFAULT_REVISION),
    ("quiet", QuietOpt, False),
    ("verbose", VerboseOpt, False),
    ("rate_limit", RateLimitOpt, None),
]


def common(fn):
    """Add the shared options to a command; it receives them as one ``Settings`` argument."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "settings"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
               for name, ann, default in _COMMON]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        shared = {name: kwargs.pop(name) for name, _, _ in _COMMON}
        settings = Settings(**shared)
        _STATE["verbose"] = settings.verbose
        _STATE["api_key"] = settings.api_key
        logging.basicConfig(
            level=logging.INFO if settings.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr, force=True,
        )
        return fn(settings, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {**{p.name: p.annotation for p in params}}
    return wrapper


def _parse(parser, value, option: str):
    try:
        return parser(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


# -- running a sync ------------------------------------------------------------------------------
@contextmanager
def recorded_run(settings: Settings, command: str, arguments: dict, wait: float):
    """Hold the lock, record a sync_runs row, and finish it whatever happens."""
    with SyncLock(settings.db).acquire(wait):
        database = store.open_db(settings.db)
        run_id = store.start_run(database, command, arguments)
        run = {"db": database, "started": time.monotonic(), "result": SyncResult(), "client": None}
        try:
            yield run
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
            message = redact(str(exc) or type(exc).__name__, settings.api_key)
            store.finish_run(database, run_id, status=status, summary=_summary(command, run), error=message)
            raise
        else:
            result: SyncResult = run["result"]
            summary = _summary(command, run)
            store.finish_run(database, run_id, status=summary["status"], summary=summary, error=result.partial)
            run["summary"] = summary
        finally:
            database.close()


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


def _report(settings: Settings, run: dict) -> None:
    summary = run["summary"]
    if not settings.quiet:
        output.write_json_line(summary)
    if summary["status"] == "partial":
        print(f"{PROG}: warning: {run['result'].partial}", file=sys.stderr)
        raise typer.Exit(errors.PARTIAL)


# -- commands ------------------------------------------------------------------------------------
@app.command("sync-metrics")
@common
def sync_metrics_cmd(settings: Settings, wait: WaitOpt = 0.0) -> None:
    """Sync every metric of the account into the metrics table."""
    client = settings.client()
    with recorded_run(settings, "sync-metrics", {}, wait) as run:
        run["client"] = client
        sync_metrics(client, run["db"], result=run["result"])
    _report(settings, run)


@app.command("sync-events")
@common
def sync_events_cmd(
    settings: Settings,
    hours: Annotated[Optional[float], typer.Option("--hours", help="Sync events of the last N hours.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="ISO", help="Window start (ISO-8601, UTC if no offset).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", metavar="ISO", help="Window end, exclusive (default: now).")] = None,
    overlap: Annotated[str, typer.Option("--overlap", help="With no window option: resume this long before the stored mark.")] = "1h",
    metric: Annotated[Optional[list[str]], typer.Option("--metric", metavar="NAME_OR_ID", help="Only this metric (repeatable).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=32, help="Concurrent time slices.")] = DEFAULT_WORKERS,
    wait: WaitOpt = 0.0,
) -> None:
    """Sync events (with their profiles and metrics) whose datetime lies in a window.

    Example: klaviyo-sync sync-events --hours 2
    """
    now = floor_second(utcnow())
    if hours is not None and (since is not None or until is not None):
        raise UsageError("--hours cannot be combined with --since/--until")
    if hours is not None and not hours > 0:
        raise UsageError(f"--hours must be greater than zero (got {hours:g})")
    if until is not None and since is None:
        raise UsageError("--until needs --since")
    overlap_td = _parse(parse_duration, overlap, "--overlap")
    window: Window | None = None
    if hours is not None:
        window = Window(now - timedelta(seconds=round(hours * 3600)), now, f"last {hours:g} h")
    elif since is not None:
        start = _parse(parse_datetime, since, "--since")
        end = _parse(parse_datetime, until, "--until") if until else now
        if end > now:
            end = now  # never past now: the mark must not move into the future
        if start >= end:
            raise UsageError(f"--since {iso(start)} must be before --until {iso(end)}")
        # Event times are whole seconds: [10:00:00.5, 11:00:00.5) holds 10:00:01 .. 11:00:00.
        window = Window(ceil_second(start), ceil_second(end), "explicit")
        if window.start >= window.end:
            raise UsageError(f"--since {since} and --until {until} hold no whole second")
    client = settings.client(pool_size=max(16, workers * 2))
    arguments = {"hours": hours, "since": since, "until": until, "overlap": overlap,
                 "metric": metric or [], "workers": workers, "base_url": settings.base_url}
    with recorded_run(settings, "sync-events", arguments, wait) as run:
        run["client"] = client
        db = run["db"]
        metric_ids = resolve_metrics(client, db, metric) if metric else None
        if window is None:
            window = resume_window(db, metric_ids, overlap_td, now)
        with _progress(settings) as on_progress:
            sync_events(client, db, window, metric_ids=metric_ids, workers=workers,
                        on_progress=on_progress, result=run["result"])
    _report(settings, run)


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


ChannelOpt = Annotated[Optional[list[str]], typer.Option("--channel", help="email, sms or mobile_push (repeatable; default: all).")]
RangeOpt = Annotated[str, typer.Option("--range", metavar="RANGE", help=f"Send-time range: {RANGE_FORMS}.")]
ConversionOpt = Annotated[Optional[str], typer.Option("--conversion-metric", metavar="NAME_OR_ID",
                                                      help="Metric for conversions (default: Placed Order).")]
StatsMaxAgeOpt = Annotated[str, typer.Option("--stats-max-age", help="Refetch statistics older than this.")]


def _channels(values: list[str] | None) -> list[str]:
    chosen = []
    for value in values or []:
        if value not in CHANNELS:
            raise UsageError(f"--channel: {value!r} is not one of {', '.join(CHANNELS)}")
        if value not in chosen:
            chosen.append(value)
    return chosen or list(CHANNELS)


def _campaign_sync(settings: Settings, window: Window, channels: list[str], stats: bool,
                   conversion_metric: str | None, stats_max_age: timedelta, wait: float) -> dict:
    client = settings.client()
    arguments = {"range": window.label, "channel": channels, "stats": stats,
                 "conversion_metric": conversion_metric, "base_url": settings.base_url}
    with recorded_run(settings, "sync-campaigns", arguments, wait) as run:
        run["client"] = client
        sync_campaigns(client, run["db"], window, channels=channels, stats=stats,
                       conversion_metric=conversion_metric, stats_max_age=stats_max_age, result=run["result"])
    return run


@app.command("sync-campaigns")
@common
def sync_campaigns_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    channel: ChannelOpt = None,
    stats: Annotated[bool, typer.Option("--stats/--no-stats", help="Fetch performance statistics.")] = True,
    conversion_metric: ConversionOpt = None,
    stats_max_age: StatsMaxAgeOpt = "6h",
    wait: WaitOpt = 0.0,
) -> None:
    """Sync campaigns of every channel (archived too) with their messages, and the statistics
    of those sent in --range."""
    window = _parse(parse_range, range_, "--range")
    max_age = _parse(parse_duration, stats_max_age, "--stats-max-age")
    run = _campaign_sync(settings, window, _channels(channel), stats, conversion_metric, max_age, wait)
    _report(settings, run)


@app.command("campaigns")
@common
def campaigns_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    channel: ChannelOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="auto (a table on a terminal, JSON when piped), json, jsonl, csv or table.")] = "auto",
    refresh: Annotated[bool, typer.Option("--refresh", help="Fetch from the API first, even if the database has data.")] = False,
    no_stats: Annotated[bool, typer.Option("--no-stats", help="Do not fetch statistics when going to the API.")] = False,
    conversion_metric: ConversionOpt = None,
    stats_max_age: StatsMaxAgeOpt = "6h",
    wait: WaitOpt = 0.0,
) -> None:
    """Campaigns sent in a range with their performance, newest first: from the local database,
    or from the API when the database has none for that range.

    Example: klaviyo-sync campaigns --range 30d
    """
    window = _parse(parse_range, range_, "--range")
    if fmt not in output.FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(output.FORMATS)}")
    max_age = _parse(parse_duration, stats_max_age, "--stats-max-age")
    channels = _channels(channel)
    rows: list[dict] = []
    if not refresh and settings.db.exists():
        database = store.open_db(settings.db)
        try:
            rows = queries.campaigns_in_range(database, window, channels)
            synced = queries.last_run_finished(database, "sync-campaigns")
        finally:
            database.close()
        if rows and not settings.quiet:
            age = f"synced {humanize_age((utcnow() - parse_datetime(synced)).total_seconds())} ago" if synced else "sync time unknown"
            missing = sum(1 for r in rows if r["stats_fetched_at"] is None)
            gap = f"; statistics missing for {missing}" if missing else ""
            print(f"{len(rows)} campaign(s) from the local database ({age}{gap}); --refresh fetches from the API",
                  file=sys.stderr)
    partial = None
    if refresh or not rows:
        run = _campaign_sync(settings, window, channels, not no_stats, conversion_metric, max_age, wait)
        partial = run["result"].partial
        database = store.open_db(settings.db)
        try:
            rows = queries.campaigns_in_range(database, window, channels)
        finally:
            database.close()
        if not settings.quiet:
            print(f"{len(rows)} campaign(s) fetched from the API", file=sys.stderr)
    kind = output.resolve_format(fmt)
    output.write_rows(rows, kind, queries.CAMPAIGN_TABLE,
                      title=f"Campaigns sent {iso(window.start)} .. {iso(window.end)}")
    if partial:
        print(f"{PROG}: warning: {partial}", file=sys.stderr)
        raise typer.Exit(errors.PARTIAL)


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
    for name in command or []:
        if name not in queries.SYNC_COMMANDS:
            raise UsageError(f"--command: {name!r} is not one of {', '.join(queries.SYNC_COMMANDS)}")
    if not settings.db.exists():
        raise errors.DatabaseError(f"no database at {settings.db}: run a sync first (or pass --db)")
    database = store.open_db(settings.db)
    try:
        report = queries.status_report(database, utcnow(), runs)
    finally:
        database.close()
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


def _status_tables(report: dict) -> None:
    output.write_table([{"table": k, "rows": v} for k, v in report["tables"].items()],
                       [("table", "Table", "text"), ("rows", "Rows", "int")], "Tables")
    if report["marks"]:
        output.write_table([{"key": k, "value": v} for k, v in report["marks"].items()],
                           [("key", "Mark", "text"), ("value", "Synced up to", "text")], "High-water marks")
    runs = [{**r, "rows_written": ", ".join(f"{k} {v}" for k, v in r["rows_written"].items())} for r in report["runs"]]
    output.write_table(runs, [("id", "Run", "int"), ("command", "Command", "text"), ("status", "Status", "text"),
                              ("started_at", "Started", "text"), ("seconds", "Seconds", "seconds"),
                              ("rows_written", "Rows written", "text"), ("requests", "Requests", "int"),
                              ("retries", "Retries", "int"), ("error", "Error", "text")], "Recent runs")


@app.command("demo")
def demo_cmd(
    db: Annotated[Path, typer.Option("--db", help="Database file for the demo.")] = Path("demo.db"),
    events: Annotated[int, typer.Option("--events", min=1, max=2_000_000, help="Synthetic events to serve.")] = 20_000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=32)] = DEFAULT_WORKERS,
) -> None:
    """Run every sync against a fake Klaviyo API on 127.0.0.1 (synthetic data, no account or network needed)."""
    from .fake import FAKE_API_KEY, FakeKlaviyo

    with FakeKlaviyo(n_events=events, span_hours=24 * 14) as fake:
        print(f"klaviyo-sync demo: SYNTHETIC data from a fake Klaviyo API at {fake.base_url} "
              "(nothing is sent to Klaviyo)")
        settings = Settings(db=db, api_key=FAKE_API_KEY, base_url=fake.base_url, revision=DEFAULT_REVISION,
                            quiet=False, verbose=False)
        _STATE["api_key"] = FAKE_API_KEY
        now = floor_second(utcnow())
        steps = [
            ("sync-metrics", {}, lambda c, d, r: sync_metrics(c, d, result=r)),
            ("sync-events", {"hours": 168, "workers": workers},
             lambda c, d, r: sync_events(c, d, Window(now - timedelta(days=7), now, "last 7 days"),
                                         workers=workers, result=r)),
            ("sync-campaigns", {"range": "90d"},
             lambda c, d, r: sync_campaigns(c, d, parse_range("90d"), stats=True, result=r)),
        ]
        for command, arguments, step in steps:
            client = settings.client(pool_size=max(16, workers * 2))
            with recorded_run(settings, command, {**arguments, "demo": True}, 0.0) as run:
                run["client"] = client
                step(client, run["db"], run["result"])
            s = run["summary"]
            rows = ", ".join(f"{v:,} {k}" for k, v in s["rows"].items())
            print(f"  {command:<15} {rows}  ({s['pages']} pages, {s['requests']} requests, {s['seconds']:.1f} s)")
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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
