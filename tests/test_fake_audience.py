"""The fake's audience endpoints: profiles, lists, segments, membership; as strict as Klaviyo."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import requests

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import walk

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
HEADERS = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15"}


@pytest.fixture(scope="module")
def fake():
    with FakeKlaviyo(seed=3, now=NOW, n_events=500, n_profiles=120, n_quiet_profiles=30) as f:
        yield f


def get(fake, path, **params):
    return requests.get(fake.base_url + path, params=params, headers=HEADERS, timeout=10)




@pytest.mark.parametrize("path,params,parameter", [
    ("/api/profiles", {"page[size]": "101"}, "page[size]"),
    ("/api/profiles", {"filter": "greater-or-equal(updated,2024-01-01T00:00:00Z)"}, "filter"),
    ("/api/profiles", {"filter": "less-or-equal(created,2024-01-01T00:00:00Z)"}, "filter"),
    ("/api/profiles", {"sort": "last_event_date"}, "sort"),
    ("/api/profiles", {"additional-fields[profile]": "lists"}, "additional-fields[profile]"),
    ("/api/lists", {"page[size]": "11"}, "page[size]"),
    ("/api/segments", {"page[size]": "100"}, "page[size]"),
    ("/api/lists", {"filter": "less-than(updated,2024-01-01T00:00:00Z)"}, "filter"),
    ("/api/segments", {"filter": "equals(is_starred,'yes')"}, "filter"),
])
def test_what_klaviyo_refuses_is_a_400_naming_the_parameter(fake, path, params, parameter):
    r = get(fake, path, **params)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["source"] == {"parameter": parameter}


def test_profiles_every_one_including_those_without_events(fake):
    data = walk(fake, "/api/profiles", **{"page[size]": "100", "sort": "updated",
                                          "additional-fields[profile]": "subscriptions"})
    got = [d["id"] for d in data]
    assert set(got) == fake.live_profile_ids() and len(got) == len(set(got)) == 150
    assert fake.quiet_profile_ids() <= set(got) and len(fake.quiet_profile_ids()) == 30
    updated = [d["attributes"]["updated"] for d in data]
    assert updated == sorted(updated)
    first = data[0]
    assert first["attributes"] == fake.profile(first["id"])["attributes"]
    assert set(first["attributes"]["subscriptions"]) == {"email", "sms", "mobile_push"}
    assert "predictive_analytics" not in first["attributes"]


def test_profile_filters_updated_greater_than_and_any(fake):
    some = sorted(fake.live_profile_ids())[:3]
    r = get(fake, "/api/profiles", filter=f"any(id,{some!r})".replace("'", '"'))
    assert r.status_code == 200, r.text
    assert {d["id"] for d in r.json()["data"]} == set(some)
    r = get(fake, "/api/profiles", **{"filter": "greater-than(updated,2024-04-01T00:00:00Z)", "page[size]": "100"})
    got = {d["id"] for d in r.json()["data"]}
    assert got == fake.live_profile_ids(updated_after="2024-04-01T00:00:00Z")


def test_change_and_delete_profiles_show_in_the_api_and_ground_truth():
    with FakeKlaviyo(seed=4, now=NOW, n_events=100, n_profiles=50, n_quiet_profiles=5) as fake:
        changed = fake.change_profiles(4)
        after = "2024-05-01T12:00:00Z"
        assert fake.live_profile_ids(updated_after=after) == set(changed)
        data = walk(fake, "/api/profiles", filter=f"greater-than(updated,{after})",
                    **{"additional-fields[profile]": "subscriptions,predictive_analytics"})
        assert {d["id"] for d in data} == set(changed)
        for d in data:
            assert d["attributes"] == fake.profile(d["id"], predictive=True)["attributes"]
            assert d["attributes"]["email"].startswith("changed.")
        fake.delete_profiles(changed[:2])
        assert {d["id"] for d in walk(fake, "/api/profiles")} == fake.live_profile_ids()
        assert fake.deleted_profile_ids() == set(changed[:2])
        assert not fake.live_profile_ids() & set(changed[:2])


def test_lists_segments_counts_and_members(fake):
    lists = walk(fake, "/api/lists")
    segments = walk(fake, "/api/segments", **{"page[size]": "2"})
    assert {d["id"] for d in lists} == fake.list_ids() and len(lists) == 4
    assert {d["id"] for d in segments} == fake.segment_ids() and len(segments) == 3
    assert "definition" in segments[0]["attributes"]
    lid = sorted(fake.list_ids())[0]
    one = get(fake, f"/api/lists/{lid}", **{"additional-fields[list]": "profile_count"}).json()["data"]
    assert one["attributes"] == fake.group(lid)["attributes"]
    members = walk(fake, f"/api/lists/{lid}/profiles", sort="joined_group_at", **{"page[size]": "100"})
    got = {d["id"]: d["attributes"]["joined_group_at"] for d in members}
    assert got == fake.members(lid) and one["attributes"]["profile_count"] == len(got)
    joined = [d["attributes"]["joined_group_at"] for d in members]
    assert joined == sorted(joined)
    mid = joined[len(joined) // 2]
    later = walk(fake, f"/api/lists/{lid}/profiles", filter=f"greater-or-equal(joined_group_at,{mid})")
    assert {d["id"] for d in later} == {p for p, j in got.items() if j >= mid}
    assert get(fake, f"/api/lists/{lid}/profiles", **{"page[size]": "1000"}).status_code == 400
    assert get(fake, "/api/lists/nope").status_code == 404


def test_members_join_and_leave():
    with FakeKlaviyo(seed=5, now=NOW, n_events=50, n_profiles=40) as fake:
        lid = sorted(fake.list_ids())[0]
        before = fake.members(lid)
        outsider = sorted(fake.live_profile_ids() - set(before))[:2]
        leaver = sorted(before)[:1]
        fake.join(lid, outsider)
        fake.leave(lid, leaver)
        now = fake.members(lid)
        assert set(now) == (set(before) | set(outsider)) - set(leaver)
        assert {d["id"] for d in walk(fake, f"/api/lists/{lid}/profiles")} == set(now)


def test_scopes_for_membership():
    with FakeKlaviyo(seed=5, now=NOW, n_events=10, n_profiles=10) as fake:
        sid = sorted(fake.segment_ids())[0]
        fake.revoke_scope("profiles:read")
        r = get(fake, f"/api/segments/{sid}/profiles")
        assert r.status_code == 403 and "profiles:read" in r.text
        assert get(fake, "/api/segments").status_code == 200
