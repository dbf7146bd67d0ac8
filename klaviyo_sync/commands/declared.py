"""The commands of simple streams, generated from their declarations (klaviyo_sync/streams/):
``sync-<name>`` with --wait and --format (and --full when the stream has a cursor), recorded
in sync_runs like every sync, a 403 naming the declared scope. Special engines (events,
campaigns, flows ...) keep their own command modules."""

from typing import Annotated

import typer

from ..streams import declarations
from ..streams.declare import Declaration, sync_declared
from .base import (
    Settings,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    _report,
    app,
    common,
    denied_as,
    recorded_run,
)

FullOpt = Annotated[bool, typer.Option("--full", help="Read everything again instead of what changed since the mark.")]


def _run(settings: Settings, decl: Declaration, full: bool, wait: float, fmt: str) -> None:
    _check_summary_format(fmt)
    client = settings.client()
    cursor = decl.stream is not None and decl.stream.cursor
    arguments = {"full": full, "base_url": settings.base_url} if cursor else {"base_url": settings.base_url}
    with recorded_run(settings, decl.command, arguments, wait) as run:
        run["client"] = client
        with denied_as(decl):
            if decl.simple:
                sync_declared(client, run["db"], decl, full=full, result=run["result"])
            else:
                decl.step(client, run["db"], run["result"])
    _report(settings, run, fmt)


def generate(decl: Declaration) -> None:
    """Register the Typer command of a simple stream (or of a special engine declared with a help)."""
    if decl.stream is not None and decl.stream.cursor:
        def command(settings: Settings, full: FullOpt = False, wait: WaitOpt = 0.0,
                    fmt: SummaryFormatOpt = "auto") -> None:
            _run(settings, decl, full, wait, fmt)
    else:
        def command(settings: Settings, wait: WaitOpt = 0.0, fmt: SummaryFormatOpt = "auto") -> None:
            _run(settings, decl, False, wait, fmt)
    command.__doc__ = f"{decl.help}\n\nExample: {decl.example or 'klaviyo-sync ' + decl.command}\n"
    command.__name__ = decl.command.replace("-", "_") + "_cmd"
    app.command(decl.command)(common(command))


for _decl in declarations():
    if _decl.simple or _decl.help:
        generate(_decl)
