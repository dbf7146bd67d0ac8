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
    synced.bad_body = body
    n0 = len(synced.request_log())
    res = run(synced, *command)
    assert res.exit_code == 3, res.output
    assert "without a data array" in res.output
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
    res = run(synced, *command, "--workers", "1") if path == "/api/events" else run(synced, *command)
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
