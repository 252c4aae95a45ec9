#!/usr/bin/env bash
# Benchmarks (not tests): starts a release build of the local stack, runs bench/src/main.rs against it and
# prints the JSON report (also written to bench/results/latest.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-gateway/target}"
./local/bootstrap.sh
cargo build --release --quiet -p gateway-local -p gateway-bench -p authorizer -p azure-openai -p bedrock-claude -p gemini
source local/lib.sh
mkdir -p bench/results
# One run per transport; each prints a JSON report, combined into bench/results/latest.json.
for transport in direct queue; do
  GATEWAY_TRANSPORT=$transport start_stack "$CARGO_TARGET_DIR/release/gateway-local"
  GATEWAY_BENCH_BIN_DIR="$CARGO_TARGET_DIR/release" RUST_LOG=warn "$CARGO_TARGET_DIR/release/gateway-bench" \
    > "bench/results/$transport.json"
  stop_stack
done
.venv/bin/python - <<'PY'
import json
runs = {t: json.load(open(f"bench/results/{t}.json")) for t in ("direct", "queue")}
report = {"direct": runs["direct"], "queue": runs["queue"], "queue_vs_direct_added_ms": []}
for d, q in zip(runs["direct"]["gateway_overhead"], runs["queue"]["gateway_overhead"]):
    report["queue_vs_direct_added_ms"].append({
        "concurrency": d["concurrency"], "metric": d["metric"],
        "p50": round(q["gateway"]["p50"] - d["gateway"]["p50"], 3),
        "p99": round(q["gateway"]["p99"] - d["gateway"]["p99"], 3),
    })
json.dump(report, open("bench/results/latest.json", "w"), indent=2)
print(json.dumps(report, indent=2))
PY
