"""sync-push-tokens against the fake API (tests/stream_checks.py: what every simple full-pass stream does)."""

import json

from .stream_checks import check_full_pass_stream


def test_sync_push_tokens(tmp_path):
    check_full_pass_stream(
        tmp_path, {"n_push_tokens": 150}, command="sync-push-tokens", table="push_tokens", collection="push_tokens",
        columns="id, profile_id, token, platform, vendor, enablement_status, background, created, recorded_date, "
                "metadata", page_size=100, scope="push-tokens:read", change={"enablement_status": "DENIED"},
        expected_row=lambda i, a: (i, a["profile_id"], a["token"], a["platform"], a["vendor"], a["enablement_status"],
                                   a["background"], a["created"].replace("+00:00", "Z"),
                                   a["recorded_date"].replace("+00:00", "Z"),
                                   json.dumps(a["metadata"], separators=(",", ":"))))
