"""datasette-metadata's canned queries and dashboard: written for the views a database has, and
rendered by Datasette in a real browser (Debian's Chromium, driven by Selenium) with the demo's
numbers. The browser test skips, saying what is missing, where Datasette, the dashboards plugin,
Selenium or Chromium are not installed (`.ci/run` installs them)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from sqlite_utils import Database

from klaviyo_sync import db as store
from klaviyo_sync.describe import datasette_metadata

from .e2e_helpers import base_env, run_cli

# Which canned queries each analytic view brings (revenue_by_day needs only events and metrics).
BY_VIEW = {"attributed_conversions": {"attribution_by_campaign", "attribution_by_flow"},
           "cohort_retention": {"cohorts"}, "message_deliverability": {"deliverability"},
           "customer_summary": {"customers"}}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def expected_queries(database) -> set[str]:
    views = set(database.view_names())
    return {"revenue_by_day"} | {q for view, qs in BY_VIEW.items() if view in views for q in qs}


def test_every_database_gets_revenue_by_day_and_the_charts_of_the_views_it_has(tmp_path):
    database = store.open_db(tmp_path / "k.db")
    meta = datasette_metadata(database, "k")
    queries = meta["databases"]["k"]["queries"]
    assert set(queries) == expected_queries(database)
    assert "Placed Order" in queries["revenue_by_day"]["sql"]
    dash = meta["plugins"]["datasette-dashboards"]["klaviyo"]
    assert dash["charts"]["revenue-by-day"]["db"] == "k" and dash["layout"][0] == ["revenue-by-day"] * 2
    for sql in (q["sql"] for q in queries.values()):
        database.execute(sql).fetchall()  # each runs on the schema


def _analytic_toys(database) -> None:
    """Stand-ins with the columns the analytics views are specified to have, for views this
    database does not have yet."""
    toys = {
        "attributed_conversions": "SELECT id AS event_id, profile_id, metric_id, datetime, value, "
                                  "'C1' AS campaign_id, NULL AS flow_id FROM events",
        "cohort_retention": "SELECT '2026-11' AS cohort, 0 AS period, 1.0 AS retention",
        "message_deliverability": "SELECT 'M1' AS message_id, 10 AS recipients, 9 AS delivered",
        "customer_summary": "SELECT id AS profile_id, email FROM profiles",
    }
    for name, sql in toys.items():
        if name not in database.view_names():
            database.create_view(name, sql)


def test_the_analytics_views_light_up_their_charts(tmp_path):
    database = store.open_db(tmp_path / "k.db")
    _analytic_toys(database)
    meta = datasette_metadata(database, "k")
    queries = meta["databases"]["k"]["queries"]
    assert set(queries) == {"revenue_by_day", "attribution_by_campaign", "attribution_by_flow", "cohorts",
                            "deliverability", "customers"}
    for sql in (q["sql"] for q in queries.values()):
        database.execute(sql).fetchall()
    dash = meta["plugins"]["datasette-dashboards"]["klaviyo"]
    # The dashboard: revenue across the top, the rest two by two; customers is a query only.
    assert dash["layout"] == [["revenue-by-day", "revenue-by-day"],
                              ["attribution-by-campaign", "attribution-by-flow"], ["cohorts", "deliverability"]]
    assert set(dash["charts"]) == {"revenue-by-day", "attribution-by-campaign", "attribution-by-flow", "cohorts",
                                   "deliverability"}
    assert {c["library"] for c in dash["charts"].values()} == {"vega-lite", "table"}


def test_a_view_without_the_columns_a_chart_reads_gets_no_chart(tmp_path):
    database = Database(tmp_path / "bare.db")
    database["metrics"].insert({"id": "M", "name": "Placed Order"})
    database["events"].insert({"id": "E", "metric_id": "M", "datetime": "2026-11-01T00:00:00Z", "value": 1.0})
    database["campaigns"].insert({"id": "C", "name": "c", "send_time": "2026-10-30T09:00:00Z"})
    database.create_view("attributed_conversions", "SELECT id AS event_id, value, 'C' AS campaign_id FROM events")
    meta = datasette_metadata(database, "bare")
    # No flows table and no flow_id column: attribution by flow is left out, by campaign is not.
    assert set(meta["databases"]["bare"]["queries"]) == {"revenue_by_day", "attribution_by_campaign"}
    assert database.execute(meta["databases"]["bare"]["queries"]["attribution_by_campaign"]["sql"]).fetchall() \
        == [("c (2026-10-30)", 1, 1.0)]


# -- in a real browser --------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_missing() -> list[str]:
    missing = [f"pip package {m}" for m in ("datasette", "datasette_dashboards", "selenium")
               if importlib.util.find_spec(m) is None]
    missing += [f"{p} (apt-get install chromium chromium-driver)" for p in (CHROMIUM, CHROMEDRIVER)
                if not Path(p).exists()]
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture
def datasette_on_demo(tmp_path):
    """`klaviyo-sync demo`, its metadata, and Datasette serving both on 127.0.0.1."""
    db = tmp_path / "demo.db"
    env = base_env()
    demo = run_cli(["demo", "--db", db, "--events", "3000"], env, timeout=180)
    assert demo.returncode == 0, demo.describe()
    meta = tmp_path / "metadata.json"
    written = run_cli(["datasette-metadata", "--db", db, "-o", meta], env)
    assert written.returncode == 0, written.describe()
    port = _free_port()
    log = open(tmp_path / "datasette.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "datasette", "serve", str(db), "-m", str(meta),
                             "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get(f"{base}/-/versions.json")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "datasette.log").read_text()
                assert time.monotonic() < deadline, "Datasette did not start"
                time.sleep(0.2)
        yield base, db, json.loads(meta.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="klaviyo-sync-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for(driver, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        assert time.monotonic() < deadline, f"the page never had: {script}"
        time.sleep(0.2)


@pytest.mark.skipif(bool(_browser_missing()), reason=f"needs {', '.join(_browser_missing())}")
def test_the_dashboard_renders_the_demo_numbers_in_chromium(datasette_on_demo, browser):
    base, db, meta = datasette_on_demo
    charts = meta["plugins"]["datasette-dashboards"]["klaviyo"]["charts"]
    browser.get(f"{base}/-/dashboards/klaviyo")
    assert browser.title.startswith("Klaviyo")
    # Every chart of the metadata has its card (the analytics views' charts where they exist).
    cards = _wait_for(browser, "return Array.from(document.querySelectorAll('.dashboard-card')).map(e => e.id)")
    assert sorted(cards) == sorted(f"card-{slug}" for slug in charts)

    # Revenue by day: one bar per day with orders, its label carrying the day's numbers, its
    # height proportional to the revenue, all as the database says.
    conn = sqlite3.connect(db)
    truth = {day: (orders, revenue) for day, orders, revenue in conn.execute(
        "SELECT substr(e.datetime, 1, 10), count(*), round(sum(e.value), 2) FROM events e "
        "JOIN metrics m ON m.id = e.metric_id WHERE m.name = 'Placed Order' GROUP BY 1")}
    assert len(truth) >= 7
    bars = _wait_for(browser, """
        const bars = document.querySelectorAll('#chart-revenue-by-day svg [aria-roledescription="bar"]');
        return Array.from(bars).map(b => [b.getAttribute('aria-label'), b.getBoundingClientRect().height]);""")
    seen = {}
    for label, height in bars:
        m = re.search(r"day: (\S+); orders: (\d+); revenue: ([\d,.]+)", label)
        assert m, label
        seen[m[1]] = (int(m[2]), m[3], height)
    assert {d: (n, v) for d, (n, v, _) in seen.items()} == {d: (n, f"{v:,.2f}") for d, (n, v) in truth.items()}
    tallest = max(h for _, _, h in seen.values())
    top = max(v for _, v in truth.values())
    assert tallest > 100
    for day, (_, revenue) in truth.items():
        assert seen[day][2] == pytest.approx(tallest * revenue / top, abs=1.5)

    # Attribution bars, where the view exists: each campaign's and flow's revenue as the view sums it.
    for slug, key, table, label in (
            ("attribution-by-campaign", "campaign_id", "campaigns",
             "t.name || coalesce(' (' || substr(t.send_time, 1, 10) || ')', '')"),  # a draft has no send time
            ("attribution-by-flow", "flow_id", "flows", "t.name")):
        if slug not in charts:
            continue
        want = {name: f"{v:,.2f}" for name, v in conn.execute(
            f"SELECT coalesce({label}, a.{key}), round(sum(a.value), 2) FROM attributed_conversions a "
            f"LEFT JOIN {table} t ON t.id = a.{key} WHERE a.{key} IS NOT NULL GROUP BY a.{key} "
            "ORDER BY 2 DESC LIMIT 25")}
        labels = _wait_for(browser, f"""return Array.from(document.querySelectorAll(
            '#chart-{slug} svg [aria-roledescription="bar"]')).map(b => b.getAttribute('aria-label'));""")
        got = dict(re.search(r"; [a-z]+: (.*); conversions: \d+; revenue: ([\d,.]+)$", x).groups() for x in labels)
        assert got == want, (got, want)
    # Tables (cohorts, deliverability), where the views exist: the view's rows.
    for slug, view, limit in (("cohorts", "cohort_retention", None), ("deliverability", "message_deliverability", 200)):
        if slug not in charts:
            continue
        n = min(conn.execute(f"SELECT count(*) FROM {view}").fetchone()[0], limit or 10**9)
        if n:
            rows = _wait_for(browser, f"return document.querySelectorAll('#chart-{slug} tbody tr').length")
            assert rows == n
    conn.close()

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(900, height))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
