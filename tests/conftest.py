import json
import threading
from datetime import date
from pathlib import Path

import pytest
import responses
from typer.testing import CliRunner

from klaviyo_sync import db as store
from klaviyo_sync.client import KlaviyoClient
from klaviyo_sync.cli import app

from .e2e_helpers import fake_now

API_KEY = "pk_test_0000secretkey0000abcdef"
BASE = "https://a.klaviyo.com"
FIXTURES = Path(__file__).parent / "fixtures"


# The calendar date every in-process test sees (the revision-age warning reads it): fixed, so
# that no test changes its outcome on some future day. Subprocess tests get the real date and
# assert nothing that depends on it.
TODAY = date(2026, 12, 1)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("KLAVIYO_API_KEY", "KLAVIYO_SYNC_DB", "KLAVIYO_BASE_URL", "KLAVIYO_REVISION",
                "KLAVIYO_RATE_LIMITS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _pinned_today(monkeypatch):
    monkeypatch.setattr("klaviyo_sync.timeutil.today", lambda: TODAY)


@pytest.fixture
def now():
    """This test's "now" for a fake account or hand-built records, read when the test starts (see
    e2e_helpers.fake_now). One value per test: pass it to the fake and to the expectations alike.
    A module whose fake is module-scoped overrides it with a module-scoped ``now``."""
    return fake_now()


@pytest.fixture
def fixture_json():
    def load(name):
        return json.loads((FIXTURES / name).read_text())

    return load


ACCOUNT_ID = "AbC123"
ACCOUNT_BODY = {"data": [{"type": "account", "id": ACCOUNT_ID, "attributes": {"timezone": "UTC"},
                          "links": {"self": f"{BASE}/api/accounts/{ACCOUNT_ID}/"}}],
                "links": {"self": f"{BASE}/api/accounts/"}}


@pytest.fixture
def mocked():
    """Mocked Klaviyo; every command that syncs first reads the key's account (GET /api/accounts)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{BASE}/api/accounts", json=ACCOUNT_BODY)
        yield rsps


class FakeTime:
    """A clock that only moves when something sleeps; records every sleep."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class SharedClock:
    """A clock shared by threads that only moves when one of them sleeps, by 1/``sharers`` of the
    sleep (the sleepers share the passing time); ``last()`` is the calling thread's last reading."""

    def __init__(self, sharers: int, start: float = 1000.0):
        self._lock = threading.Lock()
        self._now = start
        self._sharers = sharers
        self._seen = threading.local()

    def monotonic(self) -> float:
        with self._lock:
            self._seen.last = self._now
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds / self._sharers

    def last(self) -> float:
        return self._seen.last


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def sleeps(fake_time):
    return fake_time.sleeps


@pytest.fixture
def client(fake_time):
    return KlaviyoClient(API_KEY, base_url=BASE, sleep=fake_time.sleep, clock=fake_time.monotonic)


@pytest.fixture
def db(tmp_path):
    database = store.open_db(tmp_path / "test.db")
    yield database
    database.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "k.db"


@pytest.fixture
def cli(db_path, monkeypatch):
    """Run the CLI in-process with the key in the environment, as cron would."""
    runner = CliRunner()
    monkeypatch.setattr("time.sleep", lambda s: None)

    def run(*args, env=None, key=True):
        full_env = {"KLAVIYO_SYNC_DB": str(db_path)}
        if key:
            full_env["KLAVIYO_API_KEY"] = API_KEY
        full_env.update(env or {})
        return runner.invoke(app, list(args), env=full_env)

    return run
