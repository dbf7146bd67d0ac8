"""sync-metrics and sync-events."""

from datetime import timedelta
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..streams.events import resume_window, sync_events
from ..streams.metrics import resolve_metrics, sync_metrics
from ..timeutil import (
    EARLIEST,
    Window,
    ceil_second,
    floor_second,
    iso,
    parse_datetime,
    parse_duration,
    utcnow,
)
from .base import (
    DEFAULT_WORKERS,
    Settings,
    SummaryFormatOpt,
    WaitOpt,
    _check_summary_format,
    _parse,
    _progress,
    _report,
    app,
    common,
    recorded_run,
)


@app.command("sync-metrics")
@common
def sync_metrics_cmd(settings: Settings, wait: WaitOpt = 0.0, fmt: SummaryFormatOpt = "auto") -> None:
    """Sync every metric of the account into the metrics table."""
    _check_summary_format(fmt)
    client = settings.client()
    with recorded_run(settings, "sync-metrics", {}, wait) as run:
        run["client"] = client
        sync_metrics(client, run["db"], result=run["result"])
    _report(settings, run, fmt)


@app.command("sync-events")
@common
def sync_events_cmd(
    settings: Settings,
    hours: Annotated[Optional[float], typer.Option("--hours", help="Sync events of the last N hours.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="ISO", help="Window start (ISO-8601, UTC if no offset).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", metavar="ISO", help="Window end, exclusive (default: now).")] = None,
    overlap: Annotated[str, typer.Option("--overlap", help="With no window option: resume this long before the stored mark.")] = "1h",
    metric: Annotated[Optional[list[str]], typer.Option("--metric", metavar="NAME_OR_ID", help="Only this metric (repeatable).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Concurrent time slices.")] = DEFAULT_WORKERS,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Sync events (with their profiles and metrics) whose datetime lies in a window.

    Example: klaviyo-sync sync-events --hours 2
    """
    _check_summary_format(fmt)
    now = floor_second(utcnow())
    if hours is not None and (since is not None or until is not None):
        raise UsageError("--hours cannot be combined with --since/--until")
    if hours is not None and not hours > 0:
        raise UsageError(f"--hours must be greater than zero (got {hours:g})")
    if hours is not None and not hours * 3600 <= (now - EARLIEST).total_seconds():
        raise UsageError(f"--hours {hours:g} reaches back before {EARLIEST:%Y-%m-%d}: Klaviyo holds nothing "
                         "older (use --since for a long backfill)")
    if until is not None and since is None:
        raise UsageError("--until needs --since")
    overlap_td = _parse(parse_duration, overlap, "--overlap")
    window: Window | None = None
    if hours is not None:
        window = Window(now - timedelta(seconds=round(hours * 3600)), now, f"last {hours:g} h")
    elif since is not None:
        start = _parse(parse_datetime, since, "--since")
        start = max(start, EARLIEST)  # Klaviyo holds nothing older: --since 0001-01-01 means "everything"
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
    _report(settings, run, fmt)
