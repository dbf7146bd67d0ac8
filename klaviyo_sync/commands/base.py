"""What every command shares: the Typer app and its error handling. The rest lives along its
seams and is re-exported here for the command modules: ``settings`` (Settings, the client),
``options`` (the shared options, ``common``), ``runs`` (lock, run record, sync-all's steps),
``report`` (the end-of-run summary, the progress bar)."""

import os
import signal
import sqlite3
import sys
import threading
import traceback
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from .. import __version__, errors
from ..errors import KlaviyoSyncError, redact
from .options import (  # noqa: F401 - re-exported for the command modules
    _COMMON, BaseUrlOpt, ChartFormatOpt, ConversionOpt, DbOpt, KeyOpt, QuietOpt, RateLimitOpt, RevisionOpt,
    RowsFormatOpt,
    SummaryFormatOpt, VerboseOpt, WaitOpt, _parse, common,
)
from .report import (  # noqa: F401
    PROG, SUMMARY_FORMATS, _check_summary_format, _progress, _report, _summary, check_format, exit_if_partial,
    human_summary, local_or_api, print_summary, sync_age,
)
from .runs import (  # noqa: F401
    SYNC_ALL_STEPS, Interrupted, Skipped, Step, Terminated, denied_as, locked_db, recorded_run, run_record,
    sync_commands,
)
from .settings import _STATE, DEFAULT_WORKERS, RateLimiter, Settings  # noqa: F401



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


