"""The fake's flows, templates and flow reports are as strict as Klaviyo's."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import requests

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import walk

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
DAY = 86400
H = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15",
     "Content-Type": "application/vnd.api+json"}


@pytest.fixture(scope="module")
def fake():
    with FakeKlaviyo(seed=3, now=NOW, n_events=50, n_flows=14) as f:
        yield f


def get(fake, path, **params):
    return requests.get(fake.base_url + path, headers=H, params=params, timeout=10)


all_pages = walk


def error_of(r, status=400):
    assert r.status_code == status, r.text
    return r.json()["errors"][0]


def test_flows_listing_hides_archived_unless_asked(fake):
    live = {f["id"] for f in all_pages(fake, "/api/flows", **{"page[size]": "4"})}
    archived = {f["id"] for f in all_pages(fake, "/api/flows", filter="equals(archived,true)")}
    assert live == fake.flow_ids(archived=False) and archived == fake.flow_ids(archived=True)
    assert archived and not live & archived


@pytest.mark.parametrize("params, parameter", [
    ({"page[size]": "51"}, "page[size]"),
    ({"page[size]": "0"}, "page[size]"),
    ({"filter": "greater-than(name,'x')"}, "filter"),
    ({"filter": "equals(status,'paused')"}, "filter"),
    ({"filter": "any(updated,[2024-01-01T00:00:00Z])"}, "filter"),
    ({"sort": "send_time"}, "sort"),
    ({"fields[flow]": "definition"}, "fields[flow]"),
    ({"unknown": "1"}, "unknown"),
])
def test_flows_listing_rejects_what_klaviyo_rejects(fake, params, parameter):
    assert error_of(get(fake, "/api/flows", **params))["source"]["parameter"] == parameter


def test_flows_filters_and_sort(fake):
    rows = all_pages(fake, "/api/flows", sort="-updated", filter="greater-than(updated,2025-01-01T00:00:00Z)")
    stamps = [r["attributes"]["updated"] for r in rows]
    assert stamps == sorted(stamps, reverse=True) and all(s > "2025-01-01" for s in stamps)
    name = rows[0]["attributes"]["name"]
    assert [r["id"] for r in all_pages(fake, "/api/flows", filter=f"equals(name,'{name}')")] == [rows[0]["id"]]


def test_flow_definition_only_with_additional_fields(fake):
    fid = sorted(fake.flow_ids())[0]
    plain = get(fake, f"/api/flows/{fid}").json()["data"]
    assert "definition" not in plain["attributes"]
    full = get(fake, f"/api/flows/{fid}", **{"additional-fields[flow]": "definition"}).json()["data"]
    d = full["attributes"]["definition"]
    assert d == fake.flow_definition(fid) and full == fake.flow(fid)
    assert d["entry_action_id"] == d["actions"][0]["id"] and d["triggers"]
    sends = [a for a in d["actions"] if a["type"] in ("send-email", "send-sms")]
    assert {a["data"]["message"]["id"] for a in sends} == fake.flow_message_ids(fid)
    assert error_of(get(fake, f"/api/flows/{fid}", **{"additional-fields[flow]": "actions"}))
    assert error_of(get(fake, "/api/flows/nope00"), 404)


def test_every_flow_shape_is_served(fake):
    types = {a["type"] for fid in fake.flow_ids() | fake.flow_ids(archived=True)
             for a in fake.flow_definition(fid)["actions"]}
    assert types == {"send-email", "send-sms", "time-delay", "conditional-split"}


def test_mutations_move_updated_and_delete_hides():
    with FakeKlaviyo(seed=3, now=NOW, n_events=0, n_flows=6) as f:
        fid, other = sorted(f.flow_ids())[:2]
        before = f.flow(fid)["attributes"]["updated"]
        f.touch_flow(fid, rename="Renamed")
        after = f.flow(fid)["attributes"]
        assert after["name"] == "Renamed" and after["updated"] > before
        f.delete_flow(other)
        assert other not in f.flow_ids()
        assert error_of(get(f, f"/api/flows/{other}"), 404)


def test_templates_page_size_filters_and_fields(fake):
    rows = all_pages(fake, "/api/templates")
    assert {r["id"] for r in rows} == fake.template_ids()
    assert error_of(get(fake, "/api/templates", **{"page[size]": "11"}))["source"]["parameter"] == "page[size]"
    assert error_of(get(fake, "/api/templates", filter="contains(updated,2025)"))["source"]["parameter"] == "filter"
    lean = get(fake, "/api/templates", **{"fields[template]": "name,updated"}).json()["data"][0]
    assert set(lean["attributes"]) == {"name", "updated"}
    newer = all_pages(fake, "/api/templates", filter="greater-or-equal(updated,2026-01-01T00:00:00Z)")
    assert all(r["attributes"]["updated"] >= "2026-01-01" for r in newer)


def test_templates_and_flows_need_their_scopes():
    with FakeKlaviyo(seed=3, now=NOW, n_events=0, n_flows=2, scopes={"templates:read"}) as f:
        assert error_of(get(f, "/api/flows"), 403)["code"] == "permission_denied"
        assert get(f, "/api/templates").status_code == 200


def report(fake, kind, **attrs):
    conv = fake.metric_id("Placed Order")
    body = {"data": {"type": kind, "attributes": {
        "statistics": ["recipients", "open_rate", "conversion_value"], "conversion_metric_id": conv,
        "timeframe": {"start": "2026-02-01T00:00:00+00:00", "end": "2026-02-10T23:59:59+00:00"},
        "group_by": ["flow_id", "flow_message_id", "send_channel"], **attrs}}}
    body["data"]["attributes"] = {k: v for k, v in body["data"]["attributes"].items() if v is not None}
    path = "/api/flow-series-reports" if kind == "flow-series-report" else "/api/flow-values-reports"
    return requests.post(fake.base_url + path, headers=H, json=body, timeout=10)


@pytest.mark.parametrize("kind, attrs, pointer", [
    ("flow-values-report", {"group_by": ["flow_id", "send_channel"]}, "/data/attributes/group_by"),
    ("flow-values-report", {"statistics": ["revenue"]}, "/data/attributes/statistics"),
    ("flow-values-report", {"conversion_metric_id": None}, "/data/attributes/conversion_metric_id"),
    ("flow-values-report", {"timeframe": {"start": "2024-01-01T00:00:00", "end": "2026-01-02T00:00:00"}},
     "/data/attributes/timeframe"),
    ("flow-values-report", {"filter": "contains-any(flow_id,[%s])" % ",".join(f'"x{i}"' for i in range(101))},
     "/data/attributes/filter"),
    ("flow-values-report", {"interval": "daily"}, "/data/attributes"),
    ("flow-series-report", {}, "/data/attributes/interval"),
    ("flow-series-report", {"interval": "daily", "timeframe": {
        "start": "2025-12-01T00:00:00", "end": "2026-02-01T00:00:00"}}, "/data/attributes/timeframe"),
    ("flow-series-report", {"interval": "hourly"}, "/data/attributes/timeframe"),
])
def test_flow_reports_validate_like_klaviyo(fake, kind, attrs, pointer):
    assert error_of(report(fake, kind, **attrs))["source"]["pointer"] == pointer


def test_series_and_values_agree_with_ground_truth(fake):
    conv = fake.metric_id("Placed Order")
    fid = next(f for f in sorted(fake.flow_ids()) if fake.flow(f)["attributes"]["status"] == "live")
    flt = f'contains-any(flow_id,["{fid}"])'
    series = report(fake, "flow-series-report", interval="daily", filter=flt).json()["data"]["attributes"]
    day0 = int(datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp())
    assert series["date_times"][0] == "2026-02-01T00:00:00+00:00" and len(series["date_times"]) == 10
    assert {r["groupings"]["flow_message_id"] for r in series["results"]} == fake.flow_message_ids(fid)
    for r in series["results"]:
        mid = r["groupings"]["flow_message_id"]
        for i in range(10):
            want = fake.flow_daily_statistics(mid, day0 + i * DAY, conv)
            assert {k: v[i] for k, v in r["statistics"].items()} == {
                k: want[k] for k in ("recipients", "open_rate", "conversion_value")}
    values = report(fake, "flow-values-report", filter=flt).json()["data"]["attributes"]["results"]
    for r in values:
        want = fake.flow_statistics(r["groupings"]["flow_message_id"], day0, day0 + 9 * DAY, conv)
        assert r["statistics"] == {k: want[k] for k in ("recipients", "open_rate", "conversion_value")}
        assert r["statistics"]["recipients"] == sum(
            fake.flow_daily_statistics(r["groupings"]["flow_message_id"], day0 + i * DAY, conv)["recipients"]
            for i in range(10))


def test_flow_reports_share_the_daily_quota_with_campaign_reports():
    with FakeKlaviyo(seed=3, now=NOW, n_events=0, n_flows=2) as f:
        f.report_daily_quota = 1
        assert report(f, "flow-series-report", interval="daily").status_code == 200
        r = report(f, "flow-values-report")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 60
