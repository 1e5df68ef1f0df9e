#!/usr/bin/env bash
# PUBLISH flat out (sipload publish, closed loop) against presenced without
# durable state (--ephemeral) and with it under fsync interval and always,
# in alternating rounds (so a change in the machine's load hits every mode
# alike); prints PUBLISH/s per run, the medians, their ratio to ephemeral,
# and log bytes written per PUBLISH (presenced_store_log_written_bytes_total
# over the PUBLISHes answered, from /metrics).
#
#   benches/durable_publish.sh [ROUNDS] [DURATION]     (defaults 3 5)
#
# Starts its own presenced (target/release, built if missing) on loopback
# ports, each run on a fresh data directory, and stops it by PID. Env:
# SIP_PORT (5270), MGMT_PORT (9270), SHARDS (1), SIPLOAD_ARGS (extra flags,
# default "--presentities 20000"). Needs curl and python3.
set -euo pipefail
ROUNDS=${1:-3}; DURATION=${2:-5}
SIP_PORT=${SIP_PORT:-5270}; MGMT_PORT=${MGMT_PORT:-9270}; SHARDS=${SHARDS:-1}
SIPLOAD_ARGS=${SIPLOAD_ARGS:---presentities 20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
if [ ! -x "$BIN/presenced" ] || [ ! -x "$BIN/sipload" ]; then
  (cd "$ROOT" && cargo build --release -p presenced -p presence-benches --bin presenced --bin sipload)
fi
TMP=$(mktemp -d /tmp/durable-publish.XXXXXX)
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
cleanup() { stop_server; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

metric_sum() { # family name: the sum of its samples on /metrics
  curl -sf "http://127.0.0.1:$MGMT_PORT/metrics" | awk -v f="$1" '$1 ~ "^"f"([{ ]|$)" { s += $NF } END { printf "%.0f", s }'
}

run() { # mode: ephemeral | interval | always
  local mode=$1 durability
  rm -rf "$TMP/data"
  case $mode in
    ephemeral) durability=(--ephemeral) ;;
    *) durability=(--data-dir "$TMP/data" --fsync "$mode") ;;
  esac
  "$BIN/presenced" --listen "127.0.0.1:$SIP_PORT" --mgmt-listen "127.0.0.1:$MGMT_PORT" --shards "$SHARDS" \
    --default-policy allow "${durability[@]}" 2> "$TMP/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$MGMT_PORT/readyz" > /dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "durable_publish: presenced did not start"; cat "$TMP/server.log"; exit 1; }
    sleep 0.2
  done
  # shellcheck disable=SC2086
  "$BIN/sipload" publish --target "127.0.0.1:$SIP_PORT" --duration "$DURATION" --json $SIPLOAD_ARGS > "$TMP/out.json"
  local bytes publishes
  bytes=$(metric_sum presenced_store_log_written_bytes_total)
  publishes=$(curl -sf "http://127.0.0.1:$MGMT_PORT/metrics" \
    | awk '/^presenced_sip_requests_answered_total\{.*method="PUBLISH".*class="2xx"/ { s += $NF } END { printf "%.0f", s }')
  stop_server
  python3 - "$mode" "$TMP/out.json" "${bytes:-0}" "${publishes:-0}" >> "$TMP/results" <<'PY'
import json, sys
mode, path, log_bytes, publishes = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
report = json.load(open(path))
def find(node, key):
    if isinstance(node, dict):
        if key in node and isinstance(node[key], (int, float)):
            return node[key]
        for value in node.values():
            got = find(value, key)
            if got is not None:
                return got
    if isinstance(node, list):
        for value in node:
            got = find(value, key)
            if got is not None:
                return got
    return None
rate = find(report, "achieved_rate") or 0
per = log_bytes / publishes if publishes else 0
print(f"{mode} {rate:.0f} {per:.0f}")
PY
  tail -1 "$TMP/results"
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in ephemeral interval always; do
    echo -n "round $round: "
    run "$mode"
  done
done
python3 - "$TMP/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {}
for mode in ["ephemeral", "interval", "always"]:
    rates = [float(r[1]) for r in rows if r[0] == mode]
    per = [float(r[2]) for r in rows if r[0] == mode]
    med[mode] = statistics.median(rates)
    print(f"{mode:9} median {med[mode]:8.0f} PUBLISH/s  runs {' '.join(f'{x:.0f}' for x in rates)}  "
          f"log bytes/PUBLISH {statistics.median(per):.0f}  ratio to ephemeral {med[mode] / med['ephemeral']:.2f}")
PY
