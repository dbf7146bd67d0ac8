"""The report quota an unchanged account's hourly `sync-all` does not spend (README, sync-all and
Performance): statistics read minutes ago are not asked for again."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from klaviyo_sync import db as store
from klaviyo_sync.fake import FakeKlaviyo
from klaviyo_sync.streams.series import SYNC_ALL_MAX_AGE, days_needed

from .e2e_helpers import cli_env, fake_now, query, run_cli

REPORT = re.compile(r"^/api/(campaign|flow|form|segment)-(values|series)-reports$")
ZONE = "America/Los_Angeles"


def test_in_sync_all_a_settling_form_or_segment_day_is_read_again_only_once_six_hours_old(tmp_path):
    db = store.open_db(tmp_path / "f.db")
    zone = ZoneInfo(ZONE)
    days = [date(2026, 11, 20), date(2026, 11, 28), date(2026, 11, 29)]
    now = datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc)  # 12:00 on the 29th in Los Angeles
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO form_stats_daily (form_id, day, timezone, fetched_at) VALUES (?, ?, ?, ?)", [
                ("F1", "2026-11-20", ZONE, "2026-11-25T00:00:00Z"),  # read after it settled: never again
                ("F1", "2026-11-28", ZONE, "2026-11-29T16:00:00Z"),  # settling, read 4 h ago: not yet
                ("F1", "2026-11-29", ZONE, "2026-11-29T13:00:00Z"),  # settling, read 7 h ago: again
                ("F2", "2026-11-20", ZONE, "2026-11-21T00:00:00Z"),  # read before it settled, days ago: again
                ("F2", "2026-11-29", ZONE, "2026-11-29T19:59:00Z"),  # read a minute ago
            ])
    # sync-forms / sync-segment-growth: every day still settling, every run.
    assert days_needed(db, "form_stats_daily", "form_id", ["F1", "F2"], days, zone, now) == {
        "F1": [date(2026, 11, 28), date(2026, 11, 29)],
        "F2": [date(2026, 11, 20), date(2026, 11, 28), date(2026, 11, 29)],
    }
    # sync-all's steps: such a day once its figures are 6 hours old; a day never read, always.
    assert days_needed(db, "form_stats_daily", "form_id", ["F1", "F2", "F3"], days, zone, now,
                       SYNC_ALL_MAX_AGE) == {
        "F1": [date(2026, 11, 29)],
        "F2": [date(2026, 11, 20), date(2026, 11, 28)],
        "F3": days,
    }


def test_a_second_sync_all_in_the_same_hour_on_an_unchanged_account_spends_no_report_request(tmp_path):
    zone = ZoneInfo(ZONE)
    for attempt in range(2):  # a pair of runs straddling midnight in the account's zone has a new day to read
        db = tmp_path / f"k{attempt}.db"
        with FakeKlaviyo(n_events=600, span_hours=48, now=fake_now(), account_timezone=ZONE) as fake:
            day = datetime.now(zone).date()
            # The first run reads every report (four kinds); its report budget raised so the test
            # does not wait out Klaviyo's 2 a minute.
            first = run_cli(["sync-all", "-q"], cli_env(fake, db, KLAVIYO_RATE_LIMITS="reports=20/200"), timeout=300)
            assert first.returncode == 0, first.describe()
            paths = {q["path"] for q in fake.request_log() if REPORT.match(q["path"])}
            assert paths == {"/api/campaign-values-reports", "/api/flow-series-reports",
                             "/api/form-series-reports", "/api/segment-series-reports"}
            stored = {t: query(db, f"SELECT count(*) FROM {t}")[0][0]
                      for t in ("campaign_stats", "flow_stats_daily", "form_stats_daily", "segment_growth_daily")}
            assert all(stored.values()), stored
            seen = len(fake.request_log())
            second = run_cli(["sync-all", "-q"], cli_env(fake, db), timeout=300)
            assert second.returncode == 0, second.describe()
            if datetime.now(zone).date() != day:
                continue
            log = fake.request_log()[seen:]
            assert [q["path"] for q in log if REPORT.match(q["path"])] == []
            assert {t: query(db, f"SELECT count(*) FROM {t}")[0][0] for t in stored} == stored
            statuses = query(db, "SELECT command, status FROM sync_runs ORDER BY id")
            assert len(statuses) == 2 * len({c for c, _ in statuses}) and {s for _, s in statuses} == {"ok"}
            return
    raise AssertionError("two attempts straddled midnight in the account's zone")
