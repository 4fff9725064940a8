#!/usr/bin/env bash
# Balancing policies side by side on two simulated GPU servers of unequal
# speed (one decodes twice as slowly): for each `balance`, a proxy on the
# embedded store in front of both, and `maas bench` streaming 32-token
# chats at concurrency 40 for 10 s. Prints each policy's rate, latency and
# time to first token. MAAS_BIN picks the build (default target/release/maas).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${MAAS_BIN:-target/release/maas}"
[ -x "$BIN" ] || { echo "no build at $BIN: cargo build --release (or set MAAS_BIN)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
server() {
  printf 'models:\n  - id: gpu\n    output_tokens: {min: 32, max: 32}\n    server: {max_num_seqs: 16, decode_step_ms: %s, decode_step_ms_per_sequence: %s}\n' "$1" "$2"
}
server 11.0 0.5 >"$work/fast.yaml"
server 22.0 1.0 >"$work/slow.yaml"
for policy in round_robin least_requests load_aware; do
  echo "== balance: $policy"
  run="$work/$policy"
  mkdir -p "$run"
  export MAAS_DATA_DIR="$run/data" MAAS_LOG_LEVEL=warn MAAS_LIMITS_MODE=local
  unset MAAS_CONFIG MAAS_REDIS_URL
  "$BIN" sim --listen 127.0.0.1:19101 --models "$work/fast.yaml" >/dev/null 2>&1 & fast=$!
  "$BIN" sim --listen 127.0.0.1:19102 --models "$work/slow.yaml" >/dev/null 2>&1 & slow=$!
  cat >"$run/catalog.yaml" <<CATALOG
backends:
  - {system_name: gpus, urls: ["http://127.0.0.1:19101", "http://127.0.0.1:19102"], balance: $policy}
products:
  - {system_name: gpus, models: [gpu], backend: gpus}
plans:
  - {product: gpus, system_name: open}
accounts:
  - name: Bench
applications:
  - {account: Bench, name: app, product: gpus, plan: open}
CATALOG
  "$BIN" apply -f "$run/catalog.yaml" >/dev/null
  key="$("$BIN" create-key --app Bench/app 2>/dev/null)"
  "$BIN" proxy --listen 127.0.0.1:19100 --metrics-listen 127.0.0.1:19109 >/dev/null 2>&1 & proxy=$!
  sleep 2
  "$BIN" bench --url http://127.0.0.1:19100/v1/chat/completions --key "$key" --model gpu \
    --max-tokens 32 --stream --concurrency 40 --duration 10 --warmup 1 2>&1 \
    | grep -E "ok,|p50|latency|time to first token"
  kill "$proxy" "$fast" "$slow"
  wait "$proxy" "$fast" "$slow" 2>/dev/null || true
done
