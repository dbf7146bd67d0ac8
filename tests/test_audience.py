"""sync-profiles, sync-lists and sync-segments end to end: the real CLI over the fake API."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs

from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import (
    cli_env,
    dump,
    ids,
    kill_when,
    mark,
    parse_iso,
    query,
    run_cli,
    start_cli,
    wait_for,
)

AUDIENCE = ("profiles", "lists", "segments", "list_members", "segment_members")


def profile_requests(fake, since: int = 0) -> list[dict]:
    return [dict(parse_qs(r["query"]), status=r["status"]) for r in fake.request_log()[since:]
            if r["path"] == "/api/profiles"]


def expected_row(fake, pid: str) -> tuple:
    a = fake.profile(pid)["attributes"]
    email = a["subscriptions"]["email"]["marketing"]
    sms = a["subscriptions"]["sms"]["marketing"]
    push = a["subscriptions"]["mobile_push"]["marketing"]
    reasons = ",".join(sorted({s["reason"] for s in email["suppression"]})) or None
    return (pid, a["email"], a["phone_number"], a["first_name"], a["updated"][:19] + "Z",
            email["consent"], int(email["can_receive_email_marketing"]), reasons,
            sms["consent"], int(sms["can_receive_sms_marketing"]), push["consent"],
            int(push["can_receive_push_marketing"]), a["subscriptions"], None)


def stored_rows(db) -> dict:
    rows = query(db, "SELECT id, email, phone_number, first_name, updated, email_consent, email_can_receive, "
                     "email_suppression, sms_consent, sms_can_receive, push_consent, push_can_receive, "
                     "subscriptions, deleted_at FROM profiles")
    return {r[0]: r[:12] + (json.loads(r[12]) if r[12] else None, r[13]) for r in rows}


def test_first_sync_every_profile_then_only_the_changed_ones(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=200, n_profiles=250, n_quiet_profiles=60, now=now) as fake:
        env = cli_env(fake, db)
        first = run_cli(["sync-profiles", "--workers", "1"], env)  # sequential (test_profiles_parallel.py: in ranges)
        assert first.returncode == 0, first.describe()
        everyone = fake.live_profile_ids()
        assert ids(db, "profiles") == everyone and len(everyone) == 310
        assert fake.quiet_profile_ids() <= everyone  # profiles no event references
        assert stored_rows(db) == {pid: expected_row(fake, pid) for pid in everyone}
        (req,) = [r for r in profile_requests(fake) if "page[cursor]" not in r]
        assert req["sort"] == ["updated"] and req["page[size]"] == ["100"] and "filter" not in req
        assert req["additional-fields[profile]"] == ["subscriptions"]
        assert len(profile_requests(fake)) == 4  # 310 profiles, 100 a page

        stored_mark = mark(db, "profiles.mark")
        assert stored_mark == max(fake.profile(p)["attributes"]["updated"] for p in everyone)[:19] + "Z"
        changed = set(fake.change_profiles(7))
        seen = len(fake.request_log())
        second = run_cli(["sync-profiles"], env)
        assert second.returncode == 0, second.describe()
        since = parse_iso(stored_mark) - timedelta(seconds=1)
        reqs = profile_requests(fake, seen)
        assert reqs == [{"filter": [f"greater-than(updated,{since.strftime('%Y-%m-%dT%H:%M:%SZ')})"],
                         "sort": ["updated"], "page[size]": ["100"],
                         "additional-fields[profile]": ["subscriptions"], "status": 200}]
        # The API answered the changed profiles and the ties of the old mark's second; only the
        # changed ones were rewritten.
        answered = fake.live_profile_ids(updated_after=since.timestamp())
        assert answered - changed == {p for p in everyone - changed
                                      if fake.profile(p)["attributes"]["updated"][:19] + "Z" == stored_mark}
        assert second.summary["rows"] == {"profiles": 7}
        assert stored_rows(db) == {pid: expected_row(fake, pid) for pid in everyone}
        assert {p for p, row in stored_rows(db).items() if (row[1] or "").startswith("changed.")} == changed


def test_full_pass_tombstones_deleted_profiles_and_keeps_their_events(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=300, n_profiles=80, n_quiet_profiles=10, span_hours=24, now=now) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-events", "--hours", "24"], env).returncode == 0
        assert run_cli(["sync-profiles"], env).returncode == 0
        assert run_cli(["sync-lists", "--members", "all"], env).returncode == 0
        with_events = sorted({r[0] for r in query(db, "SELECT profile_id FROM events WHERE profile_id IS NOT NULL")})
        gone = set(with_events[:2]) | set(sorted(fake.quiet_profile_ids())[:1])
        fake.delete_profiles(gone)
        assert run_cli(["sync-profiles"], env).returncode == 0
        assert query(db, "SELECT count(*) FROM profiles WHERE deleted_at IS NOT NULL") == [(0,)]  # the cursor cannot see it
        full = run_cli(["sync-profiles", "--full"], env)
        assert full.returncode == 0, full.describe()
        assert full.summary["profiles_removed"] == 3
        assert ids(db, "profiles") == fake.live_profile_ids() | gone
        tomb = query(db, "SELECT id, email, phone_number, first_name, location, subscriptions, email_consent "
                         "FROM profiles WHERE deleted_at IS NOT NULL")
        assert sorted(tomb) == sorted((p, None, None, None, None, None, None) for p in gone)
        assert query(db, "SELECT count(*) FROM list_members WHERE profile_id IN (%s)" % ",".join("?" * 3), sorted(gone)) == [(0,)]
        assert {r[0] for r in query(db, "SELECT DISTINCT profile_id FROM events")} >= set(with_events[:2])
        # Events re-synced later never bring the personal data back.
        assert run_cli(["sync-events", "--hours", "24"], env).returncode == 0
        assert query(db, "SELECT count(*) FROM profiles WHERE deleted_at IS NOT NULL AND email IS NOT NULL") == [(0,)]
        live = {p: r for p, r in stored_rows(db).items() if p not in gone}
        assert live == {p: expected_row(fake, p) for p in fake.live_profile_ids()}


def test_membership_incremental_misses_a_leave_the_full_pass_removes_it(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=100, n_profiles=150, n_quiet_profiles=30, now=now) as fake:
        env = cli_env(fake, db)
        lid = sorted(fake.list_ids())[0]
        name = fake.group(lid)["attributes"]["name"]
        sid = sorted(fake.segment_ids())[0]
        first = run_cli(["sync-lists", "--members", name], env)
        assert first.returncode == 0, first.describe()
        assert ids(db, "lists") == fake.list_ids()
        members = lambda: dict(query(db, "SELECT profile_id, joined_group_at FROM list_members WHERE list_id = ?", [lid]))  # noqa: E731
        truth = lambda: {p: j[:19] + "Z" for p, j in fake.members(lid).items()}  # noqa: E731
        assert members() == truth()
        assert set(members()) <= ids(db, "profiles")  # each member's profile lands in profiles
        assert ids(db, "list_members", "list_id") == {lid}

        before = set(fake.members(lid))
        joiners = sorted(fake.live_profile_ids() - before)[:3]
        leaver = sorted(before)[:1]
        fake.join(lid, joiners)
        fake.leave(lid, leaver)
        seen = len(fake.request_log())
        inc = run_cli(["sync-lists", "--members", lid], env)
        assert inc.returncode == 0, inc.describe()
        assert inc.summary["incremental_passes"] == 1
        (req,) = [parse_qs(r["query"]) for r in fake.request_log()[seen:] if r["path"] == f"/api/lists/{lid}/profiles"]
        assert req["filter"][0].startswith("greater-than(joined_group_at,") and req["sort"] == ["joined_group_at"]
        assert members() == {**truth(), leaver[0]: members()[leaver[0]]}  # joined, but the leave is unseen

        full = run_cli(["sync-lists", "--members", lid, "--full"], env)
        assert full.returncode == 0, full.describe()
        assert full.summary["members_removed"] == 1 and full.summary["full_passes"] == 1
        assert members() == truth()

        seg = run_cli(["sync-segments", "--members", "all", "--counts"], env)
        assert seg.returncode == 0, seg.describe()
        for s in fake.segment_ids():
            got = dict(query(db, "SELECT profile_id, joined_group_at FROM segment_members WHERE segment_id = ?", [s]))
            assert got == {p: j[:19] + "Z" for p, j in fake.members(s).items()}
        counts = dict(query(db, "SELECT id, profile_count FROM segments"))
        assert counts == {s: fake.group(s)["attributes"]["profile_count"] for s in fake.segment_ids()}
        definition = query(db, "SELECT definition FROM segments WHERE id = ?", [sid])[0][0]
        assert json.loads(definition) == fake.group(sid)["attributes"]["definition"]

        bad = run_cli(["sync-lists", "--members", "No Such List"], env)
        assert bad.returncode == 2 and "No Such List" in bad.stderr and name in bad.stderr


def test_killed_sync_profiles_resumes_exactly(tmp_path, now):
    db, clean = tmp_path / "k.db", tmp_path / "clean.db"
    with FakeKlaviyo(n_events=0, n_profiles=3000, n_quiet_profiles=0, now=now) as fake:
        fake.hold_after = 5  # five pages answered, then every request waits: killed mid-run, always
        env = cli_env(fake, db)
        kill_when(start_cli(["sync-profiles"], env), fake, lambda: _mark_exists(db) and fake.held > 0,
                  "no page committed")
        assert_killed_profiles_sync_resumes_exactly(fake, db, clean, env, at_most=500)


def assert_killed_profiles_sync_resumes_exactly(fake, db, clean, env, at_most: int, workers=(), clean_workers=()):
    """After a killed sync-profiles (``kill_when``): at most ``at_most`` profiles are stored, among
    them every one up to the committed mark; the rerun starts from that mark (a second back), not
    at page one, and ends with exactly what one clean run stores."""
    answered_all_parked(fake)
    killed_mark = mark(db, "profiles.mark")
    stored = ids(db, "profiles")
    assert 0 < len(stored) <= at_most
    # Everything up to the mark is stored: the resume skips nothing.
    upto = {p for p in fake.live_profile_ids() if fake.profile(p)["attributes"]["updated"][:19] + "Z" <= killed_mark}
    assert upto <= stored
    fake.hold_after = None
    seen = len(fake.request_log())
    rerun = run_cli(["sync-profiles", *workers], env)
    assert rerun.returncode == 0, rerun.describe()
    first = profile_requests(fake, seen)[0]
    assert first["filter"] == [f"greater-than(updated,{iso_minus_1s(killed_mark)})"]
    assert run_cli(["sync-profiles", *clean_workers], cli_env(fake, clean)).returncode == 0
    assert dump(db, ("profiles",)) == dump(clean, ("profiles",))
    assert ids(db, "profiles") == fake.live_profile_ids()


def answered_all_parked(fake) -> None:
    """Wait until the requests parked by hold_after (the killed run's) are answered and logged,
    so they are not counted among the next run's requests."""
    assert wait_for(lambda: len(fake.request_log()) >= fake.stats()["requests"], timeout=60)


def iso_minus_1s(value: str) -> str:
    return (parse_iso(value) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_interrupted_full_membership_pass_removes_nobody(tmp_path, now):
    """Removals wait for the pass's last page: a pass killed halfway leaves every old member
    (and may add new ones), and the next full pass is exact."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=50, n_profiles=400, n_quiet_profiles=0, now=now) as fake:
        env = cli_env(fake, db)
        lid = max(fake.list_ids(), key=lambda g: len(fake.members(g)))
        if len(fake.members(lid)) <= 100:  # the pass must have a second page to be cut before
            fake.join(lid, sorted(fake.live_profile_ids() - set(fake.members(lid)))[:150])
        assert run_cli(["sync-lists", "--members", lid], env).returncode == 0
        members = lambda: set(ids_where(db, lid))  # noqa: E731
        before = members()
        assert before == set(fake.members(lid))
        leavers = sorted(before)[:20]
        fake.leave(lid, leavers)
        fake.hold_after = len(fake.request_log()) + 2  # the lists page and one page of members
        kill_when(start_cli(["sync-lists", "--members", lid, "--full"], env), fake, lambda: fake.held > 0,
                  "the pass never reached its second page")
        assert members() >= before  # nobody removed by the cut pass, the leavers included
        fake.hold_after = None
        full = run_cli(["sync-lists", "--members", lid, "--full"], env)
        assert full.returncode == 0, full.describe()
        assert members() == set(fake.members(lid)) == before - set(leavers)


def ids_where(db, lid: str) -> list[str]:
    return [r[0] for r in query(db, "SELECT profile_id FROM list_members WHERE list_id = ?", [lid])]


def test_predictive_analytics_only_when_asked(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=50, n_profiles=120, n_quiet_profiles=10, now=now) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-profiles"], env).returncode == 0
        assert profile_requests(fake)[0]["additional-fields[profile]"] == ["subscriptions"]
        assert query(db, "SELECT count(*) FROM profiles WHERE predictive_analytics IS NOT NULL") == [(0,)]
        seen = len(fake.request_log())
        run = run_cli(["sync-profiles", "--full", "--predictive"], env)
        assert run.returncode == 0, run.describe()
        asked = profile_requests(fake, seen)
        assert asked and all(r["additional-fields[profile]"] == ["subscriptions,predictive_analytics"] for r in asked)
        stored = dict(query(db, "SELECT id, predictive_analytics FROM profiles"))
        for pid in fake.live_profile_ids():
            want = fake.profile(pid, predictive=True)["attributes"]["predictive_analytics"]
            assert json.loads(stored[pid]) == want


def _mark_exists(db) -> bool:
    try:
        return bool(query(db, "SELECT 1 FROM sync_state WHERE key = 'profiles.mark'"))
    except Exception:
        return False


def test_sync_all_with_lists_scope_missing_runs_the_rest_and_exits_4(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=300, span_hours=24, n_profiles=60, now=now) as fake:
        fake.revoke_scope("lists:read")
        # sync-all spends four report requests (campaigns, flow stats, forms, segment growth)
        # against Klaviyo's 2 a minute: the last two wait out the minute.
        run = run_cli(["sync-all"], cli_env(fake, db), timeout=300)
        assert run.returncode == 4, run.describe()
        assert "sync-lists: permission denied: the API key lacks the lists:read scope" in run.stderr
        runs = dict(query(db, "SELECT command, status FROM sync_runs"))
        assert runs["sync-lists"] == "failed"
        assert runs["sync-profiles"] == runs["sync-segments"] == runs["sync-metrics"] == "ok"
        assert ids(db, "profiles") >= fake.live_profile_ids() and ids(db, "segments") == fake.segment_ids()
        assert ids(db, "lists") == set()
        order = [r[0] for r in query(db, "SELECT command FROM sync_runs ORDER BY id")]
        assert order.index("sync-metrics") < order.index("sync-profiles") < order.index("sync-events") < order.index("sync-lists")

        fake.revoke_scope("profiles:read")
        alone = run_cli(["sync-profiles"], cli_env(fake, db))
        assert alone.returncode == 4 and "lacks the profiles:read scope" in alone.stderr


def test_status_lists_the_audience_tables(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=10, n_profiles=20, n_quiet_profiles=5, now=now) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-profiles"], env).returncode == 0
        st = run_cli(["status", "--format", "json"], env)
        assert st.returncode == 0, st.describe()
        tables = json.loads(st.stdout)["tables"]
        # Row counts, not only names (status lists every table whether or not anything synced).
        assert {t: tables[t] for t in AUDIENCE} == {
            "profiles": len(fake.live_profile_ids()), "lists": 0, "segments": 0, "list_members": 0,
            "segment_members": 0}
        assert run_cli(["sync-lists", "--members", "all"], env).returncode == 0
        assert run_cli(["sync-segments", "--members", "all"], env).returncode == 0
        tables = json.loads(run_cli(["status", "--format", "json"], env).stdout)["tables"]
        assert {t: tables[t] for t in AUDIENCE} == {
            "profiles": len(fake.live_profile_ids()), "lists": len(fake.list_ids()),
            "segments": len(fake.segment_ids()),
            "list_members": sum(len(fake.members(g)) for g in fake.list_ids()),
            "segment_members": sum(len(fake.members(g)) for g in fake.segment_ids())}
        assert tables["lists"] > 0 and tables["list_members"] > 0
