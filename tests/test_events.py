import ctypes
import json
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.streams.events import EventSlice, contiguous_mark, plan_slices, sync_events
from klaviyo_sync.timeutil import Window

from .conftest import BASE
from .e2e_helpers import iso  # the test's own formatting, not the product's timeutil.iso
from .openapi_check import request_problems

EVENTS = f"{BASE}/api/events"
UTC = timezone.utc
T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
FILTER = re.compile(r"^and\(greater-or-equal\(datetime,([^)]+)\),less-than\(datetime,([^)]+)\)"
                    r"(?:,equals\(metric_id,\"([^\"]+)\"\))?\)$")


def make_event(i, dt, metric="M1", profile="P1"):
    rel = {"metric": {"data": {"type": "metric", "id": metric}}}
    if profile:
        rel["profile"] = {"data": {"type": "profile", "id": profile}}
    return {"type": "event", "id": f"E{i:05d}", "attributes": {
        "timestamp": int(dt.timestamp()), "datetime": dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "uuid": f"uuid-{i}", "event_properties": {"$value": 9.5, "sku": "X"} if metric == "M1" else {"a": 1}},
        "relationships": rel, "links": {"self": f"{EVENTS}/E{i:05d}"}}


class EventsApi:
    """A callback for responses that answers /api/events like Klaviyo: filters, sorts and pages.

    Kept beside the fake (which the end-to-end tests use) because these are unit tests of the
    events engine in-process, with a clock that only moves when the code sleeps and pages the
    fake does not serve (hand-built events with edge cases, a 400 on the n-th call); every request
    it receives is checked against Klaviyo's OpenAPI spec, so it enforces the API's rules too."""

    def __init__(self, events, page_size=None, fail_on_call=None):
        self.events = sorted(events, key=lambda e: (e["attributes"]["datetime"], e["id"]))
        self.page_size = page_size
        self.fail_on_call = fail_on_call
        self.calls = []

    def __call__(self, request):
        self.calls.append(request.url)
        parts = urlsplit(request.url)
        assert request_problems("GET", parts.path, parts.query, None) == []
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            return 400, {}, json.dumps({"errors": [{"detail": "Invalid cursor provided."}]})
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        m = FILTER.match(q["filter"])
        assert m, q["filter"]
        start, end, metric = m.groups()
        assert start.endswith("Z") and end.endswith("Z")
        assert q["include"] == "metric,profile,attributions" and q["sort"] == "datetime"
        size = self.page_size or int(q["page[size]"])
        rows = [e for e in self.events
                if start <= e["attributes"]["datetime"][:19] + "Z" < end
                and (metric is None or e["relationships"]["metric"]["data"]["id"] == metric)]
        offset = int(q.get("page[cursor]", "0"))
        page = rows[offset:offset + size]
        included = {}
        for e in page:
            for name in ("metric", "profile"):
                data = (e["relationships"].get(name) or {}).get("data")
                if data:
                    included[(data["type"], data["id"])] = {
                        "type": data["type"], "id": data["id"],
                        "attributes": {"email": f"{data['id'].lower()}@example.com"} if name == "profile"
                        else {"name": {"M1": "Placed Order", "M2": "Opened Email"}[data["id"]]}}
        nxt = None
        if offset + size < len(rows):
            params = dict(q, **{"page[cursor]": str(offset + size)})
            from urllib.parse import urlencode
            nxt = f"{EVENTS}?{urlencode(params)}"
        body = {"data": page, "included": list(included.values()), "links": {"self": request.url, "next": nxt}}
        return 200, {"Content-Type": "application/vnd.api+json"}, json.dumps(body)


def serve(mocked, api):
    mocked.add_callback("GET", EVENTS, callback=api)
    return api


def ids(db):
    return {r[0] for r in db.execute("SELECT id FROM events")}


def test_window_boundaries_start_in_end_out(mocked, client, db):
    start, end = T0, T0 + timedelta(hours=2)
    events = [make_event(0, start - timedelta(seconds=1)), make_event(1, start),
              make_event(2, start + timedelta(minutes=30)), make_event(3, end - timedelta(seconds=1)),
              make_event(4, end)]
    api = serve(mocked, EventsApi(events))
    result = sync_events(client, db, Window(start, end))
    assert ids(db) == {"E00001", "E00002", "E00003"}
    q = parse_qs(urlsplit(api.calls[0]).query)
    assert q["filter"] == ["and(greater-or-equal(datetime,2026-11-20T10:00:00Z),less-than(datetime,2026-11-20T12:00:00Z))"]
    assert q["page[size]"] == ["1000"] and q["fields[event]"] == ["datetime,event_properties,timestamp,uuid"]
    assert result.rows["events"] == 3


def test_pages_with_repeating_profiles_and_an_event_without_profile(mocked, client, db):
    events = [make_event(i, T0 + timedelta(seconds=i), profile=f"P{i % 3}" if i != 5 else None) for i in range(10)]
    serve(mocked, EventsApi(events, page_size=3))
    result = sync_events(client, db, Window(T0, T0 + timedelta(hours=1)))
    assert result.pages == 4
    assert ids(db) == {f"E{i:05d}" for i in range(10)}
    assert {r["id"] for r in db["profiles"].rows} == {"P0", "P1", "P2"}
    row = db["events"].get("E00005")
    assert row["profile_id"] is None
    full = db["events"].get("E00001")
    assert full == {"id": "E00001", "metric_id": "M1", "profile_id": "P1", "datetime": "2026-11-20T10:00:01Z",
                    "timestamp": int((T0 + timedelta(seconds=1)).timestamp()), "uuid": "uuid-1", "value": 9.5,
                    "properties": '{"$value":9.5,"sku":"X"}'}
    assert db["metrics"].get("M1")["name"] == "Placed Order"
    view = db.execute("SELECT metric, email FROM event_details WHERE id = 'E00001'").fetchone()
    assert view == ("Placed Order", "p1@example.com")


def test_overlapping_runs_store_each_event_once(mocked, client, db):
    events = [make_event(i, T0 + timedelta(minutes=i)) for i in range(180)]
    serve(mocked, EventsApi(events, page_size=25))
    first = sync_events(client, db, Window(T0, T0 + timedelta(hours=2)))
    second = sync_events(client, db, Window(T0 + timedelta(hours=1), T0 + timedelta(hours=3)))
    assert first.rows["events"] == 120 and second.rows["events"] == 60
    # Exactly the served events: none missing, none twice (the README's "exactly once"), and the
    # second run wrote only the 60 it had not seen.
    assert db["events"].count == 180
    assert {r[0] for r in db.execute("SELECT id FROM events")} == {e["id"] for e in events}


def test_mark_points_at_committed_pages_after_a_failure_and_rerun_completes(mocked, client, db):
    events = [make_event(i, T0 + timedelta(minutes=i)) for i in range(50)]
    api = serve(mocked, EventsApi(events, page_size=10, fail_on_call=3))
    window = Window(T0, T0 + timedelta(hours=1))
    with pytest.raises(Exception, match="Invalid cursor"):
        sync_events(client, db, window)
    assert ids(db) == {f"E{i:05d}" for i in range(20)}  # both committed pages
    # Every event before the mark is stored; the mark is the last committed event's time.
    assert store.get_state(db, "events.mark") == iso(T0 + timedelta(minutes=19))
    api.fail_on_call = None
    sync_events(client, db, window)
    assert ids(db) == {f"E{i:05d}" for i in range(50)}
    assert store.get_state(db, "events.mark") == iso(window.end)


def test_mark_never_moves_backwards_or_across_a_gap(mocked, client, db):
    serve(mocked, EventsApi([make_event(1, T0)]))
    sync_events(client, db, Window(T0, T0 + timedelta(hours=2)))
    assert store.get_state(db, "events.mark") == "2026-11-20T12:00:00Z"
    sync_events(client, db, Window(T0 - timedelta(days=10), T0 - timedelta(days=9)))  # an old backfill
    assert store.get_state(db, "events.mark") == "2026-11-20T12:00:00Z"
    sync_events(client, db, Window(T0 + timedelta(hours=5), T0 + timedelta(hours=6)))  # leaves a gap
    assert store.get_state(db, "events.mark") == "2026-11-20T12:00:00Z"


def test_workers_give_the_same_rows_as_one_worker(mocked, client, tmp_path):
    events = [make_event(i, T0 + timedelta(seconds=37 * i), metric="M1" if i % 2 else "M2",
                         profile=f"P{i % 7}" if i % 11 else None) for i in range(400)]
    serve(mocked, EventsApi(events, page_size=17))
    window = Window(T0, T0 + timedelta(hours=4))
    dumps = []
    for workers in (1, 4):
        database = store.open_db(tmp_path / f"w{workers}.db")
        result = sync_events(client, database, window, workers=workers)
        assert result.extra["slices"] == (1 if workers == 1 else 16)
        dumps.append([list(database.execute(f"SELECT * FROM {t} ORDER BY id")) for t in ("events", "profiles", "metrics")])
        assert store.get_state(database, "events.mark") == iso(window.end)
    assert dumps[0] == dumps[1]
    assert len(dumps[0][0]) == len([e for e in events if e["attributes"]["datetime"] < "2026-11-20T14:00:00"])


def test_slices_cover_the_window_exactly():
    window = Window(T0, T0 + timedelta(hours=7, seconds=13))
    for workers in (1, 2, 3, 4, 8):
        slices = plan_slices(window, workers)
        assert slices[0].start == window.start and slices[-1].end == window.end
        for a, b in zip(slices, slices[1:]):
            assert a.end == b.start and a.start < a.end
            assert a.end.microsecond == 0
    assert len(plan_slices(Window(T0, T0 + timedelta(minutes=20)), 8)) == 1  # short windows stay whole
    assert len(plan_slices(window, 2, ["A", "B"])) == 16


def test_contiguous_mark_under_out_of_order_completion():
    s = [EventSlice(i, T0 + timedelta(hours=i), T0 + timedelta(hours=i + 1)) for i in range(4)]
    s[2].complete = True
    s[3].done_until = s[3].start + timedelta(minutes=30)
    assert contiguous_mark(s, T0) == T0  # slice 0 has nothing yet
    s[0].done_until = T0 + timedelta(minutes=10)
    assert contiguous_mark(s, T0) == T0 + timedelta(minutes=10)
    s[0].complete = True
    assert contiguous_mark(s, T0) == T0 + timedelta(hours=1)
    s[1].complete = True
    assert contiguous_mark(s, T0) == T0 + timedelta(hours=3, minutes=30)


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_hours_summary_and_resume(mocked, cli, db_path, monkeypatch):
    now = datetime.now(UTC).replace(microsecond=0)
    events = [make_event(i, now - timedelta(minutes=10 * i, seconds=30)) for i in range(1, 30)]
    serve(mocked, EventsApi(events))
    result = cli("sync-events", "--hours", "2")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"]["events"] == 11 and summary["window"]["end"] >= iso(now)
    database = store.open_db(db_path)
    mark = store.get_state(database, "events.mark")
    # No window option: resume from the mark minus the overlap.
    result = cli("sync-events", "--overlap", "30m", "--workers", "1")
    summary = json.loads(result.stdout)
    assert summary["window"]["start"] == iso(datetime.fromisoformat(mark.replace("Z", "+00:00")) - timedelta(minutes=30))
    assert summary["rows"]["events"] == 0


def test_cli_metric_by_name_and_id(mocked, cli, db_path):
    events = [make_event(i, T0 + timedelta(minutes=i), metric="M1" if i % 2 else "M2") for i in range(20)]
    api = serve(mocked, EventsApi(events))
    mocked.get(f"{BASE}/api/metrics", json={"data": [
        {"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}},
        {"type": "metric", "id": "M2", "attributes": {"name": "Opened Email"}}], "links": {"next": None}})
    args = ["sync-events", "--since", "2026-11-20T10:00:00Z", "--until", "2026-11-20T11:00:00Z", "--workers", "1"]
    result = cli(*args, "--metric", "Placed Order")
    assert result.exit_code == 0, result.stderr
    database = store.open_db(db_path)
    assert {r[0] for r in database.execute("SELECT metric_id FROM events")} == {"M1"}
    assert 'equals(metric_id,"M1")' in parse_qs(urlsplit(api.calls[-1]).query)["filter"][0]
    assert store.get_state(database, "events.mark") is None  # the account-wide mark is untouched
    assert store.get_state(database, "events.mark:metric=M1") == "2026-11-20T11:00:00Z"
    assert cli(*args, "--metric", "M2").exit_code == 0
    assert database.execute("SELECT count(*) FROM events").fetchone()[0] == 20


@pytest.mark.parametrize("args,message", [
    (["--hours", "0"], "greater than zero"),
    (["--hours", "-3"], "greater than zero"),
    (["--since", "2026-11-20T12:00:00Z", "--until", "2026-11-20T10:00:00Z"], "must be before"),
    (["--since", "yesterday"], "not an ISO-8601 datetime"),
    (["--hours", "2", "--since", "2026-11-20T10:00:00Z"], "cannot be combined"),
    (["--until", "2026-11-20T10:00:00Z"], "--until needs --since"),
    (["--overlap", "abc"], "invalid duration"),
    (["--hours", "two"], "Invalid value"),
])
def test_cli_bad_input_exits_2(cli, args, message):
    result = cli("sync-events", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_unknown_metric_exits_2(mocked, cli):
    mocked.get(f"{BASE}/api/metrics", json={"data": [{"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}}],
                                            "links": {"next": None}})
    result = cli("sync-events", "--hours", "1", "--metric", "Nope")
    assert result.exit_code == 2 and "unknown metric 'Nope'" in result.stderr


def test_cli_failed_run_is_recorded_with_redacted_error(mocked, cli, db_path):
    serve(mocked, EventsApi([make_event(i, T0 + timedelta(minutes=i)) for i in range(30)], page_size=10, fail_on_call=2))
    result = cli("sync-events", "--since", "2026-11-20T10:00:00Z", "--until", "2026-11-20T11:00:00Z", "--workers", "1")
    assert result.exit_code == 3
    run = list(store.open_db(db_path)["sync_runs"].rows)[-1]
    assert run["status"] == "failed" and "Invalid cursor" in run["error"]
    # What the failed run did commit is reported, not lost.
    assert run["pages"] == 1 and json.loads(run["rows_written"])["events"] == 10 and run["requests"] == 2


def test_an_event_outside_the_window_is_never_stored(mocked, client, db):
    """Even if a server ignored the filter, the window is enforced locally."""
    inside = make_event(1, T0 + timedelta(minutes=5))
    outside = make_event(2, T0 + timedelta(hours=3))
    mocked.get(EVENTS, json={"data": [inside, outside], "included": [], "links": {"next": None}})
    result = sync_events(client, db, Window(T0, T0 + timedelta(hours=1)), workers=1)
    assert ids(db) == {"E00001"} and result.extra["dropped_outside_window"] == 1


def test_event_without_datetime_falls_back_to_timestamp():
    from klaviyo_sync.transform import event_row

    e = make_event(1, T0)
    e["attributes"]["datetime"] = None
    assert event_row(e)[3] == "2026-11-20T10:00:00Z"


def test_seen_cache_skips_unchanged_and_is_bounded():
    from klaviyo_sync.streams.events_fetch import SeenCache

    cache = SeenCache(limit=3)
    p = {"type": "profile", "id": "P1", "attributes": {"email": "a@b.c"}}
    assert cache.fresh(p) and not cache.fresh(dict(p))
    assert cache.fresh({**p, "attributes": {"email": "new@b.c"}})  # a change is written again
    assert cache.fresh({"type": "metric", "id": "P1", "attributes": {"email": "new@b.c"}})  # types kept apart
    changed = {**p, "attributes": {"email": "new@b.c"}}
    assert not cache.fresh(changed)  # remembered...
    for i in range(10):
        cache.fresh({"type": "profile", "id": f"X{i}", "attributes": {}})
    assert cache.fresh(changed)  # ...until ten others pushed it out: the cache holds at most 3

_MAPPED_AGAIN = """
import ctypes, sys
from klaviyo_sync.streams.events_fetch import limit_malloc_arenas
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "limited":
    limit_malloc_arenas()
block = bytearray(2 << 20)  # an answer body's size
del block
before = libc.mallinfo2().hblkhd
block = bytearray(2 << 20)
print("mapped" if libc.mallinfo2().hblkhd - before >= 2 << 20 else "in an arena")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_large_block_is_mapped_on_its_own_even_after_one_was_freed():
    """README, Performance: a run fixes glibc's mmap threshold, so a page-sized buffer is mapped
    on its own and unmapped when freed, however many were freed before (glibc would otherwise
    raise the threshold to the first freed one's size and serve the next from an arena, whose
    freed middle is never returned). Each case in a fresh interpreter; the first shows glibc's
    default, the behaviour the call changes."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", _MAPPED_AGAIN, mode], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc 2.33 and later
    except (OSError, AttributeError):
        pytest.skip("no mallinfo2 in this C library")
    assert run("default") == "in an arena"
    assert run("limited") == "mapped"



def test_until_later_than_now_is_clamped_to_now(mocked, cli, db_path, monkeypatch):
    """README: --until defaults to now and is never later than now (the mark must not claim
    the future). The CLI's clock is pinned, so "now" is known exactly."""
    now = T0 + timedelta(hours=3)
    monkeypatch.setattr("klaviyo_sync.commands.events.utcnow", lambda: now + timedelta(microseconds=400))
    events = [make_event(i, T0 + timedelta(minutes=20 * i)) for i in range(15)]  # up to T0 + 4 h 40
    api = serve(mocked, EventsApi(events))
    result = cli("sync-events", "--since", iso(T0), "--until", iso(T0 + timedelta(days=10)), "--workers", "1")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["window"] == {"start": iso(T0), "end": iso(now)}
    assert summary["mark"] == iso(now)
    database = store.open_db(db_path)
    assert ids(database) == {e["id"] for e in events if e["attributes"]["datetime"] < iso(now).replace("Z", "+00:00")}
    assert all(f"less-than(datetime,{iso(now)})" in unquote(url) for url in api.calls)
def _event_index_sql(db, table="events"):
    return {r[0]: " ".join(r[1].split()) for r in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                           "AND tbl_name = ? AND sql IS NOT NULL", [table])}


def test_backfill_builds_the_event_indexes_at_the_end_and_a_killed_one_is_repaired(mocked, client, db, tmp_path):
    fresh = _event_index_sql(store.open_db(tmp_path / "fresh.db"))
    assert set(fresh) == set(store.EVENT_INDEXES)
    # event_attributions' event_id index is dropped and built with them (as m007 made it)
    fresh_attr = _event_index_sql(store.open_db(tmp_path / "fresh.db"), "event_attributions")
    assert set(fresh_attr) == {"idx_event_attributions_event_id"}
    events = [make_event(i, T0 + timedelta(minutes=i)) for i in range(50)]
    api = serve(mocked, EventsApi(events, page_size=10, fail_on_call=3))
    window = Window(T0, T0 + timedelta(hours=1))
    with pytest.raises(Exception, match="Invalid cursor"):
        sync_events(client, db, window)  # a first backfill that fails midway
    assert _event_index_sql(db) == fresh
    assert _event_index_sql(db, "event_attributions") == fresh_attr
    # A backfill killed (-9) before its end leaves the table without them: the next run builds them.
    store.drop_event_indexes(db)
    api.fail_on_call = None
    sync_events(client, db, window)
    assert ids(db) == {f"E{i:05d}" for i in range(50)}
    assert _event_index_sql(db) == fresh
    assert _event_index_sql(db, "event_attributions") == fresh_attr
    plan = " ".join(str(r) for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM events WHERE metric_id = 'M1' AND datetime >= '2026'"))
    assert "idx_events_metric_id_datetime" in plan


def test_autoscale_sizes_the_fetchers_from_latency_and_cpu_per_page():
    """Little's law: 2 busy fetchers, each request also waiting `latency`: 2 * (latency + cpu) / cpu."""
    from klaviyo_sync.streams.autoscale import Autoscale

    fast = Autoscale(32, now=0.0, network_wait=0.0, requests=0)
    assert fast.target == 2 and fast.timeline == [(0.0, 2)]
    # Fast API: 2 fetchers, 0.5 s, 50 answers, 2 ms waiting each: 20 ms a page in all -> 2 * 20 / 18 -> 3.
    assert fast.tick(0.5, events=50_000, network_wait=0.1, active=2, requests=50) == 3
    # Too few answers in a tick to measure anything: no change.
    assert fast.tick(1.0, events=52_000, network_wait=0.2, active=3, requests=53) == 3
    assert not fast.frozen
    slow = Autoscale(32, now=0.0, network_wait=0.0, requests=0)
    # 100 ms a request, 20 ms a page besides: 2 * 120 / 20 = 12 at once.
    assert slow.tick(0.6, events=10_000, network_wait=1.0, active=2, requests=10) == 12
    assert slow.timeline == [(0.0, 2), (0.6, 12)]
    # It never shrinks, and stops at the limit: 300 ms a request, 20 ms besides -> 2 * 320 / 20 = 32.
    assert slow.tick(1.24, events=34_000, network_wait=1.0 + 7.2, active=12, requests=10 + 24) == 32
    assert slow.frozen and slow.tick(9.0, events=90_000, network_wait=60.0, active=32, requests=900) == 32
    # The API's latency measured before the run (the account check) sets the first count: 2 *
    # (latency + 15 ms) / 15 ms, no tick needed; without it, 2.
    assert Autoscale(32, now=0.0, network_wait=0.0, latency_hint=0.1).target == 16
    assert Autoscale(32, now=0.0, network_wait=0.0, latency_hint=0.004).target == 3
    hinted = Autoscale(32, now=0.0, network_wait=0.0, latency_hint=0.3)
    assert hinted.target == 32 and hinted.frozen and hinted.timeline == [(0.0, 32)]
    assert Autoscale(32, now=0.0, network_wait=0.0, latency_hint=None).target == 2
    capped = Autoscale(8, now=0.0, network_wait=0.0, requests=0)
    assert capped.tick(0.6, events=10_000, network_wait=1.0, active=2, requests=10) == 8 and capped.frozen
    assert Autoscale(1, now=0.0, network_wait=0.0).target == 1


def test_fetchers_alone_hand_every_page_then_each_slice_end_then_their_own_end(mocked, client):
    """events_fetch.Fetchers without the writer: what the queue carries is the whole protocol."""
    from klaviyo_sync.streams.events_fetch import _DONE, Fetchers

    events = [make_event(i, T0 + timedelta(minutes=i)) for i in range(40)]
    serve(mocked, EventsApi(events, page_size=7))
    slices = plan_slices(Window(T0, T0 + timedelta(hours=1)), 2)
    fetchers = Fetchers(client, slices, page_size=7)
    fetchers.start(2)
    got, ended, done = [], 0, set()
    try:
        while ended < 2:
            s, item = fetchers.pages.get(timeout=30)
            if s is None:
                assert item is None, item  # no failure
                ended += 1
            elif item is _DONE:
                done.add(s.index)
            else:
                assert s.index not in done  # a slice ends after its last page
                got += [e[0] for e in item.events]
    finally:
        fetchers.stop()
    # Every event; one read twice only where a slice was split at the end (the second its last
    # page ended in starts the rest: test_a_split_hands_the_rest_...).
    assert set(got) == {e["id"] for e in events}
    halves = {s.start for s in slices[4:]}
    assert all(T0 + timedelta(minutes=int(i[1:])) in halves for i in got if got.count(i) > 1)
    assert done == {s.index for s in slices} and len(fetchers.threads) == 2


def _tile(slices, window):
    """The slices, by start, meet end to start and cover the window exactly."""
    ordered = sorted(slices, key=lambda s: s.start)
    assert ordered[0].start == window.start and ordered[-1].end == window.end
    assert all(a.end == b.start and a.start < a.end for a, b in zip(ordered, ordered[1:]))


def test_a_split_hands_the_rest_of_a_slice_to_an_idle_fetcher(mocked, client):
    """A fetcher that has a next page while another has no slice left ends its slice at the
    second its last page ended in and queues the rest as two new slices (events_fetch._split):
    every event comes, only the events of a split's second twice, and the slices still tile
    the window, each ended once."""
    from klaviyo_sync.streams.events_fetch import _DONE, Fetchers

    events = [make_event(i, T0 + timedelta(seconds=30 * i)) for i in range(60)]
    serve(mocked, EventsApi(events, page_size=5))
    window = Window(T0, T0 + timedelta(minutes=30))
    slices = plan_slices(window, 1)
    assert len(slices) == 1
    fetchers = Fetchers(client, slices, page_size=5)
    fetchers.waiting = 1  # as if a second fetcher waited for work: the only reader splits
    fetchers.start(1)
    got, done, ended = [], [], 0
    try:
        while not ended:
            s, item = fetchers.pages.get(timeout=30)
            if s is None:
                assert item is None, item
                ended = 1
            elif item is _DONE:
                done.append(s.index)
            else:
                assert s.index not in done
                got += [e[0] for e in item.events]
    finally:
        fetchers.stop()
    assert fetchers.splits >= 2 and len(slices) == 1 + 2 * fetchers.splits
    assert sorted(done) == [s.index for s in slices]
    _tile(slices, window)
    assert set(got) == {e["id"] for e in events}
    starts = {s.start for s in slices}
    twice = {i for i in got if got.count(i) > 1}
    assert twice and all(T0 + timedelta(seconds=30 * int(i[1:])) in starts for i in twice)
    assert len(got) == len(events) + len(twice)


def test_the_last_long_slice_is_shared_and_each_event_stored_once(mocked, client, db):
    """The window's last slice holds most events and answers slowly: the other fetcher runs out
    of slices while it pages, so the slice is split for it. The rows and the mark are those of
    a run without a split; the summary counts the planned slices and the splits."""
    window = Window(T0, T0 + timedelta(hours=1))  # 2 workers: 4 slices of 15 minutes
    events = [make_event(i, T0 + timedelta(minutes=1 + 15 * i)) for i in range(3)]
    events += [make_event(3 + i, T0 + timedelta(minutes=45, seconds=10 * i)) for i in range(80)]
    api = EventsApi(events, page_size=4)

    def slow_last_slice(request):
        if "datetime%2C2026-11-20T10%3A45%3A00Z" in request.url:  # the planned last slice's pages
            time.sleep(0.02)
        return api(request)

    mocked.add_callback("GET", EVENTS, callback=slow_last_slice)
    result = sync_events(client, db, window, workers=2)
    assert ids(db) == {e["id"] for e in events}
    assert store.get_state(db, "events.mark") == iso(window.end)
    assert result.rows["events"] == 83 and result.extra["slices"] == 4
    assert result.extra["slices_split"] >= 1
    assert result.extra["events_seen"] >= 83


def test_apply_page_writes_a_page_and_moves_its_slice(db):
    """events_write.apply_page without the fetchers: rows in, the slice's done_until forward."""
    from klaviyo_sync.streams.engine import SyncResult
    from klaviyo_sync.streams.events_fetch import _DONE, _Rows
    from klaviyo_sync.streams.events_write import apply_page
    from klaviyo_sync.transform import event_row

    s = EventSlice(0, T0, T0 + timedelta(hours=1))
    rows = [event_row(make_event(i, T0 + timedelta(minutes=i))) for i in range(3)]
    result = SyncResult()
    with db.atomic():
        apply_page(db, result, s, _Rows(rows, [], [], iso(T0 + timedelta(minutes=2)), dropped=1))
    assert result.rows["events"] == 3 and result.pages == 1 and result.extra["dropped_outside_window"] == 1
    assert s.done_until == T0 + timedelta(minutes=2) and not s.complete
    with db.atomic():
        apply_page(db, result, s, _DONE)
    assert s.complete and s.done_until == s.end
    assert [r[0] for r in db.execute("SELECT id FROM events ORDER BY id")] == ["E00000", "E00001", "E00002"]


def _attribution(aid, event_id, touch, campaign=None, flow=None):
    rel = {"event": {"data": {"type": "event", "id": event_id}, "links": {"self": "x", "related": "y"}},
           "attributed-event": {"data": {"type": "event", "id": touch}}}
    if campaign:
        rel["campaign"] = {"data": {"type": "campaign", "id": campaign}}
        rel["campaign-message"] = {"data": {"type": "campaign-message", "id": f"{campaign}-M"}}
    if flow:
        rel["flow"] = {"data": {"type": "flow", "id": flow}}
        rel["flow-message"] = {"data": {"type": "flow-message", "id": f"{flow}-M"}}
        rel["flow-message-variation"] = None
    return {"type": "attribution", "id": aid, "relationships": rel, "links": {"self": f"{BASE}/api/attributions/{aid}/"}}


def _with_attributions(event, *aids):
    event["relationships"]["attributions"] = {"data": [{"type": "attribution", "id": a} for a in aids],
                                              "links": {"self": "s", "related": "r"}}
    return event


def _edge_page():
    """A page with the shapes a row must survive: no profile, a null profile, properties missing,
    null, a list or with a string $value, no datetime (the timestamp then), no attributes (so no
    time: dropped), an event outside the window, attributions with null relationships, an unknown
    included type."""
    e = [_with_attributions(make_event(i, T0 + timedelta(minutes=i)), *([f"A{i}"] if i % 2 else [])) for i in range(9)]
    e[1]["relationships"].pop("profile")
    e[2]["relationships"]["profile"] = {"data": None}
    e[3]["attributes"].pop("event_properties")
    e[4]["attributes"]["event_properties"] = None
    e[5]["attributes"]["event_properties"] = ["x", {"$value": 3}]
    e[6]["attributes"]["event_properties"] = {"$value": "12.50", "é": "ü\u2028"}
    e[7]["attributes"]["datetime"] = None
    del e[8]["attributes"]
    e.append(_with_attributions(make_event(99, T0 + timedelta(hours=5)), "A99"))  # outside: dropped
    e[0]["relationships"].pop("attributions")  # not asked for: its stored ones stay
    included = [
        {"type": "profile", "id": "P1", "attributes": {"email": "a@b.c", "location": {"city": "Ghent"},
                                                       "properties": {"tier": "gold"}, "updated": "2026-11-20T09:00:00+00:00"}},
        {"type": "metric", "id": "M1", "attributes": {"name": "Placed Order", "integration": {"key": "shopify"}}},
        {"type": "segment", "id": "S1", "attributes": {"name": "ignored"}},
        _attribution("A1", "E00001", "T1", campaign="C1"), _attribution("A3", "E00003", "T3", flow="F1"),
        _attribution("A5", "E00005", "T5", campaign="C5"), _attribution("A99", "E00099", "T99", flow="F9"),
        {"type": "attribution", "id": "A7", "relationships": {"event": {"data": {"type": "event", "id": "E00007"}},
                                                              "campaign": {"data": None}}},
    ]
    return {"data": e, "included": included, "links": {"self": "s", "next": None}}


def test_a_typed_page_makes_the_same_rows_as_plain_json():
    """decode_events_page skips links while parsing; the rows must be the general path's."""
    from dataclasses import astuple

    from klaviyo_sync.client import Page
    from klaviyo_sync.streams.events_fetch import SeenCache, _Event, _page_rows, decode_events_page

    raw = json.dumps(_edge_page()).encode()
    typed, plain = decode_events_page(raw), json.loads(raw)
    assert typed["data"][0].__class__ is _Event  # the fast path is the one taken
    start, end = "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z"
    rows = [_page_rows(Page(data=b["data"], included=b["included"], url="", next_url=None), start, end, SeenCache())
            for b in (typed, plain)]
    assert astuple(rows[0]) == astuple(rows[1])
    r = rows[0]
    assert [e[0] for e in r.events] == [f"E{i:05d}" for i in range(8)] and r.dropped == 2
    by_id = {e[0]: e for e in r.events}
    assert by_id["E00001"][2] is None and by_id["E00002"][2] is None and by_id["E00000"][2] == "P1"
    assert by_id["E00003"][7] is None and by_id["E00004"][7] is None and by_id["E00005"][6] is None
    assert by_id["E00005"][7] == '["x",{"$value":3}]'
    assert by_id["E00006"][6] == 12.5 and json.loads(by_id["E00006"][7]) == {"$value": "12.50", "é": "ü\u2028"}
    assert by_id["E00007"][3] == "2026-11-20T10:07:00Z"
    assert r.attributed == [f"E{i:05d}" for i in range(1, 8)]
    assert r.attributions == [("A1", "E00001", "T1", "C1", "C1-M", None, None, None),
                              ("A3", "E00003", "T3", None, None, "F1", "F1-M", None),
                              ("A5", "E00005", "T5", "C5", "C5-M", None, None, None),
                              ("A7", "E00007", None, None, None, None, None, None)]
    assert [p[0] for p in r.profiles] == ["P1"] and [m[0] for m in r.metrics] == ["M1"]
    # The typed attribution's relationships are read in the order of the table's columns.
    import msgspec

    from klaviyo_sync.streams.attributions import ATTRIBUTION_RELATIONSHIPS
    from klaviyo_sync.streams.events_fetch import _AttributionRelationships
    assert tuple(f.encode_name for f in msgspec.structs.fields(_AttributionRelationships)) == ATTRIBUTION_RELATIONSHIPS


def test_a_page_of_another_shape_is_read_as_plain_json():
    """A relationship the types do not expect (a list where Klaviyo sends an object) makes the
    page plain JSON: the general path reads it as before, nothing is lost."""
    from klaviyo_sync.streams.events_fetch import decode_events_page

    page = _edge_page()
    page["data"][1]["relationships"]["profile"] = []
    body = decode_events_page(json.dumps(page).encode())
    assert body == json.loads(json.dumps(page))
    with pytest.raises(ValueError):
        decode_events_page(b'{"data": [')


def test_a_revised_attribution_replaces_the_stored_one_on_the_next_run(mocked, client, db):
    """A backfill's pages are all new events (no look-up of stored attributions); a later run over
    the same hour sees Klaviyo's revision: E1 now credited to another message, E2 organic."""
    def page(revised):
        e1 = _with_attributions(make_event(1, T0 + timedelta(minutes=1)), "A1b" if revised else "A1")
        e2 = _with_attributions(make_event(2, T0 + timedelta(minutes=2)), *([] if revised else ["A2"]))
        inc = [_attribution("A1b", "E00001", "T9", flow="F1")] if revised else [
            _attribution("A1", "E00001", "T1", campaign="C1"), _attribution("A2", "E00002", "T2", campaign="C1")]
        return {"data": [e1, e2], "included": inc, "links": {"next": None}}

    window = Window(T0, T0 + timedelta(hours=1))
    mocked.get(EVENTS, json=page(False))
    sync_events(client, db, window, workers=1)
    assert db.execute("SELECT id, event_id FROM event_attributions ORDER BY id").fetchall() == [
        ("A1", "E00001"), ("A2", "E00002")]
    mocked.replace("GET", EVENTS, json=page(True))
    sync_events(client, db, window, workers=1)
    assert db.execute("SELECT id, event_id, attributed_event_id, flow_id FROM event_attributions").fetchall() == [
        ("A1b", "E00001", "T9", "F1")]
