import csv
import io
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.streams.campaigns import report_batches, sync_campaigns
from klaviyo_sync.timeutil import Window, parse_range

from .conftest import BASE
from .e2e_helpers import iso  # the test's own formatting, not the product's timeutil.iso
from .openapi_check import request_problems

UTC = timezone.utc
CAMPAIGNS = f"{BASE}/api/campaigns"
REPORTS = f"{BASE}/api/campaign-values-reports"
METRICS = f"{BASE}/api/metrics"


def campaign(cid, channel, sent, archived=False, name=None):
    return {"type": "campaign", "id": cid, "attributes": {
        "name": name or f"Campaign {cid}", "status": "Sent" if sent else "Draft", "archived": archived,
        "audiences": {"included": ["L1"], "excluded": []}, "send_options": {"use_smart_sending": True},
        "tracking_options": None, "send_strategy": {"method": "static", "datetime": None},
        "created_at": "2026-01-01T00:00:00+00:00", "scheduled_at": None,
        "updated_at": "2026-01-02T00:00:00+00:00", "send_time": sent},
        "relationships": {"campaign-messages": {"data": [{"type": "campaign-message", "id": f"{cid}-m"}]}},
        "links": {"self": f"{CAMPAIGNS}/{cid}"}}


def message(cid, channel, sent):
    content = {"subject": f"Subject {cid}", "preview_text": "p", "from_email": "a@b.c", "from_label": "A"} \
        if channel == "email" else {"body": f"Body {cid}"}
    return {"type": "campaign-message", "id": f"{cid}-m", "attributes": {
        "definition": {"channel": channel, "label": f"Label {cid}", "content": content},
        "send_times": [{"datetime": sent, "is_local": False}] if sent else [],
        "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-02T00:00:00+00:00"},
        "relationships": {"campaign": {"data": {"type": "campaign", "id": cid}}}}


def days_ago(now, n):
    return (now - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class CampaignsApi:
    """/api/campaigns for unit tests of the campaigns stream: in-process, with hand-built
    campaigns (no send time, archived, a channel per request) the fake does not produce on demand.
    Each request is checked against Klaviyo's OpenAPI spec, as ReportsApi's bodies are."""

    def __init__(self, by_channel, page_size=2):
        self.by_channel = by_channel  # channel -> list of (campaign, message)
        self.page_size = page_size
        self.filters = []

    def __call__(self, request):
        parts = urlsplit(request.url)
        assert request_problems("GET", parts.path, parts.query, None) == []
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        flt = q["filter"]
        self.filters.append(flt)
        channel = flt.split("equals(messages.channel,'")[1].split("'")[0]
        archived = "equals(archived,true)" in flt
        assert q["include"] == "campaign-messages"
        rows = [(c, m) for c, m in self.by_channel.get(channel, []) if c["attributes"]["archived"] == archived]
        offset = int(q.get("page[cursor]", 0))
        page = rows[offset:offset + self.page_size]
        nxt = None
        if offset + self.page_size < len(rows):
            from urllib.parse import urlencode
            nxt = f"{CAMPAIGNS}?{urlencode(dict(q, **{'page[cursor]': offset + self.page_size}))}"
        return 200, {}, json.dumps({"data": [c for c, _ in page], "included": [m for _, m in page],
                                    "links": {"self": request.url, "next": nxt}})


class ReportsApi:
    def __init__(self, status=200, retry_after=None):
        self.bodies = []
        self.status = status
        self.retry_after = retry_after

    def __call__(self, request):
        body = json.loads(request.body)
        parts = urlsplit(request.url)
        assert request_problems("POST", parts.path, parts.query, request.body) == []
        self.bodies.append(body)
        if self.status != 200:
            headers = {"Retry-After": str(self.retry_after)} if self.retry_after else {}
            return self.status, headers, json.dumps({"errors": [{"code": "throttled", "detail": "Daily quota reached."}]})
        flt = body["data"]["attributes"]["filter"]
        ids = json.loads(flt[len("contains-any(campaign_id,"):-1])
        results = [{"groupings": {"campaign_id": cid, "campaign_message_id": f"{cid}-m", "send_channel": "email"},
                    "statistics": {"recipients": 1000 + n, "delivered": 990, "open_rate": 0.5, "opens_unique": 495,
                                   "click_rate": 0.125, "clicks_unique": 124, "conversions": 7,
                                   "conversion_value": 1234.5, "unsubscribes": 3, "opens": 600, "clicks": 150,
                                   "bounced": 10, "spam_complaints": 0}}
                   for n, cid in enumerate(ids)]
        return 200, {}, json.dumps({"data": {"type": "campaign-values-report", "attributes": {"results": results}},
                                    "links": {"self": REPORTS}})


def fixture_account(now, n_email=5):
    return {
        "email": [(campaign(f"E{i}", "email", days_ago(now, i + 1)), message(f"E{i}", "email", days_ago(now, i + 1)))
                  for i in range(n_email)]
                 + [(campaign("EA", "email", days_ago(now, 3), archived=True), message("EA", "email", days_ago(now, 3))),
                    (campaign("ED", "email", None), message("ED", "email", None))],
        "sms": [(campaign("S1", "sms", days_ago(now, 2)), message("S1", "sms", days_ago(now, 2)))],
        "mobile_push": [(campaign("P1", "mobile_push", days_ago(now, 45)), message("P1", "mobile_push", days_ago(now, 45)))],
    }


def serve(mocked, now, account=None, reports=None):
    api = CampaignsApi(account or fixture_account(now))
    mocked.add_callback("GET", CAMPAIGNS, callback=api)
    reports = reports or ReportsApi()
    mocked.add_callback("POST", REPORTS, callback=reports)
    mocked.get(METRICS, json={"data": [{"type": "metric", "id": "PO1", "attributes": {"name": "Placed Order"}},
                                       {"type": "metric", "id": "OE1", "attributes": {"name": "Opened Email"}}],
                              "links": {"next": None}})
    return api, reports


def test_channel_filter_sent_per_channel_archived_too_and_paged(mocked, client, db, now):
    api, reports = serve(mocked, now)
    result = sync_campaigns(client, db, parse_range("30d"))
    assert sorted(set(api.filters)) == sorted(
        f"and(equals(messages.channel,'{c}'),equals(archived,{a}))"
        for c in ("email", "sms", "mobile_push") for a in ("true", "false"))
    assert {r["id"] for r in db["campaigns"].rows} == {"E0", "E1", "E2", "E3", "E4", "EA", "ED", "S1", "P1"}
    assert result.rows["campaigns"] == 9 and result.rows["campaign_messages"] == 9
    row = db["campaigns"].get("E0")
    assert (row["channel"], row["status"], row["subject"], row["label"], row["archived"]) == \
        ("email", "Sent", "Subject E0", "Label E0", 0)
    assert row["send_time"] == iso(now - timedelta(days=1))
    assert db["campaign_messages"].get("S1-m")["body"] == "Body S1"


def test_send_time_falls_back_to_message_send_times(mocked, client, db, now):
    c = campaign("X", "email", None)
    c["attributes"]["status"] = "Sent"
    serve(mocked, now, {"email": [(c, message("X", "email", days_ago(now, 4)))]})
    sync_campaigns(client, db, parse_range("30d"), stats=False)
    assert db["campaigns"].get("X")["send_time"] == iso(now - timedelta(days=4))


def test_report_payload_and_one_request_for_all_channels(mocked, client, db, now):
    _, reports = serve(mocked, now)
    result = sync_campaigns(client, db, parse_range("30d"))
    assert len(reports.bodies) == 1
    attrs = reports.bodies[0]["data"]["attributes"]
    assert reports.bodies[0]["data"]["type"] == "campaign-values-report"
    assert attrs["conversion_metric_id"] == "PO1"
    assert attrs["group_by"] == ["campaign_id", "campaign_message_id", "send_channel"]
    ids = json.loads(attrs["filter"][len("contains-any(campaign_id,"):-1])
    assert sorted(ids) == ["E0", "E1", "E2", "E3", "E4", "EA", "S1"]  # sent in range; not the draft or P1
    assert {"recipients", "open_rate", "click_rate", "conversion_value", "unsubscribes", "bounced",
            "spam_complaints", "delivered", "opens_unique", "clicks_unique", "conversions"} <= set(attrs["statistics"])
    assert set(attrs["timeframe"]) == {"start", "end"}
    stats = db["campaign_stats"].get(("E0", "E0-m"))
    assert stats["recipients"] >= 1000 and stats["open_rate"] == 0.5 and stats["conversion_value"] == 1234.5
    assert result.extra["report_requests"] == 1
    # Fresh statistics are not asked for again.
    sync_campaigns(client, db, parse_range("30d"))
    assert len(reports.bodies) == 1


def test_report_batches_hold_at_most_100_ids_and_a_year():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    camps = [(f"C{i}", iso(start + timedelta(days=i))) for i in range(250)]
    batches = report_batches(camps)
    assert [len(b[0]) for b in batches] == [100, 100, 50]
    assert [c for b in batches for c in b[0]] == [c for c, _ in camps]
    spread = [(f"C{i}", iso(start + timedelta(days=200 * i))) for i in range(4)]
    batches = report_batches(spread)
    assert all(end - begin <= timedelta(days=365) for _, begin, end in batches)
    assert [b[0] for b in batches] == [["C0", "C1"], ["C2", "C3"]]


def test_quota_spent_stores_campaigns_and_reports_missing_stats(mocked, cli, db_path, now):
    serve(mocked, now, reports=ReportsApi(status=429, retry_after=40000))
    result = cli("sync-campaigns", "--range", "30d")
    assert result.exit_code == 6
    assert "statistics are missing for 7 campaign(s)" in result.stderr
    database = store.open_db(db_path)
    assert database["campaigns"].count == 9 and database["campaign_stats"].count == 0
    assert json.loads(result.stdout)["status"] == "partial"
    assert list(database["sync_runs"].rows)[-1]["status"] == "partial"
    # The analyst is told, not left to guess from blank cells.
    shown = cli("campaigns", "--range", "30d", "--format", "json", key=False)
    assert shown.exit_code == 0 and "statistics missing for 7" in shown.stderr


def test_campaigns_database_first_makes_no_request(mocked, cli, db_path, now):
    serve(mocked, now)
    assert cli("sync-campaigns", "-q").exit_code == 0
    before = len(mocked.calls)
    result = cli("campaigns", "--range", "30d", "--format", "json", key=False)
    assert result.exit_code == 0, result.stderr
    assert len(mocked.calls) == before  # zero HTTP requests
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["E0", "E1", "S1", "E2", "EA", "E3", "E4"]  # newest first
    assert "from the local database" in result.stderr and "synced" in result.stderr


def test_campaigns_fallback_fetches_stores_and_prints(mocked, cli, db_path, now):
    api, reports = serve(mocked, now)
    result = cli("campaigns", "--range", "7d", "--channel", "email", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["E0", "E1", "E2", "EA", "E3", "E4"]
    assert set(api.filters) == {"and(equals(messages.channel,'email'),equals(archived,false))",
                                "and(equals(messages.channel,'email'),equals(archived,true))"}
    assert all(r["recipients"] >= 1000 for r in rows)
    assert isinstance(rows[0]["open_rate"], float) and rows[0]["archived"] is False
    database = store.open_db(db_path)
    assert database["campaigns"].count == 7  # email campaigns, archived and draft included
    # Now the database answers.
    before = len(mocked.calls)
    assert cli("campaigns", "--range", "7d", "--channel", "email", "--format", "json", key=False).exit_code == 0
    assert len(mocked.calls) == before


def test_campaigns_refresh_goes_to_the_api(mocked, cli, now):
    serve(mocked, now)
    cli("sync-campaigns", "-q")
    before = len(mocked.calls)
    result = cli("campaigns", "--range", "30d", "--refresh", "--no-stats", "--format", "jsonl")
    assert result.exit_code == 0
    assert len(mocked.calls) > before
    assert all(c.request.method == "GET" for c in mocked.calls[before:])  # --no-stats: no report
    assert len(result.stdout.strip().splitlines()) == 7


def test_campaigns_without_key_and_empty_db_is_a_usage_error(cli):
    result = cli("campaigns", "--range", "30d", key=False)
    assert result.exit_code == 2 and "KLAVIYO_API_KEY" in result.stderr


FIXED = [{"id": "C1", "name": "Black Friday", "channel": "email", "status": "Sent", "archived": False,
          "send_time": "2026-11-20T10:00:00Z", "subject": "Deals", "label": "BF", "recipients": 12000,
          "delivered": 11800, "opens": 7000, "opens_unique": 5900, "open_rate": 0.5, "clicks": 900,
          "clicks_unique": 708, "click_rate": 0.06, "conversions": 120, "conversion_rate": 0.01,
          "conversion_value": 4567.891, "unsubscribes": 12, "bounced": 200, "spam_complaints": 1,
          "stats_fetched_at": "2026-11-21T00:00:00Z"},
         {"id": "C2", "name": "SMS blast", "channel": "sms", "status": "Sent", "archived": True,
          "send_time": "2026-11-19T10:00:00Z", "subject": None, "label": None, "recipients": None,
          "delivered": None, "opens": None, "opens_unique": None, "open_rate": None, "clicks": None,
          "clicks_unique": None, "click_rate": None, "conversions": None, "conversion_rate": None,
          "conversion_value": None, "unsubscribes": None, "bounced": None, "spam_complaints": None,
          "stats_fetched_at": None}]


def seed_fixed(db_path):
    database = store.open_db(db_path)
    for r in FIXED:
        database["campaigns"].insert({"id": r["id"], "name": r["name"], "channel": r["channel"], "status": r["status"],
                                      "archived": int(r["archived"]), "send_time": r["send_time"],
                                      "subject": r["subject"], "label": r["label"]})
    database["campaign_stats"].insert({k: v for k, v in FIXED[0].items()
                                       if k in store.CAMPAIGN_STAT_COLUMNS or k == "campaign_id"}
                                      | {"campaign_id": "C1", "campaign_message_id": "C1-m", "fetched_at": "2026-11-21T00:00:00Z",
                                         "conversion_uniques": 118, "opens": 7000})
    database.close()


def test_format_json_exact(cli, db_path):
    seed_fixed(db_path)
    result = cli("campaigns", "--range", "2026-11-01..2026-11-30", "--format", "json", key=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == FIXED


def test_format_csv_and_jsonl_exact(cli, db_path):
    seed_fixed(db_path)
    out = cli("campaigns", "--range", "2026-11-01..2026-11-30", "--format", "csv", key=False).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == ["C1", "C2"] and rows[0]["conversion_value"] == "4567.891"
    assert (rows[0]["archived"], rows[1]["archived"]) == ("false", "true")
    assert rows[1]["open_rate"] == ""
    lines = cli("campaigns", "--range", "2026-11-01..2026-11-30", "--format", "jsonl", key=False).stdout.splitlines()
    assert [json.loads(line) for line in lines] == FIXED


def test_format_table_exact(cli, db_path):
    seed_fixed(db_path)
    out = cli("campaigns", "--range", "2026-11-01..2026-11-30", "--format", "table", key=False).stdout
    assert "Black Friday" in out and "50.0%" in out and "6.0%" in out and "4,567.89" in out and "12,000" in out
    sms_line = next(line for line in out.splitlines() if "SMS blast" in line)
    assert "%" not in sms_line  # unknown statistics stay blank


@pytest.mark.parametrize("value", ["30", "30x", "yesterday", "2026-13-01..", "2026-11-30..2026-11-01", "-5d", "0d"])
def test_bad_ranges_exit_2(cli, value):
    result = cli("campaigns", "--range", value, key=False)
    assert result.exit_code == 2
    assert "--range" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_range_forms():
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_range("30d", now) == Window(now - timedelta(days=30), now, "30d")
    assert parse_range("24h", now).start == now - timedelta(hours=24)
    assert parse_range("2w", now).start == now - timedelta(weeks=2)
    w = parse_range("2026-11-01..2026-11-03", now)
    assert (w.start, w.end) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))
    w = parse_range("2026-11-01..", now)
    assert (w.start, w.end) == (datetime(2026, 11, 1, tzinfo=UTC), now)
    with pytest.raises(ValueError, match="accepted forms"):
        parse_range("last week", now)


def test_output_into_a_closed_pipe_stops_quietly(tmp_path):
    """`klaviyo-sync campaigns | head -1`: no traceback, no error line, exit 141."""
    import subprocess
    import sys

    db = tmp_path / "pipe.db"
    seed_fixed(db)
    many = store.open_db(db)
    many["campaigns"].insert_all({"id": f"X{i}", "name": "x" * 200, "channel": "email",
                                  "send_time": "2026-11-20T10:00:00Z"} for i in range(3000))
    many.close()
    proc = subprocess.run(
        f"{sys.executable} -m klaviyo_sync campaigns --db {db} --range 2026-11-01..2026-11-30 --format jsonl "
        "| head -1; echo \"exit ${PIPESTATUS[0]}\" >&2",
        shell=True, capture_output=True, text=True, executable="/bin/bash",
        env={"PATH": "/usr/bin:/bin", "KLAVIYO_SYNC_DB": str(db)})
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
    assert proc.stderr.strip().endswith("exit 141")


def test_conversion_metric_option_is_used(mocked, client, db, now):
    _, reports = serve(mocked, now)
    sync_campaigns(client, db, parse_range("30d"), conversion_metric="Opened Email")
    assert reports.bodies[0]["data"]["attributes"]["conversion_metric_id"] == "OE1"


def test_unknown_conversion_metric_is_a_usage_error(mocked, cli, now):
    serve(mocked, now)
    result = cli("sync-campaigns", "--conversion-metric", "Nope")
    assert result.exit_code == 2 and "unknown metric 'Nope'" in result.stderr


def test_campaign_with_several_messages_sums_counts_and_recomputes_rates(db_path):
    database = store.open_db(db_path)
    database["campaigns"].insert({"id": "C", "name": "A/B", "channel": "email", "send_time": "2026-11-20T10:00:00Z"})
    for mid, delivered, opens_unique, clicks_unique, value in (("m1", 100, 50, 10, 10.0), ("m2", 300, 30, 30, 5.5)):
        database["campaign_stats"].insert({
            "campaign_id": "C", "campaign_message_id": mid, "recipients": delivered, "delivered": delivered,
            "opens_unique": opens_unique, "open_rate": opens_unique / delivered, "clicks_unique": clicks_unique,
            "click_rate": clicks_unique / delivered, "conversion_value": value, "fetched_at": "2026-11-21T00:00:00Z"})
    row = database.execute("SELECT recipients, open_rate, click_rate, conversion_value FROM campaign_performance").fetchone()
    assert row == (400, 80 / 400, 40 / 400, 15.5)


# -- README promises (issue 12, item 5) ------------------------------------------------------
def test_campaigns_command_itself_exits_6_when_its_fetch_lacks_statistics(mocked, cli, db_path, now):
    """README, exit code 6, for `campaigns` too: with an empty database it fetches; when the
    report quota is spent it still prints the campaigns, warns, and exits 6."""
    serve(mocked, now, reports=ReportsApi(status=429, retry_after=40000))
    result = cli("campaigns", "--range", "30d", "--format", "json")
    assert result.exit_code == 6, result.stderr
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["E0", "E1", "S1", "E2", "EA", "E3", "E4"]
    assert all(r["recipients"] is None and r["stats_fetched_at"] is None for r in rows)
    assert "fetched from the API" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("klaviyo-sync: warning:")
    assert list(store.open_db(db_path)["sync_runs"].rows)[-1]["status"] == "partial"


def test_a_campaign_the_report_has_nothing_for_gets_an_empty_row_and_is_not_asked_again(mocked, cli, db_path, now):
    class Partial(ReportsApi):  # answers for the email campaigns only
        def __call__(self, request):
            status, headers, text = super().__call__(request)
            doc = json.loads(text)
            res = doc["data"]["attributes"]["results"]
            doc["data"]["attributes"]["results"] = [r for r in res if r["groupings"]["campaign_id"].startswith("E")]
            return status, headers, json.dumps(doc)

    _, reports = serve(mocked, now, reports=Partial())
    assert cli("sync-campaigns", "--range", "30d", "-q").exit_code == 0
    database = store.open_db(db_path)
    assert database.execute("SELECT count(*) FROM campaign_stats WHERE campaign_id = 'S1'").fetchone()[0] == 1
    row = dict(zip(["campaign_id", "campaign_message_id", "recipients", "open_rate", "fetched_at"],
                   database.execute("SELECT campaign_id, campaign_message_id, recipients, open_rate, fetched_at "
                                    "FROM campaign_stats WHERE campaign_id = 'S1'").fetchone()))
    assert row["campaign_message_id"] == "" and row["recipients"] is None and row["open_rate"] is None
    assert row["fetched_at"]
    asked = len(reports.bodies)
    assert cli("sync-campaigns", "--range", "30d", "-q").exit_code == 0
    assert len(reports.bodies) == asked  # within --stats-max-age: not asked again
