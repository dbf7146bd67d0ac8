"""Attribution: the fake attributes conversions by Klaviyo's rule (checked here by brute force
from the events it serves), sync-events keeps its attributions, `attribution` and
`conversion-lag` answer from the views, the session model on a hand-built timeline."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import requests

from klaviyo_sync import db as store
from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import base_env, cli_env, fake_now, iso, query, run_cli

UTC = timezone.utc
SPAN = timedelta(days=7)
# Every catalog metric, so every kind of touch exists (Clicked SMS, Opened Push ...).
FAKE = dict(n_events=6000, n_profiles=120, n_metrics=18, span_hours=24 * 7)


@dataclass(frozen=True)
class Days:
    """The module's fake clock and the whole UTC days its span covers (read when the module's
    first test runs, never at import)."""
    now: datetime

    @property
    def first_day(self):
        return (self.now - SPAN).date()

    @property
    def last_day(self):
        return self.now.date()

    @property
    def range(self) -> str:
        return f"{self.first_day}..{self.last_day}"

    @property
    def lo(self) -> str:
        return f"{self.first_day}T00:00:00Z"

    @property
    def hi(self) -> str:
        return f"{self.last_day + timedelta(days=1)}T00:00:00Z"
# Klaviyo's windows (help centre, "Understanding message attribution").
WINDOWS = {"Opened Email": 5 * 86400, "Clicked Email": 5 * 86400, "Clicked SMS": 5 * 86400,
           "Received SMS": 12 * 3600, "Opened Push": 86400}
KLAVIYO_INTEGRATION_METRICS = {"Received Email", "Opened Email", "Clicked Email", "Received SMS", "Unsubscribed",
                               "Clicked SMS", "Bounced Email", "Subscribed to List", "Received Push",
                               "Opened Push", "Marked Email as Spam"}


@pytest.fixture(scope="module")
def span():
    return Days(fake_now())


@pytest.fixture(scope="module")
def fake(span):
    with FakeKlaviyo(**FAKE, now=span.now) as f:
        yield f


@pytest.fixture(scope="module")
def synced(fake, tmp_path_factory, span):
    """A database holding the fake's whole span: events (with attributions), campaigns, flows."""
    db = tmp_path_factory.mktemp("attr") / "k.db"
    env = cli_env(fake, db)
    for args in (["sync-events", "--since", iso(span.now - SPAN - timedelta(hours=1)), "--until", iso(span.now)],
                 ["sync-campaigns", "--range", "90d", "--no-stats"], ["sync-flows", "--no-stats"]):
        r = run_cli(args, env, timeout=120)
        assert r.returncode == 0, r.describe()
    return db, env


def served_events(fake) -> list[dict]:
    """Every event the fake serves, as (index order =) time order, flattened."""
    names = fake.metric_names()
    out = []
    for i in range(fake.n_events):
        e = fake.event(i)
        a = e["attributes"]
        out.append({"id": e["id"], "ts": a["timestamp"], "metric": names[e["relationships"]["metric"]["data"]["id"]],
                    "profile": (e["relationships"]["profile"]["data"] or {}).get("id"),
                    "props": a["event_properties"]})
    return out


def po_id(fake) -> str:
    return fake.metric_id("Placed Order")


# -- 1. the fake's truth follows the rule --------------------------------------------------------
def test_the_fakes_attribution_is_klaviyos_rule_computed_from_its_served_events(fake):
    events = served_events(fake)
    campaign_of = {m: c for c in fake.campaign_ids() for m in fake.campaign_message_ids(c)}
    by_profile = defaultdict(list)
    for e in events:
        if e["profile"]:
            by_profile[e["profile"]].append(e)
    checked = attributed = 0
    for e in events:
        if e["metric"] in KLAVIYO_INTEGRATION_METRICS or not e["profile"]:
            continue
        # most recent eligible touch strictly earlier, whose window covers the conversion (edge in);
        # of two in the same second, the later one served
        best = None
        for t in by_profile[e["profile"]]:
            if t is e:
                break
            w = WINDOWS.get(t["metric"])
            if w is None or "$message" not in t["props"] or not t["ts"] < e["ts"] or e["ts"] - t["ts"] > w:
                continue
            if best is None or t["ts"] >= best["ts"]:
                best = t
        got = fake.attribution(e["id"])
        checked += 1
        if best is None:
            assert got is None, e
            continue
        attributed += 1
        mid = best["props"]["$message"]
        assert got["attributed_event_id"] == best["id"]
        if mid in campaign_of:
            assert (got["campaign_id"], got["campaign_message_id"], got["flow_id"]) == (campaign_of[mid], mid, None)
        else:
            flow = fake.flow_message(mid)
            assert best["props"]["$flow"] == flow["flow_id"]
            assert (got["flow_id"], got["flow_message_id"], got["campaign_id"]) == (flow["flow_id"], mid, None)
    assert checked > 2000 and 0 < attributed < checked  # both kinds occur


def test_the_fakes_reports_agree_with_its_attributed_events(fake, span):
    po = po_id(fake)
    truth = fake.attributed_conversions(po, span.now - SPAN - timedelta(days=1), span.now + timedelta(days=1))
    per_message = defaultdict(lambda: [0, 0])
    for a in truth.values():
        per_message[a["message_id"]][0] += 1
        per_message[a["message_id"]][1] += round(a["value"] * 100)
    first = int(datetime(span.first_day.year, span.first_day.month, span.first_day.day, tzinfo=UTC).timestamp())
    last = int(datetime(span.last_day.year, span.last_day.month, span.last_day.day, tzinfo=UTC).timestamp())
    seen = 0
    for cid in fake.campaign_ids():
        for mid, st in fake.campaign_statistics(cid, po).items():
            n, cents = per_message.get(mid, (0, 0))
            assert (st["conversions"], st["conversion_value"]) == (n, round(cents / 100, 2)), mid
            seen += n
    for mid in fake.flow_message_ids():
        st = fake.flow_statistics(mid, first, last, po)
        n, cents = per_message.get(mid, (0, 0))
        assert (st["conversions"], st["conversion_value"]) == (n, round(cents / 100, 2)), mid
        seen += n
    assert seen == len(truth) > 0


def test_events_include_attributions_shaped_as_the_spec(fake):
    url = f"{fake.base_url}/api/events"
    headers = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15",
               "accept": "application/vnd.api+json"}
    po = po_id(fake)
    r = requests.get(url, params={"include": "attributions", "filter": f'equals(metric_id,"{po}")',
                                  "page[size]": "1000", "fields[attribution]": "id"}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    included = {x["id"]: x for x in body["included"]}
    assert {x["type"] for x in included.values()} == {"attribution"}
    for e in body["data"]:
        refs = e["relationships"]["attributions"]["data"]
        want = fake.attribution(e["id"])
        assert [x["id"] for x in refs] == ([want["id"]] if want else [])
        assert all(x["type"] == "attribution" for x in refs)
        if want:
            a = included[want["id"]]
            rel = {k: v["data"]["id"] for k, v in a["relationships"].items()}
            expect = {"event": e["id"], "attributed-event": want["attributed_event_id"]}
            if want["campaign_id"]:
                expect |= {"campaign": want["campaign_id"], "campaign-message": want["campaign_message_id"]}
            else:
                expect |= {"flow": want["flow_id"], "flow-message": want["flow_message_id"],
                           "flow-message-variation": want["flow_message_variation_id"]}
            assert rel == expect
            assert set(a) == {"type", "id", "relationships", "links"} and a["links"]["self"]
    # GET /api/events/{id} includes it the same way
    one = next(e["id"] for e in body["data"] if fake.attribution(e["id"]))
    single = requests.get(f"{url}/{one}", params={"include": "attributions"}, headers=headers, timeout=10).json()
    assert [x["id"] for x in single["included"]] == [fake.attribution(one)["id"]] == \
        [x["id"] for x in single["data"]["relationships"]["attributions"]["data"]]
    # without include: no attributions relationship, nothing included
    plain = requests.get(url, params={"page[size]": "5"}, headers=headers, timeout=10).json()
    assert "included" not in plain and all("attributions" not in e["relationships"] for e in plain["data"])
    # fields[attribution] takes only id (spec)
    bad = requests.get(url, params={"include": "attributions", "fields[attribution]": "campaign"},
                       headers=headers, timeout=10)
    assert bad.status_code == 400


# -- 2. sync and the attribution command against the truth -----------------------------------
def test_sync_events_stores_the_fakes_attributions_exactly(fake, synced, span):
    db, _ = synced
    stored = {r[1]: r for r in query(db, f"SELECT {', '.join(store.ATTRIBUTION_COLUMNS)} FROM event_attributions")}
    want = {}
    for eid in fake.event_ids(span.now - SPAN - timedelta(hours=1), span.now):
        a = fake.attribution(eid)
        if a:
            want[eid] = tuple(a[c] for c in store.ATTRIBUTION_COLUMNS)
    assert stored == want


def attribution_json(env, span, *args):
    r = run_cli(["attribution", "--range", span.range, "--format", "json", *args], env)
    assert r.returncode == 0, r.describe()
    return json.loads(r.stdout)


def test_per_campaign_and_flow_the_conversions_and_revenue_equal_the_truth_and_the_reports(fake, synced, span):
    db, env = synced
    po = po_id(fake)
    truth = fake.attributed_conversions(po, span.lo, span.hi)
    all_orders = fake.event_ids(span.lo, span.hi, [po])
    total_cents = sum(round(fake.event(fake.event_index(e))["attributes"]["event_properties"]["$value"] * 100)
                      for e in all_orders)
    for by, kind in (("campaign", "campaign"), ("flow", "flow"), ("message", None), ("channel", None)):
        rows = attribution_json(env, span, "--by", by)
        assert [list(r)[:4] for r in rows] == [["group", "name", "conversions", "revenue"]] * len(rows)
        want = defaultdict(lambda: [0, 0])
        for a in truth.values():
            if kind is None or a["kind"] == kind:
                key = a["parent_id"] if kind else (a["message_id"] if by == "message" else a["channel"])
                want[key][0] += 1
                want[key][1] += round(a["value"] * 100)
        got = {r["group"]: (r["conversions"], r["revenue"]) for r in rows}
        assert {k: v for k, v in got.items() if k is not None} == {
            k: (n, round(c / 100, 2)) for k, (n, c) in want.items()}, by
        # the null row holds the rest: the rows add up to every order of the range
        assert rows[-1]["group"] is None
        assert sum(r["conversions"] for r in rows) == len(all_orders)
        assert round(sum(r["revenue"] for r in rows), 2) == round(total_cents / 100, 2)
        if by == "campaign":  # ... and equal the fake's own campaign reports
            for cid, (n, rev) in got.items():
                if cid is not None:
                    st = fake.campaign_statistics(cid, po).values()
                    assert (sum(s["conversions"] for s in st), round(sum(s["conversion_value"] for s in st), 2)) == (n, rev)
        if by == "flow":
            first = int(datetime(span.first_day.year, span.first_day.month, span.first_day.day, tzinfo=UTC).timestamp())
            last = int(datetime(span.last_day.year, span.last_day.month, span.last_day.day, tzinfo=UTC).timestamp())
            for fid, (n, rev) in got.items():
                if fid is not None:
                    st = [fake.flow_statistics(m, first, last, po) for m in fake.flow_message_ids(fid)]
                    assert (sum(s["conversions"] for s in st), round(sum(s["conversion_value"] for s in st), 2)) == (n, rev)
    names = {r["group"]: r["name"] for r in attribution_json(env, span, "--by", "flow")}
    assert all(names[f] == fake.flow(f)["attributes"]["name"] for f in names if f)
    assert {r["group"] for r in attribution_json(env, span, "--by", "channel")} <= {"email", "sms", "mobile_push", None}


def test_by_day_counts_each_conversion_on_its_own_day(fake, synced, span):
    _, env = synced
    po = po_id(fake)
    rows = attribution_json(env, span, "--by", "day")
    assert [r["group"] for r in rows] == [str(span.first_day + timedelta(days=k)) for k in range((span.last_day - span.first_day).days + 1)]
    truth = fake.attributed_conversions(po, span.lo, span.hi)
    for r in rows:
        lo, hi = f"{r['group']}T00:00:00Z", f"{datetime.fromisoformat(r['group']).date() + timedelta(days=1)}T00:00:00Z"
        assert r["conversions"] == len(fake.event_ids(lo, hi, [po]))
        assert r["attributed_conversions"] == sum(1 for e in truth if lo <= fake.event_datetime(e).replace("+00:00", "Z") < hi)
    # --format chart: a line per day ending with that day's attributed revenue (the truth's).
    chart = run_cli(["attribution", "--range", span.range, "--by", "day", "--format", "chart"], env)
    assert chart.returncode == 0, chart.describe()
    title = f"Placed Order by day, klaviyo model, {span.first_day} .. {span.last_day} (UTC days): Attributed revenue"
    assert " ".join(chart.stdout.split()).startswith(title)  # wrapped at 80 columns
    lines = [ln for ln in chart.stdout.splitlines() if ln[:4].isdigit()]
    for r, line in zip(rows, lines, strict=True):
        lo, hi = f"{r['group']}T00:00:00Z", f"{datetime.fromisoformat(r['group']).date() + timedelta(days=1)}T00:00:00Z"
        cents = sum(round(fake.event(fake.event_index(e))["attributes"]["event_properties"]["$value"] * 100)
                    for e in truth if lo <= fake.event_datetime(e).replace("+00:00", "Z") < hi)
        assert line.startswith(r["group"] + " ")
        assert line.rstrip().endswith(f" {cents / 100:,.2f}")  # a day without attributed revenue shows 0.00


def test_conversion_lag_buckets_add_up_to_the_attributed_conversions(fake, synced, span):
    _, env = synced
    po = po_id(fake)
    r = run_cli(["conversion-lag", "--range", span.range, "--format", "json"], env)
    assert r.returncode == 0, r.describe()
    rows = json.loads(r.stdout)
    assert [x["bucket"] for x in rows] == ["0-1h", "1-2h", "2-4h", "4-8h", "8-12h", "12-24h", "24-48h", "48-72h",
                                           "72-96h", "96-120h", "120h+"]
    truth = fake.attributed_conversions(po, span.lo, span.hi)
    want = defaultdict(int)
    not_stored = 0
    for eid, a in truth.items():
        lag = (datetime.fromisoformat(fake.event_datetime(eid)) - datetime.fromisoformat(fake.event_datetime(a["attributed_event_id"]))).total_seconds()
        if fake.event_datetime(a["attributed_event_id"]) < iso(span.now - SPAN - timedelta(hours=1)).replace("Z", "+00:00"):
            not_stored += 1
            continue
        h = lag / 3600
        label = next(f"{a_}-{b}h" for a_, b in ((0, 1), (1, 2), (2, 4), (4, 8), (8, 12), (12, 24), (24, 48),
                                                (48, 72), (72, 96), (96, 120), (120, 10**9)) if h < b)
        want[label.replace("120-1000000000h", "120h+")] += 1
    assert {x["bucket"]: x["conversions"] for x in rows if x["conversions"]} == dict(want)
    assert not_stored == 0  # the whole span is synced
    assert rows[-1]["conversions"] == 0  # nothing beyond Klaviyo's longest window


def test_empty_database_and_a_range_without_conversions_answer_zero(fake, synced, tmp_path, span):
    _, env = synced
    rows = attribution_json(env, span, "--range", "2020-01-01..2020-01-31")
    assert rows == [{"group": None, "name": "not attributed to a campaign (organic or a flow)", "conversions": 0,
                     "revenue": 0.0, "channel": None, "send_time": None}]
    empty = tmp_path / "empty.db"
    store.open_db(empty).close()
    env2 = cli_env(fake, empty)
    for by in ("campaign", "flow", "message", "channel"):
        for model in ("klaviyo", "session"):
            r = run_cli(["attribution", "--by", by, "--model", model, "--format", "json"], env2)
            assert r.returncode == 0, r.describe()
            got = json.loads(r.stdout)
            assert len(got) == 1 and got[0]["group"] is None and (got[0]["conversions"], got[0]["revenue"]) == (0, 0.0)
    r = run_cli(["attribution", "--by", "day", "--range", "2020-01-01..2020-01-02", "--format", "json"], env2)
    assert r.returncode == 0 and [x["conversions"] for x in json.loads(r.stdout)] == [0, 0]
    r = run_cli(["conversion-lag", "--format", "json"], env2)
    assert r.returncode == 0 and sum(x["conversions"] for x in json.loads(r.stdout)) == 0


@pytest.mark.parametrize("args, message", [
    (["attribution", "--metric", "Placed Orders"], "--metric: no metric 'Placed Orders'"),
    (["conversion-lag", "--metric", "Nope"], "--metric: no metric 'Nope'"),
    (["attribution", "--range", "30x"], "--range"),
    (["attribution", "--range", "2026-02-30..2026-03-01"], "--range"),
    (["conversion-lag", "--range", "2026-03-02..2026-03-01"], "--range"),
    (["attribution", "--by", "week"], "--by: 'week' is not one of"),
    (["attribution", "--model", "linear"], "--model: 'linear' is not one of"),
    (["attribution", "--format", "xml"], "--format"),
])
def test_bad_input_exits_2_with_one_line(synced, args, message):
    _, env = synced
    r = run_cli(args, env)
    assert r.returncode == 2, r.describe()
    assert r.stdout == "" and r.stderr.startswith(f"klaviyo-sync: error: {message}") and r.stderr.count("\n") == 1


# -- 3. a database synced before attributions were kept ----------------------------------------
def test_an_old_database_says_so_and_a_window_resync_fills_the_attributions(fake, tmp_path, span):
    db = tmp_path / "old.db"
    env = cli_env(fake, db)
    since, until = iso(span.now - timedelta(hours=30)), iso(span.now - timedelta(hours=6))
    assert run_cli(["sync-events", "--since", since, "--until", until], env).returncode == 0
    want = query(db, "SELECT * FROM event_attributions ORDER BY id")
    assert want
    conn = store.open_db(db)  # as if synced by a version that did not ask for attributions
    with conn.atomic():
        conn.execute("DELETE FROM event_attributions")
        conn.execute("DELETE FROM sync_state WHERE key = 'attributions.covered'")
    conn.close()
    status = run_cli(["status", "--format", "json"], env)
    missing = json.loads(status.stdout)["attributions"]["missing"]
    n = query(db, "SELECT count(*), min(datetime), max(datetime) FROM events")[0]
    assert missing == {"events": n[0], "first": n[1], "last": n[2]}
    text = run_cli(["status", "--format", "table"], env)
    assert f"run sync-events --since {n[1]} --until " in text.stdout
    r = run_cli(["sync-events", "--since", since, "--until", until], env)
    assert r.returncode == 0, r.describe()
    assert r.summary["rows"]["events"] == 0 and r.summary["rows"]["attributions"] == len(want)
    assert query(db, "SELECT * FROM event_attributions ORDER BY id") == want
    assert json.loads(run_cli(["status", "--format", "json"], env).stdout)["attributions"]["missing"] is None


# -- 4. the models on hand-built timelines -------------------------------------------------------
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(hours: float = 0, seconds: int = 0) -> str:
    return iso(T0 + timedelta(hours=hours, seconds=seconds))


@pytest.fixture
def timeline(tmp_path):
    """metrics, one email and one SMS campaign message, one flow email; events added by tests."""
    path = tmp_path / "t.db"
    db = store.open_db(path)
    with db.atomic():
        for mid, name in (("PO", "Placed Order"), ("OE", "Opened Email"), ("CE", "Clicked Email"),
                          ("CS", "Clicked SMS"), ("RE", "Received Email"), ("RS", "Received SMS")):
            db.execute("INSERT INTO metrics (id, name) VALUES (?, ?)", [mid, name])
        db.execute("INSERT INTO campaigns (id, name, channel) VALUES ('C1', 'Spring', 'email'), ('C2', 'Text', 'sms')")
        db.execute("INSERT INTO campaign_messages (id, campaign_id, channel, label) VALUES "
                   "('CM1', 'C1', 'email', 'Spring email'), ('CM2', 'C2', 'sms', 'Spring text')")
        db.execute("INSERT INTO flows (id, name) VALUES ('F1', 'Welcome')")
        db.execute("INSERT INTO flow_messages (id, flow_id, channel, name) VALUES ('FM1', 'F1', 'email', 'Welcome 1')")
    db.close()
    seq = iter(range(10_000))

    def add(metric, when, profile="P1", message=None, value=None, flow=None):
        eid = f"E{next(seq):04d}"
        props = {}
        if message:
            props["$message"] = message
        if flow:
            props["$flow"] = flow
        if value is not None:
            props["$value"] = value
        d = store.open_db(path)
        with d.atomic():
            d.execute("INSERT INTO events (id, metric_id, profile_id, datetime, value, properties) VALUES (?, ?, ?, ?, ?, ?)",
                      [eid, metric, profile, when, value, json.dumps(props)])
        d.close()
        return eid

    return path, add


def session_of(path, eid):
    return query(path, "SELECT attributed_event_id, message_id, campaign_id, flow_id, channel "
                       "FROM session_attributed_conversions WHERE event_id = ?", [eid])[0]


def test_session_model_windows_edges_sms_and_reset(timeline):
    path, add = timeline
    # email session: 120 h from its start, edge included
    t = add("OE", at(0), message="CM1")
    in_edge = add("PO", at(120), value=10)
    out_edge = add("PO", at(120, 1), value=20)
    # a Received Email (not a session touch) and a touch without a campaign or flow start nothing
    add("RE", at(119), message="CM1")
    add("OE", at(119.5), message="UNKNOWN")
    # a click of the flow email at 200 h starts a new session ($flow alone is enough)
    f = add("CE", at(200), flow="F1")
    same_second = add("PO", at(200), value=5)
    # an SMS click at 210 h replaces it: SMS sessions last 24 h, even with a younger email window open
    s = add("CS", at(210), message="CM2")
    sms_edge = add("PO", at(234), value=7)
    sms_out = add("PO", at(234, 1), value=8)
    # a newer email touch resets the session: attributed to the newer one
    n = add("OE", at(300), message="FM1")
    reset = add("PO", at(301), value=9)
    # another profile's touch never counts
    other = add("PO", at(1), profile="P2", value=1)
    assert session_of(path, in_edge) == (t, "CM1", "C1", None, "email")
    assert session_of(path, out_edge) == (None,) * 5
    assert session_of(path, add("PO", at(119.75))) == (t, "CM1", "C1", None, "email")
    assert session_of(path, same_second) == (f, None, None, "F1", "email")
    assert session_of(path, sms_edge) == (s, "CM2", "C2", None, "sms")
    assert session_of(path, sms_out) == (None,) * 5  # the expired SMS session is not replaced by the email one
    assert session_of(path, reset) == (n, "FM1", None, "F1", "email")
    assert session_of(path, other) == (None,) * 5
    # a row whose properties are not JSON is no touch, and breaks no view
    db = store.open_db(path)
    with db.atomic():
        db.execute("INSERT INTO events (id, metric_id, profile_id, datetime, properties) "
                   "VALUES ('BAD', 'OE', 'P1', ?, 'not json')", [at(300.5)])
    db.close()
    assert session_of(path, add("PO", at(302))) == (n, "FM1", None, "F1", "email")
    for view in ("session_touches", "session_attributed_conversions", "attributed_conversions", "conversion_lag"):
        assert query(path, f"SELECT count(*) FROM {view}")[0][0] >= 0


def test_session_model_through_the_cli_adds_up(timeline):
    path, add = timeline
    add("OE", at(0), message="CM1")
    add("PO", at(1), value=10)
    add("CS", at(2), message="CM2")
    add("PO", at(3), value=20.5)
    add("PO", at(30), value=4)  # SMS session over: organic
    env = base_env(KLAVIYO_SYNC_DB=str(path))  # database only: no API key, no server
    r = run_cli(["attribution", "--model", "session", "--by", "channel", "--range", "2026-03-01..2026-03-02",
                 "--format", "json"], env)
    assert r.returncode == 0, r.describe()
    assert json.loads(r.stdout) == [
        {"group": "sms", "name": "sms", "conversions": 1, "revenue": 20.5},
        {"group": "email", "name": "email", "conversions": 1, "revenue": 10.0},
        {"group": None, "name": "not attributed (organic)", "conversions": 1, "revenue": 4.0},
    ]
    r = run_cli(["conversion-lag", "--model", "session", "--range", "2026-03-01..2026-03-02", "--format", "json"], env)
    got = {x["bucket"]: x["conversions"] for x in json.loads(r.stdout) if x["conversions"]}
    assert got == {"1-2h": 2}


def test_klaviyo_model_one_attribution_per_event_the_latest_touch(timeline):
    path, add = timeline
    t1 = add("OE", at(0), message="CM1")
    t2 = add("CS", at(5), message="CM2")
    order = add("PO", at(6), value=30)
    organic = add("PO", at(7), value=3)
    db = store.open_db(path)
    with db.atomic():
        # Klaviyo gave two attributions: the one whose touch is latest wins
        db.execute("INSERT INTO event_attributions VALUES ('A1', ?, ?, 'C1', 'CM1', NULL, NULL, NULL)", [order, t1])
        db.execute("INSERT INTO event_attributions VALUES ('A2', ?, ?, 'C2', 'CM2', NULL, NULL, NULL)", [order, t2])
    db.close()
    rows = query(path, "SELECT event_id, attributed_event_id, touch_datetime, campaign_id, message_id, channel, value "
                       "FROM attributed_conversions WHERE metric_id = 'PO' ORDER BY event_id")
    assert rows == [(order, t2, at(5), "C2", "CM2", "sms", 30.0), (organic, None, None, None, None, None, 3.0)]
    lag = query(path, "SELECT event_id, lag_seconds, lag_bucket FROM conversion_lag WHERE model = 'klaviyo'")
    assert lag == [(order, 3600, "1-2h")]


def test_the_new_table_and_views_are_described(tmp_path):
    from klaviyo_sync.describe import datasette_metadata

    db = store.open_db(tmp_path / "d.db")
    tables = datasette_metadata(db, "d")["databases"]["d"]["tables"]
    for name in ("event_attributions", "attributed_conversions", "session_attributed_conversions",
                 "session_touches", "conversion_lag"):
        source = db[name] if name in db.table_names() else db.view(name)
        assert tables[name]["description"]
        assert set(tables[name]["columns"]) == {c.name for c in source.columns}, name
    db.close()


def test_a_page_replaces_the_stored_attributions_of_its_events(tmp_path):
    from klaviyo_sync.streams.attributions import write_attributions

    db = store.open_db(tmp_path / "r.db")
    row = lambda aid, eid, touch: (aid, eid, touch, "C1", "CM1", None, None, None)  # noqa: E731
    with db.atomic():
        assert write_attributions(db, ["E1", "E2", "E3"], [row("A1", "E1", "T1"), row("A2", "E2", "T2"),
                                                           row("A3", "E3", "T3")]) == 3
    # Klaviyo revised E1 (a new attribution id), E2 is now organic, E3 unchanged, E4 not on the page
    with db.atomic():
        write_attributions(db, ["E4"], [row("A4", "E4", "T4")])
        assert write_attributions(db, ["E1", "E2", "E3"], [row("A5", "E1", "T9"), row("A3", "E3", "T3")]) == 1
    assert db.execute("SELECT id, event_id, attributed_event_id FROM event_attributions ORDER BY id").fetchall() == [
        ("A3", "E3", "T3"), ("A4", "E4", "T4"), ("A5", "E1", "T9")]
    db.close()
