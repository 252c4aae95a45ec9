#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, unit and handler tests, then the end-to-end tests
# through a freshly started local stack with the stock SDKs. Installs what it needs (Python venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-gateway/target}"
export CARGO_TERM_COLOR=never

echo "== python environment"
./local/bootstrap.sh

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace --quiet

echo "== end-to-end (local stack + stock SDKs)"
cargo build --quiet -p gateway-local
stack_dir=$(mktemp -d)
export GATEWAY_LOCAL_DIR="$stack_dir"
export GATEWAY_LOCAL_STATE="$stack_dir/stack.json"
"$CARGO_TARGET_DIR/debug/gateway-local" > "$stack_dir/stack.log" 2>&1 &
stack_pid=$!
cleanup() {
  kill "$stack_pid" 2>/dev/null || true
  wait "$stack_pid" 2>/dev/null || true
  rm -rf "$stack_dir"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
  [ -f "$GATEWAY_LOCAL_STATE" ] && break
  if ! kill -0 "$stack_pid" 2>/dev/null; then
    echo "local stack exited early:"; cat "$stack_dir/stack.log"; exit 1
  fi
  sleep 0.1
done
[ -f "$GATEWAY_LOCAL_STATE" ] || { echo "local stack not ready in 60 s:"; cat "$stack_dir/stack.log"; exit 1; }
status=0
.venv/bin/python -m pytest tests "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== local stack log (last 80 lines)"; tail -n 80 "$stack_dir/stack.log"
fi
exit "$status"
