"""sync-catalogs against the fake API: items, variants (with their item) and categories exact against the
fake's truth, a second run writing nothing, removals, the 403 policy, and an account without an
API-built catalog (a Shopify one is not served) said so."""

import json
import math

from klaviyo_sync.fake import ALL_SCOPES, FakeKlaviyo

from .e2e_helpers import cli_env, query, run_cli

COMMON = "price, url, image_full_url, image_thumbnail_url, images, custom_metadata, published, created, updated"
NOTE = ("found no catalog: the API returns only catalogs built through the API, "
        "not one Klaviyo syncs from Shopify or another integration")


def tail(a):
    return (a["price"], a["url"], a["image_full_url"], a["image_thumbnail_url"], json.dumps(a["images"]),
            json.dumps(a["custom_metadata"], separators=(",", ":")), int(a["published"]),
            a["created"].replace("+00:00", "Z"), a["updated"].replace("+00:00", "Z"))


def check(db, fake):
    items, variants, categories = fake.catalog_items, fake.catalog_variants, fake.catalog_categories
    assert query(db, f"SELECT id, external_id, title, description, {COMMON} FROM catalog_items ORDER BY id") == [
        (i, a["external_id"], a["title"], a["description"], *tail(a)) for i in sorted(items.ids())
        for a in [items.get(i)]]
    assert query(db, f"SELECT id, item_id, external_id, title, description, sku, inventory_policy, inventory_quantity, "
                     f"{COMMON} FROM catalog_variants ORDER BY id") == [
        (i, a["item_id"], a["external_id"], a["title"], a["description"], a["sku"], a["inventory_policy"],
         a["inventory_quantity"], *tail(a)) for i in sorted(variants.ids()) for a in [variants.get(i)]]
    assert query(db, "SELECT id, external_id, name, updated FROM catalog_categories ORDER BY id") == [
        (i, a["external_id"], a["name"], a["updated"].replace("+00:00", "Z")) for i in sorted(categories.ids())
        for a in [categories.get(i)]]


def test_sync_catalogs(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, n_catalog_items=140) as fake:
        fake.enforce_limits = True
        env = cli_env(fake, db)
        first = run_cli(["sync-catalogs", "--format", "json"], env)
        assert first.returncode == 0, first.describe()
        check(db, fake)
        assert len(fake.catalog_variants.ids()) > len(fake.catalog_items.ids()) == 140
        # Items with their variants: 2 pages of 100; categories: 1 page. No request per item.
        assert first.summary["pages"] == first.summary["requests"] == math.ceil(140 / 100) + 1
        assert "note" not in first.summary
        again = run_cli(["sync-catalogs", "--format", "json"], env)
        assert again.summary["rows"] == {"catalog_items": 0, "catalog_variants": 0, "catalog_categories": 0}
        item = sorted(fake.catalog_items.ids())[0]
        fake.catalog_items.update(item, title="Ocean Blue Shirt")
        fake.catalog_variants.remove(sorted(fake.catalog_variants.ids())[-1])
        fake.catalog_categories.remove(sorted(fake.catalog_categories.ids())[0])
        third = run_cli(["sync-catalogs", "--format", "json"], env)
        assert third.returncode == 0, third.describe()
        check(db, fake)
        assert third.summary["rows"] == {"catalog_items": 1, "catalog_variants": 0, "catalog_categories": 0}
        assert [third.summary[f"catalog_{t}_removed"] for t in ("items", "variants", "categories")] == [0, 1, 1]

        fake.scopes = set(ALL_SCOPES - {"catalogs:read"})
        alone = run_cli(["sync-catalogs"], env)
        assert alone.returncode == 4 and alone.stderr.startswith(
            "klaviyo-sync: error: sync-catalogs: permission denied: the API key lacks the catalogs:read scope")
        step = run_cli(["sync-all", "--only", "catalogs"], env)
        assert step.returncode == 0 and "skipped: sync-catalogs: the API key lacks the catalogs:read scope" in step.stderr
        check(db, fake)


def test_an_account_without_an_api_built_catalog_is_said_so(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, n_catalog_items=0) as fake:
        run = run_cli(["sync-catalogs", "--format", "json"], cli_env(fake, db))
        assert run.returncode == 0, run.describe()
        assert run.summary["note"] == NOTE and run.summary["pages"] == 2
        text = run_cli(["sync-catalogs", "--format", "text"], cli_env(fake, db))
        assert text.returncode == 0 and text.stdout.rstrip().endswith(NOTE)
