#!/usr/bin/env bash
# Benchmarks (not tests): starts a release build of the local stack, runs bench/src/main.rs against it and
# prints the JSON report (also written to bench/results/latest.json).
#
#   ./bench/run.sh            the gateway against the mock provider, once per transport
#   ./bench/run.sh --compare  the same, with LiteLLM's proxy (pinned, in its own virtualenv .venv-litellm)
#                             in front of the same mock, measured interleaved with the gateway and the mock
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-gateway/target}"
compare=false
[ "${1:-}" = "--compare" ] && compare=true

# 1.106.12 is the version measured when the comparison was set; 1.82.7 and 1.82.8 were compromised
# releases, so the version is pinned, never floating.
LITELLM_VERSION=1.106.12
LITELLM_PORT="${GATEWAY_BENCH_LITELLM_PORT:-4300}"

./local/bootstrap.sh
if $compare; then
  if [ "$(.venv-litellm/bin/python -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$LITELLM_VERSION" ]; then
    python3 -m venv .venv-litellm
    .venv-litellm/bin/pip install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
  fi
fi
cargo build --release --quiet -p gateway-local -p gateway-bench -p authorizer -p azure-openai -p bedrock-claude -p gemini -p admin-api
source local/lib.sh
mkdir -p bench/results

litellm_pid=""
# LiteLLM runs in a process group of its own (its server can outlive its launcher): the group goes.
stop_litellm() {
  if [ -n "$litellm_pid" ]; then
    kill -- "-$litellm_pid" 2>/dev/null || true
    wait "$litellm_pid" 2>/dev/null || true
  fi
  litellm_pid=""
}
trap 'stop_litellm; stop_stack' EXIT

# LiteLLM in front of the stack's Azure OpenAI mock, with the key the mock expects; no callbacks, no
# database: its lightest configuration. It authenticates its clients with a master key (it refuses to
# start without one), sent by the benchmark where the Azure SDK puts its key, as for the gateway.
start_litellm() {
  local config="$STACK_DIR/litellm.yaml"
  LITELLM_KEY="sk-bench-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')"
  .venv/bin/python - "$GATEWAY_LOCAL_STATE" "$config" "$LITELLM_KEY" <<'PY'
import json, sys, boto3
state = json.load(open(sys.argv[1]))
secrets = boto3.client("secretsmanager", endpoint_url=state["aws_endpoint_url"], region_name=state["region"],
                       aws_access_key_id="test", aws_secret_access_key="test")
# The local stack stores the mock's key as the plain secret string.
key = secrets.get_secret_value(SecretId=state["secrets"]["azure-openai"])["SecretString"]
mock = state["mocks"]["azure-openai"]
open(sys.argv[2], "w").write(f"""model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: azure/gpt-4o-mini
      api_base: {mock}
      api_key: {key}
      api_version: "2024-10-21"
general_settings:
  master_key: {sys.argv[3]}
""")
PY
  # A server already on the port would answer the health probe in its place (with another key).
  if .venv/bin/python -c "import socket,sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $LITELLM_PORT)) != 0)"; then
    echo "port $LITELLM_PORT (GATEWAY_BENCH_LITELLM_PORT) is already in use"; return 1
  fi
  setsid .venv-litellm/bin/litellm --config "$config" --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1 \
    > "$STACK_DIR/litellm.log" 2>&1 &
  litellm_pid=$!
  for _ in $(seq 1 120); do
    if .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$LITELLM_PORT/health/liveliness', timeout=2)" 2>/dev/null; then return 0; fi
    if ! kill -0 "$litellm_pid" 2>/dev/null; then echo "LiteLLM exited:"; tail -n 40 "$STACK_DIR/litellm.log"; return 1; fi
    sleep 1
  done
  echo "LiteLLM not ready in 120 s:"; tail -n 40 "$STACK_DIR/litellm.log"; return 1
}

# One run per transport; each prints a JSON report, combined into bench/results/latest.json.
# Usage plans off: thousands of requests a second would be throttled, and the benchmark measures the
# gateway's own added time (LiteLLM runs without limits too).
for transport in direct queue; do
  GATEWAY_LOCAL_USAGE_PLANS=off GATEWAY_TRANSPORT=$transport start_stack "$CARGO_TARGET_DIR/release/gateway-local"
  compare_env=()
  if $compare; then
    start_litellm
    compare_env=(GATEWAY_BENCH_LITELLM_URL="http://127.0.0.1:$LITELLM_PORT" GATEWAY_BENCH_LITELLM_KEY="$LITELLM_KEY")
  fi
  env "${compare_env[@]}" GATEWAY_BENCH_BIN_DIR="$CARGO_TARGET_DIR/release" RUST_LOG=warn \
    "$CARGO_TARGET_DIR/release/gateway-bench" > "bench/results/$transport.json"
  stop_litellm
  stop_stack
done
trap - EXIT
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
