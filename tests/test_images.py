"""sync-images against the fake API: every image, whole rows, a second run writing nothing, and
removals after a change in the fake."""

from __future__ import annotations

from datetime import timedelta

from klaviyo_sync.fake import ALL_SCOPES, FakeKlaviyo

from .e2e_helpers import cli_env, floor_now, ids, query, run_cli

NOW = floor_now() - timedelta(minutes=1)
COLUMNS = "id, name, image_url, format, size, hidden, updated_at"


def expected(fake, image_id: str) -> tuple:
    a = fake.image(image_id)
    return (image_id, a["name"], a["image_url"], a["format"], a["size"], 1 if a["hidden"] else 0,
            a["updated_at"].replace("+00:00", "Z"))


def test_sync_images_copies_every_image_then_writes_nothing_then_follows_changes(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, now=NOW, n_images=130) as fake:
        fake.enforce_limits = True
        env = cli_env(fake, db)
        first = run_cli(["sync-images", "--format", "json"], env)
        assert first.returncode == 0, first.describe()
        assert len(fake.image_ids()) == 130
        assert ids(db, "images") == fake.image_ids()
        rows = query(db, f"SELECT {COLUMNS} FROM images ORDER BY id")
        assert rows == [expected(fake, i) for i in sorted(fake.image_ids())]
        assert {r[5] for r in rows} == {0, 1}  # hidden images are listed too
        # 100 a page (the API's maximum): two pages, two requests.
        assert first.summary["rows"] == {"images": 130} and first.summary["pages"] == 2
        assert first.summary["requests"] == 2 and first.summary["images_removed"] == 0

        again = run_cli(["sync-images", "--format", "json"], env)
        assert again.returncode == 0, again.describe()
        assert again.summary["rows"] == {"images": 0} and again.summary["images_removed"] == 0

        gone, renamed = sorted(fake.image_ids())[:2]
        fake.remove_image(gone)
        fake.rename_image(renamed, "spring-banner.png")
        third = run_cli(["sync-images", "--format", "json"], env)
        assert third.returncode == 0, third.describe()
        assert third.summary["rows"] == {"images": 1} and third.summary["images_removed"] == 1
        assert ids(db, "images") == fake.image_ids() and gone not in ids(db, "images")
        assert query(db, f"SELECT {COLUMNS} FROM images WHERE id = ?", [renamed]) == [expected(fake, renamed)]
        assert query(db, "SELECT name FROM images WHERE id = ?", [renamed]) == [("spring-banner.png",)]
        runs = query(db, "SELECT command, status FROM sync_runs ORDER BY id")
        assert runs == [("sync-images", "ok")] * 3


def test_sync_images_without_the_scope_exits_4_naming_it(tmp_path):
    with FakeKlaviyo(n_events=0, now=NOW, scopes=ALL_SCOPES - {"images:read"}) as fake:
        run = run_cli(["sync-images"], cli_env(fake, tmp_path / "k.db"))
    assert run.returncode == 4, run.describe()
    assert run.stderr.startswith("klaviyo-sync: error: sync-images: permission denied: the API key lacks the "
                                 "images:read scope")
    assert len(run.stderr.strip().splitlines()) == 1


def test_the_fake_images_endpoint_is_as_strict_as_the_spec():
    """The shared list endpoint (fake/listing.py) as GET /api/images uses it."""
    import requests

    from klaviyo_sync.fake import FAKE_API_KEY

    headers = {"Authorization": f"Klaviyo-API-Key {FAKE_API_KEY}", "revision": "2026-07-15",
               "Accept": "application/vnd.api+json"}
    with FakeKlaviyo(n_events=0, now=NOW, n_images=30) as fake:
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
        assert {d["id"] for d in first["data"] + rest["data"]} == fake.image_ids()
        hidden = get(**{"filter": "equals(hidden,true)", "fields[image]": "name"}).json()["data"]
        assert {d["id"] for d in hidden} == {i for i in fake.image_ids() if fake.image(i)["hidden"]}
        assert all(set(d["attributes"]) == {"name"} for d in hidden)
        png = get(**{"filter": "ends-with(name,'.png')"}).json()["data"]
        assert {d["id"] for d in png} == {i for i in fake.image_ids() if fake.image(i)["name"].endswith(".png")}
