# Shared shell helpers: start the local stack in the background and wait until it is ready.
# Usage: source local/lib.sh; start_stack <binary>
# Sets STACK_DIR (state file, stack.log with the stack's output), STACK_PID, GATEWAY_LOCAL_STATE, and
# GATEWAY_LOCAL_BIN (the binary, for tests that start a stack of their own).

start_stack() {
  local binary=$1
  STACK_DIR=$(mktemp -d)
  export GATEWAY_LOCAL_DIR="$STACK_DIR"
  export GATEWAY_LOCAL_STATE="$STACK_DIR/stack.json"
  GATEWAY_LOCAL_BIN=$(realpath "$binary")
  export GATEWAY_LOCAL_BIN
  "$binary" > "$STACK_DIR/stack.log" 2>&1 &
  STACK_PID=$!
  trap stop_stack EXIT
  for _ in $(seq 1 600); do
    [ -f "$GATEWAY_LOCAL_STATE" ] && return 0
    if ! kill -0 "$STACK_PID" 2>/dev/null; then
      echo "local stack exited early:"; cat "$STACK_DIR/stack.log"; return 1
    fi
    sleep 0.1
  done
  echo "local stack not ready in 60 s:"; cat "$STACK_DIR/stack.log"; return 1
}

stop_stack() {
  [ -n "${STACK_PID:-}" ] && kill "$STACK_PID" 2>/dev/null && wait "$STACK_PID" 2>/dev/null
  [ -n "${STACK_DIR:-}" ] && rm -rf "$STACK_DIR"
  return 0
}
