import gzip
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from responses import matchers

from klaviyo_sync.client import DEFAULT_REVISION, KlaviyoClient, revision_age_warning
from klaviyo_sync.errors import ApiError, AuthError, RateLimitExceeded, UnsafeLinkError

from .conftest import API_KEY, BASE

METRICS = f"{BASE}/api/metrics"


def page(ids, next_url=None, included=None):
    body = {"data": [{"type": "metric", "id": i, "attributes": {"name": i}} for i in ids],
            "links": {"self": "x", "next": next_url}}
    if included is not None:
        body["included"] = included
    return body


def test_paging_follows_links_next_to_the_last_page(mocked, client):
    mocked.get(METRICS, json=page(["a", "b"], f"{METRICS}?page%5Bcursor%5D=c1"),
               match=[matchers.query_string_matcher("")])
    mocked.get(METRICS, json=page(["c"], f"{METRICS}?page%5Bcursor%5D=c2"),
               match=[matchers.query_param_matcher({"page[cursor]": "c1"})])
    mocked.get(METRICS, json=page(["d"], f"{METRICS}?page%5Bcursor%5D=c3"),
               match=[matchers.query_param_matcher({"page[cursor]": "c2"})])
    mocked.get(METRICS, json=page(["e"], None),
               match=[matchers.query_param_matcher({"page[cursor]": "c3"})])
    pages = list(client.paginate("/api/metrics"))
    assert [[r["id"] for r in p.data] for p in pages] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert client.stats.requests == 4


def test_a_retry_never_starts_over_at_page_one(mocked, client):
    """README: retries wrap the single request, so a failure on page 3 retries page 3. Idempotent
    writes would hide a restart from the database: the request log shows it."""
    mocked.get(METRICS, json=page(["a"], f"{METRICS}?page%5Bcursor%5D=c1"),
               match=[matchers.query_string_matcher("")])
    mocked.get(METRICS, json=page(["b"], f"{METRICS}?page%5Bcursor%5D=c2"),
               match=[matchers.query_param_matcher({"page[cursor]": "c1"})])
    c2 = [matchers.query_param_matcher({"page[cursor]": "c2"})]
    mocked.get(METRICS, status=503, json={"errors": [{"detail": "busy"}]}, match=c2)
    mocked.get(METRICS, body=requests.exceptions.ConnectionError("dropped"), match=c2)
    mocked.get(METRICS, status=429, headers={"Retry-After": "1"}, json={"errors": []}, match=c2)
    mocked.get(METRICS, json=page(["c"]), match=c2)
    assert [p.data[0]["id"] for p in client.paginate("/api/metrics")] == ["a", "b", "c"]
    cursors = [dict(parse_qsl(urlsplit(c.request.url).query)).get("page[cursor]") for c in mocked.calls]
    assert cursors == [None, "c1", "c2", "c2", "c2", "c2"]


def test_next_link_is_followed_exactly_without_resending_params(mocked, client):
    nxt = f"{METRICS}?fields%5Bmetric%5D=name&page%5Bcursor%5D=zz"
    mocked.get(METRICS, json=page(["a"], nxt), match=[matchers.query_param_matcher({"fields[metric]": "name"})])
    mocked.get(METRICS, json=page(["b"]), match=[matchers.query_param_matcher({"fields[metric]": "name", "page[cursor]": "zz"})])
    assert len(list(client.paginate("/api/metrics", {"fields[metric]": "name"}))) == 2
    assert mocked.calls[1].request.url == nxt


def test_headers_are_sent(mocked, client):
    mocked.get(METRICS, json=page([]))
    client.request("GET", "/api/metrics")
    h = mocked.calls[0].request.headers
    assert h["Authorization"] == f"Klaviyo-API-Key {API_KEY}"
    assert h["revision"] == DEFAULT_REVISION == "2026-07-15"
    assert h["Accept"] == "application/vnd.api+json"


def test_post_sends_jsonapi_content_type(mocked, client):
    mocked.post(f"{BASE}/api/campaign-values-reports", json={"data": {}})
    client.request("POST", "/api/campaign-values-reports", json_body={"data": {"type": "x"}})
    assert mocked.calls[0].request.headers["Content-Type"] == "application/vnd.api+json"


def test_429_waits_for_retry_after_then_succeeds(mocked, client, sleeps):
    mocked.get(METRICS, status=429, headers={"Retry-After": "7"},
               json={"errors": [{"status": 429, "code": "throttled", "detail": "Request was throttled."}]})
    mocked.get(METRICS, json=page(["a"]))
    body = client.request("GET", "/api/metrics")
    assert body["data"][0]["id"] == "a"
    # It waits what the server asked, plus this worker's spread of at most a second.
    assert len(sleeps) == 1 and 7.0 <= sleeps[0] <= 8.0
    assert client.stats.retries == 1 and client.stats.rate_limited == 1
    # Every other worker of the endpoint is held for the same wait.
    assert client.limiter.paused_until("metrics") == 1000.0 + 7.0
    assert client.stats.as_dict()["rate_limit_wait_s"] == round(sleeps[0], 3)


def test_429_without_retry_after_backs_off_exponentially(mocked, client, sleeps):
    for _ in range(3):
        mocked.get(METRICS, status=429, json={"errors": []})
    mocked.get(METRICS, json=page([]))
    client.request("GET", "/api/metrics")
    assert len(sleeps) == 3
    for attempt, wait in enumerate(sleeps):
        assert 0.5 * 2**attempt <= wait <= 2**attempt


def test_retry_after_longer_than_the_cap_fails_fast(mocked, client, sleeps):
    mocked.get(METRICS, status=429, headers={"Retry-After": "50000"}, json={"errors": []})
    with pytest.raises(RateLimitExceeded, match="50000 s"):
        client.request("GET", "/api/metrics")
    assert sleeps == [] and len(mocked.calls) == 1


def test_5xx_is_retried_then_gives_up_naming_the_endpoint_and_detail(mocked, client, sleeps):
    mocked.get(METRICS, status=503, json={"errors": [{"detail": "Service is down for maintenance"}]})
    with pytest.raises(ApiError) as info:
        client.request("GET", "/api/metrics")
    assert len(mocked.calls) == client.max_attempts == 6
    assert len(sleeps) == 5
    assert "GET /api/metrics" in str(info.value) and "Service is down for maintenance" in str(info.value)
    assert info.value.exit_code == 3


def test_connection_errors_are_retried(mocked, client):
    mocked.get(METRICS, body=requests.exceptions.ConnectionError("boom"))
    mocked.get(METRICS, json=page(["a"]))
    assert client.request("GET", "/api/metrics")["data"][0]["id"] == "a"
    assert client.stats.retries == 1


def test_read_timeout_is_retried(mocked, client):
    mocked.get(METRICS, body=requests.exceptions.ReadTimeout("slow"))
    mocked.get(METRICS, json=page(["a"]))
    assert client.request("GET", "/api/metrics")["data"][0]["id"] == "a"


def test_truncated_json_body_is_retried(mocked, client):
    mocked.get(METRICS, body='{"data": [{"type": "metric", "id"', content_type="application/vnd.api+json")
    mocked.get(METRICS, json=page(["a"]))
    assert client.request("GET", "/api/metrics")["data"][0]["id"] == "a"
    assert client.stats.retries == 1


def test_a_compressed_answer_is_decoded_and_a_plain_one_read_as_it_comes(mocked, client):
    """requests asks for gzip: an answer sent with Content-Encoding is decompressed before it is
    read as JSON (and its size checked after decompression); one sent as is is read unchanged."""
    first = page(["a", "b"], f"{METRICS}?page%5Bcursor%5D=c1")
    mocked.get(METRICS, body=gzip.compress(json.dumps(first).encode()), content_type="application/vnd.api+json",
               headers={"Content-Encoding": "gzip"}, match=[matchers.query_string_matcher("")])
    mocked.get(METRICS, json=page(["c"]), match=[matchers.query_param_matcher({"page[cursor]": "c1"})])
    pages = list(client.paginate("/api/metrics"))
    assert [[r["id"] for r in p.data] for p in pages] == [["a", "b"], ["c"]]
    assert client.stats.retries == 0


@pytest.mark.parametrize("status,cls", [(400, ApiError), (401, AuthError), (403, AuthError), (404, ApiError)])
def test_client_errors_are_not_retried(mocked, client, sleeps, status, cls):
    mocked.get(METRICS, status=status, json={"errors": [{"detail": f"detail for {status}"}]})
    with pytest.raises(cls, match=f"detail for {status}"):
        client.request("GET", "/api/metrics")
    assert len(mocked.calls) == 1 and sleeps == []


def test_403_with_html_body_is_reported_as_such(mocked, client):
    mocked.get(METRICS, status=403, body="<html>Just a moment...</html>", content_type="text/html",
               headers={"cf-mitigated": "challenge"})
    with pytest.raises(ApiError, match="HTML body") as info:
        client.request("GET", "/api/metrics")
    assert "challenge" in str(info.value)
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("evil", [
    "https://evil.example.com/api/metrics?page%5Bcursor%5D=x",
    "http://a.klaviyo.com/api/metrics?page%5Bcursor%5D=x",  # scheme downgrade
    "https://a.klaviyo.com.evil.example/api/metrics",
])
def test_off_host_next_link_is_refused_before_any_request(mocked, client, evil):
    mocked.get(METRICS, json=page(["a"], evil))
    pages = client.paginate("/api/metrics")
    with pytest.raises(UnsafeLinkError, match="refusing"):
        list(pages)
    assert len(mocked.calls) == 1


def test_key_never_in_error_messages(mocked, client):
    mocked.get(METRICS, status=401, json={"errors": [{"detail": f"bad key {API_KEY}"}]})
    with pytest.raises(AuthError) as info:
        client.request("GET", "/api/metrics")
    assert API_KEY not in str(info.value)


def test_revision_age_warning():
    from datetime import date

    assert revision_age_warning("2026-07-15", today=date(2026, 11, 26)) is None
    warning = revision_age_warning("2026-04-15", today=date(2027, 11, 26))
    assert warning and "2026-04-15 is 19 months old" in warning
    # A revision older than the supported ones is refused (exit 2), not warned about.
    assert revision_age_warning("2024-01-15", today=date(2026, 11, 26)) is None


def test_relative_next_link_is_resolved_against_the_api_host(mocked, client):
    mocked.get(METRICS, json=page(["a"], "/api/metrics?page%5Bcursor%5D=c1"),
               match=[matchers.query_string_matcher("")])
    mocked.get(METRICS, json=page(["b"]), match=[matchers.query_param_matcher({"page[cursor]": "c1"})])
    assert [p.data[0]["id"] for p in client.paginate("/api/metrics")] == ["a", "b"]


# -- a 429 that says when to come back is scheduling, not failure ------------------------------
def test_many_429s_with_retry_after_spend_no_attempt(mocked, client, sleeps):
    throttled = {"errors": [{"status": 429, "code": "throttled", "detail": "Request was throttled."}]}
    for _ in range(20):  # far more than max_attempts
        mocked.get(METRICS, status=429, headers={"Retry-After": "1"}, json=throttled)
    mocked.get(METRICS, json=page(["a"]))
    assert client.request("GET", "/api/metrics")["data"][0]["id"] == "a"
    assert len(mocked.calls) == 21 and client.stats.rate_limited == 20
    assert all(1.0 <= s <= 2.0 for s in sleeps) and len(sleeps) == 20


def test_real_failures_keep_their_own_budget_between_429s(mocked, client):
    throttled = {"errors": [{"detail": "Request was throttled."}]}
    for _ in range(5):  # five real failures, each followed by a 429: still within six attempts
        mocked.get(METRICS, status=503, json={"errors": [{"detail": "busy"}]})
        mocked.get(METRICS, status=429, headers={"Retry-After": "1"}, json=throttled)
    mocked.get(METRICS, json=page(["a"]))
    assert client.request("GET", "/api/metrics")["data"][0]["id"] == "a"
    mocked.reset()
    for _ in range(6):  # the sixth real failure gives up, whatever 429s came between
        mocked.get(METRICS, status=429, headers={"Retry-After": "1"}, json=throttled)
        mocked.get(METRICS, status=503, json={"errors": [{"detail": "busy"}]})
    mocked.get(METRICS, json=page(["never"]))
    with pytest.raises(ApiError, match="failed after 6 attempts: HTTP 503: busy"):
        client.request("GET", "/api/metrics")
    assert len(mocked.calls) == 12


def test_rate_limit_waiting_is_bounded_by_time(mocked, fake_time):
    client = KlaviyoClient(API_KEY, base_url=BASE, sleep=fake_time.sleep, clock=fake_time.monotonic,
                           max_rate_limit_wait=300)
    mocked.get(METRICS, status=429, headers={"Retry-After": "100"}, json={"errors": [{"detail": "slow down"}]})
    with pytest.raises(ApiError, match=r"still rate limited after waiting 300 s in all .*slow down") as info:
        client.request("GET", "/api/metrics")
    assert info.value.exit_code == 3
    assert len(mocked.calls) == 4  # three waits of 100 s fit in 300 s; a fourth does not
    assert 300 <= sum(fake_time.sleeps) <= 303


def test_retry_after_zero_for_ever_still_ends(mocked, client):
    mocked.get(METRICS, status=429, headers={"Retry-After": "0"}, json={"errors": []})
    with pytest.raises(ApiError, match="still rate limited"):
        client.request("GET", "/api/metrics")
    assert len(mocked.calls) <= client.max_rate_limit_wait + 1
def test_gc_paused_nests_and_restores_the_collector():
    import gc

    from klaviyo_sync.client import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer use still holds it
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector the program disabled stays disabled
    finally:
        gc.enable()


@pytest.mark.parametrize("retry_after, waits", [("120", True), ("120.0", True), ("121", False)])
def test_the_120_second_retry_after_boundary(mocked, client, sleeps, retry_after, waits):
    """README: a single Retry-After longer than 120 s fails fast; 120 s itself is waited out."""
    mocked.get(METRICS, status=429, headers={"Retry-After": retry_after},
               json={"errors": [{"status": 429, "code": "throttled", "detail": "Request was throttled."}]})
    mocked.get(METRICS, json=page(["a"]))
    if waits:
        assert client.request("GET", "/api/metrics")["data"][0]["id"] == "a"
        assert len(mocked.calls) == 2 and 120.0 <= sum(sleeps) <= 121.0
    else:
        with pytest.raises(RateLimitExceeded, match="asks to wait 121 s, more than the 120 s this tool waits"):
            client.request("GET", "/api/metrics")
        assert len(mocked.calls) == 1 and sleeps == []
