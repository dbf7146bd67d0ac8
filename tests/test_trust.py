"""Issue 18, section 0: answers that must never be read as "nothing", keys that must never leak,
loops that must end. The CLI runs in-process (retries do not sleep) against the fake API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

from klaviyo_sync.cli import app
from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import dump, floor_now, ids, mark, query, sync_runs

NOW = floor_now() - timedelta(minutes=1)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(fake, *args)``: the CLI in-process against ``fake``; retries do not sleep."""
    monkeypatch.setattr("time.sleep", lambda s: None)
    runner = CliRunner()
    db = tmp_path / "k.db"

    def invoke(fake, *args, key=FAKE_API_KEY, env=None):
        full = {"KLAVIYO_SYNC_DB": str(db), "KLAVIYO_API_KEY": key, "KLAVIYO_BASE_URL": fake.base_url,
                **(env or {})}
        return runner.invoke(app, [str(a) for a in args], env=full)

    invoke.db = db
    return invoke


def audience(db) -> dict:
    return {**dump(db, ("profiles", "lists", "segments", "list_members", "segment_members", "events")),
            "mark": mark(db)}


@pytest.fixture
def synced(run):
    fake = FakeKlaviyo(n_events=200, n_profiles=60, n_quiet_profiles=10, span_hours=24, now=NOW).start()
    try:
        for args in (["sync-events", "--hours", "24"], ["sync-profiles"], ["sync-lists", "--members", "all"],
                     ["sync-segments", "--members", "all"]):
            res = run(fake, *args)
            assert res.exit_code == 0, res.output
        yield fake
    finally:
        fake.stop()


MALFORMED = [b'{"data": null}', b"{}", b'{"data": {"type": "profile", "id": "x"}}']


@pytest.mark.parametrize("body", MALFORMED, ids=["data-null", "empty-object", "data-object"])
@pytest.mark.parametrize("command", [["sync-profiles", "--full"], ["sync-lists", "--members", "all"],
                                     ["sync-segments", "--members", "all"], ["sync-events", "--hours", "24"]])
def test_a_body_without_a_data_array_is_malformed_not_empty(synced, run, body, command):
    before = audience(run.db)
    assert len(before["profiles"]) == 70 and before["list_members"] and before["mark"]
    synced.bad_body, synced.bad_body_path = body, "/api/" + command[0].split("-")[1]
    n0 = len(synced.request_log())
    res = run(synced, *command)
    assert res.exit_code == 3, res.output
    assert "without a data array" in res.output
    assert synced.request_log()[n0]["path"] == "/api/accounts"  # the account is checked first
    n0 += 1
    assert audience(run.db) == before  # nothing tombstoned, deleted, or moved
    assert query(run.db, "SELECT count(*) FROM profiles WHERE deleted_at IS NOT NULL") == [(0,)]
    # retried (6 attempts), then given up: the same URL asked again, not read as the last page
    # (sync-events asks its time slices concurrently: each is retried on its own)
    asked = [(r["path"], r["query"]) for r in synced.request_log()[n0:]]
    assert len({p for p, _ in asked}) == 1, asked
    assert {asked.count(a) for a in asked} == {6}, asked
    assert sync_runs(run.db)[-1]["status"] == "failed"


@pytest.mark.parametrize("body", [b'{"data": null}', b"{}", b'{"data": []}'])
def test_a_single_resource_or_report_without_a_data_object_is_malformed(synced, run, body):
    synced.bad_body, synced.bad_body_path = body, "/api/lists/"
    before = dump(run.db, ("lists",))
    res = run(synced, "sync-lists", "--counts")
    assert res.exit_code == 3, res.output
    assert "without a data object" in res.output
    assert dump(run.db, ("lists",)) == before


@pytest.mark.parametrize("mode", ["self", "back"])
@pytest.mark.parametrize("path,command", [("/api/profiles", ["sync-profiles", "--full"]),
                                          ("/api/events", ["sync-events", "--hours", "24"])])
def test_a_cursor_seen_twice_in_one_pass_is_malformed(synced, run, mode, path, command):
    before = audience(run.db)
    synced.cursor_loop, synced.cursor_loop_path = mode, path
    n0 = len(synced.request_log())
    res = run(synced, *command, "--workers", "1")  # one chain each: sync-events and sync-profiles read in parallel otherwise
    assert res.exit_code == 3, res.output
    assert "cursor loop" in res.output
    assert audience(run.db) == before
    # stopped at the first repeated cursor: a handful of requests, not a thousand
    assert len([r for r in synced.request_log()[n0:] if r["path"] == path]) <= 4


# -- the key ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["\n", "\r\n", " \t"])
def test_a_key_with_surrounding_whitespace_is_stripped_and_never_shown(synced, run, suffix):
    key = FAKE_API_KEY + suffix
    ok = run(synced, "sync-metrics", key=key)
    assert ok.exit_code == 0, ok.output
    assert all(r["authorization"] == f"Klaviyo-API-Key {FAKE_API_KEY}" for r in synced.request_log())
    # A failing run (a key of the right shape the account does not know) under -v: the error,
    # the traceback, sync_runs.error and status hold no form of it.
    wrong = "pk_wrong_0123456789abcdef0123456789" + suffix
    bad = run(synced, "sync-metrics", "-v", key=wrong)
    assert bad.exit_code == 4, bad.output
    status = run(synced, "status", "--format", "json", key=wrong)
    stored = " ".join(str(r["error"]) for r in sync_runs(run.db))
    for text in (bad.output, status.output, stored, (run.db).read_bytes().decode("latin-1")):
        for form in (wrong, wrong.strip(), repr(wrong)[1:-1]):
            assert form not in text


@pytest.mark.parametrize("key", ["pk_fake_0123\n456789abcdef0123456789", "pk_fake_0123\x1b456789abcdef01234",
                                 "pk_fake 0123456789abcdef0123456789", "pk_fake_0123456789abcdef\u20ac0123"])
def test_a_key_with_a_character_inside_that_no_key_holds_is_refused_with_exit_2(synced, run, key):
    n0 = len(synced.request_log())
    res = run(synced, "sync-metrics", "-v", key=key)
    assert res.exit_code == 2, res.output
    assert "the API key contains" in res.output  # (-v: with the traceback, redacted)
    for form in (key, repr(key)[1:-1], key[:12], key[-12:]):
        assert form not in res.output
    assert len(synced.request_log()) == n0  # nothing sent


def test_redact_removes_every_form_of_the_key():
    from urllib.parse import quote, quote_plus

    from klaviyo_sync.errors import redact

    key = "pk_abc/def+ghi 0123456789\r\n"
    for text in (key, repr(key), json_dumps(key), quote(key), quote_plus(key), repr(key.strip()),
                 key.encode("unicode_escape").decode()):
        out = redact(f"header value {text}!", key)
        assert "[REDACTED]" in out and "0123456789" not in out and "pk_abc" not in out, out


def test_the_logging_layer_redacts_the_escaped_key(capsys):
    import logging

    from klaviyo_sync.logsetup import setup_logging

    key = FAKE_API_KEY + "\r\n"
    setup_logging(True, [key])
    try:
        raise ValueError(f"Invalid return character or leading space in header: {key!r}")
    except ValueError:
        logging.getLogger("urllib3").exception("failed with %r", key)
    err = capsys.readouterr().err
    assert "[REDACTED]" in err and FAKE_API_KEY not in err
    setup_logging(False, [])


def json_dumps(value):
    import json

    return json.dumps(value)


# -- the account ------------------------------------------------------------------------------
OTHER_KEY = "pk_other_fedcba9876543210fedcba98"


def test_a_key_of_another_account_is_refused_before_anything_is_written(synced, run):
    assert query(run.db, "SELECT value FROM sync_state WHERE key = 'account.id'") == [("XyZ123",)]
    before = {**audience(run.db), "runs": sync_runs(run.db)}
    with FakeKlaviyo(n_events=50, n_profiles=5, n_quiet_profiles=0, span_hours=24, now=NOW,
                     api_key=OTHER_KEY, account_id="QwE789", seed=2) as other:
        for command in (["sync-profiles", "--full"], ["sync-lists"], ["sync-events", "--hours", "24"],
                        ["sync-all"], ["verify", "--range", "2d"]):
            res = run(other, *command, key=OTHER_KEY)
            assert res.exit_code == 4, (command, res.output)
            assert "XyZ123" in res.output and "QwE789" in res.output
            assert {**audience(run.db), "runs": sync_runs(run.db)} == before
        # only the account was asked: nothing of the other account was read
        assert {r["path"] for r in other.request_log()} == {"/api/accounts"}
    # the right key still syncs
    ok = run(synced, "sync-profiles")
    assert ok.exit_code == 0, ok.output


def test_the_account_is_read_once_per_run_and_remembered_from_the_first_sync(run):
    with FakeKlaviyo(n_events=50, n_profiles=5, n_quiet_profiles=0, span_hours=24, now=NOW,
                     account_id="AcC001") as fake:
        res = run(fake, "sync-all")
        assert res.exit_code == 0, res.output
        assert [r["path"] for r in fake.request_log()].count("/api/accounts") == 1
        assert query(run.db, "SELECT value FROM sync_state WHERE key = 'account.id'") == [("AcC001",)]
        log = fake.request_log()
        assert log[0]["path"] == "/api/accounts"


def test_a_key_that_cannot_read_the_account_gets_a_warning_not_a_refusal(run):
    with FakeKlaviyo(n_events=50, n_profiles=5, n_quiet_profiles=0, span_hours=24, now=NOW) as fake:
        fake.revoke_scope("accounts:read")
        res = run(fake, "sync-metrics")
        assert res.exit_code == 0, res.output
        assert ("klaviyo-sync: warning: the API key cannot read /api/accounts (scope accounts:read): "
                "cannot check that it belongs to the account this database holds\n") in res.output
        assert query(run.db, "SELECT count(*) FROM sync_state WHERE key = 'account.id'") == [(0,)]
        assert ids(run.db, "metrics") == fake.metric_ids()


# -- removals ---------------------------------------------------------------------------------
def test_a_full_pass_removing_most_profiles_stops_until_allowed_and_a_reappearing_one_is_restored(synced, run):
    everyone = synced.live_profile_ids()
    assert len(everyone) == 70
    gone = set(sorted(everyone)[:40])  # 40 of 70: more than half
    synced.delete_profiles(gone)
    before = audience(run.db)
    refused = run(synced, "sync-profiles", "--full")
    assert refused.exit_code == 10, refused.output
    assert "40 of the 70 stored profiles" in refused.output and "--allow-removals" in refused.output
    assert {k: v for k, v in audience(run.db).items() if k != "mark"} == \
        {k: v for k, v in before.items() if k != "mark"}
    assert query(run.db, "SELECT count(*) FROM profiles WHERE deleted_at IS NOT NULL") == [(0,)]
    assert sync_runs(run.db)[-1]["status"] == "failed"

    allowed = run(synced, "sync-profiles", "--full", "--allow-removals")
    assert allowed.exit_code == 0, allowed.output
    assert {r[0] for r in query(run.db, "SELECT id FROM profiles WHERE deleted_at IS NOT NULL")} == gone

    back = set(sorted(gone)[:5])
    synced.restore_profiles(back)
    again = run(synced, "sync-profiles", "--full")
    assert again.exit_code == 0, again.output
    assert {r[0] for r in query(run.db, "SELECT id FROM profiles WHERE deleted_at IS NOT NULL")} == gone - back
    for pid in back:
        a = synced.profile(pid)["attributes"]
        assert query(run.db, "SELECT email, first_name, deleted_at FROM profiles WHERE id = ?", [pid]) == \
            [(a["email"], a["first_name"], None)]


def test_a_few_removals_pass_and_lists_emptied_by_more_than_half_are_refused(synced, run):
    few = set(sorted(synced.live_profile_ids())[:3])
    synced.delete_profiles(few)
    res = run(synced, "sync-profiles", "--full")
    assert res.exit_code == 0, res.output
    assert {r[0] for r in query(run.db, "SELECT id FROM profiles WHERE deleted_at IS NOT NULL")} == few
    # members: a list losing more than half of its (more than 10) members
    gid = max(synced.list_ids(), key=lambda g: len(synced.members(g)))
    members = sorted(synced.members(gid))
    stored = query(run.db, "SELECT count(*) FROM list_members WHERE list_id = ?", [gid])[0][0]
    assert stored > 10
    synced.leave(gid, members[: len(members) // 2 + 2])
    refused = run(synced, "sync-lists", "--members", gid, "--full")
    assert refused.exit_code == 10, refused.output
    assert f"members of list {gid}" in refused.output
    assert query(run.db, "SELECT count(*) FROM list_members WHERE list_id = ?", [gid])[0][0] == stored
    ok = run(synced, "sync-lists", "--members", gid, "--full", "--allow-removals")
    assert ok.exit_code == 0, ok.output
    assert {r[0] for r in query(run.db, "SELECT profile_id FROM list_members WHERE list_id = ?", [gid])} == \
        set(synced.members(gid))


def test_the_fake_serves_the_account_as_the_spec_declares():
    import requests

    with FakeKlaviyo(n_events=10, n_profiles=5, account_id="ZzZ999", account_timezone="Pacific/Auckland") as fake:
        h = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15"}
        doc = requests.get(f"{fake.base_url}/api/accounts", headers=h, timeout=10).json()
        (acct,) = doc["data"]
        assert acct["type"] == "account" and acct["id"] == "ZzZ999"
        assert {"test_account", "contact_information", "timezone", "preferred_currency", "public_api_key",
                "locale", "industry"} <= set(acct["attributes"])
        assert acct["attributes"]["timezone"] == "Pacific/Auckland"
        sparse = requests.get(f"{fake.base_url}/api/accounts", headers=h, timeout=10,
                              params={"fields[account]": "timezone,contact_information.organization_name"}).json()
        assert sparse["data"][0]["attributes"] == {"timezone": "Pacific/Auckland",
                                                   "contact_information": {"organization_name": "Fake Store"}}
        bad = requests.get(f"{fake.base_url}/api/accounts", headers=h, timeout=10, params={"fields[account]": "nope"})
        assert bad.status_code == 400
        fake.revoke_scope("accounts:read")
        denied = requests.get(f"{fake.base_url}/api/accounts", headers=h, timeout=10)
        assert denied.status_code == 403 and "accounts:read" in denied.text


# -- one bad record, one failing step ---------------------------------------------------------
def test_a_value_nested_300_levels_deep_is_stored_whole():
    import json

    from klaviyo_sync.db import to_json

    deep: dict = {}
    node = deep
    for _ in range(300):
        node["a"] = {}
        node = node["a"]
    node["leaf"] = "x"
    assert json.loads(to_json(deep)) == deep


def test_sync_all_runs_the_other_steps_after_any_failure_and_exits_with_its_code(run, monkeypatch):
    import dataclasses

    from klaviyo_sync.commands.base import SYNC_ALL_STEPS

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in one step")

    patched = [dataclasses.replace(step, run=broken) if step.command in ("sync-lists", "sync-segments")
               else step for step in SYNC_ALL_STEPS]
    monkeypatch.setattr("klaviyo_sync.commands.all.SYNC_ALL_STEPS", patched)
    with FakeKlaviyo(n_events=50, n_profiles=5, n_quiet_profiles=0, span_hours=24, now=NOW) as fake:
        res = run(fake, "sync-all")
        assert res.exit_code == 1, res.output
        assert "sync-lists: unexpected error: RuntimeError: a bug in one step" in res.output
        runs = {r["command"]: r["status"] for r in sync_runs(run.db)}
        assert runs["sync-lists"] == "failed" and runs["sync-segments"] == "failed"
        ok = {c for c, s in runs.items() if s == "ok"}
        assert {"sync-metrics", "sync-profiles", "sync-events", "sync-campaigns"} <= ok
        assert ids(run.db, "metrics") == fake.metric_ids()


# -- a deadline per request -------------------------------------------------------------------
class Trickle:
    """Loopback server answering every request one byte at a time, a byte every 0.3 s (the
    headers too with ``headers=True``), for ever: a read timeout alone never fires."""

    def __init__(self, headers: bool):
        import socket
        import threading

        self.headers = headers
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        body = b'{"data": [], "links": {"next": null}}' + b" " * 10_000
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.api+json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            conn.recv(65536)
            if not self.headers:
                conn.sendall(head)
            for b in (head if self.headers else b"") + body:
                if self.stop.wait(0.3):
                    break
                conn.sendall(bytes([b]))
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("headers", [False, True], ids=["trickled-body", "trickled-headers"])
def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(headers):
    from klaviyo_sync.client import KlaviyoClient
    from klaviyo_sync.errors import ApiError

    server = Trickle(headers)
    try:
        client = KlaviyoClient(FAKE_API_KEY, base_url=server.base_url, deadline=1.0, max_attempts=2,
                               sleep=lambda s: None)
        with pytest.raises(ApiError, match="failed after 2 attempts: no complete answer within the 1 s deadline"):
            client.request("GET", "/api/metrics")
        assert server.connections == 2
    finally:
        server.close()


def test_the_request_deadline_is_a_setting(run, monkeypatch):
    server = Trickle(False)
    try:
        res = run(server, "sync-metrics", "--request-deadline", "1")
        assert res.exit_code == 3, res.output
        assert "no complete answer within the 1 s deadline" in res.output
        bad = run(server, "sync-metrics", "--request-deadline", "0")
        assert bad.exit_code == 2
    finally:
        server.close()


# -- absurd ranges and values ----------------------------------------------------------------
ABSURD = [
    (["sync-events", "--hours", "inf"], "Klaviyo holds nothing older"),
    (["sync-events", "--hours", "1e300"], "Klaviyo holds nothing older"),
    (["sync-events", "--overlap", "99999999999999d"], "at most 3660 days"),
    (["verify", "--range", "99999d"], "Klaviyo holds nothing older"),
    (["verify", "--range", "800d"], "at most 731 days"),
    (["flows", "--range", "99999d"], "Klaviyo holds nothing older"),
    (["sync-flow-stats", "--range", "400d"], "at most 366 days"),
    (["sync-flows", "--range", "2011-12-31.."], "Klaviyo holds nothing older"),
    (["sync-campaigns", "--range", "400d"], "report quota"),
    (["campaigns", "--range", "2000-01-01..2000-02-01"], "Klaviyo holds nothing older"),
    (["status", "--max-age", "99999999999d"], "at most 3660 days"),
    (["sync-events", "--metric", "Placed\udcffOrder"], "--metric: not valid UTF-8"),
    (["verify", "--metric", "\udcff"], "--metric: not valid UTF-8"),
]


@pytest.mark.parametrize("args,message", ABSURD, ids=[" ".join(a) for a, _ in ABSURD])
def test_absurd_ranges_and_values_exit_2_before_any_request(run, args, message):
    with FakeKlaviyo(n_events=10, n_profiles=5) as fake:
        res = run(fake, *args)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert fake.request_log() == []


def test_since_before_klaviyo_existed_means_everything_and_is_sent_with_four_digit_years(run):
    with FakeKlaviyo(n_events=30, n_profiles=5, span_hours=24, now=NOW) as fake:
        res = run(fake, "sync-events", "--since", "0001-01-01", "--workers", "1")
        assert res.exit_code == 0, res.output
        assert ids(run.db, "events") == fake.event_ids(NOW - timedelta(days=3650 * 2), NOW + timedelta(days=1))
        filters = [r["query"] for r in fake.request_log() if r["path"] == "/api/events"]
        assert filters and all("2012-01-01T00%3A00%3A00Z" in q or "page%5Bcursor%5D" in q or
                               "greater-or-equal" not in q for q in filters), filters


# -- the smaller ones -------------------------------------------------------------------------
def test_retry_after_as_an_http_date_is_honoured():
    from klaviyo_sync.client import _parse_retry_after

    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0  # past: now
    assert _parse_retry_after("7") == 7.0
    assert _parse_retry_after("soon") is None and _parse_retry_after("nan") is None


def test_a_page_larger_than_the_cap_is_a_malformed_answer(mocked):
    from klaviyo_sync.client import KlaviyoClient
    from klaviyo_sync.errors import ApiError

    from .conftest import BASE

    mocked.get(f"{BASE}/api/metrics", body=b'{"data": [], "pad": "' + b"x" * 5000 + b'"}',
               content_type="application/vnd.api+json")
    client = KlaviyoClient(FAKE_API_KEY, base_url=BASE, max_body=4096, sleep=lambda s: None)
    with pytest.raises(ApiError, match="larger than"):
        client.request("GET", "/api/metrics")
    assert len(mocked.calls) == 1  # not retried: the same answer would come back


@pytest.mark.parametrize("url,allow,message", [
    ("https://user:secret@a.klaviyo.com", False, "holds credentials"),
    ("http://a.klaviyo.com", False, "plain http://"),
    ("http://10.0.0.5:8080", False, "plain http://"),
])
def test_unsafe_base_urls_are_refused_with_exit_2(run, url, allow, message):
    class Url:
        base_url = url

    res = run(Url, "sync-metrics")
    assert res.exit_code == 2, res.output
    assert message in res.output and "secret" not in res.output


def test_plain_http_to_another_host_is_allowed_with_the_flag():
    from klaviyo_sync.client import KlaviyoClient

    assert KlaviyoClient(FAKE_API_KEY, base_url="http://proxy.internal", allow_http=True).base_url == "http://proxy.internal"
    assert KlaviyoClient(FAKE_API_KEY, base_url="http://localhost:8080").base_url == "http://localhost:8080"


def test_another_applications_sqlite_file_is_left_unchanged(run, tmp_path):
    import sqlite3

    other = tmp_path / "notes.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with FakeKlaviyo(n_events=10, n_profiles=5) as fake:
        for args in (["status"], ["sync-metrics"]):
            res = run(fake, *args, "--db", other)
            assert res.exit_code == 8, res.output
            assert "not a klaviyo-sync database" in res.output
    assert other.read_bytes() == before
    # checked before the lock is taken: no notes.db.lock (nor WAL, nor anything else) appears beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("notes")) == ["notes.db"]


@pytest.mark.parametrize("db", ["/dev/null", ""])
def test_db_paths_that_are_no_file_exit_2_and_leave_nothing(run, db, tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    before = set(os.listdir("/dev")), set(os.listdir(tmp_path))
    with FakeKlaviyo(n_events=10, n_profiles=5) as fake:
        for command in ("status", "sync-metrics"):
            res = run(fake, command, "--db", db)
            assert res.exit_code == 2, res.output
        assert fake.request_log() == []
    assert (set(os.listdir("/dev")), set(os.listdir(tmp_path))) == before


def test_a_symlinked_lock_file_is_not_followed(run, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    (tmp_path / "k.db.lock").symlink_to(victim)
    with FakeKlaviyo(n_events=10, n_profiles=5) as fake:
        res = run(fake, "sync-metrics")
        assert res.exit_code == 8, res.output
    assert victim.read_text() == "do not truncate me"


@pytest.mark.parametrize("command", ["sync-profiles", "sync-lists", "sync-segments"])
def test_the_audience_commands_take_format(run, command):
    import json

    with FakeKlaviyo(n_events=10, n_profiles=5, n_quiet_profiles=0) as fake:
        res = run(fake, command, "--format", "json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout.strip().splitlines()[-1])["command"] == command
        text = run(fake, command, "--format", "text")
        assert text.exit_code == 0 and text.stdout.startswith(f"{command} ok:"), text.stdout
        assert run(fake, command, "--format", "xml").exit_code == 2


def test_verify_with_an_unknown_metric_exits_2_before_the_lock_and_records_no_run(synced, run):
    runs = sync_runs(run.db)
    res = run(synced, "verify", "--range", "2d", "--metric", "No Such Metric")
    assert res.exit_code == 2, res.output
    assert "unknown metric 'No Such Metric'" in res.output
    assert sync_runs(run.db) == runs
    # known locally: no request at all before the verify itself
    n0 = len(synced.request_log())
    name = query(run.db, "SELECT name FROM metrics ORDER BY name LIMIT 1")[0][0]
    ok = run(synced, "verify", "--range", "2d", "--metric", name)
    assert ok.exit_code in (0, 9), ok.output
    assert [r["path"] for r in synced.request_log()[n0:]][0] == "/api/accounts"
