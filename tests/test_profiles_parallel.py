"""sync-profiles in parallel ranges of `updated` (streams/sliced.py), end to end against the fake."""

from __future__ import annotations

from datetime import datetime, timezone

from klaviyo_sync.fake import FakeKlaviyo
from klaviyo_sync.streams.sliced import Slice, contiguous_mark

from .e2e_helpers import cli_env, ids, kill_when, mark, parse_iso, run_cli, start_cli
from .test_audience import (
    assert_killed_profiles_sync_resumes_exactly, expected_row, iso_minus_1s, profile_requests, stored_rows,
)


def _updated(fake, pid: str) -> str:
    return fake.profile(pid)["attributes"]["updated"][:19] + "Z"


def _ranged(reqs: list[dict]) -> list[str]:
    return [r["filter"][0] for r in reqs if "page[cursor]" not in r and "filter" in r
            and r["filter"][0].startswith("and(greater-than(updated,") and ",less-than(updated," in r["filter"][0]]


def test_first_sync_in_parallel_ranges_is_exact_then_one_request_and_a_full_pass_tombstones(tmp_path, now):
    db = tmp_path / "p.db"
    with FakeKlaviyo(n_events=0, n_profiles=2500, n_quiet_profiles=300, now=now) as fake:
        env = cli_env(fake, db)
        first = run_cli(["sync-profiles"], env)
        assert first.returncode == 0, first.describe()
        everyone = fake.live_profile_ids()
        assert len(everyone) == 2800 and ids(db, "profiles") == everyone
        assert stored_rows(db) == {pid: expected_row(fake, pid) for pid in everyone}
        reqs = profile_requests(fake)
        # The first page as a sequential run reads it, then ranges of `updated` in parallel.
        assert "filter" not in reqs[0] and reqs[0]["sort"] == ["updated"] and reqs[0]["page[size]"] == ["100"]
        assert len(_ranged(reqs)) >= 8
        assert all(r["status"] == 200 for r in reqs)
        assert mark(db, "profiles.mark") == max(_updated(fake, p) for p in everyone)

        # Little changed: one request, from the mark.
        stored_mark = mark(db, "profiles.mark")
        changed = set(fake.change_profiles(5))
        seen = len(fake.request_log())
        second = run_cli(["sync-profiles"], env)
        assert second.returncode == 0, second.describe()
        reqs = profile_requests(fake, seen)
        assert [r["filter"] for r in reqs] == [[f"greater-than(updated,{iso_minus_1s(stored_mark)})"]]
        assert second.summary["rows"] == {"profiles": 5}
        assert stored_rows(db) == {pid: expected_row(fake, pid) for pid in everyone}
        assert {p for p, row in stored_rows(db).items() if (row[1] or "").startswith("changed.")} == changed

        # A full pass in ranges still removes exactly the profiles the account no longer has.
        gone = set(sorted(everyone)[::500])
        fake.delete_profiles(gone)
        seen = len(fake.request_log())
        full = run_cli(["sync-profiles", "--full"], env)
        assert full.returncode == 0, full.describe()
        assert len(_ranged(profile_requests(fake, seen))) >= 8
        assert full.summary["profiles_removed"] == len(gone)
        rows = stored_rows(db)
        assert {p for p, row in rows.items() if row[-1] is not None} == gone
        assert {p: row for p, row in rows.items() if p not in gone} == {
            pid: expected_row(fake, pid) for pid in everyone - gone}


def test_parallel_first_sync_killed_halfway_resumes_exactly(tmp_path, now):
    db, clean = tmp_path / "k.db", tmp_path / "clean.db"
    with FakeKlaviyo(n_events=0, n_profiles=3000, n_quiet_profiles=0, now=now) as fake:
        fake.hold_after = 12  # the first page and 11 more answered, then every request is parked
        env = cli_env(fake, db)
        kill_when(start_cli(["sync-profiles", "--workers", "4"], env), fake,
                  lambda: fake.held >= 4 and mark(db, "profiles.mark") is not None,
                  "the run never reached its parked requests")
        # The ranges committed beyond the mark do not move it.
        assert_killed_profiles_sync_resumes_exactly(fake, db, clean, env, at_most=1200, workers=("--workers", "4"),
                                                    clean_workers=("--workers", "1"))
        assert stored_rows(db) == {pid: expected_row(fake, pid) for pid in fake.live_profile_ids()}


def test_contiguous_mark_stops_at_the_first_unfinished_range():
    t = lambda h: datetime(2026, 1, 1, h, tzinfo=timezone.utc)  # noqa: E731
    a = Slice(t(1), t(2), "2026-01-01T01:00:00Z", complete=True, newest="2026-01-01T01:59:00Z")
    b = Slice(t(2), t(3), "2026-01-01T02:30:00Z", newest="2026-01-01T02:30:00Z")
    c = Slice(t(3), None, "2026-01-01T03:40:00Z", newest="2026-01-01T03:40:00Z")
    assert contiguous_mark([c, b, a], "2026-01-01T00:59:00Z") == "2026-01-01T02:30:00Z"
    b.complete = True
    assert contiguous_mark([a, b, c], "2026-01-01T00:59:00Z") == "2026-01-01T03:40:00Z"
    # Nothing finished yet: the first range's start (its lower values are all committed).
    fresh = [Slice(t(1), t(2), "2026-01-01T01:00:00Z"), Slice(t(2), None, "2026-01-01T02:00:00Z")]
    assert contiguous_mark(fresh, "2026-01-01T00:59:00Z") == "2026-01-01T01:00:00Z"
    assert parse_iso("2026-01-01T01:00:00Z")
