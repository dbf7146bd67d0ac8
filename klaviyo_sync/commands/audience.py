"""sync-profiles, sync-lists and sync-segments."""

import sys
from typing import Annotated, Optional

import typer

from ..streams.audience import (
    ALLOW_REMOVALS,
    GROUPS,
    PROFILE_WORKERS,
    SYNC_GROUPS,
    SYNC_PROFILES,
    fetch_counts,
    group_ids,
    resolve_groups,
    sync_groups,
    sync_members,
    sync_profiles,
)
from ..timeutil import parse_duration
from .base import (
    Settings,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    _parse,
    _report,
    app,
    common,
    recorded_run,
    denied_as,
)

COUNTS_PER_MINUTE = 15  # profile_count: Klaviyo's XS tier, 1/s and 15/m
FullOpt = Annotated[bool, typer.Option("--full", help="Read everything again instead of what changed since the mark.")]


AllowRemovalsOpt = Annotated[bool, typer.Option(
    "--allow-removals", help="Let a full pass remove more than half of the stored profiles, lists, segments "
                             "or a group's members (refused otherwise, exit 10).")]


def allow_removals(allowed: bool) -> None:
    ALLOW_REMOVALS.set(allowed)  # set either way: an in-process caller may run several commands


@app.command("sync-profiles")
@common
def sync_profiles_cmd(
    settings: Settings,
    full: FullOpt = False,
    predictive: Annotated[bool, typer.Option("--predictive", help="Also fetch predictive analytics (CLV, churn); the endpoint then allows only 10 requests/s.")] = False,
    allow_removals_: AllowRemovalsOpt = False,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
    workers: Annotated[int, typer.Option("--workers", min=1, max=32, help="Parallel ranges of `updated` when there is more than one page to read.")] = PROFILE_WORKERS,
) -> None:
    """Sync every profile (with email/SMS/push consent) changed since the last run; --full also
    marks the profiles deleted in Klaviyo.

    Example: klaviyo-sync sync-profiles
    """
    _check_summary_format(fmt)
    allow_removals(allow_removals_)
    client = settings.client()
    with recorded_run(settings, "sync-profiles", {"full": full, "predictive": predictive, "workers": workers,
                                                   "base_url": settings.base_url}, wait) as run:
        run["client"] = client
        with denied_as(SYNC_PROFILES):
            sync_profiles(client, run["db"], full=full, predictive=predictive, result=run["result"], workers=workers)
    _report(settings, run, fmt)


def _counts(settings: Settings, client, db, group: str, result) -> None:
    ids = group_ids(db, group)
    if not ids:
        return
    minutes = max(0, len(ids) - COUNTS_PER_MINUTE) / COUNTS_PER_MINUTE
    if not settings.quiet:
        print(f"profile_count of {len(ids)} {group}s: one request each at Klaviyo's {COUNTS_PER_MINUTE} a minute, "
              f"about {minutes * 60 + min(len(ids), COUNTS_PER_MINUTE):.0f} s", file=sys.stderr)
    if settings.quiet or not sys.stderr.isatty():
        fetch_counts(client, db, group, ids, result)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"{group} counts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as progress:
        task = progress.add_task("counts", total=len(ids))
        fetch_counts(client, db, group, ids, result, on_count=lambda n: progress.update(task, completed=n))


def _group_command(group: str):
    command = f"sync-{group}s"
    decl = SYNC_GROUPS[group]
    members_stream = GROUPS[group][1]

    def run_group(
        settings: Settings,
        counts: Annotated[bool, typer.Option("--counts", help=f"Also fetch each {group}'s profile_count (a slow endpoint: 15 a minute).")] = False,
        members: Annotated[Optional[list[str]], typer.Option("--members", metavar="NAME_OR_ID", help=f"Also sync the members of this {group} (repeatable), or 'all'.")] = None,
        full: Annotated[bool, typer.Option("--full", help="Full membership pass: also removes members who left.")] = False,
        full_every: Annotated[str, typer.Option("--full-every", metavar="DURATION", help="Full membership pass when the last one is older than this.")] = "7d",
        allow_removals_: AllowRemovalsOpt = False,
        wait: WaitOpt = 0.0,
        fmt: SummaryFormatOpt = "auto",
    ) -> None:
        _check_summary_format(fmt)
        every = _parse(parse_duration, full_every, "--full-every")
        allow_removals(allow_removals_)
        client = settings.client()
        arguments = {"counts": counts, "members": members or [], "full": full, "full_every": full_every,
                     "base_url": settings.base_url}
        with recorded_run(settings, command, arguments, wait) as run:
            run["client"] = client
            db, result = run["db"], run["result"]
            with denied_as(decl):
                sync_groups(client, db, group, result=result)
                if counts:
                    _counts(settings, client, db, group, result)
            if members:
                ids = resolve_groups(db, group, members)
                result.rows.setdefault(GROUPS[group][1].table.name, 0)
                with denied_as(decl, members_stream.scope):
                    for gid in ids:
                        sync_members(client, db, group, gid, full=full, full_every=every, result=result)
        _report(settings, run, fmt)

    run_group.__doc__ = (f"Sync every {group} of the account; with --members, also their members "
                         f"(incremental, and a full pass every --full-every).\n\n"
                         f"    Example: klaviyo-sync {command} --members all --counts\n")
    run_group.__name__ = f"sync_{group}s_cmd"
    app.command(command)(common(run_group))


_group_command("list")
_group_command("segment")
