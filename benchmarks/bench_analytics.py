#!/usr/bin/env python
"""Every analytics command on a 5,000,000-event database: wall time (process start to exit) and
peak RSS of each, against the targets < 2 s and < 150 MB; and what the indexes they use cost.

    python benchmarks/bench_analytics.py                    # 5M events, 3 timed runs per command
    python benchmarks/bench_analytics.py --events 500000 --repeat 1
    python benchmarks/bench_analytics.py --index-costs      # also time building each event index

The database is built once with direct SQL in the tool's own schema (klaviyo_sync.db.open_db)
and cached under benchmarks/.cache/ (rebuilt when the schema changes, or with --rebuild). Its
shape: a year of events (the fake's metric mix: ~5.6 % Placed Order with a $value), one profile
per 20 events, orders concentrated on repeat buyers (a few customers order often, most once),
Klaviyo attributions for ~35 % of the orders (half to campaigns, half to flows), a campaign a
day with its message and statistics, 20 flows of 3 messages with a year of daily statistics.
Each command runs once unmeasured (to warm the page cache: this measures the tool, not the
disk), then --repeat times measured; the median is reported. Commands the installed tool does
not have (attribution, conversion-lag before that branch lands) are skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path

from _harness import PYTHON, REPO, code_version, emit_result, remove_db, run_measured, system_busy_s, table
from _synth import bulk_close, bulk_open, cached, insert_profiles, iso, profile_ids, schema_fingerprint

from klaviyo_sync.fake.data import METRIC_CATALOG, M64, b62, mix  # noqa: E402

BUILD_VERSION = 2  # bump when the synthetic data changes
DAY = 86400


def build(path: Path, n_events: int, end: int) -> dict:
    conn, tmp, indexes = bulk_open(path, ("events", "profiles", "event_attributions"))
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    metrics = [(f"SYNm{k:02d}", name, weight) for k, (name, _, _, weight) in enumerate(METRIC_CATALOG)]
    conn.executemany("INSERT INTO metrics (id, name, created, updated) VALUES (?, ?, ?, ?)",
                     [(mid, name, "2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z") for mid, name, _ in metrics])
    order_mid = metrics[0][0]
    assert metrics[0][1] == "Placed Order"
    wheel = [mid for mid, _, w in metrics for _ in range(w)]
    n_profiles = max(1, n_events // 20)
    pids = profile_ids(n_profiles)
    insert_profiles(conn, pids)

    start = end - 365 * DAY
    # A campaign a day (email, sms or push), one message each, with statistics.
    campaigns = []
    for d in range(365):
        cid, mid = f"SYNc{d:04d}", f"SYNcm{d:04d}"
        channel = ("email", "email", "sms", "mobile_push")[d % 4]
        sent = iso(start + d * DAY + 15 * 3600)
        campaigns.append((cid, mid, channel))
        conn.execute("INSERT INTO campaigns (id, name, channel, status, archived, send_time) "
                     "VALUES (?, ?, ?, 'Sent', 0, ?)", [cid, f"Campaign {d}", channel, sent])
        conn.execute("INSERT INTO campaign_messages (id, campaign_id, channel, label, send_time) VALUES (?, ?, ?, ?, ?)",
                     [mid, cid, channel, f"Campaign {d} message", sent])
        h = mix(0xCA0000 + d)
        rec = 20000 + h % 30000
        dl = rec - h % 300
        conn.execute("INSERT INTO campaign_stats (campaign_id, campaign_message_id, send_channel, recipients, "
                     "delivered, opens_unique, clicks_unique, bounced, unsubscribes, spam_complaints, "
                     "conversion_metric_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [cid, mid, "push-notification" if channel == "mobile_push" else channel, rec, dl,
                      0 if channel == "sms" else dl * (10 + h % 30) // 100, dl * (5 + h % 40) // 1000,
                      rec - dl, dl * (h % 8) // 1000, dl * (h % 3) // 10000, order_mid])
    flows = []
    for f in range(20):
        fid = f"SYNf{f:02d}"
        conn.execute("INSERT INTO flows (id, name, status, archived) VALUES (?, ?, 'live', 0)", [fid, f"Flow {f}"])
        for k in range(3):
            fmid = f"SYNfm{f:02d}{k}"
            channel = "sms" if k == 2 and f % 2 else "email"
            flows.append((fid, fmid, channel))
            conn.execute("INSERT INTO flow_messages (id, flow_id, channel, name) VALUES (?, ?, ?, ?)",
                         [fmid, fid, channel, f"Flow {f} message {k}"])
    conn.executemany(
        "INSERT INTO flow_stats_daily (flow_id, flow_message_id, day, send_channel, recipients, delivered, "
        "opens_unique, clicks_unique, bounced, unsubscribes, spam_complaints, conversion_metric_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((fid, fmid, iso(start + d * DAY)[:10], ch, 200 + d % 50, 195 + d % 50, 0 if ch == "sms" else 80,
          6, 5, 1, 0, order_mid) for fid, fmid, ch in flows for d in range(365)))
    conn.executemany("INSERT INTO flow_stats_days (flow_id, day, conversion_metric_id, fetched_at) VALUES (?, ?, ?, ?)",
                     ((f"SYNf{f:02d}", iso(start + d * DAY)[:10], order_mid, iso(end)) for f in range(20)
                      for d in range(365)))

    salt = 0x5EED5EED12345678
    orders = 0
    n_w = len(wheel)

    def rows(lo: int, hi: int, attributions: list):
        nonlocal orders
        for i in range(lo, hi):
            h = mix((salt + i) & M64)
            ts = start + (i * 365 * DAY) // n_events
            mid = wheel[(h >> 8) % n_w]
            eid = b62(h)
            value = None
            if mid == order_mid:
                orders += 1
                # Repeat buyers: a customer's index is skewed to the low end (x cubed).
                x = ((h >> 12) & 0xFFFFFF) / 0x1000000
                profile = pids[int(n_profiles * 0.4 * x ** 3)]
                value = (h >> 20) % 40000 / 100 + 5
                props = (f'{{"$value":{value:.2f},"$event_id":"{1000000 + i}","OrderId":"#{1000000 + i}",'
                         f'"ItemCount":2,"ItemNames":["Classic Tee","Ceramic Mug"],"$currency_code":"USD"}}')
                r = (h >> 40) % 100
                if r < 35:
                    c = campaigns[(ts - start) // DAY]
                    f = flows[(h >> 48) % len(flows)]
                    attributions.append(
                        (f"att{eid}", eid, b62(mix(h)), c[0], c[1], None, None, None) if r < 18 else
                        (f"att{eid}", eid, b62(mix(h)), None, None, f[0], f[1], None))
            else:
                profile = None if h % 17 == 0 else pids[(h >> 12) % n_profiles]
                # A message event names a campaign message of the last 3 days, a flow message,
                # or one not stored, a third each (opens and clicks then start sessions).
                k = (h >> 40) % 3
                msg = (campaigns[max(0, (ts - start) // DAY - (h >> 44) % 3)][1] if k == 0 else
                       flows[(h >> 48) % len(flows)][1] if k == 1 else f"M{(h >> 30) % 100:03d}")
                props = f'{{"Subject":"New arrivals just for you","Campaign Name":"Campaign 7","$message":"{msg}"}}'
            u = f"{h:016x}{mix(h):016x}"
            yield (eid, mid, profile, iso(ts), ts, f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}", value, props)

    chunk = 200_000
    for lo in range(0, n_events, chunk):
        atts: list = []
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         rows(lo, min(n_events, lo + chunk), atts))
        conn.executemany("INSERT INTO event_attributions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", atts)
        done = min(n_events, lo + chunk)
        if done % 1_000_000 == 0 or done == n_events:
            print(f"  built {done:,} events ({time.perf_counter() - t0:.0f} s)", flush=True)
    # Synced with their attributions (sync-events records the windows it fetched them for).
    conn.execute("INSERT INTO sync_state (key, value, updated_at) VALUES ('attributions.covered', ?, ?)",
                 [json.dumps([[iso(start), iso(end)]]), iso(end)])
    conn.execute("COMMIT")
    n_att = conn.execute("SELECT count(*) FROM event_attributions").fetchone()[0]
    bulk_close(conn, tmp, path, indexes)
    return {"events": n_events, "profiles": n_profiles, "orders": orders, "attributions": n_att,

            "end": iso(end), "build_seconds": round(time.perf_counter() - t0, 1)}


def cached_db(n_events: int, rebuild: bool) -> tuple[Path, dict]:
    # Whole days, ending at today's midnight UTC, so absolute ranges below are stable per day.
    # Views are left out of the key: the commands run their rules' SQL, not the views.
    return cached(f"analytics-{n_events}", f"v{BUILD_VERSION}-{schema_fingerprint(BUILD_VERSION, views=False)}",
                  f"{n_events:,} events", lambda p: build(p, n_events, int(time.time()) // DAY * DAY), rebuild)


def commands(db: Path) -> list[list[str]]:
    conn = sqlite3.connect(db)
    try:
        top = conn.execute("SELECT p.email FROM events e JOIN profiles p ON p.id = e.profile_id "
                           "WHERE e.metric_id = 'SYNm00' GROUP BY e.profile_id ORDER BY count(*) DESC LIMIT 1"
                           ).fetchone()[0]
    finally:
        conn.close()
    have = subprocess.run([PYTHON, "-m", "klaviyo_sync", "--help"], capture_output=True, text=True, cwd=REPO).stdout
    cmds = [
        ["customers"], ["customers", "--range", "90d"], ["customers", "--top", "0", "--sort", "last_order"],
        ["customer", top],
        ["rfm"], ["rfm", "--group", "Champions", "--format", "csv"],
        ["cohorts"], ["cohorts", "--months", "24"],
        ["deliverability"], ["deliverability", "--last", "3"], ["deliverability", "--range", "365d"],
    ]
    att = [["attribution", "--range", "30d", "--model", model, *(["--by", by] if by != "campaign" else [])]
           for model in ("klaviyo", "session") for by in ("campaign", "flow", "message", "channel", "day")]
    for name, extra in (("attribution", att),
                        ("conversion-lag", [["conversion-lag", "--range", "30d"],
                                            ["conversion-lag", "--range", "30d", "--model", "session"]])):
        if f" {name} " in have or f"│ {name} " in have:
            cmds += extra
        else:
            print(f"(skipped: this tool has no `{name}` command yet)")
    return cmds


def index_costs(db: Path) -> list[dict]:
    """Build time and size of each index of events and event_attributions on a copy: what a
    backfill pays at its end (it drops them and builds each once; see db.ensure_event_indexes)."""
    copy = db.with_name("index-costs.db")
    remove_db(copy)
    subprocess.run(["cp", str(db), str(copy)], check=True)
    conn = sqlite3.connect(copy, isolation_level=None)
    out = []
    try:
        conn.execute("PRAGMA cache_size = -4096")  # as ensure_event_indexes builds them
        found = conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                             "AND tbl_name IN ('events', 'event_attributions')").fetchall()
        for name, tbl, sql in found:
            conn.execute(f'DROP INDEX "{name}"')
            t0 = time.perf_counter()
            conn.execute(sql)
            seconds = time.perf_counter() - t0
            pages = conn.execute("SELECT count(*) FROM dbstat WHERE name = ?", [name]).fetchone()[0] \
                if _has_dbstat(conn) else None
            size = pages * conn.execute("PRAGMA page_size").fetchone()[0] if pages is not None else None
            out.append({"index": name, "table": tbl, "build_s": round(seconds, 2),
                        "mb": round(size / 1e6, 1) if size else None})
    finally:
        conn.close()
        remove_db(copy)
    return out


def _has_dbstat(conn) -> bool:
    try:
        conn.execute("SELECT 1 FROM dbstat LIMIT 1")
        return True
    except sqlite3.Error:
        return False


COLUMNS = [("command", "command", ""), ("rows", "rows", ","), ("wall_s", "median s", ".2f"), ("max_s", "max s", ".2f"),
           ("cpu_s", "CPU s", ".2f"), ("peak_rss_mb", "peak RSS MB", ".1f"), ("ok", "< 2 s, < 150 MB", "")]


def run_all(db: Path, args) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env["KLAVIYO_SYNC_DB"] = str(db)
    rows = []
    for cmd in commands(db):
        if args.only and cmd[0] not in args.only.split(","):
            continue
        full = [PYTHON, "-m", "klaviyo_sync", *cmd] + ([] if "--format" in cmd else ["--format", "json"])
        run_measured(full, env=env, cwd=REPO)  # warm the page cache
        runs = [run_measured(full, env=env, cwd=REPO) for _ in range(args.repeat)]
        bad = [r for r in runs if r.rc != 0]
        if bad:
            print(f"FAILED: {' '.join(cmd)}: exit {bad[0].rc}: {bad[0].stderr.strip()[-300:]}")
        wall = statistics.median(r.wall_s for r in runs)
        rss = max(r.maxrss_mb for r in runs)
        out = runs[0].stdout
        n = len(json.loads(out)) if out.lstrip().startswith("[") else len(out.splitlines())
        rows.append({"command": " ".join(cmd), "rows": n, "wall_s": round(wall, 2),
                     "max_s": round(max(r.wall_s for r in runs), 2),
                     "cpu_s": round(statistics.median(r.user_s + r.sys_s for r in runs), 2),
                     "peak_rss_mb": round(rss, 1), "ok": not bad and wall < 2.0 and rss < 150})
        print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--index-costs", action="store_true", help="also time building each index on a copy")
    ap.add_argument("--only", help="run only these commands (a comma list, e.g. customers,rfm)")
    ap.add_argument("--candidate-index", metavar="COLUMNS",
                    help="then run again on a copy with this extra events index, e.g. 'metric_id, profile_id, datetime, value'")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    db, meta = cached_db(args.events, args.rebuild)
    print(f"database: {db.name}, {meta['bytes'] / 1e9:.2f} GB, {meta['events']:,} events, {meta['profiles']:,} "
          f"profiles, {meta['orders']:,} orders, {meta['attributions']:,} attributions")
    busy0 = system_busy_s()
    rows = run_all(db, args)
    result_extra = {}
    if args.candidate_index:
        copy = db.with_name("candidate-index.db")
        remove_db(copy)
        subprocess.run(["cp", str(db), str(copy)], check=True)
        conn = sqlite3.connect(copy, isolation_level=None)
        conn.execute("PRAGMA cache_size = -4096")
        t0, c0 = time.perf_counter(), time.process_time()
        conn.execute(f"CREATE INDEX idx_candidate ON events ({args.candidate_index})")
        built = {"index": f"events ({args.candidate_index})", "build_s": round(time.perf_counter() - t0, 2),
                 "build_cpu_s": round(time.process_time() - c0, 2),
                 "mb": round(conn.execute("SELECT count(*) FROM dbstat WHERE name = 'idx_candidate'").fetchone()[0]
                             * conn.execute("PRAGMA page_size").fetchone()[0] / 1e6, 1)}
        conn.execute("ANALYZE")
        conn.close()
        print(f"\nwith the candidate index {built}:")
        try:
            result_extra["candidate"] = {**built, "runs": run_all(copy, args)}
        finally:
            remove_db(copy)
    busy = system_busy_s() - busy0
    print()
    print(table(rows, COLUMNS))
    if "candidate" in result_extra:
        print(f"\nwith events ({args.candidate_index}):")
        print(table(result_extra["candidate"]["runs"], COLUMNS))
    result = {**result_extra, "benchmark": "analytics", "events": meta["events"], "runs": rows, "machine_busy_cpu_s": round(busy, 1),
              "loadavg": os.getloadavg(), **code_version()}
    if args.index_costs:
        costs = index_costs(db)
        print()
        print(table(costs, [("index", "index", ""), ("table", "table", ""), ("build_s", "build s", ".2f"),
                            ("mb", "MB", ".1f")]))
        result["index_costs"] = costs
    emit_result(result, args.json_out)


if __name__ == "__main__":
    main()
