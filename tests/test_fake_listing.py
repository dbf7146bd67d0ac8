"""The fake's one list endpoint (fake/listing.py), as GET /api/images uses it: as strict as the spec."""

from __future__ import annotations

import requests

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo


def test_the_fake_images_endpoint_is_as_strict_as_the_spec(now):
    """Page-size cap, sorts, operators per field, fieldsets, includes, cursors bound to their query."""
    headers = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15",
               "Accept": "application/vnd.api+json"}
    with FakeKlaviyo(n_events=0, now=now, n_images=30) as fake:
        url = f"{fake.base_url}/api/images"

        def get(**params):
            return requests.get(url, params=params, headers=headers, timeout=10)

        for params in ({"page[size]": "101"}, {"sort": "created"}, {"filter": "greater-than(name,'a')"},
                       {"filter": "equals(size,'3')"}, {"fields[image]": "colour"}, {"include": "tags"}):
            r = get(**params)
            assert r.status_code == 400, (params, r.text)
        first = get(**{"page[size]": "20", "sort": "-size"}).json()
        sizes = [d["attributes"]["size"] for d in first["data"]]
        assert len(sizes) == 20 and sizes == sorted(sizes, reverse=True)
        cursor = first["links"]["next"].split("page%5Bcursor%5D=")[1]
        # A cursor belongs to its query: the same cursor under another sort is refused.
        assert get(**{"page[size]": "20", "sort": "size", "page[cursor]": cursor}).status_code == 400
        rest = requests.get(first["links"]["next"], headers=headers, timeout=10).json()
        assert len(rest["data"]) == 10 and rest["links"]["next"] is None
        assert {d["id"] for d in first["data"] + rest["data"]} == fake.images.ids()
        hidden = get(**{"filter": "equals(hidden,true)", "fields[image]": "name"}).json()["data"]
        assert {d["id"] for d in hidden} == {i for i in fake.images.ids() if fake.images.get(i)["hidden"]}
        assert all(set(d["attributes"]) == {"name"} for d in hidden)
        png = get(**{"filter": "ends-with(name,'.png')"}).json()["data"]
        assert {d["id"] for d in png} == {i for i in fake.images.ids() if fake.images.get(i)["name"].endswith(".png")}


def test_list_endpoint_includes_fieldsets_of_included_types_and_page_size_cap():
    """ListEndpoint alone (no server): includes name a relationship and the included type."""
    import json
    from types import SimpleNamespace

    import pytest

    from klaviyo_sync.fake.errors import ApiError
    from klaviyo_sync.fake.listing import ListEndpoint

    widgets = ListEndpoint("widget", fields=frozenset({"name"}), sorts=("name",), page=(1, 2, 2),
                           includes={"parts": ("widget-part", frozenset({"label"}))})
    rows = [("w1", "b"), ("w2", "a"), ("w3", "c")]
    fake = SimpleNamespace(_links=lambda ctx, nxt, prv: {"next": nxt, "prev": prv})
    asked = []

    def included(page, inc, fieldsets):
        asked.append((inc, fieldsets))
        return [{"type": "widget-part", "id": f"p-{r[0]}"} for r in page]

    def call(query):
        ctx = SimpleNamespace(query=query, path="/api/widgets")
        status, body, _ = widgets.respond(fake, ctx, rows, value=lambda r, f: r[0] if f == "id" else r[1],
                                          render=lambda r, fields: {"type": "widget", "id": r[0]},
                                          included=included)
        return status, json.loads(body)

    status, doc = call("sort=-name&include=parts&fields%5Bwidget-part%5D=label")
    assert status == 200 and [d["id"] for d in doc["data"]] == ["w3", "w1"]
    assert [d["id"] for d in doc["included"]] == ["p-w3", "p-w1"]
    assert asked == [({"parts"}, {"widget-part": ["label"]})] and doc["links"]["next"]
    for bad_query in ("include=wheels", "fields%5Bwidget-part%5D=colour", "page%5Bsize%5D=3", "sort=colour",
                      "fields%5Bparts%5D=label"):
        with pytest.raises(ApiError) as err:
            call(bad_query)
        assert err.value.status == 400, bad_query
