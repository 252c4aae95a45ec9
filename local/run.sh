#!/usr/bin/env bash
# Runs the whole local stack in the foreground: moto, the AWS resources, mock providers and the API
# Gateway emulation hosting every handler. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-gateway/target}"
./local/bootstrap.sh
cargo build --quiet -p gateway-local
exec "$CARGO_TARGET_DIR/debug/gateway-local"
