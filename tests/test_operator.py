"""The operator's view: what a sync prints at its end (text on a terminal, a JSON line when
piped), the progress bar on a terminal, --format auto, and shell completion."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from klaviyo_sync.commands.base import human_summary
from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .conftest import BASE
from .e2e_helpers import NOW, base_env, hours, iso

METRICS = f"{BASE}/api/metrics"


def metrics_page():
    return {"data": [{"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}}],
            "links": {"self": "x", "next": None}}


def run_on_terminal(args, env, timeout=60) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as a person at a shell does;
    return everything it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "klaviyo_sync", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env={**env, "TERM": "xterm", "COLUMNS": "160"})
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=timeout)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def fake():
    with FakeKlaviyo(n_events=4_000, span_hours=24, n_profiles=100, now=NOW) as f:
        f.enforce_limits = True
        yield f


def env_for(fake, db):
    return base_env(KLAVIYO_API_KEY=FAKE_API_KEY, KLAVIYO_BASE_URL=fake.base_url, KLAVIYO_SYNC_DB=str(db))


# -- the end-of-run summary ---------------------------------------------------------------
def test_piped_summary_is_one_json_line_and_format_text_is_the_human_line(mocked, cli):
    mocked.get(METRICS, json=metrics_page())
    piped = cli("sync-metrics")  # CliRunner's stdout is not a terminal: auto means JSON
    assert piped.exit_code == 0
    summary = json.loads(piped.stdout)
    assert summary["command"] == "sync-metrics" and summary["rows"] == {"metrics": 1}
    assert json.loads(cli("sync-metrics", "--format", "json").stdout)["rows"] == {"metrics": 0}
    text = cli("sync-metrics", "--format", "text")
    assert text.exit_code == 0 and text.stdout.startswith("sync-metrics ok: 0 metrics written; 1 pages, 1 requests in ")
    assert text.stdout.count("\n") == 1 and not text.stdout.startswith("{")
    assert cli("sync-metrics", "--format", "text", "-q").stdout == ""
    bad = cli("sync-metrics", "--format", "yaml")
    assert bad.exit_code == 2 and "--format" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_human_summary_says_rows_pages_seconds_rate_and_what_went_wrong():
    line = human_summary({"command": "sync-events", "status": "ok",
                          "window": {"start": "2026-11-26T00:00:00Z", "end": "2026-11-26T02:00:00Z"},
                          "rows": {"events": 249, "profiles": 154, "metrics": 0}, "pages": 8, "requests": 11,
                          "retries": 3, "rate_limited": 2, "rate_limit_wait_s": 2.5, "seconds": 0.5,
                          "events_seen": 250})
    assert line == ("sync-events ok: 249 events, 154 profiles, 0 metrics written; 8 pages, 11 requests in "
                    "0.50 s (500 events/s); 3 retries; 2 rate-limited, 2.5 s waited; "
                    "window 2026-11-26T00:00:00Z .. 2026-11-26T02:00:00Z")


def test_on_a_terminal_a_sync_shows_the_progress_bar_and_ends_with_the_human_summary(fake, tmp_path):
    since, until = NOW - hours(6), NOW - hours(2)
    screen = run_on_terminal(["sync-events", "--since", iso(since), "--until", iso(until)],
                             env_for(fake, tmp_path / "k.db"))
    want = len(fake.event_ids(since, until))
    assert "100% of window" in screen and f"{want:,} events" in screen  # the bar, at its end
    assert f"sync-events ok: {want:,} events," in screen
    assert '{"command"' not in screen  # no raw JSON on a terminal
    # -q on a terminal: nothing at all, no bar.
    quiet = run_on_terminal(["sync-events", "--since", iso(since), "--until", iso(until), "-q"],
                            env_for(fake, tmp_path / "k.db"))
    assert quiet == ""


def test_format_auto_table_on_a_terminal_json_when_piped(fake, tmp_path):
    db = tmp_path / "k.db"
    env = env_for(fake, db)
    screen = run_on_terminal(["campaigns", "--range", "30d", "--no-stats"], env)
    assert "Campaign" in screen and "┃" in screen  # a rich table
    piped = subprocess.run([sys.executable, "-m", "klaviyo_sync", "campaigns", "--range", "30d"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    rows = json.loads(piped.stdout)
    assert isinstance(rows, list) and rows and {"id", "name", "channel", "send_time"} <= set(rows[0])


# -- shell completion ----------------------------------------------------------------------
def test_shell_completion_is_on_and_help_still_works(cli):
    result = cli("--help", key=False)
    assert result.exit_code == 0
    assert "--install-completion" in result.stdout and "sync-events" in result.stdout
    env = {**base_env(), "_KLAVIYO_SYNC_COMPLETE": "complete_bash", "COMP_WORDS": "klaviyo-sync sync-ev",
           "COMP_CWORD": "1"}
    proc = subprocess.run([sys.executable, "-m", "klaviyo_sync"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["sync-events"], proc.stderr
    # --show-completion detects the shell it runs under (shellingham, from its parent processes):
    # run from bash, as a user would, not from whatever started pytest (under nohup no shell is
    # found and typer answers "Shell  not supported"); "; exit $?" keeps bash from exec'ing it.
    script = subprocess.run(["bash", "-c", '"$0" -m klaviyo_sync --show-completion; exit $?', sys.executable],
                            env=base_env(), capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_KLAVIYO_SYNC_COMPLETE" in script.stdout, script.stderr
