"""What every command shares: the Typer app and its error handling, the common options, the
run record and lock around a sync, and the report printed at the end."""

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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from .. import __version__, errors, output
from .. import db as store
from ..client import (
    DEFAULT_BASE_URL,
    DEFAULT_REVISION,
    KlaviyoClient,
    revision_age_warning,
)
from ..errors import KlaviyoSyncError, UsageError, redact
from ..lock import SyncLock
from ..logsetup import setup_logging
from ..ratelimit import RateLimiter, parse_limits
from ..streams.engine import SyncResult

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
        # -q silences it: an hourly cron job would mail the same line 24 times a day. `status`
        # shows it whatever -q says, so the operator still learns it from the monitoring line.
        warning = revision_age_warning(self.revision)
        if warning and not self.quiet:
            print(warning, file=sys.stderr)
        try:
            limits = parse_limits(self.rate_limit) if self.rate_limit else None
        except ValueError as exc:
            raise UsageError(f"--rate-limit: {exc}") from None
        try:
            return KlaviyoClient(self.api_key, base_url=self.base_url, revision=self.revision,
                                 limiter=RateLimiter(limits, database=self.db, server=self.base_url), **kw)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


_STATE = {"verbose": False, "api_key": None}


class App(TyperGroup):
    """Turns every failure into one line on stderr and a documented exit code."""

    def invoke(self, ctx):
        # Typer turns Ctrl-C into a silent exit 130; say so on stderr like every other failure.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted (Ctrl-C)") from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        previous = signal.getsignal(signal.SIGTERM)
        if threading_main():
            # cron and systemd stop jobs with SIGTERM: record the run as interrupted, then exit 143.
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
                # The traceback may quote an error body that echoed the key: redact it too.
                print(redact(traceback.format_exc(), _STATE["api_key"]), end="", file=sys.stderr)
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
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Copy a whole Klaviyo account (metrics, events, profiles, lists, segments, campaigns, flows, templates and their performance) into one SQLite file, and verify it against Klaviyo's own counts.",
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
SummaryFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT",
    help="The end-of-run summary: auto (text on a terminal, a JSON line when piped), json or text.")]
ConversionOpt = Annotated[Optional[str], typer.Option(
    "--conversion-metric", metavar="NAME_OR_ID", help="Metric for conversions (default: Placed Order).")]
RowsFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT",
    help="auto (a table on a terminal, JSON when piped), json, jsonl, csv or table.")]
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
        setup_logging(settings.verbose, [settings.api_key])
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
def locked_db(settings: Settings, wait: float):
    """Hold the one-writer lock and an open database for a whole command."""
    with SyncLock(settings.db).acquire(wait):
        database = store.open_db(settings.db)
        try:
            yield database
        finally:
            database.close()


@contextmanager
def run_record(settings: Settings, database, command: str, arguments: dict):
    """A sync_runs row for one sync, finished whatever happens (failed, interrupted, partial)."""
    run_id = store.start_run(database, command, arguments)
    run = {"id": run_id, "db": database, "started": time.monotonic(), "result": SyncResult(), "client": None}
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


@contextmanager
def recorded_run(settings: Settings, command: str, arguments: dict, wait: float):
    """Hold the lock, record a sync_runs row, and finish it whatever happens."""
    with locked_db(settings, wait) as database, run_record(settings, database, command, arguments) as run:
        yield run


# -- sync-all's steps: each family registers its own -------------------------------------------
@dataclass(frozen=True)
class Step:
    """One stream of `sync-all`: its sync_runs command name, the scope a 403 means is missing,
    and ``run(client, db, result)`` with the defaults a whole-account sync uses."""

    order: int
    command: str
    scope: str
    run: Callable
    arguments: dict


SYNC_ALL_STEPS: list[Step] = []


def sync_commands() -> list[str]:
    """The commands `status --command` knows: every step of sync-all (each records its own run), and verify."""
    return [*dict.fromkeys(s.command for s in SYNC_ALL_STEPS), "verify"]


def sync_all_step(order: int, command: str, scope: str, **arguments):
    """Register a function ``(client, db, result) -> None`` as a step of `sync-all`."""

    def register(fn):
        SYNC_ALL_STEPS.append(Step(order, command, scope, fn, arguments))
        SYNC_ALL_STEPS.sort(key=lambda s: s.order)
        return fn

    return register


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
    0.02 s (11,318 events/s)`` and, when there were any, retries and rate-limit waits."""
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
    extras = []
    if summary.get("retries"):
        extras.append(f"{summary['retries']} retries")
    if summary.get("rate_limited"):
        extras.append(f"{summary['rate_limited']} rate-limited, {summary.get('rate_limit_wait_s', 0):.1f} s waited")
    if summary.get("window"):
        extras.append(f"window {summary['window']['start']} .. {summary['window']['end']}")
    return line + ("; " + "; ".join(extras) if extras else "")


# -- commands ------------------------------------------------------------------------------------


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
