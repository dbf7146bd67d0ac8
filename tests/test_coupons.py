"""sync-coupons against the fake API: coupons as every simple full-pass stream (stream_checks.py); codes
only with --codes, exact, removed when gone, their own scope, never read by sync-all."""

import json

from klaviyo_sync.fake import ALL_SCOPES, FakeKlaviyo

from .e2e_helpers import cli_env, query, run_cli
from .stream_checks import check_full_pass_stream


def test_sync_coupons(tmp_path):
    check_full_pass_stream(
        tmp_path, {}, command="sync-coupons", table="coupons", collection="coupons",
        columns="id, external_id, description, monitor_configuration", page_size=100, scope="coupons:read",
        change={"description": "Summer offer, 25% off"},
        expected_row=lambda i, a: (i, a["external_id"], a["description"],
                                   json.dumps(a["monitor_configuration"], separators=(",", ":"))))


def codes(db):
    return query(db, "SELECT id, coupon_id, unique_code, status, expires_at FROM coupon_codes ORDER BY id")


def truth(fake):
    return [(i, c["coupon_id"], c["unique_code"], c["status"], c["expires_at"].replace("+00:00", "Z"))
            for i in sorted(fake.coupon_code_ids()) for c in [fake.coupon_code(i)]]


def test_coupon_codes_are_opt_in(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, n_codes_per_coupon=130) as fake:
        fake.enforce_limits = True
        env = cli_env(fake, db)
        every = run_cli(["sync-all", "--only", "coupons"], env)
        assert every.returncode == 0, every.describe()
        assert not any(r["path"].startswith("/api/coupon-codes") for r in fake.request_log())
        assert codes(db) == []
        first = run_cli(["sync-coupons", "--codes", "--format", "json"], env)
        assert first.returncode == 0, first.describe()
        assert codes(db) == truth(fake) and len(truth(fake)) == 3 * 130 + 2 * 7
        # One filtered pass per coupon: 2 pages for 130 codes, 1 for 7, and the coupons page.
        assert first.summary["pages"] == 1 + 3 * 2 + 2 * 1 and first.summary["rows"]["coupon_codes"] == 404
        again = run_cli(["sync-coupons", "--codes", "--format", "json"], env)
        assert again.summary["rows"] == {"coupons": 0, "coupon_codes": 0} and again.summary["coupon_codes_removed"] == 0
        fake.remove_coupon_code(truth(fake)[0][0])
        gone_coupon = sorted(fake.coupons.ids())[-1]
        fake.coupons.remove(gone_coupon)
        third = run_cli(["sync-coupons", "--codes", "--format", "json"], env)
        assert third.returncode == 0, third.describe()
        assert codes(db) == truth(fake) and third.summary["coupons_removed"] == 1
        assert third.summary["coupon_codes_removed"] == 1 + 7  # the code, and the removed coupon's 7

        fake.scopes = set(ALL_SCOPES - {"coupon-codes:read"})
        denied = run_cli(["sync-coupons", "--codes"], env)
        assert denied.returncode == 4 and denied.stderr.startswith(
            "klaviyo-sync: error: sync-coupons: permission denied: the API key lacks the coupon-codes:read scope")
        assert codes(db) == truth(fake)


def test_the_fake_coupon_endpoints_are_as_strict_as_the_spec():
    import requests

    from klaviyo_sync.fake import FAKE_API_KEY

    headers = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15"}
    with FakeKlaviyo(n_events=0) as fake, requests.Session() as http:
        def get(path, **params):
            return http.get(fake.base_url + path, params=params, headers=headers, timeout=10)

        coupon = sorted(fake.coupons.ids())[0]
        ok = get("/api/coupon-codes", filter=f"equals(coupon.id,'{coupon}')", **{"page[size]": "100"})
        assert ok.status_code == 200 and {d["id"] for d in ok.json()["data"]} <= fake.coupon_code_ids()
        for path, params in (("/api/coupon-codes", {}), ("/api/coupon-codes", {"filter": "equals(status,'USED')"}),
                             ("/api/coupon-codes", {"filter": f"equals(coupon.id,'{coupon}')", "page[size]": "101"}),
                             ("/api/coupons", {"sort": "id"}), ("/api/coupons", {"filter": "equals(id,'X')"}),
                             ("/api/coupons", {"page[size]": "101"})):
            r = get(path, **params)
            assert r.status_code == 400, (path, params, r.text)
