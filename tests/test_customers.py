"""customers, customer, rfm, cohorts and deliverability: against the fake's ground truth, and on
hand-built databases whose every expected value is a literal worked out by hand."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, fake_now, iso, query, run_cli

ORDER = "m_order"


def rows_of(result) -> list:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# -- against the fake ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """The fake's last 3 days of events synced into a database: (fake, env, since, until)."""
    db = tmp_path_factory.mktemp("customers") / "k.db"
    now = fake_now()  # read when the module's first test runs, not at import
    since, until = now - timedelta(days=3), now
    with FakeKlaviyo(seed=11, now=now, n_events=4000, span_hours=24 * 4, n_profiles=120) as fake:
        env = cli_env(fake, db)
        run = run_cli(["sync-events", "--since", iso(since), "--until", iso(until), "--workers", "2"], env)
        assert run.returncode == 0, run.describe()
        yield fake, env, since, until


def truth(fake, since, until) -> dict:
    """Per profile: (orders, revenue, first, last) of the fake's Placed Order events, read from
    the events the fake serves."""
    per = defaultdict(list)
    for eid in fake.event_ids(since, until, [fake.metric_id("Placed Order")]):
        ev = fake.event(fake.event_index(eid))
        profile = ev["relationships"]["profile"]["data"]
        if profile is None:
            continue
        a = ev["attributes"]
        per[profile["id"]].append((a["datetime"][:19] + "Z", a["event_properties"]["$value"]))
    return {pid: (len(v), round(sum(x for _, x in v), 2), min(d for d, _ in v), max(d for d, _ in v))
            for pid, v in per.items()}


def test_customers_orders_and_revenue_equal_the_fakes_truth(synced):
    fake, env, since, until = synced
    run = run_cli(["customers", "--top", "0", "--format", "json"], env)
    assert run.returncode == 0, run.describe()
    got = json.loads(run.stdout)
    want = truth(fake, since, until)
    assert len(want) > 20
    assert {r["profile_id"]: (r["orders"], r["revenue"], r["first_order"], r["last_order"]) for r in got} == want
    assert [list(r) for r in got][0] == ["profile_id", "email", "orders", "revenue", "first_order", "last_order",
                                         "attributed_revenue", "organic_revenue"]
    # Sorted by revenue, best first; emails are the profiles'; attributed + organic = revenue,
    # attributed being the orders with a stored attribution.
    assert [r["revenue"] for r in got] == sorted((r["revenue"] for r in got), reverse=True)
    db = env["KLAVIYO_SYNC_DB"]
    emails = dict(query(db, "SELECT id, email FROM profiles"))
    attributed = dict(query(db, """SELECT e.profile_id, round(total(e.value), 2) FROM events e
        WHERE e.id IN (SELECT event_id FROM event_attributions) GROUP BY e.profile_id"""))
    for r in got:
        assert r["email"] == emails.get(r["profile_id"])
        assert r["attributed_revenue"] == attributed.get(r["profile_id"], 0.0)
        assert abs(r["attributed_revenue"] + r["organic_revenue"] - r["revenue"]) < 0.015


def test_customers_range_top_and_sort(synced):
    fake, env, since, until = synced
    day = (until - timedelta(days=1)).date().isoformat()  # until: the fake's now
    lo = f"{day}T00:00:00Z"
    hi = (until - timedelta(days=1)).replace(hour=0, minute=0, second=0) + timedelta(days=1)
    want = truth(fake, lo, hi)
    run = run_cli(["customers", "--range", f"{day}..{day}", "--top", "0", "--format", "json"], env)
    got = json.loads(run.stdout)
    assert {r["profile_id"]: (r["orders"], r["revenue"], r["first_order"], r["last_order"]) for r in got} == want
    by_orders = json.loads(run_cli(["customers", "--sort", "orders", "--top", "3", "--format", "json"], env).stdout)
    everyone = truth(fake, since, until)
    best = sorted(everyone.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:3]
    assert [r["profile_id"] for r in by_orders] == [pid for pid, _ in best]
    jsonl = run_cli(["customers", "--sort", "last_order", "--top", "2", "--format", "jsonl"], env).stdout
    latest = [json.loads(line) for line in jsonl.splitlines()]
    assert [r["last_order"] for r in latest] == sorted((v[3] for v in everyone.values()), reverse=True)[:2]


def test_customer_timeline_and_the_customer_summary_view(synced):
    fake, env, since, until = synced
    db = env["KLAVIYO_SYNC_DB"]
    want = truth(fake, since, until)
    pid = sorted(want)[0]
    email = query(db, "SELECT email FROM profiles WHERE id = ?", [pid])[0][0]
    run = run_cli(["customer", pid, "--format", "json"], env)
    assert run.returncode == 0, run.describe()
    events = json.loads(run.stdout)
    mine = {e for e in fake.event_ids(since, until)
            if (fake.event(fake.event_index(e))["relationships"]["profile"]["data"] or {}).get("id") == pid}
    assert {e["event_id"] for e in events} == mine
    assert [e["datetime"] for e in events] == sorted(e["datetime"] for e in events)
    orders = [e for e in events if e["conversion"]]
    assert (len(orders), round(sum(e["value"] for e in orders), 2)) == want[pid][:2]
    assert all(e["metric"] == "Placed Order" for e in orders)
    if email:
        by_email = run_cli(["customer", email.upper(), "--format", "json"], env)
        assert json.loads(by_email.stdout) == events
    # The view holds the same answer as the command.
    view = query(db, "SELECT profile_id, orders, revenue, first_order, last_order FROM customer_summary "
                     "WHERE metric = 'Placed Order'")
    assert {r[0]: tuple(r[1:]) for r in view} == want


# -- hand-built databases -----------------------------------------------------------------------
def build(path, orders, *, other=()):
    """A database with metric Placed Order (id m_order), one profile per customer (email
    <name>@example.com) and their orders: (profile, datetime, value)."""
    database = store.open_db(path)
    with database.atomic():
        database.execute("INSERT INTO metrics (id, name) VALUES (?, 'Placed Order'), ('m_view', 'Viewed Product')",
                         [ORDER])
        names = sorted({o[0] for o in orders} | {o[0] for o in other})
        database.conn.executemany("INSERT INTO profiles (id, email) VALUES (?, ?)",
                                  [(n, f"{n}@example.com") for n in names])
        rows = [(f"e{i}", ORDER, p, dt, v) for i, (p, dt, v) in enumerate(orders)]
        rows += [(f"x{i}", "m_view", p, dt, v) for i, (p, dt, v) in enumerate(other)]
        database.conn.executemany("INSERT INTO events (id, metric_id, profile_id, datetime, value) "
                                  "VALUES (?, ?, ?, ?, ?)", rows)
    database.close()


RFM_ORDERS = [
    ("A", "2026-01-20T00:00:00Z", 50.0), ("A", "2026-01-30T12:00:00Z", 100.0),
    ("B", "2026-01-31T00:00:00Z", 150.0),
    ("C", "2026-01-05T00:00:00Z", 10.0), ("C", "2026-01-10T00:00:00Z", 10.0), ("C", "2026-01-25T00:00:00Z", 10.0),
    ("D", "2026-01-02T00:00:00Z", 500.0), ("D", "2025-12-31T23:59:59Z", 999.0),  # before the range
    ("E", "2026-01-02T00:00:00Z", 20.0),
    ("F", "2026-01-15T00:00:00Z", 5.0), ("F", "2026-01-16T00:00:00Z", 5.0),
    ("G", "2026-02-01T00:00:00Z", 70.0),  # the range's end is excluded
]
RANGE = "2026-01-01..2026-01-31"


@pytest.fixture
def rfm_db(cli, db_path):
    build(db_path, RFM_ORDERS, other=[("A", "2026-01-10T00:00:00Z", 1000.0)])
    return db_path


def test_rfm_scores_groups_and_ties(cli, rfm_db):
    # Recency at 2026-02-01T00:00Z in whole days: A 1 (1.5), B 1, C 7, D 30, E 30, F 16.
    # Six customers: score = 1 + floor(3 * (rank - 1) / 6), rank shared by ties.
    # R (most days first): D,E rank 1 -> 1; F 3, C 4 -> 2; A,B rank 5 -> 3.
    # F (fewest orders first): B,D,E rank 1 -> 1; A,F rank 4 -> 2; C rank 6 -> 3.
    # M (least first): F 1, E 2 -> 1; C 3, A,B rank 4 -> 2; D 6 -> 3.
    got = rows_of(cli("rfm", "--range", RANGE, "--group", "Loyal", "--format", "json", key=False))
    assert got == [
        {"profile_id": "A", "email": "A@example.com", "rfm_group": "Loyal", "rfm_score": "322", "recency_days": 1,
         "frequency": 2, "monetary": 150.0, "recency_score": 3, "frequency_score": 2, "monetary_score": 2,
         "last_order": "2026-01-30T12:00:00Z"},
        {"profile_id": "C", "email": "C@example.com", "rfm_group": "Loyal", "rfm_score": "232", "recency_days": 7,
         "frequency": 3, "monetary": 30.0, "recency_score": 2, "frequency_score": 3, "monetary_score": 2,
         "last_order": "2026-01-25T00:00:00Z"},
    ]
    scores = {}
    for name in ("Recent", "Needs attention", "Inactive", "Champions", "At risk"):
        for r in rows_of(cli("rfm", "--range", RANGE, "--group", name.lower(), "--format", "json", key=False)):
            scores[r["profile_id"]] = (r["rfm_group"], r["rfm_score"])
    assert scores == {"B": ("Recent", "312"), "F": ("Needs attention", "221"), "D": ("Inactive", "113"),
                      "E": ("Inactive", "111")}
    groups = rows_of(cli("rfm", "--range", RANGE, "--format", "json", key=False))
    assert groups == [
        {"group": "Champions", "customers": 0, "share": 0.0, "revenue": 0.0, "avg_orders": None, "avg_recency_days": None},
        {"group": "Loyal", "customers": 2, "share": 0.3333, "revenue": 180.0, "avg_orders": 2.5, "avg_recency_days": 4.0},
        {"group": "Recent", "customers": 1, "share": 0.1667, "revenue": 150.0, "avg_orders": 1.0, "avg_recency_days": 1.0},
        {"group": "Needs attention", "customers": 1, "share": 0.1667, "revenue": 10.0, "avg_orders": 2.0,
         "avg_recency_days": 16.0},
        {"group": "At risk", "customers": 0, "share": 0.0, "revenue": 0.0, "avg_orders": None, "avg_recency_days": None},
        {"group": "Inactive", "customers": 2, "share": 0.3333, "revenue": 520.0, "avg_orders": 1.0,
         "avg_recency_days": 30.0},
    ]
    csv = cli("rfm", "--range", RANGE, "--group", "Inactive", "--format", "csv", key=False)
    assert csv.stdout.splitlines() == [
        "profile_id,email,rfm_group,rfm_score,recency_days,frequency,monetary,recency_score,frequency_score,"
        "monetary_score,last_order",
        "D,D@example.com,Inactive,113,30,1,500.0,1,1,3,2026-01-02T00:00:00Z",
        "E,E@example.com,Inactive,111,30,1,20.0,1,1,1,2026-01-02T00:00:00Z",
    ]


def test_customers_on_hand_built_data(cli, rfm_db):
    got = rows_of(cli("customers", "--range", RANGE, "--sort", "orders", "--top", "3", "--format", "json", key=False))
    assert got == [
        {"profile_id": "C", "email": "C@example.com", "orders": 3, "revenue": 30.0, "first_order": "2026-01-05T00:00:00Z",
         "last_order": "2026-01-25T00:00:00Z", "attributed_revenue": 0.0, "organic_revenue": 30.0},
        {"profile_id": "A", "email": "A@example.com", "orders": 2, "revenue": 150.0, "first_order": "2026-01-20T00:00:00Z",
         "last_order": "2026-01-30T12:00:00Z", "attributed_revenue": 0.0, "organic_revenue": 150.0},
        {"profile_id": "F", "email": "F@example.com", "orders": 2, "revenue": 10.0, "first_order": "2026-01-15T00:00:00Z",
         "last_order": "2026-01-16T00:00:00Z", "attributed_revenue": 0.0, "organic_revenue": 10.0},
    ]
    everyone = rows_of(cli("customers", "--format", "json", key=False))  # no range: every conversion
    assert [(r["profile_id"], r["orders"], r["revenue"]) for r in everyone] == [
        ("D", 2, 1499.0), ("A", 2, 150.0), ("B", 1, 150.0), ("G", 1, 70.0), ("C", 3, 30.0), ("E", 1, 20.0),
        ("F", 2, 10.0)]


def test_attributed_and_organic_revenue_and_the_timeline(cli, rfm_db):
    database = store.open_db(rfm_db)
    with database.atomic():
        database.execute("INSERT INTO campaigns (id, name, channel) VALUES ('c1', 'Spring Sale', 'email')")
        database.execute("INSERT INTO campaign_messages (id, campaign_id, channel, label) "
                         "VALUES ('cm1', 'c1', 'email', 'Spring Sale A')")
        database.execute("INSERT INTO flows (id, name) VALUES ('f1', 'Welcome')")
        database.execute("INSERT INTO flow_messages (id, flow_id, channel, name) VALUES ('fm1', 'f1', 'sms', 'Welcome SMS')")
        database.execute("INSERT INTO event_attributions (id, event_id, attributed_event_id, campaign_id, "
                         "campaign_message_id) VALUES ('at1', 'e1', 'open1', 'c1', 'cm1')")  # A's 100.00
        database.execute("INSERT INTO event_attributions (id, event_id, attributed_event_id, flow_id, "
                         "flow_message_id) VALUES ('at2', 'e4', 'click1', 'f1', 'fm1')")  # C's second 10.00
        # Two attributions of C's first order: the one whose touch is stored (x0) is shown.
        database.execute("INSERT INTO event_attributions (id, event_id, attributed_event_id, flow_id, "
                         "flow_message_id) VALUES ('at3', 'e3', 'click1', 'f1', 'fm1')")
        database.execute("INSERT INTO event_attributions (id, event_id, attributed_event_id, campaign_id, "
                         "campaign_message_id) VALUES ('at4', 'e3', 'x0', 'c1', 'cm1')")
    database.close()
    got = {r["profile_id"]: (r["attributed_revenue"], r["organic_revenue"])
           for r in rows_of(cli("customers", "--range", RANGE, "--format", "json", key=False))}
    assert got == {"A": (100.0, 50.0), "B": (0.0, 150.0), "C": (20.0, 10.0), "D": (0.0, 500.0), "E": (0.0, 20.0),
                   "F": (0.0, 10.0)}
    timeline = rows_of(cli("customer", "a@EXAMPLE.com", "--format", "json", key=False))
    assert [(e["event_id"], e["datetime"], e["metric"], e["value"], e["conversion"]) for e in timeline] == [
        ("x0", "2026-01-10T00:00:00Z", "Viewed Product", 1000.0, False),
        ("e0", "2026-01-20T00:00:00Z", "Placed Order", 50.0, True),
        ("e1", "2026-01-30T12:00:00Z", "Placed Order", 100.0, True)]
    assert {k: timeline[2][k] for k in ("attributed_event_id", "campaign_id", "campaign_name", "flow_id",
                                        "message_id", "message_name", "channel")} == {
        "attributed_event_id": "open1", "campaign_id": "c1", "campaign_name": "Spring Sale", "flow_id": None,
        "message_id": "cm1", "message_name": "Spring Sale A", "channel": "email"}
    assert timeline[1]["message_id"] is None and timeline[1]["channel"] is None
    c = rows_of(cli("customer", "C", "--format", "json", key=False))
    assert [(e["event_id"], e["attributed_event_id"], e["campaign_name"], e["flow_name"], e["message_name"],
             e["channel"]) for e in c] == [
        ("e3", "x0", "Spring Sale", None, "Spring Sale A", "email"),
        ("e4", "click1", None, "Welcome", "Welcome SMS", "sms"),
        ("e5", None, None, None, None, None)]
    missing = cli("customer", "nobody@example.com", key=False)
    assert missing.exit_code == 2 and missing.stderr.strip().splitlines() == [
        "klaviyo-sync: error: no profile with the email or id 'nobody@example.com' in the database"]


COHORT_ORDERS = [
    ("P1", "2026-01-05T10:00:00Z", 1.0), ("P1", "2026-02-10T10:00:00Z", 1.0), ("P1", "2026-04-01T10:00:00Z", 1.0),
    ("P2", "2026-01-20T10:00:00Z", 1.0), ("P2", "2026-03-03T10:00:00Z", 1.0),
    ("P3", "2026-02-14T10:00:00Z", 1.0), ("P3", "2026-02-20T10:00:00Z", 1.0), ("P3", "2026-03-01T10:00:00Z", 1.0),
    ("P4", "2026-02-01T00:00:00Z", 1.0),
    ("P5", "2026-04-30T23:59:59Z", 1.0), ("P5", "2026-04-30T23:59:59Z", 2.0),  # two orders in one second
]


def test_cohorts_on_hand_built_data(cli, db_path):
    # P4 views a product in March: not a conversion, so it does not count as P4 returning.
    build(db_path, COHORT_ORDERS, other=[("P4", "2026-03-10T00:00:00Z", 0.0)])
    got = rows_of(cli("cohorts", "--format", "json", key=False))
    row = lambda c, s, k, m, n, share: {"cohort": c, "cohort_size": s, "months_after": k, "month": m,  # noqa: E731
                                        "customers": n, "share": share}
    assert got == [
        row("2026-01", 2, 0, "2026-01", 2, 1.0), row("2026-01", 2, 1, "2026-02", 1, 0.5),
        row("2026-01", 2, 2, "2026-03", 1, 0.5), row("2026-01", 2, 3, "2026-04", 1, 0.5),
        row("2026-02", 2, 0, "2026-02", 2, 1.0), row("2026-02", 2, 1, "2026-03", 1, 0.5),
        row("2026-02", 2, 2, "2026-04", 0, 0.0),
        row("2026-04", 1, 0, "2026-04", 1, 1.0),
    ]
    assert rows_of(cli("cohorts", "--months", "3", "--format", "json", key=False)) == got[4:]
    view = query(db_path, "SELECT cohort, cohort_size, months_after, month, customers, share FROM cohort_retention "
                          "WHERE metric = 'Placed Order' ORDER BY cohort, months_after")
    assert [dict(zip(got[0], r)) for r in view] == got
    grid = cli("cohorts", "--format", "table", key=False)
    assert grid.exit_code == 0
    lines = [ln for ln in grid.stdout.splitlines() if ln.startswith("│")]
    assert [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines] == [
        ["2026-01", "2", "50.0%", "50.0%", "50.0%"], ["2026-02", "2", "50.0%", "0.0%", ""], ["2026-04", "1", "", "", ""]]
    # The chart: a bar per cohort for its share ordering again the next month (80 columns when
    # piped: 66 for the bars); the latest cohort has no next month yet.
    chart = cli("cohorts", "--format", "chart", key=False)
    assert chart.exit_code == 0
    assert [ln.rstrip() for ln in chart.stdout.splitlines()] == [
        "Cohorts (Placed Order): Converting again the next month",
        "2026-01 " + "█" * 66 + " 50.0%", "2026-02 " + "█" * 66 + " 50.0%", "2026-04"]


def test_deliverability_rates_and_klaviyos_bands_at_their_edges(cli, db_path):
    database = store.open_db(db_path)
    with database.atomic():
        for cid, name, channel, sent in (("c1", "Edge", "email", "2026-03-10T10:00:00Z"),
                                         ("c2", "Below", "email", "2026-03-11T10:00:00Z"),
                                         ("c3", "Text", "sms", "2026-03-12T10:00:00Z"),
                                         ("c4", "Old", "email", "2025-12-01T10:00:00Z")):
            database.execute("INSERT INTO campaigns (id, name, channel, send_time) VALUES (?, ?, ?, ?)",
                             [cid, name, channel, sent])
            database.execute("INSERT INTO campaign_messages (id, campaign_id, channel, label) VALUES (?, ?, ?, ?)",
                             [cid + "m", cid, channel, name + " message"])
        stats = "(campaign_id, campaign_message_id, send_channel, recipients, delivered, opens_unique, " \
                "clicks_unique, bounced, unsubscribes, spam_complaints)"
        # Exactly on each lower edge: open 25 %, click 2.5 %, bounce 0.4 %, unsub 0.2 %, spam 0.05 %.
        database.execute(f"INSERT INTO campaign_stats {stats} VALUES ('c1', 'c1m', 'email', 10000, 10000, 2500, 250, 40, 20, 5)")
        # Just below/above: open 9.99 %, click 0.99 %, bounce 1.5 %, unsub 0.69 %, spam 0.15 %.
        database.execute(f"INSERT INTO campaign_stats {stats} VALUES ('c2', 'c2m', 'email', 10000, 10000, 999, 99, 150, 69, 15)")
        database.execute(f"INSERT INTO campaign_stats {stats} VALUES ('c3', 'c3m', 'sms', 100, 100, 0, 5, 0, 1, 0)")
        database.execute(f"INSERT INTO campaign_stats {stats} VALUES ('c4', 'c4m', 'email', 10, 10, 1, 1, 1, 1, 1)")
        database.execute("INSERT INTO flows (id, name) VALUES ('f1', 'Welcome')")
        database.execute("INSERT INTO flow_messages (id, flow_id, channel, name) VALUES ('fm1', 'f1', 'email', 'Welcome 1')")
        # Two days summed: opens 1000/10000 = 10 % (room for improvement's edge), clicks 150 = 1.5 %.
        for day, d, o, c in (("2026-03-10", 4000, 300, 50), ("2026-03-11", 6000, 700, 100), ("2026-01-01", 9, 9, 9)):
            database.execute("INSERT INTO flow_stats_daily (flow_id, flow_message_id, day, send_channel, recipients, "
                             "delivered, opens_unique, clicks_unique, bounced, unsubscribes, spam_complaints) "
                             "VALUES ('f1', 'fm1', ?, 'email', ?, ?, ?, ?, 0, 0, 0)", [day, d, d, o, c])
    database.close()
    got = rows_of(cli("deliverability", "--range", "2026-03-01..2026-03-31", "--format", "json", key=False))
    bands = {r["message_id"]: (r["open_band"], r["click_band"], r["bounce_band"], r["unsubscribe_band"],
                               r["spam_complaint_band"]) for r in got}
    assert bands == {
        "c1m": ("great", "great", "proficient", "proficient", "proficient"),
        "c2m": ("critical", "critical", "critical", "room for improvement", "critical"),
        "c3m": (None, None, None, None, None),
        "fm1": ("room for improvement", "proficient", "great", "great", "great"),
    }
    c1 = next(r for r in got if r["message_id"] == "c1m")
    assert (c1["open_rate"], c1["click_rate"], c1["bounce_rate"], c1["unsubscribe_rate"], c1["spam_complaint_rate"]) \
        == (0.25, 0.025, 0.004, 0.002, 0.0005)
    sms = next(r for r in got if r["message_id"] == "c3m")
    assert sms["open_rate"] is None and sms["click_rate"] == 0.05
    flow = next(r for r in got if r["message_id"] == "fm1")
    assert (flow["source"], flow["parent_name"], flow["delivered"], flow["first_send"], flow["last_send"]) == \
        ("flow", "Welcome", 10000, "2026-03-10", "2026-03-11")
    last = rows_of(cli("deliverability", "--last", "2", "--format", "json", key=False))
    assert [r["message_id"] for r in last] == ["c3m", "c2m"]
    view = query(db_path, "SELECT count(*) FROM message_deliverability")[0][0]
    assert view == 5  # every campaign message and the flow message over all its days


def test_empty_database_and_ranges_without_conversions_answer_an_empty_array(cli, db_path):
    store.open_db(db_path).close()
    for args in (["customers"], ["rfm"], ["rfm", "--group", "Champions"], ["cohorts"], ["deliverability"],
                 ["deliverability", "--last", "3"]):
        assert rows_of(cli(*args, "--format", "json", key=False)) == [], args
    build(db_path.with_name("other.db"), RFM_ORDERS)
    env = {"KLAVIYO_SYNC_DB": str(db_path.with_name("other.db"))}
    for args in (["customers", "--range", "2020-01-01..2020-01-31"], ["rfm", "--range", "2020-01-01..2020-01-31"],
                 ["deliverability", "--range", "2020-01-01..2020-01-31"]):
        assert rows_of(cli(*args, "--format", "json", env=env, key=False)) == [], args
    assert cli("customers", "--range", "2020-01-01..2020-01-31", "--format", "csv", env=env, key=False).stdout == \
        "profile_id,email,orders,revenue,first_order,last_order,attributed_revenue,organic_revenue\n"


@pytest.mark.parametrize("args", [
    ["customers", "--metric", "Nope"], ["rfm", "--metric", "Nope"], ["cohorts", "--metric", "Nope"],
    ["customer", "A", "--metric", "Nope"], ["customers", "--range", "lastweek"], ["rfm", "--range", "2026-02-30.."],
    ["deliverability", "--range", "yesterday"], ["deliverability", "--range", "7d", "--last", "3"],
    ["customers", "--sort", "email"], ["rfm", "--group", "Whales"], ["cohorts", "--by", "week"],
    ["customers", "--format", "xml"],
])
def test_bad_input_exits_2_with_one_line(cli, rfm_db, args):
    result = cli(*args, key=False)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("klaviyo-sync: error: "), lines


def test_no_database_file_is_a_usage_error(cli, db_path):
    result = cli("customers", key=False)
    assert result.exit_code == 2 and "no database" in result.stderr and not db_path.exists()
