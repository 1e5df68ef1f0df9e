#!/usr/bin/env bash
# NOTIFY fan-out with per-watcher views, end to end: one presentity, W
# watchers (sipload fanout), PUBLISHes at RATE/s. Each pair of runs is
#   1. allow-all: no rules, every watcher gets the composed document;
#   2. three outcomes: pres-rules PUT through the management plane giving a
#      third of the watchers each the full document, services + notes, and
#      persons + activities + notes (every view keeps the top-level note that
#      carries sipload's sequence tag, so every NOTIFY is attributed);
# and the script prints the NOTIFY rate of each run, the medians and their
# ratio (three outcomes / allow-all; the goal is >= 0.9).
#
#   benches/authz_fanout.sh [WATCHERS] [RATE] [DURATION] [PAIRS]
#                            (defaults 1000 50 5 3)
#
# Starts its own presenced (target/release, built if missing) on loopback
# ports with --default-policy allow and a management token, and stops it by
# PID on exit. Env: SIP_PORT (5260), MGMT_PORT (9260), SHARDS (1),
# SIPLOAD_ARGS (extra sipload flags). Needs curl and python3.
set -euo pipefail
W=${1:-1000}; RATE=${2:-50}; DURATION=${3:-5}; PAIRS=${4:-3}
SIP_PORT=${SIP_PORT:-5260}; MGMT_PORT=${MGMT_PORT:-9260}; SHARDS=${SHARDS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
if [ ! -x "$BIN/presenced" ] || [ ! -x "$BIN/sipload" ]; then
  (cd "$ROOT" && cargo build --release -p presenced -p presence-benches --bin presenced --bin sipload)
fi
TMP=$(mktemp -d /tmp/authz-fanout.XXXXXX)
TOKEN="authz-fanout-$$"
echo "$TOKEN" > "$TMP/token"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

"$BIN/presenced" --listen "127.0.0.1:$SIP_PORT" --mgmt-listen "127.0.0.1:$MGMT_PORT" --shards "$SHARDS" \
  --default-policy allow --mgmt-token-file "$TMP/token" --data-dir "$TMP/data" 2> "$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$MGMT_PORT/readyz" > /dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "authz_fanout: presenced did not start"; cat "$TMP/server.log"; exit 1; }
  sleep 0.2
done

# sipload fanout names the presentity sip:u0@example.com and the watchers sip:w<N>@example.com.
python3 - "$W" > "$TMP/rules.xml" <<'EOF'
import sys
watchers = int(sys.argv[1])
groups = [[], [], []]
for n in range(watchers):
    groups[n % 3].append(f'<cr:one id="sip:w{n}@example.com"/>')
views = [
    '<pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-persons><pr:all-persons/></pr:provide-persons>'
    '<pr:provide-devices><pr:all-devices/></pr:provide-devices><pr:provide-all-attributes/>',
    '<pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-note>true</pr:provide-note>',
    '<pr:provide-persons><pr:all-persons/></pr:provide-persons><pr:provide-activities>true</pr:provide-activities>'
    '<pr:provide-note>true</pr:provide-note>',
]
print('<?xml version="1.0" encoding="UTF-8"?>')
print('<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules">')
for i, (ids, view) in enumerate(zip(groups, views)):
    print(f'<cr:rule id="g{i}"><cr:conditions><cr:identity>{"".join(ids)}</cr:identity></cr:conditions>'
          f'<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>'
          f'<cr:transformations>{view}</cr:transformations></cr:rule>')
print('</cr:ruleset>')
EOF
RULES_URL="http://127.0.0.1:$MGMT_PORT/xcap-root/pres-rules/users/sip:u0@example.com/index"

rules() {   # rules on|off
  local code
  if [ "$1" = on ]; then
    code=$(curl -s -o "$TMP/answer" -w '%{http_code}' -X PUT -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/auth-policy+xml' --data-binary @"$TMP/rules.xml" "$RULES_URL")
    case "$code" in 200|201) ;; *) echo "authz_fanout: rules PUT answered $code: $(cat "$TMP/answer")"; exit 1;; esac
  else
    code=$(curl -s -o "$TMP/answer" -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOKEN" "$RULES_URL")
    case "$code" in 200|404) ;; *) echo "authz_fanout: rules DELETE answered $code: $(cat "$TMP/answer")"; exit 1;; esac
  fi
}

run() {   # prints "NOTIFY/s lost"
  # shellcheck disable=SC2086
  "$BIN/sipload" fanout --target "127.0.0.1:$SIP_PORT" --presentities 1 --watchers "$W" --rate "$RATE" \
    --duration "$DURATION" --json ${SIPLOAD_ARGS:-} > "$TMP/run.json"
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
c = r["counters"]
print(round(c["notifies_in_window"] / r["duration_s"]), c.get("watchers_missing_states", 0))' "$TMP/run.json"
}

echo "authz_fanout: 1 presentity x $W watchers, $RATE PUBLISH/s offered, ${DURATION}s measured, $PAIRS pairs, $SHARDS shard(s)"
ALLOW=(); THREE=()
for pair in $(seq 1 "$PAIRS"); do
  rules off; read -r a a_missing < <(run)
  rules on;  read -r b b_missing < <(run)
  echo "  pair $pair: allow-all $a NOTIFY/s (watchers missing states: $a_missing), three outcomes $b NOTIFY/s (missing: $b_missing)"
  ALLOW+=("$a"); THREE+=("$b")
done
python3 - "${ALLOW[*]}" "${THREE[*]}" <<'EOF'
import statistics, sys
allow = [float(x) for x in sys.argv[1].split()]
three = [float(x) for x in sys.argv[2].split()]
a, b = statistics.median(allow), statistics.median(three)
print(f"median: allow-all {a:.0f} NOTIFY/s, three outcomes {b:.0f} NOTIFY/s, ratio {b / a:.3f} (goal >= 0.9)")
EOF
