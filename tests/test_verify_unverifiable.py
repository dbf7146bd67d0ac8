"""Issue 18: metrics Klaviyo refuses to aggregate (custom ones, a 400) are remembered with when,
not asked again for 7 days (or until --retry-unverifiable), and the output says when they are."""

from __future__ import annotations

import json

import pytest

from klaviyo_sync.fake import FAKE_API_KEY, FakeKlaviyo

from .e2e_helpers import connect, past_days, query

AGGREGATES = "/api/metric-aggregates"


@pytest.fixture
def days():
    """The fake account's clock, read when the test starts: 3 days of events ending 5 days back."""
    return past_days(3)


@pytest.fixture
def fake(days):
    with FakeKlaviyo(now=days.now, n_events=600, span_hours=24 * 3, n_profiles=40, seed=3) as f:
        yield f


@pytest.fixture
def run(cli, fake, days):
    def invoke(*args):
        return cli(*map(str, args), env={"KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": fake.base_url})
    res = invoke("sync-events", "--since", days.start.isoformat(), "--until", days.now.isoformat())
    assert res.exit_code == 0, res.output
    return invoke


def asked(fake, since: int) -> list[str]:
    """The metric ids of the metric-aggregates requests sent since request ``since``."""
    return [json.loads(r["body"])["data"]["attributes"]["metric_id"]
            for r in fake.request_log()[since:] if r["path"] == AGGREGATES]


def verify(run, fake, days, *args):
    n0 = len(fake.request_log())
    res = run("verify", "--range", days.range, "--all", "--format", "json", *args)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    return res, rows, asked(fake, n0)


def test_refused_metrics_are_not_asked_again_for_7_days_or_until_retried(run, fake, db_path, days):
    custom = fake.unaggregatable_metric_ids()
    every = fake.metric_ids()
    assert custom and every - custom  # the fake account has both kinds

    res, rows, first = verify(run, fake, days)
    assert sorted(first) == sorted(every)  # one request per metric (3 days fit in one window)
    assert {r["metric_id"] for r in rows if r["status"] == "unverifiable"} == custom
    remembered = dict(query(db_path, "SELECT metric_id, refused_at FROM unverifiable_metrics"))
    assert set(remembered) == custom
    assert "not asked again" not in res.stderr and "asked again" not in res.stderr

    # the second run sends no request for them, and says so
    res, rows2, second = verify(run, fake, days)
    assert sorted(second) == sorted(every - custom)
    assert rows2 == rows  # the same answer: still reported unverifiable
    line = next(ln for ln in res.stderr.splitlines() if "not asked again" in ln)
    assert line.startswith(f"klaviyo-sync: verify: not asked again ({len(custom)}, refused within the last 7 days; "
                           "asked again from ")
    assert line.endswith("or with --retry-unverifiable): " + ", ".join(sorted(
        r["metric"] for r in rows if r["metric_id"] in custom and r["day"] == rows[0]["day"])))
    assert dict(query(db_path, "SELECT metric_id, refused_at FROM unverifiable_metrics")) == remembered

    # one refused 8 days ago is due: asked again (alone), still refused, remembered anew
    due = sorted(custom)[0]
    con = connect(db_path)
    with con:
        con.execute("UPDATE unverifiable_metrics SET refused_at = '2000-01-01T00:00:00Z' WHERE metric_id = ?", [due])
    con.close()
    res, _, third = verify(run, fake, days)
    assert sorted(third) == sorted(every - custom | {due})
    assert "klaviyo-sync: verify: asked again (1, refused before, last on 2000-01-01): 1 still refused, 0 now checked" \
        in res.stderr
    assert query(db_path, "SELECT refused_at > '2000-01-01', first_refused_at FROM unverifiable_metrics "
                          "WHERE metric_id = ?", [due]) == [(1, remembered[due])]

    # --retry-unverifiable asks about all of them now
    res, _, fourth = verify(run, fake, days, "--retry-unverifiable")
    assert sorted(fourth) == sorted(every)
    assert f"klaviyo-sync: verify: asked again ({len(custom)}, refused before" in res.stderr
    assert "not asked again" not in res.stderr


def test_a_remembered_metric_that_klaviyo_now_aggregates_is_forgotten(run, fake, db_path, days):
    verify(run, fake, days)
    aggregatable = sorted(fake.metric_ids() - fake.unaggregatable_metric_ids())[0]
    con = connect(db_path)
    with con:
        con.execute("INSERT INTO unverifiable_metrics VALUES (?, 'x', 'refused', '2000-01-01T00:00:00Z', "
                    "'2000-01-01T00:00:00Z')", [aggregatable])
    con.close()
    res, rows, _ = verify(run, fake, days)
    assert "asked again (1, refused before, last on 2000-01-01): 0 still refused, 1 now checked" in res.stderr
    assert query(db_path, "SELECT count(*) FROM unverifiable_metrics WHERE metric_id = ?", [aggregatable]) == [(0,)]
    assert {r["status"] for r in rows if r["metric_id"] == aggregatable} == {"ok"}
