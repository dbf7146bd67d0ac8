"""sync-all: every stream of the account under one lock, one sync_runs row per step.

Steps come from the stream declarations (klaviyo_sync/streams/: ``sync_all=`` is a step's place),
so a new stream joins sync-all where it is declared. A core step refused with 403 (the key lacks
its scope) or failing against the API is reported by name and the other steps still run; the
command then exits with the code of the first failure (4 for a missing scope). An optional step
(the streams added after the core eight) refused with 403 is ``skipped``: said on stderr, in the
summary and in sync_runs (`status`), and sync-all still exits 0, so a cron job does not start
failing after an upgrade. ``--only`` / ``--skip`` choose steps. Any other failure of a step (the
database, the removal guard, a bug) is reported the same way and the other steps still run (exit
1 for a bug); Ctrl-C, SIGTERM and a key of another account stop it at once."""

import logging
import sqlite3
import sys
from typing import Annotated, Optional

import typer

from .. import errors
from ..account import AccountMismatch
from ..errors import AuthError, KlaviyoSyncError, UsageError
from ..streams import declaration, scope_for
from .audience import AllowRemovalsOpt, allow_removals
from .base import (
    _STATE,
    Interrupted,
    PROG,
    SYNC_ALL_STEPS,
    Settings,
    Skipped,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    app,
    common,
    locked_db,
    print_summary,
    run_record,
)

StepsOpt = Annotated[Optional[str], typer.Option(
    "--only", metavar="STEP,...", help="Run only these steps, e.g. sync-metrics,sync-events (sync- may be left out).")]
SkipOpt = Annotated[Optional[str], typer.Option(
    "--skip", metavar="STEP,...", help="Run every step but these.")]


def _step_names(value: str | None, option: str) -> set[str]:
    known = [s.command for s in SYNC_ALL_STEPS]
    names = set()
    for raw in filter(None, (v.strip() for v in (value or "").split(","))):
        name = raw if raw.startswith("sync-") else f"sync-{raw}"
        if name not in known:
            raise UsageError(f"{option}: {raw!r} is not a step of sync-all; the steps: {', '.join(known)}")
        names.add(name)
    if value is not None and not names:
        raise UsageError(f"{option}: name at least one step")
    return names


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
                 only: StepsOpt = None, skip: SkipOpt = None, allow_removals_: AllowRemovalsOpt = False) -> None:
    """Sync the whole account, every stream in order, from one cron line.

    Example: klaviyo-sync sync-all --wait 600
    """
    _check_summary_format(fmt)
    chosen, left_out = _step_names(only, "--only"), _step_names(skip, "--skip")
    steps = [s for s in SYNC_ALL_STEPS if (not chosen or s.command in chosen) and s.command not in left_out]
    allow_removals(allow_removals_)
    failures: list[tuple[str, int]] = []
    partial: list[str] = []
    # The key's account is checked once, before the first step writes anything (exit 4 on another account's key).
    settings.client().close()
    with locked_db(settings, wait) as database:
        for step in steps:
            client = settings.client()
            try:
                with run_record(settings, database, step.command, {**step.arguments, "sync_all": True}) as run:
                    run["client"] = client
                    try:
                        step.run(client, database, run["result"])
                    except AuthError as exc:
                        if exc.status == 403 and not step.core:
                            scope = scope_for(exc.endpoint, declaration(step.command))
                            raise Skipped(f"the API key lacks the {scope} scope", scope) from None
                        raise
            except Skipped as exc:
                print(f"{PROG}: skipped: {step.command}: {exc} (an optional step)", file=sys.stderr)
                print_summary(settings, {"command": step.command, "status": "skipped", "scope": exc.scope,
                                         "reason": str(exc)}, fmt)
                continue
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
        print(f"{PROG}: error: sync-all: {len(failures)} of {len(steps)} steps failed ({names}); "
              "the others ran", file=sys.stderr)
        raise typer.Exit(failures[0][1])
    if partial:
        raise typer.Exit(errors.PARTIAL)
