#!/usr/bin/env bash
# NOTIFY fan-out test: W watchers on P presentities, R rounds of PUBLISH.
#
#   benches/sipp/fanout.sh TARGET_IP:PORT [WATCHERS] [PRESENTITIES] [ROUNDS]
#                                          (defaults 1000 10 5)
#
# 1. starts a NOTIFY sink (notify_sink.xml, UAS) on 127.0.0.1:$SINK_PORT
#    (default 5091), bounded by -m WATCHERS and a timeout;
# 2. subscribes WATCHERS watchers (subscribe_fanout.xml) spread evenly over
#    PRESENTITIES presentities fo<run>_1..P, Contact = the sink;
# 3. sends ROUNDS rounds of one PUBLISH per presentity (publish_initial.xml),
#    i.e. ROUNDS * WATCHERS NOTIFYs expected on top of the WATCHERS initial ones;
# 4. waits until the sink has answered them all (or FANOUT_WAIT seconds) and
#    prints the NOTIFY rate seen by the sink during the publish phase
#    (1 s resolution: SIPp's -trace_counts file).
# The sink is stopped by PID at the end (also on error).  Subscriptions stay
# on the server until they expire (600 s): each run uses its own presentity
# names (fo<pid>_N), so runs do not disturb each other.
# Env: SINK_PORT, SUB_RATE (default 2000/s), PUB_RATE (default 1000/s),
#      FANOUT_WAIT (default 60 s), SIPP_OUT (result dir).
set -euo pipefail
TARGET=${1:?usage: fanout.sh TARGET_IP:PORT [WATCHERS] [PRESENTITIES] [ROUNDS]}
W=${2:-1000}; P=${3:-10}; R=${4:-5}
SINK_PORT=${SINK_PORT:-5091}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${SIPP_OUT:-$(mktemp -d /tmp/sipp-fanout.XXXXXX)}
mkdir -p "$OUT"
RUN=fo$$_
TMO=$(( ${FANOUT_WAIT:-60} + W / ${SUB_RATE:-2000} + R * P / ${PUB_RATE:-1000} + 60 ))

SINK_PID=
cleanup() { if [ -n "$SINK_PID" ] && kill -0 "$SINK_PID" 2>/dev/null; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# injection file: watcher i -> presentity (i mod P) + 1
{ echo SEQUENTIAL; for ((i = 0; i < W; i++)); do echo "${RUN}$(( i % P + 1 ));"; done; } > "$OUT/watchers.csv"

echo "fanout: $W watchers on $P presentities, $R publish rounds, sink 127.0.0.1:$SINK_PORT, out=$OUT"
SIPP_OUT=$OUT/sink SIPP_TIMEOUT=$TMO "$HERE/run.sh" "127.0.0.1:$SINK_PORT" notify_sink 0 "$W" -- -trace_counts > "$OUT/sink.out" 2>&1 &
SINK_PID=$!
sleep 1
kill -0 "$SINK_PID" 2>/dev/null || { echo "fanout: sink failed to start"; cat "$OUT/sink.out"; exit 1; }

echo "-- subscribe $W watchers"
SIPP_OUT=$OUT/sub "$HERE/run.sh" "$TARGET" subscribe_fanout "${SUB_RATE:-2000}" "$W" -- \
  -inf "$OUT/watchers.csv" -key sink "127.0.0.1:$SINK_PORT" | sed 's/^/   /'

counts() {   # NOTIFYs received by the sink so far: "received retransmissions"
  # (received includes retransmissions SIPp could not recognise as such)
  local f; f=$(ls "$OUT"/sink/notify_sink_*_counts.csv 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "0 0"; return; }
  awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i ~ /NOTIFY_Recv$/) c[i] = 1; if ($i ~ /NOTIFY_Retrans$/) r[i] = 1 }; next }
             { n = 0; m = 0; for (i in c) n += $i; for (i in r) m += $i } END { print n + 0, m + 0 }' "$f"
}
recv() { counts | cut -d' ' -f1; }
# wait for the initial NOTIFYs
for i in $(seq 1 30); do [ "$(recv)" -ge "$W" ] && break; sleep 1; done
BASE=$(recv)
echo "-- initial NOTIFYs received by the sink: $BASE / $W"

T0=$(date +%s.%N)
for ((r = 1; r <= R; r++)); do
  SIPP_USER=$RUN SIPP_OUT=$OUT/pub$r "$HERE/run.sh" "$TARGET" publish_initial "${PUB_RATE:-1000}" "$P" | grep -E 'calls:|exit' | sed "s/^/   round $r: /"
done
WANT=$(( BASE + R * W ))
for i in $(seq 1 "${FANOUT_WAIT:-60}"); do [ "$(recv)" -ge "$WANT" ] && break; sleep 1; done
T1=$(date +%s.%N)
sleep 1.2; read -r GOT RETR < <(counts)   # the counts file lags up to 1 s
awk -v got="$GOT" -v retr="$RETR" -v base="$BASE" -v want="$WANT" -v t0="$T0" -v t1="$T1" 'BEGIN {
  n = got - base; exp_n = want - base; el = t1 - t0; ok = (n < exp_n) ? n : exp_n
  printf "fanout: %d/%d publish-triggered NOTIFYs within %.1f s (1 s resolution): %.0f NOTIFY/s\n", ok, exp_n, el, (el > 0 ? ok / el : 0)
  printf "        extra NOTIFYs (unrecognised retransmissions): %d, recognised retransmissions: %d\n", (n > exp_n ? n - exp_n : 0), retr
  exit (got >= want) ? 0 : 1 }'
