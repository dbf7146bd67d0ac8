"""sync-all: every stream of the account under one lock, one sync_runs row per step.

Steps are registered by each family's command module (``@sync_all_step``), so a new stream joins
sync-all where it is declared. A step refused with 403 (the key lacks its scope) or failing
against the API is reported by name and the other steps still run; the command then exits
with the code of the first failure (4 for a missing scope)."""

import sys

import typer

from .. import errors
from ..errors import ApiError, AuthError
from .base import (
    _STATE,
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


@app.command("sync-all")
@common
def sync_all_cmd(settings: Settings, wait: WaitOpt = 0.0, fmt: SummaryFormatOpt = "auto") -> None:
    """Sync the whole account, every stream in order, from one cron line.

    Example: klaviyo-sync sync-all --wait 600
    """
    _check_summary_format(fmt)
    failures: list[tuple[str, ApiError]] = []
    partial: list[str] = []
    with locked_db(settings, wait) as database:
        for step in SYNC_ALL_STEPS:
            client = settings.client()
            try:
                with run_record(settings, database, step.command, {**step.arguments, "sync_all": True}) as run:
                    run["client"] = client
                    step.run(client, database, run["result"])
            except ApiError as exc:
                failures.append((step.command, exc))
                if isinstance(exc, AuthError) and exc.status == 403:
                    message = f"{step.command}: permission denied: the API key lacks the {step.scope} scope"
                else:
                    message = f"{step.command}: {exc}"
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
        raise typer.Exit(failures[0][1].exit_code)
    if partial:
        raise typer.Exit(errors.PARTIAL)
