#!/usr/bin/env python3
"""Run Fivetran's dbt_klaviyo package, unchanged, on `klaviyo-sync export --schema fivetran` and
compare its campaign and flow revenue with ours.

Nothing here touches the network. You give the packages as directories or git repositories with a
ref (PATH@REF, extracted with `git archive`); the script places them in the dbt project's
dbt_packages/ (no `dbt deps`), then:

1. exports the database: `klaviyo-sync export --format duckdb --schema fivetran`;
2. replaces fivetran_utils' macros with the ones dbt_klaviyo v1.4.1 was built with, read from its
   own docs/manifest.json (v1.4.1 needs macros newer than fivetran_utils v0.4.10, the last release
   in a fetchable snapshot);
3. runs `dbt build` (dbt-core 1.10 with dbt-duckdb 1.11 works offline);
4. checks that every model and test passed *and* that the models hold rows (a build over missing
   tables "passes" with a log line): events in klaviyo__events = events exported, etc.;
5. compares klaviyo__campaigns / klaviyo__flows `sum_revenue_placed_order` with the sum of
   Placed Order `$value` per attributed campaign / flow in our event_attributions, and with the
   conversion_value Klaviyo reported (campaign_stats / flow_stats_daily).

Exit 0 when the build passed, the row counts match and the revenue agrees; 1 otherwise; 2 when
dbt or a package is missing (said on stderr).

    python examples/dbt_klaviyo_check.py --db demo.db --work /tmp/dbt-check \\
        --dbt .dbtvenv/bin/dbt \\
        --dbt-klaviyo /path/dbt_klaviyo@v1.4.1 --fivetran-utils /path/dbt_fivetran_utils@v0.4.10 \\
        --spark-utils /path/spark-utils@0.3.3 --dbt-utils /path/dbt-utils@1.3.0

--synthetic-attributions: for a database without event_attributions (a demo from before Klaviyo's
attributions were synced), work on a copy with attributions made up by the rule of issue 16 (a
Placed Order is credited to the profile's latest opened or clicked email in the 5 days before it;
which campaign or flow message that touch was is picked by a hash of its $message, as the demo's
touch events do not name real messages). Labelled as synthetic in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import io
import zlib
from pathlib import Path

PLACED_ORDER = "Placed Order"


def fail(msg: str, code: int = 2) -> None:
    print(f"dbt_klaviyo_check: {msg}", file=sys.stderr)
    sys.exit(code)


def place(spec: str, dest: Path) -> None:
    """PATH or PATH@REF (a git repository, bare or not) -> dest."""
    path, _, ref = spec.partition("@")
    src = Path(path)
    if not src.exists():
        fail(f"no package at {src}")
    if dest.exists():
        shutil.rmtree(dest)
    if not ref:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git"))
        return
    git_dir = src / ".git" if (src / ".git").exists() else src
    try:
        data = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "--format=tar", ref],
                              check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as exc:
        fail(f"git archive {ref} in {src}: {exc.stderr.decode().strip()}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)


def macros_from_manifest(klaviyo: Path, fivetran_utils: Path) -> int:
    """Rewrite fivetran_utils/macros from the macro texts dbt_klaviyo's manifest recorded."""
    path = klaviyo / "docs" / "manifest.json"
    if not path.exists():
        fail(f"{path} is missing: --dbt-klaviyo must be the package's repository (v1.4.1 ships it)")
    manifest = json.loads(path.read_text())
    files: dict[str, list[str]] = {}
    count = 0
    for macro in manifest["macros"].values():
        if macro["package_name"] != "fivetran_utils":
            continue
        files.setdefault(macro["original_file_path"], []).append(macro["macro_sql"])
        count += 1
    shutil.rmtree(fivetran_utils / "macros")
    for rel, texts in files.items():
        target = fivetran_utils / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n\n".join(texts) + "\n")
    return count


def synthesize_attributions(db: Path) -> int:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE IF EXISTS event_attributions")
    conn.execute("""CREATE TABLE event_attributions (id TEXT PRIMARY KEY, event_id TEXT,
        attributed_event_id TEXT, campaign_id TEXT, campaign_message_id TEXT, flow_id TEXT,
        flow_message_id TEXT, flow_message_variation_id TEXT)""")
    messages = conn.execute("""
        SELECT 'campaign', m.campaign_id, m.id FROM campaign_messages m JOIN campaigns c ON c.id = m.campaign_id
        WHERE c.status = 'Sent' AND m.channel = 'email'
        UNION ALL SELECT 'flow', flow_id, id FROM flow_messages WHERE channel = 'email'
        ORDER BY 1, 2, 3""").fetchall()
    if not messages:
        fail("--synthetic-attributions: the database has no sent email campaign or flow message")
    rows = conn.execute("""
        SELECT o.id, (SELECT t.id FROM events t JOIN metrics tm ON tm.id = t.metric_id
                      WHERE t.profile_id = o.profile_id AND tm.name IN ('Opened Email', 'Clicked Email')
                        AND t.datetime < o.datetime
                        AND t.datetime >= strftime('%Y-%m-%dT%H:%M:%SZ', o.datetime, '-5 days')
                      ORDER BY t.datetime DESC, t.id DESC LIMIT 1) AS touch,
               NULL
        FROM events o JOIN metrics m ON m.id = o.metric_id
        WHERE m.name = ?""", [PLACED_ORDER]).fetchall()
    n = 0
    for event_id, touch, _ in rows:
        if touch is None:
            continue
        props = conn.execute("SELECT properties FROM events WHERE id = ?", [touch]).fetchone()[0] or ""
        msg = json.loads(props).get("$message", touch) if props else touch
        kind, parent, message = messages[zlib.crc32(str(msg).encode()) % len(messages)]
        conn.execute("INSERT INTO event_attributions VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                     [f"attr-{event_id}", event_id, touch,
                      parent if kind == "campaign" else None, message if kind == "campaign" else None,
                      parent if kind == "flow" else None, message if kind == "flow" else None])
        n += 1
    conn.execute("CREATE INDEX idx_event_attributions_event_id ON event_attributions (event_id)")
    conn.commit()
    conn.close()
    return n


def ours(db: Path) -> tuple[dict, dict, dict, dict]:
    """Placed Order revenue per attributed campaign and flow (first attribution by id, as exported),
    and what Klaviyo's reports said (conversion_value)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    q = """SELECT a.{col}, round(sum(e.value), 2), count(*) FROM events e
           JOIN metrics m ON m.id = e.metric_id AND m.name = ?
           JOIN event_attributions a ON a.id = (SELECT min(id) FROM event_attributions WHERE event_id = e.id)
           WHERE a.{col} IS NOT NULL GROUP BY a.{col}"""
    campaigns = {r[0]: (r[1], r[2]) for r in conn.execute(q.format(col="campaign_id"), [PLACED_ORDER])}
    flows = {r[0]: (r[1], r[2]) for r in conn.execute(q.format(col="flow_id"), [PLACED_ORDER])}
    k_campaigns = dict(conn.execute("SELECT campaign_id, round(sum(conversion_value), 2) FROM campaign_stats GROUP BY 1"))
    k_flows = dict(conn.execute("SELECT flow_id, round(sum(conversion_value), 2) FROM flow_stats_daily GROUP BY 1"))
    conn.close()
    return campaigns, flows, k_campaigns, k_flows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path, help="A directory for the dbt project (recreated).")
    ap.add_argument("--dbt", default="dbt", help="The dbt executable (dbt-core 1.10, dbt-duckdb 1.11).")
    ap.add_argument("--dbt-klaviyo", required=True)
    ap.add_argument("--fivetran-utils", required=True)
    ap.add_argument("--spark-utils", required=True)
    ap.add_argument("--dbt-utils", required=True)
    ap.add_argument("--synthetic-attributions", action="store_true")
    args = ap.parse_args()

    if shutil.which(args.dbt) is None:
        fail(f"no dbt at {args.dbt!r}: pip install 'dbt-core==1.10.*' 'dbt-duckdb==1.11.*'")
    try:
        import duckdb
    except ImportError:
        fail("duckdb is not installed: pip install 'klaviyo-sync[export]'")
    if not args.db.exists():
        fail(f"no database at {args.db}")

    work = args.work.resolve()
    if work.exists() and any(work.iterdir()) and not (work / "project" / "dbt_project.yml").exists():
        fail(f"--work: {work} is not empty and is not a previous run's directory")
    if work.exists():
        shutil.rmtree(work)
    project = work / "project"
    (project / "dbt_packages").mkdir(parents=True)
    db = args.db
    synthetic = 0
    if args.synthetic_attributions:
        db = work / "with_attributions.db"
        src = sqlite3.connect(args.db)
        dst = sqlite3.connect(db)
        src.backup(dst)
        src.close(), dst.close()
        synthetic = synthesize_attributions(db)
        print(f"SYNTHETIC attributions: {synthetic} Placed Order events credited (see --help)")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    has_attr = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_attributions'").fetchone() is not None
    n_attr = conn.execute("SELECT count(*) FROM event_attributions").fetchone()[0] if has_attr else 0
    conn.close()

    # 1. the export
    target = work / "klaviyo_fivetran.duckdb"
    subprocess.run([sys.executable, "-m", "klaviyo_sync", "export", "--db", str(db), "--to", str(target),
                    "--format", "duckdb", "--schema", "fivetran", "--report", "json"],
                   check=True, stdout=subprocess.DEVNULL)
    con = duckdb.connect(str(target), read_only=True)
    exported = {t: con.execute(f"SELECT count(*) FROM klaviyo.{t}").fetchone()[0]
                for t in ("event", "person", "campaign", "flow", "metric")}
    con.close()
    print("exported:", ", ".join(f"{t} {n}" for t, n in exported.items()))

    # 2. the packages, fivetran_utils' macros as dbt_klaviyo was built with them
    pk = project / "dbt_packages"
    place(args.dbt_klaviyo, pk / "klaviyo")
    place(args.fivetran_utils, pk / "fivetran_utils")
    place(args.spark_utils, pk / "spark_utils")
    place(args.dbt_utils, pk / "dbt_utils")
    version = next((line.split(":", 1)[1].strip().strip("'\"") for line in
                    (pk / "klaviyo" / "dbt_project.yml").read_text().splitlines() if line.startswith("version:")), "?")
    print(f"dbt_klaviyo {version}; fivetran_utils macros from its manifest: {macros_from_manifest(pk / 'klaviyo', pk / 'fivetran_utils')}")

    # 3. the project and dbt build. Native attribution when the export carries attributions,
    # otherwise the package's own session model (property_attribution is all NULL then).
    native = n_attr > 0
    (project / "dbt_project.yml").write_text(f"""name: klaviyo_check
version: '1.0.0'
config-version: 2
profile: klaviyo_check
vars:
  using_native_attribution: {str(native).lower()}
""")
    (project / "profiles.yml").write_text(f"""klaviyo_check:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: {target}
      threads: 2
""")
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
    cmd = [args.dbt, "build", "--project-dir", str(project), "--profiles-dir", str(project)]
    print("$", " ".join(cmd[:2]), f"(native attribution: {native})")
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    (work / "dbt_build.log").write_text(proc.stdout + proc.stderr)
    results = json.loads((project / "target" / "run_results.json").read_text()) \
        if (project / "target" / "run_results.json").exists() else {"results": []}
    status: dict[str, int] = {}
    for r in results["results"]:
        kind = r["unique_id"].split(".")[0]
        status[f"{kind} {r['status']}"] = status.get(f"{kind} {r['status']}", 0) + 1
    print(f"dbt build exit {proc.returncode}:", ", ".join(f"{v} {k}" for k, v in sorted(status.items())))
    ok = proc.returncode == 0 and all(k.split()[1] in ("success", "pass") for k in status)
    if proc.returncode != 0:
        print("\n".join(line for line in proc.stdout.splitlines() if "ERROR" in line or "FAIL" in line)[:3000])

    # 4. row counts, not only the exit status. Where each model went, from dbt's own manifest.
    where = {}
    if (project / "target" / "manifest.json").exists():
        for node in json.loads((project / "target" / "manifest.json").read_text())["nodes"].values():
            if node["resource_type"] == "model":
                where[node["name"]] = f'"{node["schema"]}"."{node["alias"]}"'
    con = duckdb.connect(str(target), read_only=True)
    checks = [("klaviyo__events", "event", "count(*)"), ("klaviyo__persons", "person", "count(*)"),
              ("klaviyo__campaigns", "campaign", "count(DISTINCT campaign_id)"),
              ("klaviyo__flows", "flow", "count(DISTINCT flow_id)")]
    for model, source, expr in checks:
        try:
            got = con.execute(f"SELECT {expr} FROM {where.get(model, model)}").fetchone()[0]
        except duckdb.Error as exc:
            got = f"missing ({str(exc).splitlines()[0]})"
        src_n = con.execute(f"SELECT count(*) FROM klaviyo.{source} WHERE NOT _fivetran_deleted").fetchone()[0]
        same = got == src_n
        ok &= same
        print(f"rows: {model} {got} vs klaviyo.{source} {src_n}: {'same' if same else 'DIFFERENT'}")

    # 5. revenue
    if not has_attr:
        print("\nno event_attributions in the database: nothing of ours to compare with "
              "(sync attributions, or pass --synthetic-attributions)")
        con.close()
        print("\nOK" if ok else "\nNOT OK")
        return 0 if ok else 1
    our_c, our_f, k_c, k_f = ours(db)
    for model, key, mine, klaviyo_said in (("klaviyo__campaigns", "campaign_id", our_c, k_c),
                                           ("klaviyo__flows", "flow_id", our_f, k_f)):
        try:
            theirs = {r[0]: (float(r[1] or 0), int(r[2] or 0)) for r in con.execute(
                f"SELECT {key}, round(sum(coalesce(sum_revenue_placed_order, 0)), 2), "
                f"sum(coalesce(count_placed_order, 0)) FROM {where.get(model, model)} GROUP BY 1").fetchall()}
        except duckdb.Error as exc:
            print(f"{model}: {str(exc).splitlines()[0]}")
            ok = False
            continue
        keys = sorted(set(mine) | {k for k, v in theirs.items() if v[0] or v[1]})
        differ = 0
        print(f"\n{model}: Placed Order revenue (orders) per {key}")
        print(f"  {'id':28} {'ours':>14} {'dbt_klaviyo':>16} {'Klaviyo report':>15}")
        for k in keys:
            a = mine.get(k, (0, 0))
            b = theirs.get(k, (0, 0))
            mark = "" if (round(a[0] or 0, 2), a[1]) == (round(b[0] or 0, 2), b[1]) else "  <- differs"
            differ += bool(mark)
            rep = klaviyo_said.get(k)
            print(f"  {k:28} {a[0] or 0:>9.2f} ({a[1]:>2}) {b[0] or 0:>11.2f} ({b[1]:>2}) "
                  f"{'' if rep is None else f'{rep:>15.2f}'}{mark}")
        tot_a = sum(v[0] or 0 for v in mine.values())
        tot_b = sum(v[0] or 0 for k, v in theirs.items() if k is not None)
        print(f"  {'total':28} {tot_a:>14.2f} {tot_b:>16.2f}   ({differ} differ)")
        ok &= differ == 0
    con.close()
    print("\nOK" if ok else "\nNOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
