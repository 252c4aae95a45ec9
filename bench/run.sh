#!/usr/bin/env bash
# Benchmarks (not tests): starts a release build of the local stack, runs bench/src/main.rs against it and
# prints the JSON report (also written to bench/results/latest.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-gateway/target}"
./local/bootstrap.sh
cargo build --release --quiet -p gateway-local -p gateway-bench -p authorizer -p azure-openai -p bedrock-claude -p gemini
source local/lib.sh
start_stack "$CARGO_TARGET_DIR/release/gateway-local"
mkdir -p bench/results
GATEWAY_BENCH_BIN_DIR="$CARGO_TARGET_DIR/release" RUST_LOG=warn "$CARGO_TARGET_DIR/release/gateway-bench" | tee bench/results/latest.json
