"""Every stream is declared once (klaviyo_sync/streams/), and nothing about it is silent: these
checks fail when a declared stream lacks a rate tier, a column description, a fake route, a
command or a README section; and sync-all treats optional steps as the README says."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import pytest
from typer.main import get_command

from klaviyo_sync import cli, commands
from klaviyo_sync import db as store
from klaviyo_sync.cli import app
from klaviyo_sync.describe import TABLES, column_description
from klaviyo_sync.fake import ALL_SCOPES, FakeKlaviyo
from klaviyo_sync.ratelimit import endpoint_key
from klaviyo_sync.streams import declarations
from klaviyo_sync.streams.engine import Table

from .e2e_helpers import cli_env, ids, query, run_cli

README = (Path(__file__).parent.parent / "README.md").read_text()
DECLARED = declarations()
CORE = {"sync-metrics", "sync-events", "sync-profiles", "sync-lists", "sync-segments", "sync-campaigns",
        "sync-flows", "sync-templates", "sync-flow-stats"}


def by_command(decl):
    return decl.command


def test_the_registry_holds_the_core_streams_and_every_other_is_optional():
    commands = {d.command for d in DECLARED}
    assert CORE <= commands and "sync-images" in commands
    assert {d.command for d in DECLARED if d.core} == CORE


@pytest.mark.parametrize("decl", DECLARED, ids=by_command)
def test_every_declared_path_has_a_rate_tier(decl):
    for path in decl.paths:
        assert endpoint_key(path.replace("{id}", "X1y2Z3")) != "other", f"{decl.command}: no rate tier for {path}"
    assert endpoint_key(decl.paths[0]) == decl.bucket


@pytest.mark.parametrize("decl", DECLARED, ids=by_command)
def test_every_declared_table_and_column_is_described_and_created_as_declared(decl, tmp_path):
    database = store.open_db(tmp_path / "k.db")
    try:
        for spec in decl.tables:
            assert TABLES.get(spec.name) == spec.description
            for column in spec.columns:
                assert column.description, f"{spec.name}.{column.name} has no description"
                assert column_description(spec.name, column.name) == column.description
            created = [(c.name, c.type) for c in database[spec.name].columns]
            assert created == [(c.name, c.type) for c in spec.columns], f"{spec.name}: a migration is missing"
            assert database[spec.name].pks == list(spec.key)
    finally:
        database.close()


def test_every_table_of_a_fresh_database_is_declared_by_its_stream_with_every_column_described(tmp_path):
    """A table is described once, by the declaration of the stream that writes it; only the bookkeeping
    tables (runs, marks, verify's results) are described in describe.py, with the views."""
    owned = {spec.name: spec for decl in DECLARED for spec in decl.tables}
    bookkeeping = {"sync_runs", "sync_state", "verify_results", "unverifiable_metrics"}
    database = store.open_db(tmp_path / "k.db")
    try:
        tables = [t for t in database.table_names() if not t.startswith("_")]
        assert {"metrics", "events", "profiles", "lists", "segment_members", "campaign_stats", "flows",
                "templates", "flow_stats_daily", "event_attributions", "images"} <= set(owned)
        for name in tables:
            if name in bookkeeping:
                continue
            assert name in owned, f"{name}: no stream declares it (declare its TableSpec in klaviyo_sync/streams/)"
            described = owned[name].descriptions()
            for column in database[name].columns:
                assert described.get(column.name), f"{name}.{column.name} has no description in its declaration"
    finally:
        database.close()


@pytest.mark.parametrize("decl", DECLARED, ids=by_command)
def test_every_declared_path_has_a_fake_route_needing_the_declared_scope(decl):
    for path in decl.paths:
        routes = [r for r in FakeKlaviyo.ROUTES if r.method in ("GET", "POST")
                  and re.sub(r"\{\w+\}", "{}", r.pattern) == re.sub(r"\{\w+\}", "{}", path)]
        assert routes, f"{decl.command}: the fake has no route for {path}"
        assert any(decl.scope in r.scopes for r in routes), f"{decl.command}: {path} does not need {decl.scope}"


@pytest.mark.parametrize("decl", DECLARED, ids=by_command)
def test_every_declared_stream_has_its_command_and_a_readme_section(decl):
    assert decl.command in get_command(app).commands
    headings = [line for line in README.splitlines() if line.startswith("### ")]
    assert any(f"`{decl.command}`" in h for h in headings), f"README has no ### `{decl.command}` section"


def test_every_command_module_is_registered_without_an_import_in_cli():
    """cli.register() imports every module of klaviyo_sync/commands/: a new one (a stream's own
    command, like sync-coupons --codes) cannot be forgotten, and each command it defines exists."""
    modules = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    assert sorted(cli.register()) == modules and {"coupons", "forms", "flows"} <= set(modules)
    registered = get_command(app).commands
    for name in modules:
        source = (Path(commands.__file__).parent / f"{name}.py").read_text()
        for command in re.findall(r'app\.command\("([^"]+)"\)', source):
            assert command in registered, f"commands/{name}.py: {command} is not registered"
    assert {"sync-coupons", "sync-forms", "forms", "sync-account", "sync-segment-growth"} <= set(registered)


def test_upsert_sql_quotes_identifiers_so_keywords_can_be_columns(tmp_path):
    database = store.open_db(tmp_path / "k.db")
    try:
        database.execute('CREATE TABLE "keyword_groups" ("id" TEXT PRIMARY KEY, "name" TEXT, "exclusive" INTEGER, '
                         '"default" INTEGER, "order" TEXT)')
        table = Table("keyword_groups", ("id", "name", "exclusive", "default", "order"), newer="order")
        with database.atomic():
            assert table.write(database, [("g1", "Season", 1, 0, "a"), ("g2", "Theme", 0, 1, "a")]) == 2
        with database.atomic():
            assert table.write(database, [("g1", "Season", 1, 0, "a")]) == 0
            assert table.write(database, [("g2", "Theme", 1, 1, "b")]) == 1
        assert query(tmp_path / "k.db", 'SELECT id, name, "exclusive", "default", "order" FROM keyword_groups '
                     "ORDER BY id") == [("g1", "Season", 1, 0, "a"), ("g2", "Theme", 1, 1, "b")]
    finally:
        database.close()


def test_sync_all_skips_an_optional_step_without_its_scope_and_exits_0(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=200, now=now, scopes=ALL_SCOPES - {"images:read"}) as fake:
        # Four report requests at Klaviyo's 2 a minute: the run waits about a minute for them.
        run = run_cli(["sync-all", "--format", "json"], cli_env(fake, db), timeout=300)
        assert run.returncode == 0, run.describe()
        assert "klaviyo-sync: skipped: sync-images: the API key lacks the images:read scope" in run.stderr
        summaries = [line for line in run.stdout.splitlines() if line.strip()]
        images = next(line for line in summaries if '"sync-images"' in line)
        assert '"status":"skipped"' in images.replace(" ", "") and "images:read" in images
        runs = dict(query(db, "SELECT command, status FROM sync_runs"))
        assert runs["sync-images"] == "skipped" and runs["sync-metrics"] == runs["sync-flows"] == "ok"
        assert ids(db, "metrics") == fake.metric_ids()
        status = run_cli(["status", "--format", "json"], cli_env(fake, db))
        assert '"status": "skipped"' in status.stdout or '"status":"skipped"' in status.stdout
        text = run_cli(["sync-all", "--only", "images", "--format", "text"], cli_env(fake, db))
        assert text.returncode == 0 and text.stdout.strip() == ("sync-images skipped: the API key lacks the "
                                                                "images:read scope")


def test_sync_all_fails_with_4_when_a_core_step_lacks_its_scope(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, now=now, scopes=ALL_SCOPES - {"templates:read"}) as fake:
        run = run_cli(["sync-all", "--only", "sync-metrics,sync-templates,images"], cli_env(fake, db))
        assert run.returncode == 4, run.describe()
        assert "sync-templates: permission denied: the API key lacks the templates:read scope" in run.stderr
        assert dict(query(db, "SELECT command, status FROM sync_runs")) == {
            "sync-metrics": "ok", "sync-templates": "failed", "sync-images": "ok"}


def test_sync_all_only_and_skip_choose_steps_and_refuse_unknown_names(tmp_path, now):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, now=now, n_images=5) as fake:
        env = cli_env(fake, db)
        only = run_cli(["sync-all", "--only", "sync-metrics,images"], env)
        assert only.returncode == 0, only.describe()
        assert [r[0] for r in query(db, "SELECT command FROM sync_runs ORDER BY id")] == ["sync-metrics", "sync-images"]
        assert ids(db, "images") == fake.images.ids()
        skip = run_cli(["sync-all", "--skip", "events,campaigns,flows,flow-stats,profiles,lists,segments,templates,"
                                              "account,forms,segment-growth"], env)
        assert skip.returncode == 0, skip.describe()
        second = [r[0] for r in query(db, "SELECT command FROM sync_runs ORDER BY id")][2:]
        assert second[:2] == ["sync-metrics", "sync-images"] and not set(second) & CORE - {"sync-metrics"}
        for args in (["--only", "sync-nothing"], ["--skip", "metrics,colours"], ["--only", ","]):
            bad = run_cli(["sync-all", *args], env)
            assert bad.returncode == 2 and bad.stderr.startswith("klaviyo-sync: error: --")
            assert len(bad.stderr.strip().splitlines()) == 1
