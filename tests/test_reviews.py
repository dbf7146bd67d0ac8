"""sync-reviews against the fake API: a simple full-pass stream (stream_checks.py), and an account without
Klaviyo Reviews (a 403 with the scope granted) is "not available": exit 0, said in the summary."""

import json

from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, query, run_cli
from .stream_checks import check_full_pass_stream

NOTE = "Klaviyo Reviews is not available on this account (HTTP 403 with the scope granted): nothing to sync"


def dump(value):
    return None if value is None else json.dumps(value, separators=(",", ":"))


def test_sync_reviews(tmp_path):
    check_full_pass_stream(
        tmp_path, {"n_reviews": 120}, command="sync-reviews", table="reviews", collection="reviews",
        columns="id, review_type, rating, title, content, author, email, verified, status, product_external_id, "
                "product_name, product_url, smart_quote, public_reply, images, created, updated",
        page_size=100, scope="reviews:read", change={"status": {"value": "rejected"}},
        expected_row=lambda i, a: (i, a["review_type"], a["rating"], a["title"], a["content"], a["author"], a["email"],
                                   int(a["verified"]), a["status"]["value"], a["product"]["external_id"],
                                   a["product"]["name"], a["product"]["url"], a["smart_quote"], dump(a["public_reply"]),
                                   dump(a["images"]), a["created"].replace("+00:00", "Z"),
                                   a["updated"].replace("+00:00", "Z")))


def test_an_account_without_reviews_is_not_available_and_exits_0(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, reviews_enabled=False) as fake:
        env = cli_env(fake, db)
        alone = run_cli(["sync-reviews", "--format", "json"], env)
        assert alone.returncode == 0, alone.describe()
        assert alone.summary["note"] == NOTE and alone.summary["rows"] == {"reviews": 0}
        text = run_cli(["sync-reviews", "--format", "text"], env)
        assert text.returncode == 0 and text.stdout.rstrip().endswith(NOTE)
        step = run_cli(["sync-all", "--only", "reviews"], env)
        assert step.returncode == 0, step.describe()
        assert query(db, "SELECT command, status FROM sync_runs ORDER BY id") == [("sync-reviews", "ok")] * 3
