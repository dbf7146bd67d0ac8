#!/usr/bin/env bash
# Every target of benchmarks/README.md, one after the other (about 20-25 minutes on 2 cores,
# plus a few minutes the first time to build the 5M-event database).
# Results: benchmarks/.cache/results/ (*.txt: what was printed; all.jsonl: one JSON line per bench).
#
#   bash benchmarks/run_all.sh            # full sizes
#   QUICK=1 bash benchmarks/run_all.sh    # smaller sizes, a few minutes: a smoke test of the scripts
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT=benchmarks/.cache/results
mkdir -p "$OUT"
[ -f benchmarks/.cache/.gitignore ] || echo '*' > benchmarks/.cache/.gitignore
JSONL="$OUT/all.jsonl"

if [ -n "${QUICK:-}" ]; then
  N_THROUGHPUT=50000; N_LATENCY=30000; SIZES=20000,50000,100000; DB_EVENTS=500000; REPEAT=1
else
  N_THROUGHPUT=200000; N_LATENCY=300000; SIZES=50000,200000,1000000; DB_EVENTS=5000000; REPEAT=3
fi

run() {  # name, then the command; prints and keeps what it printed
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.txt" | grep -v '^{"bench"' || true
}

# 1. Throughput on the realistic shape: default settings >= 1.5x baseline events/s, no latency;
#    >= 3x with 100 ms per request. Then the small shape (300 profiles) as a second row.
run throughput "$PY" benchmarks/bench_events.py --events "$N_THROUGHPUT" --repeat "$REPEAT" --json-out "$JSONL"
run throughput-100ms "$PY" benchmarks/bench_events.py --events "$N_THROUGHPUT" --repeat "$REPEAT" --latency 0.1 \
  --workers "$("$PY" -c 'from klaviyo_sync.cli import DEFAULT_WORKERS; print(DEFAULT_WORKERS)')" --json-out "$JSONL"
run throughput-small "$PY" benchmarks/bench_events.py --shape small --events "$N_THROUGHPUT" --repeat "$REPEAT" --json-out "$JSONL"

# 1b. What attributions cost, whole runs with and without them, then part by part.
run attributions "$PY" benchmarks/bench_events.py --events "$N_THROUGHPUT" --repeat "$REPEAT" --no-baseline \
  --without-attributions --json-out "$JSONL"
run attribution-parts "$PY" benchmarks/attribution_cost.py --events "$N_THROUGHPUT" --repeat "$REPEAT" --json-out "$JSONL"

# 2. Latency-bound: 200 ms a request, Klaviyo's limits enforced; >= 70% of min(58,000, the
#    no-latency rate at the same N), and no 429 answered. The no-latency rate is measured first.
run latency-reference "$PY" benchmarks/bench_events.py --events "$N_LATENCY" --no-baseline --json-out "$JSONL"
run latency "$PY" benchmarks/bench_events.py --events "$N_LATENCY" --latency 0.2 --enforce-limits \
  --reference "$OUT/latency-reference.txt" --json-out "$JSONL"

# 3. Memory: peak RSS <= 150 MB at 1,000,000 events, and flat in N.
run memory "$PY" benchmarks/bench_events.py --events "$SIZES" --no-baseline --json-out "$JSONL"

# 4. Incremental: --hours 2 on a 5M-event database in < 3 s, end to end.
run incremental "$PY" benchmarks/bench_incremental.py --db-events "$DB_EVENTS" --json-out "$JSONL"

echo "results in $OUT"
