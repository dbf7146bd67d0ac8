"""The fake's POST /api/metric-aggregates, late events and forgotten events."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

UTC = timezone.utc
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
HEADERS = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15",
           "Accept": "application/vnd.api+json", "Content-Type": "application/vnd.api+json"}


@pytest.fixture
def fake():
    with FakeKlaviyo(seed=3, now=NOW, n_events=3000, n_profiles=100, span_hours=24 * 25) as f:
        yield f


@pytest.fixture
def http():
    with requests.Session() as s:
        s.headers.update(HEADERS)
        yield s


def body(metric_id, start, end, **extra):
    attrs = {"metric_id": metric_id, "measurements": ["count"], "interval": "day",
             "filter": [f"greater-or-equal(datetime,{start})", f"less-than(datetime,{end})"], **extra}
    return {"data": {"type": "metric-aggregate", "attributes": attrs}}


def post(http, fake, doc):
    return http.post(fake.base_url + "/api/metric-aggregates", data=json.dumps(doc), timeout=10)


def counts(doc) -> dict:
    """{bucket start: count} of an aggregate answer (an empty data list means zeros)."""
    a = doc["data"]["attributes"]
    values = a["data"][0]["measurements"]["count"] if a["data"] else [0] * len(a["dates"])
    assert len(values) == len(a["dates"])
    return dict(zip(a["dates"], values))


def served_events(http, fake, metric_id, start, end):
    """Every event /api/events serves for the metric in [start, end): (id, datetime) pairs."""
    out = []
    url = fake.base_url + "/api/events"
    params = {"filter": f'greater-or-equal(datetime,{start}),less-than(datetime,{end}),'
                        f'equals(metric_id,"{metric_id}")', "sort": "datetime", "page[size]": "100",
              "include": "profile"}
    while url:
        r = http.get(url, params=params, timeout=10)
        assert r.status_code == 200, r.text
        doc = r.json()
        out += [(e["id"], e["attributes"]["datetime"]) for e in doc["data"]]
        url, params = doc["links"].get("next"), None
    return out


def aggregatable(fake):
    return sorted(set(fake.metric_ids()) - fake.unaggregatable_metric_ids())


def test_day_counts_match_served_events_and_ground_truth(fake, http):
    mid = fake.metric_id("Received Email")
    r = post(http, fake, body(mid, "2026-11-01T00:00:00Z", "2026-11-11T00:00:00Z", timezone="UTC"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["data"]["type"] == "metric-aggregate"
    assert doc["data"]["attributes"]["data"][0]["dimensions"] == []
    got = counts(doc)
    assert list(got) == [f"2026-11-{d:02d}T00:00:00+00:00" for d in range(1, 11)]
    served = Counter(dt[:10] for _, dt in served_events(http, fake, mid, "2026-11-01T00:00:00Z",
                                                         "2026-11-11T00:00:00Z"))
    truth = fake.daily_counts(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC))
    assert {k[:10]: v for k, v in got.items()} == {f"2026-11-{d:02d}": served.get(f"2026-11-{d:02d}", 0)
                                                    for d in range(1, 11)}
    assert {k[:10]: v for k, v in got.items()} == {
        f"2026-11-{d:02d}": truth.get((mid, f"2026-11-{d:02d}"), 0) for d in range(1, 11)}
    assert sum(got.values()) > 50


def test_zone_buckets_are_local_midnights_across_a_dst_change(fake, http):
    # America/New_York leaves DST on Sunday 2026-11-01: that day is 25 hours long.
    mid = fake.metric_id("Viewed Product")
    doc = post(http, fake, body(mid, "2026-10-31T00:00:00", "2026-11-03T00:00:00",
                                timezone="America/New_York")).json()
    got = counts(doc)
    assert list(got) == ["2026-10-31T04:00:00+00:00", "2026-11-01T04:00:00+00:00",
                         "2026-11-02T05:00:00+00:00"]
    truth = fake.daily_counts(datetime(2026, 10, 31, 4, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC),
                              tz="America/New_York")
    assert list(got.values()) == [truth.get((mid, d), 0) for d in ("2026-10-31", "2026-11-01", "2026-11-02")]
    # the same day by the hour: 25 local hours that add up to the day
    doc = post(http, fake, body(mid, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", interval="hour",
                                timezone="America/New_York")).json()
    hours = counts(doc)
    assert len(hours) == 25 and sum(hours.values()) == got["2026-11-01T04:00:00+00:00"]


def test_unaligned_range_still_gives_calendar_buckets_and_counts_only_the_range(fake, http):
    mid = fake.metric_id("Received Email")
    doc = post(http, fake, body(mid, "2026-11-05T06:00:00Z", "2026-11-06T18:00:00Z")).json()
    got = counts(doc)
    assert list(got) == ["2026-11-05T00:00:00+00:00", "2026-11-06T00:00:00+00:00"]
    ids = fake.event_ids(datetime(2026, 11, 5, 6, tzinfo=UTC), datetime(2026, 11, 6, 18, tzinfo=UTC), [mid])
    assert sum(got.values()) == len(ids)


def test_no_events_answers_an_empty_data_list(fake, http):
    mid = fake.metric_id("Placed Order")
    doc = post(http, fake, body(mid, "2025-01-01T00:00:00Z", "2025-01-03T00:00:00Z")).json()
    assert doc["data"]["attributes"] == {"dates": ["2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00"],
                                         "data": []}


def test_unique_and_sum_value(fake, http):
    mid = fake.metric_id("Placed Order")
    doc = post(http, fake, body(mid, "2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z",
                                measurements=["count", "unique", "sum_value"])).json()
    m = doc["data"]["attributes"]["data"][0]["measurements"]
    assert set(m) == {"count", "unique", "sum_value"}
    assert all(u <= c for u, c in zip(m["unique"], m["count"]))
    assert all(s > 0 for s, c in zip(m["sum_value"], m["count"]) if c)


@pytest.mark.parametrize("change, pointer", [
    ({"metric_id": None}, "/data/attributes/metric_id"),
    ({"metric_id": "nope00"}, "/data/attributes/metric_id"),
    ({"measurements": ["total"]}, "/data/attributes/measurements"),
    ({"measurements": []}, "/data/attributes/measurements"),
    ({"interval": "minute"}, "/data/attributes/interval"),
    ({"timezone": "Mars/Olympus"}, "/data/attributes/timezone"),
    ({"timezone": "america/new_york"}, "/data/attributes/timezone"),
    ({"timezone": "Europe/Kyiv"}, "/data/attributes/timezone"),
    ({"filter": "greater-or-equal(datetime,2026-11-01T00:00:00Z)"}, "/data/attributes/filter"),
    ({"filter": ["greater-or-equal(datetime,2026-11-01T00:00:00Z)"]}, "/data/attributes/filter"),
    ({"filter": ['greater-or-equal(datetime,"2026-11-01T00:00:00Z")',
                 "less-than(datetime,2026-11-02T00:00:00Z)"]}, "/data/attributes/filter"),
    ({"filter": ["greater-or-equal(datetime,2026-11-02T00:00:00Z)",
                 "less-than(datetime,2026-11-01T00:00:00Z)"]}, "/data/attributes/filter"),
    ({"filter": ["greater-or-equal(datetime,2026-11-01T00:00:00Z)",
                 "less-than(datetime,2026-11-02T00:00:00Z)", 'equals(metric_id,"x")']},
     "/data/attributes/filter"),
    ({"colour": "red"}, "/data/attributes"),
])
def test_invalid_bodies_are_400_with_a_pointer(fake, http, change, pointer):
    doc = body(fake.metric_id("Placed Order"), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")
    doc["data"]["attributes"].update(change)
    r = post(http, fake, doc)
    assert r.status_code == 400, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "invalid" and err["source"] == {"pointer": pointer}


def test_wrong_type_and_media_type(fake, http):
    doc = body(fake.metric_id("Placed Order"), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")
    doc["data"]["type"] = "metric"
    assert post(http, fake, doc).status_code == 400
    r = http.post(fake.base_url + "/api/metric-aggregates", data=json.dumps(doc),
                  headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415


def test_custom_metrics_are_refused_and_named_by_ground_truth(fake, http):
    custom = fake.unaggregatable_metric_ids()
    assert custom == {fake.metric_id("Active on Site")}
    r = post(http, fake, body(next(iter(custom)), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"))
    assert r.status_code == 400 and "custom metric" in r.json()["errors"][0]["detail"]


def test_scope_and_rate_tier(fake, http):
    doc = body(fake.metric_id("Placed Order"), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")
    fake.enforce_limits = True
    statuses = [post(http, fake, doc).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429  # 3/s
    fake.enforce_limits = False
    fake.revoke_scope("metrics:read")
    r = post(http, fake, doc)
    assert r.status_code == 403 and "metrics:read" in r.json()["errors"][0]["detail"]


def test_late_events_are_served_and_counted(fake, http):
    mid = fake.metric_id("Placed Order")
    start, end = "2026-11-03T00:00:00Z", "2026-11-04T00:00:00Z"
    before_served = served_events(http, fake, mid, start, end)
    before = counts(post(http, fake, body(mid, start, end)).json())
    at = datetime(2026, 11, 3, 14, 30, 5, tzinfo=UTC)
    ids = fake.add_late_events(mid, at=at, n=3)
    assert len(set(ids)) == 3
    after_served = served_events(http, fake, mid, start, end)
    # the old events keep their ids and order; the late ones sit at their datetime
    assert [e for e in after_served if e[0] not in ids] == before_served
    assert [e for e in after_served if e[0] in ids] == [(i, "2026-11-03T14:30:05+00:00") for i in ids]
    assert [dt for _, dt in after_served] == sorted(dt for _, dt in after_served)
    after = counts(post(http, fake, body(mid, start, end)).json())
    assert after["2026-11-03T00:00:00+00:00"] == before["2026-11-03T00:00:00+00:00"] + 3
    truth = fake.daily_counts(datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))
    assert truth[(mid, "2026-11-03")] == after["2026-11-03T00:00:00+00:00"]
    assert set(ids) <= fake.event_ids(at, at + timedelta(seconds=1), [mid])
    # the single-event route and the includes know them too
    r = http.get(f"{fake.base_url}/api/events/{ids[0]}", params={"include": "metric"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["data"]["relationships"]["metric"]["data"]["id"] == mid
    assert r.json()["included"][0]["id"] == mid
    # descending order sees them too, once each
    r = http.get(fake.base_url + "/api/events", params={
        "filter": f"greater-or-equal(datetime,{start}),less-than(datetime,{end})",
        "sort": "-datetime", "page[size]": "1000"}, timeout=10)
    got = [e["id"] for e in r.json()["data"]]
    assert len(got) == len(set(got)) and set(ids) <= set(got)


def test_late_events_need_a_past_datetime_in_the_span(fake):
    mid = fake.metric_id("Placed Order")
    with pytest.raises(ValueError):
        fake.add_late_events(mid, at=NOW + timedelta(hours=1))
    with pytest.raises(ValueError):
        fake.add_late_events("nope00", at=NOW - timedelta(days=1))


def test_forgotten_events_vanish_from_events_and_counts(fake, http):
    mid = fake.metric_id("Received Email")
    start, end = "2026-11-04T00:00:00Z", "2026-11-05T00:00:00Z"
    served = served_events(http, fake, mid, start, end)
    before = counts(post(http, fake, body(mid, start, end)).json())
    gone = [served[0][0], served[5][0]]
    fake.forget_events(gone)
    after_served = served_events(http, fake, mid, start, end)
    assert after_served == [e for e in served if e[0] not in gone]
    after = counts(post(http, fake, body(mid, start, end)).json())
    assert after["2026-11-04T00:00:00+00:00"] == before["2026-11-04T00:00:00+00:00"] - 2
    r = http.get(f"{fake.base_url}/api/events/{gone[0]}", timeout=10)
    assert r.status_code == 404


def test_every_aggregatable_metric_sums_to_the_served_total(fake, http):
    start, end = datetime(2026, 11, 2, tzinfo=ZoneInfo("Europe/Berlin")), datetime(2026, 11, 9, tzinfo=ZoneInfo("Europe/Berlin"))
    total = 0
    for mid in aggregatable(fake):
        doc = post(http, fake, body(mid, "2026-11-02T00:00:00", "2026-11-09T00:00:00",
                                    timezone="Europe/Berlin")).json()
        total += sum(counts(doc).values())
    custom = fake.unaggregatable_metric_ids()
    expected = len(fake.event_ids(start, end)) - len(fake.event_ids(start, end, custom))
    assert total == expected
