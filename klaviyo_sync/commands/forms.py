"""sync-account; sync-forms and the analyst's forms command; sync-segment-growth."""

from typing import Annotated

import typer

from .. import db as store
from .. import output
from ..streams import declaration
from ..streams.account import sync_account
from ..streams.forms import sync_forms
from ..streams.segment_growth import sync_segment_growth
from ..streams.series import local_days, report_zone
from ..timeutil import RANGE_FORMS, Window, report_range, utcnow
from .base import (RowsFormatOpt, Settings, SummaryFormatOpt, WaitOpt, _check_summary_format, _parse, _report, app,
                   check_format, common, denied_as, exit_if_partial, local_or_api, recorded_run)

RangeOpt = Annotated[str, typer.Option("--range", metavar="RANGE",
                                       help=f"Days in the account's time zone: {RANGE_FORMS}.")]
FORM_TABLE = [
    ("name", "Form", "text"), ("status", "Status", "text"), ("viewed_form", "Views", "int"),
    ("viewed_form_uniques", "Unique views", "int"), ("submits", "Submits", "int"),
    ("submit_rate", "Submit rate", "rate"), ("closed_form", "Closed", "int"),
]


@app.command("sync-account")
@common
def sync_account_cmd(settings: Settings, wait: WaitOpt = 0.0, fmt: SummaryFormatOpt = "auto") -> None:
    """Sync the account the API key belongs to: its time zone (the days Klaviyo's reports
    count), currency, locale and contact details (one request, shared with the run's account
    check).

    Example: klaviyo-sync sync-account
    """
    _check_summary_format(fmt)
    client = settings.client()
    with recorded_run(settings, "sync-account", {"base_url": settings.base_url}, wait) as run:
        run["client"] = client
        with denied_as(declaration("sync-account")):
            sync_account(client, run["db"], result=run["result"])
    _report(settings, run, fmt)


def _forms_sync(settings: Settings, window: Window | None, wait: float) -> dict:
    client = settings.client()
    with recorded_run(settings, "sync-forms", {"range": window.label if window else None,
                                               "base_url": settings.base_url}, wait) as run:
        run["client"] = client
        with denied_as(declaration("sync-forms")):
            sync_forms(client, run["db"], window, result=run["result"])
    return run


@app.command("sync-forms")
@common
def sync_forms_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    stats: Annotated[bool, typer.Option("--stats/--no-stats",
                                        help="Fetch per-day form statistics for --range.")] = True,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Sync every sign-up form (forms gone from the account are removed) and the daily
    statistics of the live ones for the days of --range (the account's days) not read since
    they settled. The statistics share the daily report quota with campaign and flow reports.

    Example: klaviyo-sync sync-forms --range 7d
    """
    _check_summary_format(fmt)
    window = _parse(report_range, range_, "--range")
    _report(settings, _forms_sync(settings, window if stats else None, wait), fmt)


def form_rows(db, first: str, last: str, zone: str) -> list[dict]:
    cur = db.execute(
        """SELECT f.id, f.name, f.status, sum(s.viewed_form) AS viewed_form,
                  sum(s.viewed_form_uniques) AS viewed_form_uniques, sum(s.submits) AS submits,
                  sum(s.submits) * 1.0 / nullif(sum(s.viewed_form_uniques), 0) AS submit_rate,
                  sum(s.closed_form) AS closed_form, min(s.day) AS first_day, max(s.day) AS last_day
           FROM form_stats_daily s JOIN forms f ON f.id = s.form_id
           WHERE s.day >= ? AND s.day <= ?
           GROUP BY f.id HAVING sum(s.viewed_form) > 0
           ORDER BY submits DESC, viewed_form DESC, f.id""", [first, last])
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r), timezone=zone) for r in cur.fetchall()]


@app.command("forms")
@common
def forms_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    fmt: RowsFormatOpt = "auto",
    refresh: Annotated[bool, typer.Option("--refresh",
                                          help="Fetch from the API first, even if the database has data.")] = False,
    wait: WaitOpt = 0.0,
) -> None:
    """Forms shown in a range with their views and submissions, most submissions first: from
    the local database, or from the API when it has no form statistics for that range.

    Example: klaviyo-sync forms --range 30d
    """
    window = _parse(report_range, range_, "--range")
    check_format(fmt)

    def read(warn: bool) -> tuple[bool, list[dict], list]:
        database = store.open_db(settings.db)
        try:
            zone = report_zone(database, warn=warn and not settings.quiet)
            days = local_days(window, zone, utcnow())
            first, last = days[0].isoformat(), days[-1].isoformat()
            covered = database.execute("SELECT 1 FROM form_stats_daily WHERE day >= ? AND day <= ? LIMIT 1",
                                       [first, last]).fetchone() is not None
            return covered, form_rows(database, first, last, zone.key), [first, last, zone.key]
        finally:
            database.close()

    rows, (first, last, zone), partial = local_or_api(settings, refresh, read,
                                                      lambda: _forms_sync(settings, window, wait), "form(s)")
    output.write_rows(rows, output.resolve_format(fmt), FORM_TABLE,
                      title=f"Forms shown {first} .. {last} ({zone} days)")
    exit_if_partial(partial)


@app.command("sync-segment-growth")
@common
def sync_segment_growth_cmd(
    settings: Settings,
    range_: RangeOpt = "30d",
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Daily size and change of every stored segment (run sync-segments first) from the segment
    series report, for the days of --range (the account's days; none before 2023-06-01) not
    read since they settled. Shares the daily report quota with the other reports.

    Example: klaviyo-sync sync-segment-growth --range 60d
    """
    _check_summary_format(fmt)
    window = _parse(report_range, range_, "--range")
    client = settings.client()
    with recorded_run(settings, "sync-segment-growth", {"range": window.label, "base_url": settings.base_url},
                      wait) as run:
        run["client"] = client
        with denied_as(declaration("sync-segment-growth")):
            sync_segment_growth(client, run["db"], window, result=run["result"])
    _report(settings, run, fmt)
