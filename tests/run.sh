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

echo "== CDK app: type-check, template tests, cdk-nag, synth of every environment and region, cfn-lint"
./cdk/test.sh

echo "== end-to-end (local stack + stock SDKs), once per transport"
# gateway-audit: the auditor's command, run by tests/test_audit_integrity.py (verify) and
# tests/test_audit_bodies.py (bodies).
cargo build --quiet -p gateway-local -p audit-cli
export GATEWAY_AUDIT_BIN="$CARGO_TARGET_DIR/debug/gateway-audit"
source local/lib.sh
status=0
for transport in direct queue; do
  echo "== end-to-end: every route on the $transport transport"
  # A short upstream deadline so the hanging-provider tests end in seconds, and a short visibility
  # timeout so a crashed dispatch is retried quickly (the deadline must outlast one retry).
  GATEWAY_TRANSPORT=$transport GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS=6000 GATEWAY_LOCAL_DISPATCH_VISIBILITY_SECS=2 \
    start_stack "$CARGO_TARGET_DIR/debug/gateway-local"
  pass=0
  .venv/bin/python -m pytest tests "$@" || pass=$?
  if [ "$pass" -ne 0 ]; then
    status=$pass
    echo "== local stack log (last 80 lines)"; tail -n 80 "$STACK_DIR/stack.log"
  fi
  stop_stack
done
exit "$status"
