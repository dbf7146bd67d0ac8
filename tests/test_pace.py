"""Quota an unchanged account's hourly run does not spend (README, Performance)."""

from __future__ import annotations

from datetime import date, datetime, timezone

from klaviyo_sync import db as store
from klaviyo_sync.streams.flows import STATS_MAX_AGE, flow_days_needed


def test_in_sync_all_a_settling_flow_day_is_read_again_only_once_its_statistics_are_six_hours_old(tmp_path):
    db = store.open_db(tmp_path / "f.db")
    db.execute("INSERT INTO flows (id, name) VALUES ('F1', 'Welcome'), ('F2', 'Browse')")
    days = [date(2026, 11, 20), date(2026, 11, 28), date(2026, 11, 29)]
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    with db.atomic():
        db.conn.executemany("INSERT INTO flow_stats_days VALUES (?, ?, ?, ?)", [
            ("F1", "2026-11-20", "M1", "2026-11-27T00:00:00Z"),  # read after it settled: never again
            ("F1", "2026-11-28", "M1", "2026-11-29T08:00:00Z"),  # settling, read 4 h ago: not yet
            ("F1", "2026-11-29", "M1", "2026-11-29T05:00:00Z"),  # settling, read 7 h ago: again
            ("F2", "2026-11-20", "M1", "2026-11-22T00:00:00Z"),  # read before it settled, days ago: again
            ("F2", "2026-11-28", "M2", "2026-11-29T11:00:00Z"),  # another conversion metric: again
        ])
    # sync-flows / sync-flow-stats / flows --refresh: every day still settling, every run.
    assert flow_days_needed(db, days, "M1", now)["F1"] == [date(2026, 11, 28), date(2026, 11, 29)]
    # sync-all's step: such a day once its figures are 6 hours old.
    assert flow_days_needed(db, days, "M1", now, max_age=STATS_MAX_AGE) == {
        "F1": [date(2026, 11, 29)],
        "F2": [date(2026, 11, 20), date(2026, 11, 28), date(2026, 11, 29)],  # the last one never read
    }
