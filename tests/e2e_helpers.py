"""Helpers for tests/test_e2e.py: run the real CLI as a subprocess and read its SQLite file.

Everything here talks to the database with the standard library's sqlite3 only (not through
klaviyo_sync), so a bug in the tool's own store code cannot hide itself.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path

from klaviyo_sync.fake import FAKE_API_KEY

UTC = timezone.utc
CLI = [sys.executable, "-m", "klaviyo_sync"]
DEFAULT_TIMEOUT = 60
# Strings that must never show up in any output or file of a run.
SECRETS = [FAKE_API_KEY]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_env(**extra: str) -> dict:
    """The parent environment without any KLAVIYO_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


def cli_env(fake, db: Path, api_key: str = FAKE_API_KEY, **extra: str) -> dict:
    return base_env(KLAVIYO_API_KEY=api_key, KLAVIYO_BASE_URL=fake.base_url,
                    KLAVIYO_SYNC_DB=str(db), **extra)


@dataclass
class Run:
    args: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def summary(self) -> dict:
        """The JSON summary line a sync command prints on stdout (its last line)."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert lines, f"no stdout from {self.args}; stderr: {self.stderr}"
        return json.loads(lines[-1])

    def describe(self) -> str:
        return (f"klaviyo-sync {' '.join(map(str, self.args))} -> exit {self.returncode} "
                f"in {self.seconds:.2f}s\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}")


def assert_no_secret(text: str, where: str, secrets=()) -> None:
    for secret in [*SECRETS, *secrets]:
        assert secret not in text, f"the API key {secret!r} appears in {where}"


def run_cli(args, env: dict, *, timeout: float = DEFAULT_TIMEOUT, cwd=None, secrets=()) -> Run:
    """Run ``python -m klaviyo_sync ARGS``; the key must never be in its output."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run([*CLI, *map(str, args)], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise AssertionError(f"klaviyo-sync {args} did not finish in {timeout}s; stderr: {err}") from None
    run = Run(list(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
    assert_no_secret(run.stdout, f"stdout of {args}", secrets)
    assert_no_secret(run.stderr, f"stderr of {args}", secrets)
    return run


def _default_sigint() -> None:
    # As from an interactive shell: a suite started in the background (`pytest &`, some CI
    # runners) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args, env: dict, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, preexec_fn=_default_sigint)


def finish(proc: subprocess.Popen, args, t0: float, timeout: float = DEFAULT_TIMEOUT, secrets=()) -> Run:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"klaviyo-sync {args} did not finish in {timeout}s; stderr: {err}") from None
    run = Run(list(args), proc.returncode, out, err, time.monotonic() - t0)
    assert_no_secret(run.stdout, f"stdout of {args}", secrets)
    assert_no_secret(run.stderr, f"stderr of {args}", secrets)
    return run


def assert_no_secret_in_files(directory: Path, secrets=()) -> None:
    """No file under ``directory`` (databases, WAL, lock files) holds the key's bytes."""
    for path in Path(directory).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in [*SECRETS, *secrets]:
                assert secret.encode() not in data, f"the API key {secret!r} is stored in {path}"


# -- reading the database -----------------------------------------------------------------
def connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(db), isolation_level=None, timeout=30)


def query(db: Path, sql: str, params=()) -> list:
    conn = connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def ids(db: Path, table: str, column: str = "id") -> set:
    return {r[0] for r in query(db, f"SELECT {column} FROM {table}")}


def count(db: Path, table: str) -> int:
    return query(db, f"SELECT count(*) FROM {table}")[0][0]


def mark(db: Path, key: str = "events.mark") -> str | None:
    rows = query(db, "SELECT value FROM sync_state WHERE key = ?", [key])
    return rows[0][0] if rows else None


def dump(db: Path, tables=("metrics", "profiles", "events")) -> dict:
    """Every row of each table, sorted: for comparing two databases exactly."""
    conn = connect(db)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def sync_runs(db: Path) -> list[dict]:
    conn = connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM sync_runs ORDER BY id")]
    finally:
        conn.close()


def try_progress(db: Path) -> tuple[int, str | None]:
    """(events rows, events.mark) of a database another process is writing; (0, None) until
    its schema exists."""
    if not Path(db).exists():
        return 0, None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5, isolation_level=None)
    except sqlite3.Error:
        return 0, None
    try:
        n = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        row = conn.execute("SELECT value FROM sync_state WHERE key = 'events.mark'").fetchone()
        return n, row[0] if row else None
    except sqlite3.Error:
        return 0, None
    finally:
        conn.close()


def assert_events_match_fake(db: Path, fake) -> None:
    """Each stored event has the fake's metric, profile, datetime, timestamp and uuid."""
    rows = query(db, "SELECT id, metric_id, profile_id, datetime, timestamp, uuid FROM events")
    bad = []
    for eid, metric_id, profile_id, dt, ts, uuid in rows:
        i = fake.event_index(eid)
        if i is None:
            bad.append((eid, "not an event of the fake"))
            continue
        ev = fake.event(i)
        a = ev["attributes"]
        want_profile = (ev["relationships"]["profile"]["data"] or {}).get("id")
        want = (ev["relationships"]["metric"]["data"]["id"], want_profile,
                a["datetime"][:19] + "Z", a["timestamp"], a["uuid"])
        if (metric_id, profile_id, dt, ts, uuid) != want:
            bad.append((eid, (metric_id, profile_id, dt, ts, uuid), want))
    assert not bad, f"{len(bad)} event rows differ from the fake, e.g. {bad[:3]}"


def assert_events_window(db: Path, fake, since: datetime, until: datetime) -> None:
    """The events table holds exactly the fake's events of [since, until), with every profile
    and metric they reference."""
    got = ids(db, "events")
    want = fake.event_ids(since, until)
    assert got == want, (f"events differ from the fake's window: {len(want - got)} missing, "
                         f"{len(got - want)} extra (of {len(want)})")
    outside = query(db, "SELECT id, datetime FROM events WHERE datetime < ? OR datetime >= ?",
                    [iso(since), iso(until)])
    assert outside == [], f"events outside the window: {outside[:5]}"
    dangling_p = query(db, "SELECT DISTINCT profile_id FROM events WHERE profile_id IS NOT NULL "
                           "AND profile_id NOT IN (SELECT id FROM profiles)")
    dangling_m = query(db, "SELECT DISTINCT metric_id FROM events "
                           "WHERE metric_id IS NULL OR metric_id NOT IN (SELECT id FROM metrics)")
    assert dangling_p == [] and dangling_m == [], (dangling_p[:5], dangling_m[:5])
    assert ids(db, "profiles") == fake.profile_ids(since, until)
    assert ids(db, "metrics") == fake.event_metric_ids(since, until)


def wait_for(predicate, timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def kill_when(proc: subprocess.Popen, fake, ready, what: str, timeout: float = 60) -> None:
    """SIGKILL the CLI ``proc`` (from start_cli) as soon as ``ready()`` holds, failing with ``what``
    when it does not within ``timeout``; then let the requests the fake parked (``hold_after``) go."""
    try:
        assert wait_for(ready, timeout=timeout), what
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        fake.release()


def floor_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_partial_run_sound(db: Path, fake, since: datetime, until: datetime) -> set:
    """After a run that stopped early: only events of the window are stored, and the stored
    mark claims no instant before which an event of the window is missing. Returns the ids."""
    got = ids(db, "events")
    assert got <= fake.event_ids(since, until), "events that are not the fake's events of the window"
    outside = query(db, "SELECT count(*) FROM events WHERE datetime < ? OR datetime >= ?",
                    [iso(since), iso(until)])[0][0]
    assert outside == 0, f"{outside} events outside the window"
    m = mark(db)
    if m is not None:
        assert iso(since) <= m <= iso(until), m
        missing = fake.event_ids(since, parse_iso(m)) - got
        assert not missing, (f"the mark {m} claims coverage, but {len(missing)} events before it "
                             f"are missing")
    return got


# -- shared by the end-to-end test modules -------------------------------------------------
def fake_now() -> datetime:
    """A fake account's "now": a minute back, so everything the fake holds is in the past of any
    CLI run. Read when a test runs (the ``now`` fixture of conftest.py), never at import: a module
    imported minutes before its test runs would seed the fake with a stale clock. No test may
    assume the CLI's clock reads its day (midnight may pass in between): they pass explicit
    windows or read the window a run reports; tests/clock/run_shifted.py runs them at 00:00:30
    UTC and at a month's last second to prove it."""
    return floor_now() - timedelta(minutes=1)


@dataclass(frozen=True)
class PastDays:
    """A fake account's clock for tests of whole days: its events end at ``now``, noon UTC some
    days before today, and begin at ``start``; d0..d1 are the whole days between them. So
    neither today nor a settle window reaches them, whatever the hour the test runs at."""
    now: datetime
    start: datetime

    @property
    def d0(self):
        return (self.start + timedelta(days=1)).date()

    @property
    def d1(self):
        return (self.now - timedelta(days=1)).date()

    @property
    def range(self) -> str:
        return f"{self.d0}..{self.d1}"


def past_days(span: int, back: int = 5) -> PastDays:
    """``span`` days of events ending at noon UTC ``back`` days before today, read now (call it
    in a fixture, never at import)."""
    now = datetime.combine(datetime.now(UTC).date() - timedelta(days=back), dtime(12), UTC)
    return PastDays(now, now - timedelta(days=span))


# The headers of a request to the fake made by a test itself (not by the CLI).
AUTH_HEADERS = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15",
                "Accept": "application/vnd.api+json"}


def fetch_pages(url: str, params: dict | None = None, *, session=None, headers: dict | None = None,
                max_pages: int = 10_000) -> list[dict]:
    """GET ``url`` (with ``params``), then follow ``links.next`` exactly as given, to the last
    page; every page's JSON document (each must answer 200)."""
    import requests

    session = session or requests.Session()
    pages: list[dict] = []
    while url:
        r = session.get(url, params=params, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        doc = r.json()
        pages.append(doc)
        url, params = doc["links"].get("next"), None
        assert len(pages) <= max_pages, f"more than {max_pages} pages"
    return pages


def walk(fake, path: str, **params) -> list[dict]:
    """Every record of a listing of the fake, through all its pages."""
    return [r for doc in fetch_pages(fake.base_url + path, params, headers=AUTH_HEADERS) for r in doc["data"]]
