"""Answers people can see on a terminal: `revenue --by day --format chart` and the events-per-day
sparkline of `status`, drawn through the CLI on a pseudo-terminal, with the numbers from the
fake's ground truth."""

from __future__ import annotations

import io
import json
import math
import re
from datetime import date, datetime, timedelta, timezone

import pytest

from klaviyo_sync import output
from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, fake_now, run_cli
from .test_operator import run_on_terminal

UTC = timezone.utc
SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉"


@pytest.fixture(scope="module")
def now():
    """The fake account's clock, read once for the module's fake (tests of the module share it)."""
    return fake_now()


@pytest.fixture(scope="module")
def synced(tmp_path_factory, now):
    """Five days of events, all of them synced, from the first whole day on."""
    db = tmp_path_factory.mktemp("charts") / "k.db"
    with FakeKlaviyo(seed=11, now=now, n_events=3_000, span_hours=24 * 5, n_profiles=120) as fake:
        env = cli_env(fake, db)
        since = (now - timedelta(days=5)).strftime("%Y-%m-%dT00:00:00Z")
        run = run_cli(["sync-events", "--since", since], env)
        assert run.returncode == 0, run.describe()
        yield fake, env


def day_range(day: str, now: datetime) -> tuple[datetime, datetime]:
    d = date.fromisoformat(day)
    lo = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return lo, min(lo + timedelta(days=1), now + timedelta(seconds=1))


def true_events(fake, day: str, now: datetime) -> int:
    lo, hi = day_range(day, now)
    return len(fake.event_ids(lo, hi)) if lo <= now else 0


def true_revenue(fake, day: str, now: datetime) -> tuple[int, float]:
    lo, hi = day_range(day, now)
    if lo > now:
        return 0, 0.0
    ids = fake.event_ids(lo, hi, [fake.metric_id("Placed Order")])
    values = [fake.event(fake.event_index(e))["attributes"]["event_properties"].get("$value") or 0 for e in ids]
    return len(ids), round(sum(values), 2)


def expected_spark(counts: list[int]) -> str:
    """The README's rule: ▁ to █ for 0/7 to 7/7 of the busiest day (rounded half up), · for none."""
    top = max(counts)
    return "".join("·" if c == 0 else SPARKS[math.floor(7 * c / top + 0.5)] for c in counts)


def bar_eighths(bar: str) -> int:
    return 8 * bar.count("█") + sum(EIGHTHS.index(ch) for ch in bar if ch in EIGHTHS[1:])


def test_sparkline_levels():
    assert output.sparkline([0, 1, 8, 4, None, 7, 9, 16]) == "·▁▅▃·▄▅█"
    assert output.sparkline([0, 0]) == "··" and output.sparkline([]) == ""
    assert output.sparkline([3]) == "█"


def test_chart_bars_are_proportional_and_rows_without_a_value_have_none():
    rows = [{"day": "a", "v": 10.0}, {"day": "bb", "v": 40.0}, {"day": "c", "v": None}, {"day": "d", "v": 5.0}]
    buf = io.StringIO()
    output.write_rows(rows, "chart", [("day", "Day", "text"), ("v", "Value", "money")], title="T", stream=buf,
                      chart=("day", "v"))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "T: Value"
    # Piped: 80 columns; label 2 + space, value 5, so the bar has 80 - 2 - 5 - 2 = 71 characters.
    assert [len(x) for x in lines[1:]] == [80, 80, 80, 80]
    assert lines[2] == "bb " + "█" * 71 + " 40.00"
    assert lines[1] == "a  " + "█" * 17 + "▊" + " " * 54 + "10.00"  # 71 / 4 = 17.75
    assert lines[3].rstrip() == "c"
    assert lines[4] == "d  " + "█" * 8 + "▉" + " " * 63 + " 5.00"  # 71 / 8 = 8.875
    with pytest.raises(ValueError):
        output.write_rows(rows, "chart", [("v", "Value", "money")], stream=io.StringIO())


def test_status_json_counts_events_per_day_for_two_weeks(synced, now):
    fake, env = synced
    run = run_cli(["status", "--format", "json"], env)
    assert run.returncode == 0, run.describe()
    per_day = json.loads(run.stdout)["events_per_day"]
    days = [r["day"] for r in per_day]
    last = date.fromisoformat(days[-1])
    assert last in (now.date(), datetime.now(UTC).date())  # today, whenever the test runs
    assert days == [(last - timedelta(days=13 - i)).isoformat() for i in range(14)]
    assert [r["events"] for r in per_day] == [true_events(fake, d, now) for d in days]
    assert sum(r["events"] for r in per_day) == len(fake.event_ids(now - timedelta(days=6), now + timedelta(seconds=1)))


def test_status_on_a_terminal_draws_the_sparkline(synced, now):
    fake, env = synced
    screen = run_on_terminal(["status"], env)
    line = next(x for x in screen.splitlines() if x.startswith("Events per day "))
    m = re.fullmatch(r"Events per day (\S+) \.\. (\S+) \(UTC\): (\S{14})  busiest ([\d,]+), ([\d,]+) in all\s*", line)
    assert m, line
    first, last = date.fromisoformat(m[1]), date.fromisoformat(m[2])
    assert last - first == timedelta(days=13)
    counts = [true_events(fake, (first + timedelta(days=i)).isoformat(), now) for i in range(14)]
    assert m[3] == expected_spark(counts)
    assert m[3].startswith("·······") and "█" in m[3]  # 5 days of events in a 14-day window
    assert (m[4], m[5]) == (f"{max(counts):,}", f"{sum(counts):,}")


def test_revenue_by_day_as_a_chart_on_a_terminal(synced, now):
    fake, env = synced
    screen = run_on_terminal(["revenue", "--range", "7d", "--by", "day", "--format", "chart"], env)
    assert "\x1b[36m█" in screen  # bars in colour on a terminal
    lines = re.sub(r"\x1b\[[0-9;]*m", "", screen).splitlines()
    title = next(i for i, x in enumerate(lines) if x.startswith("Revenue "))
    assert lines[title].endswith("(UTC days): Revenue (events)")
    bars = {}
    for x in lines[title + 1:]:
        m = re.fullmatch(r"(\d{4}-\d\d-\d\d) ([█▏▎▍▌▋▊▉]*) +([\d,.]*)", x.rstrip())
        if not m:
            break
        bars[m[1]] = (bar_eighths(m[2]), m[3])
    truth = {d: true_revenue(fake, d, now) for d in bars}
    with_orders = {d for d, (n, _) in truth.items() if n}
    assert len(with_orders) >= 5
    # Every day of the range that has orders has its bar, and the value shown is the truth.
    assert set(bars) >= with_orders
    assert {d: v for d, (_, v) in bars.items() if v} == {d: f"{truth[d][1]:,.2f}" for d in with_orders}
    top = max(truth[d][1] for d in with_orders)
    width = max(e for e, _ in bars.values()) / 8
    assert width == int(width) and width >= 40  # the busiest day fills the bar column
    for d in with_orders:
        assert bars[d][0] == round(8 * width * truth[d][1] / top)
    # Piped, the same chart (80 columns), and the same one-line error everywhere without --by day.
    piped = run_cli(["revenue", "--range", "7d", "--by", "day", "--format", "chart"], env)
    assert piped.returncode == 0 and all(len(x) <= 80 for x in piped.stdout.splitlines())
    assert {d: f"{truth[d][1]:,.2f}" for d in with_orders}.items() <= {
        x[:10]: x.split()[-1] for x in piped.stdout.splitlines()[1:] if x.split()[-1][0].isdigit()}.items()
    bad = run_cli(["revenue", "--range", "7d", "--format", "chart"], env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "klaviyo-sync: error: --format chart draws revenue over time: add --by day"]
    other = run_cli(["flows", "--format", "chart"], env)
    assert other.returncode == 2 and "--format" in other.stderr and len(other.stderr.strip().splitlines()) == 1
