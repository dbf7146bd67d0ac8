"""README promises that had no test of their own, each against the fake API (or, for the exit
code of a bug, the CLI in-process)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from urllib.parse import parse_qs

from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, connect, ids, query, run_cli, sync_runs



def members_of(db, lid):
    return dict(query(db, "SELECT profile_id, joined_group_at FROM list_members WHERE list_id = ?", [lid]))


def truth_of(fake, gid):
    return {p: j[:19] + "Z" for p, j in fake.members(gid).items()}


def test_a_deleted_list_is_removed_with_its_members(tmp_path, now):
    """README, sync-lists: 'A list gone from the account is removed with its members.'"""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=50, n_profiles=120, n_quiet_profiles=10, now=now) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-lists", "--members", "all"], env).returncode == 0
        gone, kept = sorted(fake.list_ids())[:2]
        assert members_of(db, gone) == truth_of(fake, gone) != {}
        fake.delete_group(gone)
        run = run_cli(["sync-lists", "--members", "all"], env)
        assert run.returncode == 0, run.describe()
        assert run.summary["lists_removed"] == 1
        assert ids(db, "lists") == fake.list_ids() and gone not in ids(db, "lists")
        assert members_of(db, gone) == {}
        assert members_of(db, kept) == truth_of(fake, kept) != {}  # the others keep theirs
        assert ids(db, "list_members", "list_id") == {g for g in fake.list_ids() if fake.members(g)}


def test_a_full_membership_pass_runs_by_itself_after_full_every(tmp_path, now):
    """README: members who leave are invisible to the incremental cursor; a full pass that
    removes them runs automatically when the list's last full pass is older than --full-every."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=50, n_profiles=120, n_quiet_profiles=10, now=now) as fake:
        env = cli_env(fake, db)
        lid = sorted(fake.list_ids())[0]
        first = run_cli(["sync-lists", "--members", lid], env)
        assert first.returncode == 0 and first.summary["full_passes"] == 1  # a first pass is full
        leaver = sorted(fake.members(lid))[0]
        fake.leave(lid, [leaver])
        inc = run_cli(["sync-lists", "--members", lid], env)  # the default --full-every 7d
        assert inc.returncode == 0 and inc.summary["incremental_passes"] == 1 and "full_passes" not in inc.summary
        assert inc.summary["members_removed"] == 0
        assert leaver in members_of(db, lid)
        time.sleep(1.1)  # the last full pass is now older than one second (whatever the machine's speed)
        auto = run_cli(["sync-lists", "--members", lid, "--full-every", "1s"], env)
        assert auto.returncode == 0, auto.describe()
        assert auto.summary["full_passes"] == 1 and auto.summary["members_removed"] == 1
        assert members_of(db, lid) == truth_of(fake, lid) and leaver not in members_of(db, lid)


def test_sync_templates_full_reads_every_template_again(tmp_path, now):
    """README: sync-templates is incremental on `updated`; `--full` reads them all again (so a
    template missing locally, which no incremental run would bring back, is restored)."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=10, now=now, n_flows=4) as fake:
        env = cli_env(fake, db)
        first = run_cli(["sync-templates"], env)
        assert first.returncode == 0 and ids(db, "templates") == fake.template_ids() != set()
        # The least recently updated template: older than any incremental run's cursor.
        lost = min(fake.template_ids(), key=lambda t: fake.template(t)["attributes"]["updated"])
        con = connect(db)
        con.execute("DELETE FROM templates WHERE id = ?", [lost])
        con.close()
        seen = len(fake.request_log())
        inc = run_cli(["sync-templates"], env)
        assert inc.returncode == 0 and inc.summary["rows"]["templates"] == 0 and lost not in ids(db, "templates")
        (req,) = [r for r in fake.request_log()[seen:] if r["path"] == "/api/templates"]
        assert "greater-than(updated," in parse_qs(req["query"])["filter"][0]
        seen = len(fake.request_log())
        full = run_cli(["sync-templates", "--full"], env)
        assert full.returncode == 0, full.describe()
        pages = [r for r in fake.request_log()[seen:] if r["path"] == "/api/templates"]
        assert pages and not any("filter" in parse_qs(r["query"]) for r in pages)  # no cursor: everything
        assert full.summary["rows"]["templates"] == 1
        html = dict(query(db, "SELECT id, html FROM templates"))
        assert html == {t: fake.template(t)["attributes"]["html"] for t in fake.template_ids()}


def test_flows_refresh_fetches_from_the_api_even_when_the_database_could_answer(tmp_path, now):
    db = tmp_path / "k.db"
    day = (now - timedelta(days=3)).date()
    span = f"{day - timedelta(days=5)}..{day}"
    with FakeKlaviyo(seed=5, now=now, n_events=300, span_hours=24 * 9, n_flows=6) as fake:
        env = cli_env(fake, db, KLAVIYO_RATE_LIMITS="reports=50/500,flows=50/500")
        assert run_cli(["sync-flows", "--range", span], env).returncode == 0
        n = len(fake.request_log())
        local = run_cli(["flows", "--range", span, "--format", "json"], env)
        assert local.returncode == 0 and len(fake.request_log()) == n and "from the local database" in local.stderr
        renamed = sorted(fake.flow_ids(archived=False))[0]
        fake.touch_flow(renamed, rename="Renamed by the account")
        refreshed = run_cli(["flows", "--range", span, "--format", "json", "--refresh"], env)
        assert refreshed.returncode == 0, refreshed.describe()
        new = fake.request_log()[n:]
        assert any(r["path"] == "/api/flows" for r in new) and any(r["path"] == "/api/flow-series-reports" for r in new)
        names = {r["id"]: r["name"] for r in json.loads(refreshed.stdout)}
        assert names == {f: fake.flow(f)["attributes"]["name"] for f in names}
        assert names and query(db, "SELECT name FROM flows WHERE id = ?", [renamed]) == [("Renamed by the account",)]


def test_sync_all_exits_3_when_steps_fail_against_the_api(cli, tmp_path, monkeypatch, now):
    """README, sync-all: a step that fails against the API (after retries) is reported, the
    others still run, and the command exits 3 (in-process: the retries' sleeps are skipped)."""
    with FakeKlaviyo(n_events=50, now=now) as fake:
        fake.server_error_every = 1  # every request: 503, retried, then given up
        # Every step's account check also fails 6 times: a budget that lets them all through now.
        result = cli("sync-all", env={"KLAVIYO_BASE_URL": fake.base_url, "KLAVIYO_API_KEY": fake.api_key,
                                      "KLAVIYO_RATE_LIMITS": "accounts=100/1000"})
        log = fake.request_log()
    assert result.exit_code == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    runs = sync_runs(tmp_path / "k.db")
    assert len(runs) >= 9 and {r["status"] for r in runs} == {"failed"}  # every step ran, and failed
    assert lines[-1].startswith(f"klaviyo-sync: error: sync-all: {len(runs)} of {len(runs)} steps failed (sync-account, "
                                "sync-metrics, ")
    assert lines[-1].endswith("; the others ran")
    assert "klaviyo-sync: error: sync-metrics: GET /api/accounts failed after 6 attempts: HTTP 503" in result.stderr
    # Each step's first request (the account check) tried six times, then the next step goes on.
    assert [r["path"] for r in log] == ["/api/accounts"] * 6 * len(runs)


def test_a_bug_exits_1_with_one_line_and_a_traceback_only_with_v(cli, monkeypatch):
    """README, exit codes: 1 is an internal error (a bug): one line naming it, the traceback
    with -v."""
    def broken(*args, **kwargs):
        raise RuntimeError("something the code did not expect")

    monkeypatch.setattr("klaviyo_sync.commands.events._check_summary_format", broken)  # before any request
    result = cli("sync-metrics")
    assert result.exit_code == 1
    assert result.stderr == ("klaviyo-sync: error: unexpected error: RuntimeError: something the code did not "
                             "expect (run with -v for details)\n")
    verbose = cli("sync-metrics", "-v")
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr and verbose.stderr.rstrip().endswith(
        "klaviyo-sync: error: unexpected error: RuntimeError: something the code did not expect (run with -v for details)")
