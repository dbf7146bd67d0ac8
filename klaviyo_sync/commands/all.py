"""sync-all: every stream of the account under one lock, one sync_runs row per step.

Steps are registered by each family's command module (``@sync_all_step``), so a new stream joins
sync-all where it is declared. A step that fails in any way (403 for a missing scope,
the API, the database, a bug) is reported by name and the other steps still run; the command
then exits with the code of the first failure (4 for a missing scope, 1 for a bug). Ctrl-C,
SIGTERM and a key of another account stop it at once."""

import logging
import sqlite3
import sys

import typer

from .. import errors
from ..account import AccountMismatch
from ..errors import AuthError, KlaviyoSyncError
from .audience import AllowRemovalsOpt, allow_removals
from .base import (
    _STATE,
    Interrupted,
    PROG,
    SYNC_ALL_STEPS,
    Settings,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    app,
    common,
    locked_db,
    print_summary,
    run_record,
)


def _exit_code(exc: Exception) -> int:
    if isinstance(exc, KlaviyoSyncError):
        return exc.exit_code
    if isinstance(exc, sqlite3.Error):
        return errors.DATABASE
    return errors.INTERNAL


log = logging.getLogger("klaviyo_sync")


@app.command("sync-all")
@common
def sync_all_cmd(settings: Settings, wait: WaitOpt = 0.0, fmt: SummaryFormatOpt = "auto",
                 allow_removals_: AllowRemovalsOpt = False) -> None:
    """Sync the whole account, every stream in order, from one cron line.

    Example: klaviyo-sync sync-all --wait 600
    """
    _check_summary_format(fmt)
    allow_removals(allow_removals_)
    failures: list[tuple[str, int]] = []
    partial: list[str] = []
    # The key's account is checked once, before the first step writes anything (exit 4 on another account's key).
    settings.client().close()
    with locked_db(settings, wait) as database:
        for step in SYNC_ALL_STEPS:
            client = settings.client()
            try:
                with run_record(settings, database, step.command, {**step.arguments, "sync_all": True}) as run:
                    run["client"] = client
                    step.run(client, database, run["result"])
            except (Interrupted, AccountMismatch):
                raise  # Ctrl-C, SIGTERM, another account's key: stop here
            except Exception as exc:  # any step's failure: the other steps still run
                failures.append((step.command, _exit_code(exc)))
                if isinstance(exc, AuthError) and exc.status == 403:
                    message = f"{step.command}: permission denied: the API key lacks the {step.scope} scope"
                elif isinstance(exc, KlaviyoSyncError):
                    message = f"{step.command}: {exc}"
                elif isinstance(exc, sqlite3.Error):
                    message = f"{step.command}: database error: {exc}"
                else:
                    log.debug("sync-all step %s failed", step.command, exc_info=True)
                    message = f"{step.command}: unexpected error: {type(exc).__name__}: {exc}"
                print(f"{PROG}: error: {errors.redact(message, _STATE['api_key'] or settings.api_key)}", file=sys.stderr)
                continue
            finally:
                client.close()
            summary = run["summary"]
            print_summary(settings, summary, fmt)
            if summary["status"] == "partial":
                partial.append(step.command)
                print(f"{PROG}: warning: {step.command}: {run['result'].partial}", file=sys.stderr)
    if failures:
        names = ", ".join(name for name, _ in failures)
        print(f"{PROG}: error: sync-all: {len(failures)} of {len(SYNC_ALL_STEPS)} steps failed ({names}); "
              "the others ran", file=sys.stderr)
        raise typer.Exit(failures[0][1])
    if partial:
        raise typer.Exit(errors.PARTIAL)
