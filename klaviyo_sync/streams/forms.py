"""Sign-up forms and their daily performance.

- The form listing is a full pass each run (100 a page, the API's maximum; forms gone from the
  account are removed with their statistics).
- ``form_stats_daily``: one row per live form and day of the account's time zone, from the
  daily form series report (up to 100 forms and 60 days a request, the report quota shared with
  campaign, flow and segment reports); a day is read again until it settled (series.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from ..client import KlaviyoClient
from ..timeutil import Window, normalize_iso, parse_range, utcnow
from .declare import FORMS_READ, INTEGER, REAL, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import Stream, SyncResult, run_stream
from .series import SeriesReport, local_days, report_zone, sync_series

FORMS_TABLE = TableSpec("forms", "The account's sign-up forms (sync-forms).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "The form's name."),
    Column("status", TEXT, "draft or live (a live form with a draft in progress is live)."),
    Column("ab_test", INTEGER, "1 if the form has an A/B test configured, else 0."),
    Column("created_at", TEXT, "When it was created (UTC)."),
    Column("updated_at", TEXT, "When it last changed in Klaviyo (UTC)."),
))
# name, description: the form series report's statistics, in table order
FORM_STATS = (
    ("viewed_form", "Times the form was shown."),
    ("viewed_form_uniques", "Profiles the form was shown to."),
    ("submits", "Form submissions."),
    ("submit_rate", "Submissions per unique view, a fraction in [0, 1] (Klaviyo's submit_rate)."),
    ("qualified_form", "Times a visitor qualified for the form (its targeting matched)."),
    ("qualified_form_uniques", "Profiles that qualified for the form."),
    ("closed_form", "Times the form was closed."),
    ("closed_form_uniques", "Profiles that closed the form."),
    ("viewed_form_step", "Views of the form's steps."),
    ("viewed_form_step_uniques", "Profiles that viewed a step."),
    ("submitted_form_step", "Submissions of the form's steps."),
    ("submitted_form_step_uniques", "Profiles that submitted a step."),
)
STAT_NAMES = [name for name, _ in FORM_STATS]
FORM_STATS_TABLE = TableSpec(
    "form_stats_daily",
    "Daily performance of each live form (sync-forms), per day of the account's time zone.",
    (Column("form_id", TEXT, "The form (forms.id)."),
     Column("day", TEXT, "The day (YYYY-MM-DD) in the account's time zone (the timezone column)."),
     *(Column(name, REAL if name.endswith("_rate") else INTEGER, text) for name, text in FORM_STATS),
     Column("timezone", TEXT, "The IANA time zone the day is counted in (the account's)."),
     Column("fetched_at", TEXT, "When the report was read (UTC); a day is read again until it settled.")),
    key=("form_id", "day"))


def form_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    return (resource["id"], a.get("name"), a.get("status"), flag(a.get("ab_test")),
            normalize_iso(a.get("created_at")), normalize_iso(a.get("updated_at")))


FORMS = Stream(name="forms", path="/api/forms", table=FORMS_TABLE.table, row=form_row, type="form",
               scope=FORMS_READ, page_size=100,
               params={"fields[form]": "name,status,ab_test,created_at,updated_at"})


def _remove_missing(db: Database, seen: str) -> int:
    db.execute(f"DELETE FROM form_stats_daily WHERE form_id NOT IN (SELECT id FROM {seen})")
    return db.execute(f"DELETE FROM forms WHERE id NOT IN (SELECT id FROM {seen})").rowcount


FORM_REPORT = SeriesReport(
    path="/api/form-series-reports", type="form-series-report", table=FORM_STATS_TABLE.table, id_column="form_id",
    statistics=STAT_NAMES, group_by=True, missing_key="stats_missing_form_days",
    partial="forms stored, but statistics are missing for {missing} form-day(s) of {of} form(s)")


def sync_forms(client: KlaviyoClient, db: Database, window: Window | None, *, now: datetime | None = None,
               result: SyncResult | None = None) -> SyncResult:
    """Every form, then the daily statistics of the live ones for the days of ``window`` (in the
    account's time zone) not read since they settled; a spent report quota keeps what was read
    and makes the run partial."""
    now = now or utcnow()
    result = SyncResult.begin(result, ["forms", "form_stats_daily"], window)
    run_stream(client, db, FORMS, result, on_missing=_remove_missing)
    result.extra["forms_removed"] = result.extra.pop("forms_removed", 0)
    if window is None:
        return result
    zone = report_zone(db)
    result.extra["timezone"] = zone.key
    days = local_days(window, zone, now)
    live = [r[0] for r in db.execute("SELECT id FROM forms WHERE status = 'live' ORDER BY id")]
    sync_series(client, db, result, FORM_REPORT, ids=live, days=days, zone=zone, now=now)
    return result


SYNC_FORMS = declare(Declaration(
    command="sync-forms", help="", scope=FORMS_READ, tier="S",  # 3/s, 60/m
    paths=("/api/forms", "/api/form-series-reports"), tables=(FORMS_TABLE, FORM_STATS_TABLE),
    run=lambda client, db, result: sync_forms(client, db, parse_range("30d"), result=result),
    sync_all=92, arguments={"range": "30d"},
))
