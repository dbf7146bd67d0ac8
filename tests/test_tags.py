"""sync-tags against the fake API: tags, tag groups and links exact against the fake's truth, read
through the parents' include=tags (no per-tag relationship requests), removals, the 403 policy."""

import json
from collections import Counter

from klaviyo_sync.fake import ALL_SCOPES, FakeKlaviyo

from .e2e_helpers import cli_env, ids, query, run_cli


def links(db):
    return set(query(db, "SELECT tag_id, resource_type, resource_id FROM tag_links"))


def check_tables(db, fake):
    assert query(db, "SELECT id, name, tag_group_id FROM tags ORDER BY id") == [
        (i, fake.tag(i)["name"], fake.tag(i)["tag_group_id"]) for i in sorted(fake.tag_ids())]
    assert query(db, 'SELECT id, name, "exclusive", "default" FROM tag_groups ORDER BY id') == [
        (g, fake.tag_group(g)["name"], int(fake.tag_group(g)["exclusive"]), int(fake.tag_group(g)["default"]))
        for g in sorted(fake.tag_group_ids())]
    assert links(db) == fake.tag_links()


def test_sync_tags_alone_on_an_empty_database(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, n_campaigns_per_channel=8, n_flows=10, n_lists=4, n_segments=3) as fake:
        fake.enforce_limits = True
        env = cli_env(fake, db)
        first = run_cli(["sync-tags", "--format", "json"], env)
        assert first.returncode == 0, first.describe()
        check_tables(db, fake)
        truth = fake.tag_links()
        assert {kind for _, kind, _ in truth} == {"campaign", "flow", "list", "segment"}
        archived = fake.flow_ids(archived=True)
        assert any(rid in archived for _, kind, rid in truth if kind == "flow")  # archived flows too
        assert len(fake.tag_group_ids()) == 4 and len(fake.tag_ids()) == 8
        assert first.summary["rows"] == {"tag_groups": 4, "tags": 8, "tag_links": len(truth)}
        # One page each: groups, tags, campaigns per channel x archived (6), flows x archived (2),
        # lists, segments: 12 pages, none per tag (a 429 from the fake's shared S tier may add a retry).
        paths = Counter(r["path"].rstrip("/") for r in fake.request_log() if r["status"] == 200)
        paths.pop("/api/accounts", None)  # which account the key belongs to, before any sync
        assert paths == {"/api/tag-groups": 1, "/api/tags": 1, "/api/campaigns": 6, "/api/flows": 2,
                         "/api/lists": 1, "/api/segments": 1}
        assert first.summary["pages"] == 12

        again = run_cli(["sync-tags", "--format", "json"], env)
        assert again.returncode == 0, again.describe()
        assert again.summary["rows"] == {"tag_groups": 0, "tags": 0, "tag_links": 0}
        assert [again.summary[f"{t}_removed"] for t in ("tag_groups", "tags", "tag_links")] == [0, 0, 0]

        tag, kind, rid = sorted(truth)[0]
        fake.untag(kind, rid, tag)
        renamed, deleted = sorted(fake.tag_ids() - {tag})[:2]
        fake.rename_tag(renamed, "Summer Sale")
        carried = {link for link in fake.tag_links() if link[0] == deleted}
        fake.delete_tag(deleted)
        third = run_cli(["sync-tags", "--format", "json"], env)
        assert third.returncode == 0, third.describe()
        check_tables(db, fake)
        assert third.summary["rows"] == {"tag_groups": 0, "tags": 1, "tag_links": 0}
        assert third.summary["tags_removed"] == 1 and third.summary["tag_links_removed"] == 1 + len(carried)
        assert ("Summer Sale",) in query(db, "SELECT name FROM tags")


def test_sync_tags_without_the_scope(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, scopes=ALL_SCOPES - {"tags:read"}) as fake:
        env = cli_env(fake, db)
        alone = run_cli(["sync-tags"], env)
        assert alone.returncode == 4, alone.describe()
        assert alone.stderr.startswith("klaviyo-sync: error: sync-tags: permission denied: the API key lacks the "
                                       "tags:read scope") and len(alone.stderr.splitlines()) == 1
        step = run_cli(["sync-all", "--only", "sync-metrics,tags"], env)
        assert step.returncode == 0, step.describe()
        assert "klaviyo-sync: skipped: sync-tags: the API key lacks the tags:read scope" in step.stderr
        assert query(db, "SELECT command, status FROM sync_runs ORDER BY id") == [
            ("sync-tags", "failed"), ("sync-metrics", "ok"), ("sync-tags", "skipped")]
        assert ids(db, "tags") == set()


def test_sync_tags_without_a_parents_scope_names_that_scope(tmp_path):
    """The links are read from the campaigns' listing: a key with tags:read but not
    campaigns:read is refused there, and the error names campaigns:read, not tags:read."""
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, scopes=ALL_SCOPES - {"campaigns:read"}) as fake:
        env = cli_env(fake, db)
        alone = run_cli(["sync-tags"], env)
        assert alone.returncode == 4, alone.describe()
        assert alone.stderr == ("klaviyo-sync: error: sync-tags: permission denied: the API key lacks the "
                                "campaigns:read scope (/api/campaigns)\n")
        step = run_cli(["sync-all", "--only", "tags", "--format", "json"], env)
        assert step.returncode == 0, step.describe()
        assert "klaviyo-sync: skipped: sync-tags: the API key lacks the campaigns:read scope" in step.stderr
        assert {"command": "sync-tags", "status": "skipped", "scope": "campaigns:read"}.items() <= \
            json.loads(step.stdout.splitlines()[0]).items()


def test_campaigns_and_flows_take_a_tag(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-tags"], env).returncode == 0
        unknown = run_cli(["campaigns", "--tag", "No Such Tag"], env)
        assert unknown.returncode == 2 and unknown.stderr == (
            "klaviyo-sync: error: --tag: no tag named 'No Such Tag' in the database (run sync-tags first)\n")
        assert run_cli(["flows", "--tag", "No Such Tag"], env).returncode == 2
        holiday = {t for t in fake.tag_ids() if fake.tag(t)["name"] == "Holiday"}
        for command, kind in (("campaigns", "campaign"), ("flows", "flow")):
            # campaigns then flows spend three report requests (one values report, two 60-day
            # series) against Klaviyo's 2 a minute, shared by every process on this database: the
            # third waits out the minute, as it would against Klaviyo.
            every = run_cli([command, "--range", "90d", "--format", "json"], env, timeout=240)
            assert every.returncode == 0, every.describe()
            tagged = run_cli([command, "--range", "90d", "--format", "json", "--tag", "Holiday"], env)
            assert tagged.returncode == 0, tagged.describe()
            truth = {rid for t, k, rid in fake.tag_links() if t in holiday and k == kind}
            expected = {r["id"] for r in json.loads(every.stdout)} & truth
            assert expected and {r["id"] for r in json.loads(tagged.stdout)} == expected


def test_the_fake_tag_endpoints_are_as_strict_as_the_spec():
    import requests

    from klaviyo_sync.fake import FAKE_API_KEY

    headers = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15"}
    with FakeKlaviyo(n_events=0) as fake, requests.Session() as http:
        def get(path, **params):
            return http.get(fake.base_url + path, params=params, headers=headers, timeout=10)

        assert get("/api/tags", **{"page[size]": "50"}).status_code == 200
        for path, params in (("/api/tags", {"page[size]": "51"}), ("/api/tag-groups", {"page[size]": "26"}),
                             ("/api/tags", {"filter": "equals(exclusive,true)"}), ("/api/tags", {"sort": "created"}),
                             ("/api/tag-groups", {"filter": "contains(exclusive,true)"}),
                             ("/api/lists", {"include": "campaigns"})):
            r = get(path, **params)
            assert r.status_code == 400, (path, params, r.text)
        plain = get("/api/lists").json()["data"]
        assert all("data" not in d["relationships"].get("tags", {}) for d in plain)  # only with include=tags
        tagged = get("/api/segments", include="tags").json()
        assert {(t["id"], "segment", d["id"]) for d in tagged["data"] for t in d["relationships"]["tags"]["data"]} == {
            link for link in fake.tag_links() if link[1] == "segment"}
        assert {t["id"] for t in tagged["included"]} == {t for t, kind, _ in fake.tag_links() if kind == "segment"}
        group = get("/api/tags", include="tag-group").json()
        assert {d["id"]: d["relationships"]["tag-group"]["data"]["id"] for d in group["data"]} == {
            t: fake.tag(t)["tag_group_id"] for t in fake.tag_ids()}
