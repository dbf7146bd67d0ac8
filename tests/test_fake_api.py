"""Tests of the fake Klaviyo server itself (klaviyo_sync.fake)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo, RecordingServer

from .e2e_helpers import fetch_pages

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}",
    "revision": "2026-07-15",
    "Accept": "application/vnd.api+json",
}


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def fake():
    with FakeKlaviyo(seed=7, now=NOW, n_events=2000, n_profiles=150) as f:
        yield f


@pytest.fixture
def http():
    with requests.Session() as s:
        s.headers.update(HEADERS)
        yield s


def get(http, fake, path, **params):
    return http.get(fake.base_url + path, params=params or None, timeout=10)


def follow(http, fake, path, params, max_pages=10_000):
    """Follow links.next; return the list of pages (parsed JSON)."""
    return fetch_pages(fake.base_url + path, params, session=http, max_pages=max_pages)


def assert_error(r, status, code=None, parameter=None):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/vnd.api+json")
    err = r.json()["errors"][0]
    assert {"id", "code", "title", "detail"} <= set(err)
    if code:
        assert err["code"] == code
    if parameter:
        assert err["source"] == {"parameter": parameter}
    return err


# ----------------------------------------------------------------------------- basics


def test_auth_required(fake, http):
    r = requests.get(fake.base_url + "/api/metrics", headers={"revision": "2026-07-15"}, timeout=5)
    assert_error(r, 401, "not_authenticated")
    r = requests.get(fake.base_url + "/api/metrics", timeout=5,
                     headers={"revision": "2026-07-15", "Authorization": "Klaviyo-API-Key pk_wrong"})
    assert_error(r, 401, "not_authenticated")
    assert fake.request_log()[-1]["authorization"] == "Klaviyo-API-Key pk_wrong"
    assert get(http, fake, "/api/metrics").status_code == 200


def test_custom_api_key():
    with FakeKlaviyo(api_key="pk_other", n_events=10) as f:
        r = requests.get(f.base_url + "/api/metrics", headers=HEADERS, timeout=5)
        assert r.status_code == 401
        h = dict(HEADERS, Authorization="Klaviyo-API-Key pk_other")
        assert requests.get(f.base_url + "/api/metrics", headers=h, timeout=5).status_code == 200


def test_missing_revision(fake):
    r = requests.get(fake.base_url + "/api/events", timeout=5,
                     headers={"Authorization": HEADERS["Authorization"]})
    assert_error(r, 400, "invalid")


def test_unknown_path_and_trailing_slash(fake, http):
    assert_error(get(http, fake, "/api/nope"), 404, "not_found")
    assert get(http, fake, "/api/events/").status_code == 200
    assert get(http, fake, "/api/metrics/").status_code == 200


def test_wrong_method_on_a_known_path(fake, http):
    assert_error(http.post(fake.base_url + "/api/events", timeout=5), 405, "method_not_allowed")
    assert_error(http.get(fake.base_url + "/api/campaign-values-reports/", timeout=5), 405)
    assert_error(http.delete(fake.base_url + "/api/nope/x", timeout=5), 404, "not_found")


def test_missing_scope_is_a_json_403(http):
    with FakeKlaviyo(seed=7, now=NOW, n_events=50, n_profiles=10,
                     scopes={"events:read", "metrics:read"}) as f:
        assert get(http, f, "/api/events").status_code == 200
        r = get(http, f, "/api/campaigns", filter="equals(messages.channel,'email')")
        err = assert_error(r, 403, "permission_denied")
        assert r.json() == {"errors": [{
            "id": err["id"], "status": 403, "code": "permission_denied",
            "title": "You do not have permission to perform this action.",
            "detail": "This API key is missing required scopes: campaigns:read",
            "source": {"pointer": "/data/"}, "links": {}, "meta": {}}]}
        assert len(err["id"]) == 36
        assert_error(post_report(http, f, report_body(f)), 403, "permission_denied")
        # authentication is checked first; an unknown path stays a 404
        r = requests.get(f.base_url + "/api/campaigns", headers={"revision": "2026-07-15"}, timeout=5)
        assert_error(r, 401, "not_authenticated")
        assert_error(get(http, f, "/api/nope"), 404, "not_found")

        f.revoke_scope("events:read")
        assert_error(get(http, f, "/api/events/"), 403, "permission_denied")
        assert get(http, f, "/api/metrics").status_code == 200
        f.scopes = None  # every scope again
        assert get(http, f, "/api/events").status_code == 200
        assert f.request_log()[-1]["status"] == 200


def test_revoke_scope_from_the_default_key(fake, http):
    fake.revoke_scope("metrics:read")
    err = assert_error(get(http, fake, "/api/metrics"), 403, "permission_denied")
    assert err["detail"] == "This API key is missing required scopes: metrics:read"
    assert get(http, fake, "/api/events").status_code == 200
    with pytest.raises(ValueError):
        fake.revoke_scope("metric:read")


def test_requests_log_and_count(fake, http):
    get(http, fake, "/api/metrics")
    get(http, fake, "/api/events", **{"page[size]": "5"})
    assert fake.count() == 2
    assert fake.count("/api/events") == 1
    rec = fake.request_log()[-1]
    assert rec["method"] == "GET" and rec["path"] == "/api/events" and rec["status"] == 200
    assert "page%5Bsize%5D=5" in rec["query"]
    assert rec["authorization"] == HEADERS["Authorization"]


# ----------------------------------------------------------------------------- events


def test_event_filter_errors(fake, http):
    since = iso(NOW - timedelta(days=1))
    r = get(http, fake, "/api/events", filter=f'greater-or-equal(datetime,"{since}")')
    assert_error(r, 400, "invalid", "filter")
    r = get(http, fake, "/api/events", filter=f"greater-or-equal(datetime,'{since}')")
    assert_error(r, 400, "invalid", "filter")
    r = get(http, fake, "/api/events", filter=f"greater-or-equal(created,{since})")
    assert_error(r, 400, "invalid", "filter")
    r = get(http, fake, "/api/events", filter=f"contains(datetime,{since})")
    assert_error(r, 400, "invalid", "filter")
    r = get(http, fake, "/api/events", filter="equals(metric_id,abc)")  # unquoted string
    assert_error(r, 400, "invalid", "filter")
    r = get(http, fake, "/api/events", filter=f"or(greater-than(datetime,{since}))")
    assert_error(r, 400, "invalid", "filter")
    # a valid one, with both comma and and() forms
    ok1 = get(http, fake, "/api/events", filter=f"greater-or-equal(datetime,{since}),has(profile)")
    ok2 = get(http, fake, "/api/events", filter=f"and(greater-or-equal(datetime,{since}),has(profile))")
    assert ok1.status_code == ok2.status_code == 200
    assert [e["id"] for e in ok1.json()["data"]] == [e["id"] for e in ok2.json()["data"]]


def test_event_param_errors(fake, http):
    assert_error(get(http, fake, "/api/events", **{"page[size]": "1001"}), 400, "invalid", "page[size]")
    assert_error(get(http, fake, "/api/events", **{"page[size]": "0"}), 400, "invalid", "page[size]")
    assert_error(get(http, fake, "/api/events", include="profiles"), 400, "invalid", "include")
    assert_error(get(http, fake, "/api/events", **{"fields[event]": "value"}), 400, "invalid",
                 "fields[event]")
    assert_error(get(http, fake, "/api/events", sort="created"), 400, "invalid", "sort")
    assert_error(get(http, fake, "/api/events", **{"page[cursor]": "garbage!!"}), 400, "invalid",
                 "page[cursor]")
    r = http.get(fake.base_url + "/api/events?sort=datetime&sort=datetime", timeout=5)
    assert_error(r, 400, "invalid", "sort")


@pytest.mark.parametrize("sort", ["datetime", "-timestamp"])
def test_event_paging_exact_under_ties(fake, http, sort):
    since = NOW - timedelta(hours=60)
    until = NOW - timedelta(hours=12)
    # the window has ties (several events in one second)
    ts = Counter(e["attributes"]["timestamp"]
                 for e in (fake.event(i) for i in range(fake.n_events)))
    assert max(ts.values()) >= 3
    params = {"filter": f"greater-or-equal(datetime,{iso(since)}),less-than(datetime,{iso(until)})",
              "sort": sort, "page[size]": "7"}
    pages = follow(http, fake, "/api/events", params)
    ids = [e["id"] for p in pages for e in p["data"]]
    expected = fake.event_ids(since, until)
    assert len(expected) > 100
    assert len(ids) == len(set(ids)), "duplicates across pages"
    assert set(ids) == expected
    assert all(len(p["data"]) == 7 for p in pages[:-1])
    assert pages[-1]["links"]["next"] is None
    times = [e["attributes"]["timestamp"] for p in pages for e in p["data"]]
    assert times == sorted(times, reverse=sort.startswith("-"))
    for p in pages:
        for e in p["data"]:
            assert since.timestamp() <= e["attributes"]["timestamp"] < until.timestamp()
    # next keeps every original parameter
    nxt = pages[0]["links"]["next"]
    assert nxt.startswith(fake.base_url + "/api/events?")
    assert "page%5Bsize%5D=7" in nxt and "page%5Bcursor%5D=" in nxt and "sort=" in nxt


def test_event_paging_boundary_inside_a_tie(fake, http):
    # pick a second holding >= 3 events and use it as the window start: all of them are included
    counts = Counter(fake.event(i)["attributes"]["timestamp"] for i in range(fake.n_events))
    t = next(t for t, c in sorted(counts.items()) if c >= 3)
    since = datetime.fromtimestamp(t, timezone.utc)
    until = since + timedelta(hours=3)
    params = {"filter": f"greater-or-equal(datetime,{iso(since)}),less-than(datetime,{iso(until)})",
              "sort": "datetime", "page[size]": "2"}
    ids = [e["id"] for p in follow(http, fake, "/api/events", params) for e in p["data"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == fake.event_ids(since, until)
    # greater-than excludes that whole second
    params["filter"] = f"greater-than(timestamp,{t}),less-than(datetime,{iso(until)})"
    ids2 = {e["id"] for p in follow(http, fake, "/api/events", params) for e in p["data"]}
    assert ids2 == fake.event_ids(since + timedelta(seconds=1), until)


def test_prev_link_walks_back(fake, http):
    params = {"sort": "datetime", "page[size]": "5"}
    p1 = get(http, fake, "/api/events", **params).json()
    assert p1["links"]["prev"] is None
    p2 = http.get(p1["links"]["next"], timeout=5).json()
    back = http.get(p2["links"]["prev"], timeout=5).json()
    assert [e["id"] for e in back["data"]] == [e["id"] for e in p1["data"]]


def test_included_dedup_and_shapes(fake, http):
    params = {"sort": "datetime", "page[size]": "300", "include": "profile,metric"}
    pages = follow(http, fake, "/api/events", params)
    saw_null_profile = False
    for doc in pages:
        keys = [(r["type"], r["id"]) for r in doc["included"]]
        assert len(keys) == len(set(keys)), "included must hold each resource once per page"
        inc = set(keys)
        for e in doc["data"]:
            rel = e["relationships"]
            m = rel["metric"]["data"]
            assert (m["type"], m["id"]) in inc
            pdata = rel["profile"]["data"]
            if pdata is None:
                saw_null_profile = True
                assert "links" in rel["profile"]
            else:
                assert set(pdata) == {"type", "id"}
                assert ("profile", pdata["id"]) in inc
        refs = {(e["relationships"]["metric"]["data"]["id"]) for e in doc["data"]}
        refs |= {e["relationships"]["profile"]["data"]["id"] for e in doc["data"]
                 if e["relationships"]["profile"]["data"]}
        assert {i for _, i in inc} == refs
    assert saw_null_profile
    prof = next(r for r in pages[0]["included"] if r["type"] == "profile")
    assert {"email", "phone_number", "external_id", "first_name", "last_name", "organization",
            "locale", "title", "image", "created", "updated", "last_event_date", "location",
            "properties"} <= set(prof["attributes"])
    met = next(r for r in pages[0]["included"] if r["type"] == "metric")
    assert set(met["attributes"]) == {"name", "created", "updated", "integration"}
    assert met["attributes"]["integration"]["object"] == "integration"


def test_event_attributes_and_ground_truth(fake, http):
    e = fake.event(0)
    attrs = e["attributes"]
    assert set(attrs) == {"timestamp", "event_properties", "datetime", "uuid"}
    assert attrs["datetime"] == datetime.fromtimestamp(attrs["timestamp"], timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S+00:00")
    assert NOW - timedelta(days=7) <= datetime.fromisoformat(attrs["datetime"]) < NOW
    served = get(http, fake, "/api/events", sort="datetime", **{"page[size]": "1"}).json()["data"][0]
    assert served == e
    # deterministic
    f2 = FakeKlaviyo(seed=7, now=NOW, n_events=2000, n_profiles=150)
    a, b = f2.event(123), fake.event(123)
    assert (a["id"], a["attributes"]) == (b["id"], b["attributes"])
    assert a["relationships"]["profile"]["data"] == b["relationships"]["profile"]["data"]
    # Placed Order events carry a float $value, others none
    po = fake.metric_id("Placed Order")
    saw_po = False
    for i in range(300):
        ev = fake.event(i)
        props = ev["attributes"]["event_properties"]
        if ev["relationships"]["metric"]["data"]["id"] == po:
            saw_po = True
            assert isinstance(props["$value"], float)
        else:
            assert "$value" not in props
    assert saw_po
    # single event route
    r = get(http, fake, f"/api/events/{e['id']}", include="metric")
    assert r.status_code == 200 and r.json()["data"]["id"] == e["id"]
    assert get(http, fake, "/api/events/doesnotexist").status_code == 404


def test_metric_and_profile_filters(fake, http):
    po = fake.metric_id("Placed Order")
    since, until = NOW - timedelta(days=7), NOW
    params = {"filter": f"equals(metric_id,\"{po}\"),greater-or-equal(datetime,{iso(since)})",
              "page[size]": "50"}
    ids = {e["id"] for p in follow(http, fake, "/api/events", params) for e in p["data"]}
    assert ids == fake.event_ids(since, until, metric_ids={po})
    other = next(m for m in fake.metric_ids() if m != po)
    params = {"filter": f"equals(metric_id,[\"{po}\",\"{other}\"])", "page[size]": "100",
              "sort": "-datetime"}
    ids = {e["id"] for p in follow(http, fake, "/api/events", params) for e in p["data"]}
    assert ids == fake.event_ids(since, until, metric_ids={po, other})
    assert_error(get(http, fake, "/api/events", filter='equals(metric_id,"nope00")'), 400, "invalid")
    # has(profile) drops profile-less events; profile_id narrows to one profile
    docs = follow(http, fake, "/api/events", {"filter": "has(profile)", "page[size]": "1000"})
    evs = [e for d in docs for e in d["data"]]
    assert all(e["relationships"]["profile"]["data"] for e in evs)
    assert 0 < fake.n_events - len(evs) < fake.n_events // 8
    pid = evs[0]["relationships"]["profile"]["data"]["id"]
    d = get(http, fake, "/api/events", filter=f"equals(profile_id,'{pid}')").json()
    assert d["data"] and all(e["relationships"]["profile"]["data"]["id"] == pid for e in d["data"])
    assert fake.profile_ids(since, until) >= {pid}
    assert fake.event_metric_ids(since, until) <= fake.metric_ids()


def test_sparse_fieldsets(fake, http):
    d = get(http, fake, "/api/events", include="profile,metric", **{
        "fields[event]": "datetime,uuid", "fields[profile]": "email,location.city",
        "fields[metric]": "name", "page[size]": "20"}).json()
    for e in d["data"]:
        assert set(e["attributes"]) == {"datetime", "uuid"}
        assert "profile" in e["relationships"]
    for r in d["included"]:
        if r["type"] == "profile":
            assert set(r["attributes"]) == {"email", "location"}
            assert set(r["attributes"]["location"]) == {"city"}
        else:
            assert set(r["attributes"]) == {"name"}


# ----------------------------------------------------------------------------- metrics


def test_metrics_endpoint(http):
    with FakeKlaviyo(n_events=10, n_metrics=12, metrics_page_size=5) as f:
        assert_error(get(http, f, "/api/metrics", **{"page[size]": "5"}), 400, "invalid", "page[size]")
        pages = follow(http, f, "/api/metrics", {"fields[metric]": "name,integration"})
        assert [len(p["data"]) for p in pages] == [5, 5, 2]
        names = [m["attributes"]["name"] for p in pages for m in p["data"]]
        assert "Placed Order" in names and len(set(names)) == 12
        assert {m["id"] for p in pages for m in p["data"]} == f.metric_ids()
        d = get(http, f, "/api/metrics", filter="equals(integration.name,'Shopify')").json()
        assert d["data"] and all(m["attributes"]["integration"]["name"] == "Shopify" for m in d["data"])
        assert_error(get(http, f, "/api/metrics", filter="equals(name,'Placed Order')"), 400,
                     "invalid", "filter")
        mid = f.metric_id("Placed Order")
        r = get(http, f, f"/api/metrics/{mid}")
        assert r.json()["data"]["attributes"]["name"] == "Placed Order"


# ----------------------------------------------------------------------------- campaigns


def test_campaigns_channel_filter_required(fake, http):
    assert_error(get(http, fake, "/api/campaigns"), 400, "invalid", "filter")
    assert_error(get(http, fake, "/api/campaigns", filter="equals(archived,false)"), 400, "invalid",
                 "filter")
    assert_error(get(http, fake, "/api/campaigns", filter="equals(messages.channel,'push')"), 400,
                 "invalid", "filter")
    for ch in ("email", "sms", "mobile_push"):
        r = get(http, fake, "/api/campaigns", filter=f'equals(messages.channel,"{ch}")')
        assert r.status_code == 200


def test_campaigns_archived_only_on_request(fake, http):
    for ch in ("email", "sms", "mobile_push"):
        base = f"equals(messages.channel,'{ch}')"
        plain = {c["id"] for c in get(http, fake, "/api/campaigns", filter=base).json()["data"]}
        arch = get(http, fake, "/api/campaigns", filter=f"and({base},equals(archived,true))").json()
        arch_ids = {c["id"] for c in arch["data"]}
        assert arch_ids and plain
        assert not plain & arch_ids
        assert all(c["attributes"]["archived"] for c in arch["data"])
        assert plain | arch_ids == fake.campaign_ids(ch)
        explicit = get(http, fake, "/api/campaigns", filter=f"{base},equals(archived,false)").json()
        assert {c["id"] for c in explicit["data"]} == plain


def test_campaigns_paging_include_and_messages(fake, http):
    params = {"filter": "equals(messages.channel,'email')", "page[size]": "2",
              "include": "campaign-messages,tags", "sort": "-created_at"}
    pages = follow(http, fake, "/api/campaigns", params)
    camps = [c for p in pages for c in p["data"]]
    assert len(camps) == len({c["id"] for c in camps}) > 2
    created = [c["attributes"]["created_at"] for c in camps]
    assert created == sorted(created, reverse=True)
    for p in pages:
        inc = {(r["type"], r["id"]): r for r in p["included"]}
        assert len(inc) == len(p["included"])
        for c in p["data"]:
            for m in c["relationships"]["campaign-messages"]["data"]:
                msg = inc[("campaign-message", m["id"])]
                assert msg["attributes"]["definition"]["channel"] == "email"
                assert "subject" in msg["attributes"]["definition"]["content"]
                assert msg["relationships"]["campaign"]["data"]["id"] == c["id"]
            for t in c["relationships"]["tags"]["data"]:
                assert ("tag", t["id"]) in inc
            if c["attributes"]["status"] != "Sent":
                assert c["attributes"]["send_time"] is None
    cid = camps[0]["id"]
    msgs = get(http, fake, f"/api/campaigns/{cid}/campaign-messages").json()["data"]
    assert [m["id"] for m in msgs] == fake.campaign_message_ids(cid)
    one = get(http, fake, f"/api/campaigns/{cid}", **{"fields[campaign]": "name,send_time"}).json()
    assert set(one["data"]["attributes"]) == {"name", "send_time"}
    sms = get(http, fake, "/api/campaigns", filter="equals(messages.channel,'sms')",
              include="campaign-messages").json()
    d = next(r for r in sms["included"] if r["type"] == "campaign-message")["attributes"]["definition"]
    assert d["channel"] == "sms" and "body" in d["content"]


def test_campaign_filters(fake, http):
    since = NOW - timedelta(days=30)
    r = get(http, fake, "/api/campaigns", filter=(
        f"and(equals(messages.channel,'email'),greater-or-equal(updated_at,{iso(since)}),"
        f"any(status,[\"Sent\",\"Draft\"]))"))
    assert r.status_code == 200
    for c in r.json()["data"]:
        assert c["attributes"]["status"] in ("Sent", "Draft")
        assert c["attributes"]["updated_at"] >= since.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert_error(get(http, fake, "/api/campaigns",
                     filter=f"equals(messages.channel,'email'),greater-than(send_time,{iso(since)})"),
                 400, "invalid", "filter")


# ----------------------------------------------------------------------------- reports


def report_body(fake, **attrs):
    a = {"statistics": ["recipients", "delivered", "opens_unique", "open_rate", "conversion_value"],
         "timeframe": {"start": iso(NOW - timedelta(days=90)), "end": iso(NOW)},
         "conversion_metric_id": fake.metric_id("Placed Order")}
    a.update(attrs)
    return {"data": {"type": "campaign-values-report", "attributes": a}}


def post_report(http, fake, body, content_type="application/vnd.api+json"):
    return http.post(fake.base_url + "/api/campaign-values-reports", data=json.dumps(body),
                     headers={"Content-Type": content_type}, timeout=10)


def test_report_happy_path(fake, http):
    sent = fake.campaign_ids_sent(NOW - timedelta(days=90), NOW)
    r = post_report(http, fake, report_body(fake))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["data"]["type"] == "campaign-values-report"
    results = doc["data"]["attributes"]["results"]
    assert {x["groupings"]["campaign_id"] for x in results} == sent
    n_msgs = sum(len(fake.campaign_message_ids(c)) for c in sent)
    assert len(results) == n_msgs
    for x in results:
        g, s = x["groupings"], x["statistics"]
        assert set(g) == {"campaign_id", "campaign_message_id", "send_channel"}
        assert g["send_channel"] in ("email", "sms", "push-notification")
        assert set(s) == {"recipients", "delivered", "opens_unique", "open_rate", "conversion_value"}
        assert 0 <= s["open_rate"] <= 1
        assert s["open_rate"] == pytest.approx(s["opens_unique"] / s["delivered"])
        assert isinstance(s["conversion_value"], float)
    some = sorted(sent)[:2]
    r = post_report(http, fake, report_body(fake, filter=(
        f"and(contains-any(campaign_id,{json.dumps(some)}),equals(send_channel,\"email\"))")))
    got = {x["groupings"]["campaign_id"] for x in r.json()["data"]["attributes"]["results"]}
    assert got <= set(some) and got == {c for c in some if c in fake.campaign_ids("email")}
    # deterministic numbers
    assert post_report(http, fake, report_body(fake)).json()["data"]["attributes"] == \
        doc["data"]["attributes"]


def test_report_validation(fake, http):
    ids = [f"01HX{i:022d}" for i in range(101)]
    r = post_report(http, fake, report_body(fake, filter=f"contains-any(campaign_id,{json.dumps(ids)})"))
    assert_error(r, 400, "invalid")
    assert_error(post_report(http, fake, report_body(fake, statistics=["opens", "nope"])), 400, "invalid")
    assert_error(post_report(http, fake, report_body(fake, conversion_metric_id="XXXXXX")), 400, "invalid")
    assert_error(post_report(http, fake, report_body(fake, timeframe={
        "start": iso(NOW - timedelta(days=400)), "end": iso(NOW)})), 400, "invalid")
    assert_error(post_report(http, fake, report_body(fake, timeframe={"key": "last_2_days"})), 400)
    assert post_report(http, fake, report_body(fake, timeframe={"key": "last_30_days"})).status_code == 200
    body = report_body(fake)
    body["data"]["type"] = "campaign-report"
    assert_error(post_report(http, fake, body), 400, "invalid")
    r = post_report(http, fake, report_body(fake), content_type="text/plain")
    assert r.status_code in (400, 415)


def test_ground_truth_matches_what_is_served(fake, http):
    conv = fake.metric_id("Placed Order")
    results = post_report(http, fake, report_body(fake)).json()["data"]["attributes"]["results"]
    assert results
    for res in results:
        g = res["groupings"]
        want = fake.campaign_statistics(g["campaign_id"], conv)[g["campaign_message_id"]]
        assert res["statistics"] == {k: want[k] for k in res["statistics"]}
        served = get(http, fake, f"/api/campaign-messages/{g['campaign_message_id']}").json()["data"]
        assert fake.campaign_message(g["campaign_message_id"])["attributes"] == served["attributes"]
    served = {m["id"]: m["attributes"]["name"] for m in get(http, fake, "/api/metrics").json()["data"]}
    assert fake.metric_names() == served


def test_report_daily_quota(fake, http):
    fake.report_daily_quota = 2
    assert post_report(http, fake, report_body(fake)).status_code == 200
    assert post_report(http, fake, report_body(fake)).status_code == 200
    r = post_report(http, fake, report_body(fake))
    assert_error(r, 429, "throttled")
    assert int(r.headers["Retry-After"]) > 0
    assert fake.throttled == 1


# ----------------------------------------------------------------------------- fault knobs


def test_rate_limit_every(fake, http):
    fake.rate_limit_every = 3
    statuses = [get(http, fake, "/api/metrics").status_code for _ in range(6)]
    assert statuses == [200, 200, 429, 200, 200, 429]
    assert fake.throttled == 2
    fake.retry_after = None
    for _ in range(3):
        r = get(http, fake, "/api/metrics")
    assert r.status_code == 429 and "Retry-After" not in r.headers
    err = assert_error(r, 429, "throttled")
    assert err["title"] == "Request was throttled."
    fake.retry_after = 7
    for _ in range(3):
        r = get(http, fake, "/api/metrics")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"


def test_server_error_every(fake, http):
    fake.server_error_every = 2
    assert [get(http, fake, "/api/metrics").status_code for _ in range(4)] == [200, 503, 200, 503]
    assert get(http, fake, "/api/metrics").status_code == 200
    err = assert_error(get(http, fake, "/api/metrics"), 503)
    assert err["status"] == 503


def test_html_403_every(fake, http):
    fake.html_403_every = 1
    r = get(http, fake, "/api/metrics")
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["cf-mitigated"] == "challenge"
    with pytest.raises(ValueError):
        r.json()


def test_truncate_every(fake, http):
    fake.truncate_every = 2
    r1 = get(http, fake, "/api/events", **{"page[size]": "10"})
    r2 = get(http, fake, "/api/events", **{"page[size]": "10"})
    assert r1.status_code == r2.status_code == 200
    assert int(r2.headers["Content-Length"]) == len(r2.content)
    assert len(r2.content) == len(r1.content) // 2
    with pytest.raises(ValueError):
        json.loads(r2.content)
    # the connection is still usable afterwards
    assert get(http, fake, "/api/events", **{"page[size]": "10"}).json()["data"]


def test_drop_every(fake, http):
    fake.drop_every = 2
    assert get(http, fake, "/api/events", **{"page[size]": "50"}).status_code == 200
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        get(http, fake, "/api/events", **{"page[size]": "50"})
    assert get(http, fake, "/api/events", **{"page[size]": "50"}).status_code == 200


def test_next_link_base_and_recording_server(fake, http):
    with RecordingServer() as other:
        fake.next_link_base = other.base_url
        d = get(http, fake, "/api/events", **{"page[size]": "5"}).json()
        assert d["links"]["next"].startswith(other.base_url + "/api/events?")
        assert d["links"]["self"].startswith(fake.base_url)
        # what a careless client would do: follow it with the key
        r = requests.get(d["links"]["next"], headers={"Authorization": "Klaviyo-API-Key x"}, timeout=5)
        assert r.json() == {"data": [], "links": {"self": d["links"]["next"], "next": None}}
        assert len(other.request_log()) == 1
        rec = other.request_log()[0]
        assert rec["authorization"] == "Klaviyo-API-Key x" and rec["path"] == "/api/events"
        assert set(rec) >= {"method", "path", "query", "status", "authorization"}


def test_latency(fake, http):
    fake.latency = 0.2
    t = time.monotonic()
    get(http, fake, "/api/metrics")
    assert time.monotonic() - t >= 0.19


def test_enforce_limits_metrics_burst(fake, http):
    fake.enforce_limits = True
    statuses = [get(http, fake, "/api/metrics").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    r = get(http, fake, "/api/metrics")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert fake.throttled == 2
    # the events bucket is separate
    assert get(http, fake, "/api/events", **{"page[size]": "1"}).status_code == 200


def test_enforce_limits_counts_each_endpoint_of_a_generic_tier_alone(fake, http):
    """Klaviyo's tiers are sizes of per-endpoint limits: /api/tags spending its S-tier budget
    (3/s, 60/m: a 429 comes by the 61st request whatever the machine's speed) leaves the other
    S-tier endpoints theirs."""
    fake.enforce_limits = True
    statuses = []
    while 429 not in statuses and len(statuses) <= 61:
        statuses.append(get(http, fake, "/api/tags").status_code)
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert get(http, fake, "/api/tag-groups").status_code == 200
    assert get(http, fake, "/api/flows").status_code == 200


def test_enforce_limits_reports(fake, http):
    fake.enforce_limits = True
    assert post_report(http, fake, report_body(fake)).status_code == 200
    r = post_report(http, fake, report_body(fake))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_stats_endpoint(fake, http):
    fake.rate_limit_every = 2
    for _ in range(4):
        get(http, fake, "/api/metrics")
    s = requests.get(fake.base_url + "/_fake/stats", timeout=5).json()
    assert s["requests"] == 4 and s["throttled"] == 2
    assert s["by_path"] == {"/api/metrics": 4}


def test_server_survives_garbage(fake, http):
    import socket
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        s.recv(1000)
    assert get(http, fake, "/api/metrics").status_code == 200


# ----------------------------------------------------------------------------- scale and CLI


def test_large_construction():
    # How long this takes is a benchmark's business (benchmarks/), not a test's.
    f = FakeKlaviyo(n_events=5_000_000, now=NOW)
    ids = f.event_ids(NOW - timedelta(seconds=30), NOW)
    assert 50 < len(ids) < 1000


def test_cli_serves_and_exits_cleanly():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    p = subprocess.Popen([sys.executable, "-m", "klaviyo_sync.fake", "--port", "0",
                          "--events", "100", "--seed", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:")
        r = requests.get(line + "/api/events", headers=HEADERS, timeout=5)
        assert r.status_code == 200 and len(r.json()["data"]) == 100
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0
    assert err == "" and out == ""


def test_no_two_resource_families_define_the_same_name():
    """The families are mixins of one class: a second `_page` would silently replace the first."""
    from klaviyo_sync.fake.account import RESOURCES

    owners: dict[str, str] = {}
    clashes = []
    for family in RESOURCES:
        for name in vars(family):
            if name.startswith("__") or name in ("ROUTES", "OPTIONS", "build"):
                continue
            if name in owners:
                clashes.append(f"{name}: {owners[name]} and {family.__name__}")
            owners[name] = family.__name__
    assert clashes == []


# ------------------------------------------------------------ as strict as Klaviyo (issue 12)
@pytest.mark.parametrize("revision, ok", [("2026-07-15", True), ("2024-02-15", True), ("2026-07-15.pre", True),
                                          ("2026-07-16", False), ("2031-01-15", False),
                                          ("2026-07-15.beta", False), ("latest", False)])
def test_only_published_revisions_are_accepted(fake, http, revision, ok):
    r = http.get(fake.base_url + "/api/metrics", headers={"revision": revision}, timeout=5)
    if ok:
        assert r.status_code == 200, r.text
    else:
        assert "Invalid revision" in assert_error(r, 400, "invalid", parameter="revision")["detail"]


def test_an_event_cursor_belongs_to_the_query_that_made_it(fake, http):
    lo, hi = NOW - timedelta(hours=48), NOW
    flt = f"greater-or-equal(datetime,{iso(lo)}),less-than(datetime,{iso(hi)})"
    first = get(http, fake, "/api/events", filter=flt, **{"page[size]": "50"}).json()
    nxt = first["links"]["next"]
    assert nxt and http.get(nxt, timeout=10).status_code == 200  # followed as given: fine
    cursor = dict(parse_qsl(urlsplit(nxt).query))["page[cursor]"]
    other = f"greater-or-equal(datetime,{iso(lo + timedelta(hours=1))}),less-than(datetime,{iso(hi)})"
    for params in ({"filter": other, "page[size]": "50"}, {"filter": flt, "page[size]": "60"},
                   {"filter": flt, "page[size]": "50", "sort": "-datetime"}):
        r = get(http, fake, "/api/events", **params, **{"page[cursor]": cursor})
        assert_error(r, 400, "invalid", parameter="page[cursor]")


def test_a_report_pages_through_links_next_with_the_same_body(http):
    with FakeKlaviyo(seed=7, now=NOW, n_events=10, report_page_size=5) as fake:
        body = report_body(fake)
        want = sum(len(fake.campaign_message_ids(c)) for c in fake.campaign_ids_sent(NOW - timedelta(days=90), NOW))
        assert want > 10
        results, url, pages = [], fake.base_url + "/api/campaign-values-reports", 0
        while url:
            r = http.post(url, data=json.dumps(body), headers={"Content-Type": "application/vnd.api+json"}, timeout=10)
            assert r.status_code == 200, r.text
            doc = r.json()
            results += doc["data"]["attributes"]["results"]
            url = doc["links"].get("next")
            pages += 1
        assert pages == -(-want // 5) and len(results) == want
        assert len({(x["groupings"]["campaign_id"], x["groupings"]["campaign_message_id"]) for x in results}) == want
        # The cursor belongs to its body: another report's body with it is refused.
        first = post_report(http, fake, body).json()["links"]["next"]
        other = report_body(fake, statistics=["recipients"])
        r = http.post(first, data=json.dumps(other), headers={"Content-Type": "application/vnd.api+json"}, timeout=10)
        assert_error(r, 400, "invalid", parameter="page_cursor")


def test_report_timeframes_are_read_in_the_account_time_zone(http):
    """Klaviyo ignores the offset of a custom timeframe and reads the wall-clock time in the
    account's time zone: a UTC window tight around a send misses it; the same window written
    in the account's local time finds it."""
    with FakeKlaviyo(seed=7, now=NOW, n_events=10, account_timezone="America/Los_Angeles") as fake:
        cid = sorted(fake.campaign_ids_sent(NOW - timedelta(days=30), NOW))[0]
        sent = datetime.fromisoformat(fake.campaign(cid)["attributes"]["send_time"].replace("Z", "+00:00"))
        flt = f'equals(campaign_id,"{cid}")'

        def found(start, end):
            body = report_body(fake, timeframe={"start": start, "end": end}, filter=flt)
            r = post_report(http, fake, body)
            assert r.status_code == 200, r.text
            return bool(r.json()["data"]["attributes"]["results"])

        utc_lo, utc_hi = sent - timedelta(hours=1), sent + timedelta(hours=1)
        assert not found(iso(utc_lo), iso(utc_hi))  # read as Los Angeles time: 7-8 h later
        local = ZoneInfo("America/Los_Angeles")
        lo, hi = utc_lo.astimezone(local), utc_hi.astimezone(local)
        assert found(lo.strftime("%Y-%m-%dT%H:%M:%S"), hi.strftime("%Y-%m-%dT%H:%M:%S"))
        assert found(lo.strftime("%Y-%m-%dT%H:%M:%S+09:00"), hi.strftime("%Y-%m-%dT%H:%M:%S+09:00"))  # offset ignored
def test_realistic_shape_is_opt_in_and_consistent(http):
    """The benchmark shape (big profiles, quiet nights, visits): served pages agree with the
    ground truth, and the default account is unchanged by the knobs' existence."""
    kw = dict(seed=7, now=NOW, n_events=3000, n_profiles=200, n_metrics=40, span_hours=48)
    with FakeKlaviyo(**kw, profile_shape="realistic", diurnal=True, events_per_visit=4) as f:
        since, until = NOW - timedelta(hours=48), NOW
        ids, profiles, per_hour, sizes = set(), set(), Counter(), []
        url, params = f.base_url + "/api/events", {"include": "profile", "page[size]": "1000",
                                                   "filter": f"greater-or-equal(datetime,{iso(since)})"}
        while url:
            body = http.get(url, params=params, headers=HEADERS).json()
            params = None
            for e in body["data"]:
                ids.add(e["id"])
                per_hour[int(e["attributes"]["datetime"][11:13])] += 1
            for inc in body.get("included", []):
                profiles.add(inc["id"])
                sizes.append(len(json.dumps(inc["attributes"]["properties"])) + len(json.dumps(inc["attributes"]["location"])))
            url = body["links"]["next"]
        assert ids == f.event_ids(since, until)
        assert profiles == f.profile_ids(since, until)
        assert 700 < sorted(sizes)[len(sizes) // 2] < 1600  # about 1 KB of properties and location
        assert per_hour[3] * 3 < per_hour[15]  # quiet nights, busy afternoons
    with FakeKlaviyo(**kw) as plain, FakeKlaviyo(**kw, profile_shape="small") as same:
        assert plain.event_ids(NOW - timedelta(hours=48), NOW) == same.event_ids(NOW - timedelta(hours=48), NOW)
        assert plain.profile_ids(NOW - timedelta(hours=48), NOW) == same.profile_ids(NOW - timedelta(hours=48), NOW)
