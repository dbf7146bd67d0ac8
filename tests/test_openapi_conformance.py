"""Every request the tool builds conforms to Klaviyo's OpenAPI spec, and the fake rejects what
the spec rejects where they overlap (page sizes, unknown parameters, enums, filter fields).

The spec subset is vendored (tests/fixtures/openapi/, derived by its extract.py) so that CI needs
neither the network nor ../shared."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests

from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import AUTH_HEADERS, cli_env, fake_now, run_cli
from .openapi_check import SPEC, request_problems

FAST = "reports=50/500,flows=50/500,profile-count=50/500,metric-aggregates=50/500"


# Nine CLI runs, one after the other: 17 s at a load of 12, more than pytest's 120 s once at a
# load of 23. The limit catches a hang; each run has its own 180 s.
@pytest.mark.timeout(600)
def test_every_request_of_a_whole_account_sync_conforms_to_the_spec(tmp_path, now):
    db = tmp_path / "k.db"
    since = (now - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first, last = (now - timedelta(days=9)).date(), (now - timedelta(days=2)).date()
    commands = [
        ["sync-all"],
        ["sync-events", "--since", since, "--workers", "4"],  # the backfill, in parallel slices
        ["sync-profiles", "--full", "--predictive"],
        ["sync-lists", "--counts", "--members", "all", "--full"],
        ["sync-segments", "--counts", "--members", "all"],
        ["sync-campaigns", "--range", "60d"],  # the campaign values report
        ["sync-flows", "--range", f"{first}..{last}"],  # flow series reports
        ["sync-templates", "--full"],
        ["verify", "--range", f"{first}..{last}", "--format", "json"],
    ]
    with FakeKlaviyo(seed=3, now=now, n_events=3000, span_hours=24 * 10, n_flows=6) as fake:
        env = cli_env(fake, db, KLAVIYO_RATE_LIMITS=FAST)
        for args in commands:
            run = run_cli(args, env, timeout=180)
            assert run.returncode in (0, 9), run.describe()  # 9: verify found differences
        log = fake.request_log()
        custom = fake.unaggregatable_metric_ids()
    seen = {(r["method"], r["path"].split("/")[2]) for r in log}
    for endpoint in ("events", "metrics", "profiles", "lists", "segments", "campaigns",
                     "flows", "templates", "campaign-values-reports", "flow-series-reports", "metric-aggregates"):
        assert any(e == endpoint for _, e in seen), f"no request to /api/{endpoint} was made: {sorted(seen)}"
    problems = [p for r in log for p in request_problems(r["method"], r["path"], r["query"], r["body"])]
    assert problems == [], f"{len(problems)} departures from the spec, e.g.:\n" + "\n".join(problems[:20])
    # Refused: only the aggregates of custom metrics, which Klaviyo cannot aggregate (a 400 that
    # verify reports as "unverifiable").
    refused = [r for r in log if r["status"] >= 400]
    assert refused and all(r["path"] == "/api/metric-aggregates" and
                           json.loads(r["body"])["data"]["attributes"]["metric_id"] in custom for r in refused), refused[:3]


@pytest.mark.parametrize("method, path, query, body, expected", [
    ("GET", "/api/events", "page%5Bsize%5D=1001", None, "outside 1..1000"),
    ("GET", "/api/lists", "page%5Bsize%5D=100", None, "outside 1..10"),
    ("GET", "/api/events", "fields%5Bevent%5D=datetime,nope", None, "'nope' is not one of"),
    ("GET", "/api/events", "sort=-updated", None, "'-updated' is not one of"),
    ("GET", "/api/events", "filter=equals(name,'x')", None, "filter field 'name' is not filterable"),
    ("GET", "/api/events", "filter=and(greater-than(datetime,2026-01-01T00:00:00Z),any(metric_id,['a']))",
     None, "filter operator 'any' is not allowed on 'metric_id'"),
    ("GET", "/api/profiles", "updated_since=2026-01-01", None, "unknown query parameter 'updated_since'"),
    ("GET", "/api/widgets", "", None, "no such operation"),
    ("POST", "/api/metric-aggregates", "", json.dumps({"data": {"type": "metric-aggregate", "attributes": {
        "measurements": ["count"], "filter": ["greater-or-equal(datetime,2026-01-01T00:00:00)"]}}}),
     "required property 'metric_id' is missing"),
    ("POST", "/api/metric-aggregates", "", json.dumps({"data": {"type": "metric-aggregate", "attributes": {
        "metric_id": "m", "measurements": ["total"], "filter": []}}}), "'total' is not one of"),
])
def test_the_validator_catches_what_the_spec_forbids(method, path, query, body, expected):
    problems = request_problems(method, path, query, body)
    assert any(expected in p for p in problems), problems


def test_the_validator_accepts_a_conforming_request():
    q = ("fields%5Bevent%5D=datetime,uuid&include=metric,profile&sort=datetime&page%5Bsize%5D=1000&"
         "filter=greater-or-equal(datetime,2026-01-01T00:00:00Z),less-than(datetime,2026-01-02T00:00:00Z)")
    assert request_problems("GET", "/api/events", q, None) == []


# Where the fake and the spec overlap: each list endpoint's page-size bounds and unknown parameters.
LISTED = [(key.split(" ", 1)[1], op["params"]["page[size]"]) for key, op in sorted(SPEC["operations"].items())
          if key.startswith("GET ") and "page[size]" in op["params"] and key != "GET /api/accounts"]


@pytest.fixture(scope="module")
def fake():
    with FakeKlaviyo(seed=3, now=fake_now(), n_events=50, span_hours=24) as f:
        yield f


def _get(fake, path, params):
    if path == "/api/campaigns":  # the spec requires a channel filter there
        params = {"filter": "equals(messages.channel,'email')", **params}
    return requests.get(fake.base_url + path, params=params, timeout=30,
                        headers={**AUTH_HEADERS, "revision": SPEC["revision"]})


def _concrete(fake, path):
    if "{id}" not in path:
        return path
    kind = path.split("/")[2]
    some = {"lists": fake.list_ids, "segments": fake.segment_ids, "campaigns": fake.campaign_ids}[kind]()
    return path.replace("{id}", sorted(some)[0])


@pytest.mark.parametrize("path, bounds", LISTED, ids=[p for p, _ in LISTED])
def test_the_fake_enforces_the_specs_page_size_bounds_and_parameter_names(fake, path, bounds):
    url = _concrete(fake, path)
    assert _get(fake, url, {"page[size]": bounds["maximum"]}).status_code == 200
    for bad in (bounds["maximum"] + 1, bounds["minimum"] - 1):
        r = _get(fake, url, {"page[size]": bad})
        assert r.status_code == 400, (path, bad, r.status_code)
        assert r.json()["errors"][0]["status"] in (400, "400")
    r = _get(fake, url, {"no_such_parameter": "1"})
    assert r.status_code == 400, (path, r.status_code)
