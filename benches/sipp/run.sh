#!/usr/bin/env bash
# Run one SIPp scenario of this directory against a SIP server (loopback only).
#
#   benches/sipp/run.sh TARGET_IP:PORT SCENARIO [rate] [calls] [-- extra sipp args...]
#
#   TARGET_IP:PORT  server address, e.g. 127.0.0.1:5070 or [::1]:5070.  For the
#                   UAS scenario notify_sink it is the *local* listen address.
#   SCENARIO        options | publish | publish_initial | subscribe | register |
#                   notify_sink | subscribe_fanout  (or a path to an .xml file)
#   rate            new calls per second (default 100; ignored by notify_sink)
#   calls           calls to run, SIPp -m (default 1000)
#
# Environment:
#   SIPP_USER       user-part prefix of the presentities/AORs ([service], default
#                   "user"): change it between runs against a long-lived server
#                   so that publish_initial/register create fresh entries.
#   SIPP_TIMEOUT    global timeout in seconds (default calls/rate + 30)
#   SIPP_RECV_TIMEOUT  per-message receive timeout in ms (default 10000)
#   SIPP_LIMIT      max simultaneous calls (-l; default SIPp's own)
#   SIPP_TRANSPORT  u1 (UDP, default) | t1 (TCP, one connection) | tn
#   SIPP_LOCAL_PORT local port (default: any)
#   SIPP_OUT        directory for stat/error/screen files (default: new mktemp dir)
#
# Prints successful/failed calls, retransmissions and the achieved rate; exits
# non-zero if any call failed, if fewer than `calls` calls succeeded, or if
# SIPp itself failed.
set -euo pipefail

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
TARGET=$1; SCEN=$2; shift 2
RATE=100; CALLS=1000
if [ $# -gt 0 ] && [ "$1" != "--" ]; then RATE=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then CALLS=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
EXTRA=("$@")

HERE=$(cd "$(dirname "$0")" && pwd)
case "$SCEN" in
  */*|*.xml) SF=$(cd "$(dirname "$SCEN")" && pwd)/$(basename "$SCEN") ;;
  *) SF=$HERE/$SCEN.xml ;;
esac
[ -f "$SF" ] || { echo "run.sh: no scenario $SF" >&2; exit 2; }
NAME=$(basename "$SF" .xml)

command -v sipp >/dev/null || { echo "run.sh: sipp not found (apt-get install -y sip-tester)" >&2; exit 2; }

# split IP:PORT ([v6]:port or v4:port)
if [[ $TARGET =~ ^\[(.*)\]:([0-9]+)$ ]]; then IP=${BASH_REMATCH[1]}; PORT=${BASH_REMATCH[2]}; HOSTPORT="[$IP]:$PORT"
elif [[ $TARGET =~ ^([^:]+):([0-9]+)$ ]]; then IP=${BASH_REMATCH[1]}; PORT=${BASH_REMATCH[2]}; HOSTPORT="$IP:$PORT"
else echo "run.sh: TARGET must be IP:PORT" >&2; exit 2; fi
case "$IP" in
  127.*|::1|localhost) ;;
  *) echo "run.sh: refusing non-loopback target $IP" >&2; exit 2 ;;
esac
[[ $RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "run.sh: bad rate $RATE" >&2; exit 2; }
[[ $CALLS =~ ^[0-9]+$ ]] && [ "$CALLS" -gt 0 ] || { echo "run.sh: bad calls $CALLS" >&2; exit 2; }

OUT=${SIPP_OUT:-$(mktemp -d /tmp/sipp-run.XXXXXX)}
mkdir -p "$OUT"
UAS=0; [ "$NAME" = notify_sink ] && UAS=1
if [ -n "${SIPP_TIMEOUT:-}" ]; then TMO=$SIPP_TIMEOUT
elif [ $UAS = 1 ]; then TMO=120
else TMO=$(awk -v c="$CALLS" -v r="$RATE" 'BEGIN{ r = (r > 0) ? r : 1; printf "%d", c / r + 30 }')
fi

ARGS=(-sf "$SF" -s "${SIPP_USER:-user}" -default_behaviors all,-bye -m "$CALLS" -t "${SIPP_TRANSPORT:-u1}"
      -buff_size 4194304 -max_recv_loops 10000 -max_sched_loops 10000
      -recv_timeout "${SIPP_RECV_TIMEOUT:-10000}" -timeout "${TMO}s" -timeout_error
      -trace_stat -stf "$OUT/$NAME.stat.csv" -fd 1
      -trace_err -error_file "$OUT/$NAME.errors.log"
      -trace_screen -screen_file "$OUT/$NAME.screen.log"
      -nostdin)
if [ $UAS = 1 ]; then
  ARGS+=(-i "$IP" -p "$PORT" -bind_local -deadcall_wait 1)
else
  ARGS+=("$HOSTPORT" -i "$IP" -r "$RATE")
  [ -n "${SIPP_LOCAL_PORT:-}" ] && ARGS+=(-p "$SIPP_LOCAL_PORT")
  [ -n "${SIPP_LIMIT:-}" ] && ARGS+=(-l "$SIPP_LIMIT")
fi
ARGS+=("${EXTRA[@]}")

SIPP_PID=
cleanup() { if [ -n "$SIPP_PID" ] && kill -0 "$SIPP_PID" 2>/dev/null; then kill "$SIPP_PID" 2>/dev/null || true; sleep 0.5; kill -9 "$SIPP_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

echo "run.sh: $NAME -> $HOSTPORT rate=$RATE calls=$CALLS timeout=${TMO}s out=$OUT"
echo "sipp ${ARGS[*]}" > "$OUT/$NAME.cmd"
# SIPp's interactive screen goes to a file (it redraws continuously)
( cd "$OUT" && exec sipp "${ARGS[@]}" ) > "$OUT/$NAME.stdout" 2>&1 < /dev/null &
SIPP_PID=$!
set +e; wait "$SIPP_PID"; RC=$?; set -e
SIPP_PID=

STAT=$OUT/$NAME.stat.csv
if [ ! -s "$STAT" ]; then
  echo "run.sh: sipp exited $RC without statistics; last output:" >&2
  tail -20 "$OUT/$NAME.stdout" >&2 || true
  exit 1
fi
# the last line holds the cumulative (C) counters; columns looked up by name
awk -F';' -v want="$CALLS" -v rc="$RC" -v uas="$UAS" '
  NR == 1 { for (i = 1; i <= NF; i++) { col[$i] = i; name[i] = $i }; next }
  { last = $0 }
  END {
    n = split(last, f, ";")
    ok   = f[col["SuccessfulCall(C)"]] + 0
    fail = f[col["FailedCall(C)"]] + 0
    retr = f[col["Retransmissions(C)"]] + 0
    made = (uas == 1) ? f[col["IncomingCall(C)"]] + 0 : f[col["OutgoingCall(C)"]] + 0
    split(f[col["StartTime"]], t0, "\t"); split(f[col["CurrentTime"]], t1, "\t")
    el = t1[3] - t0[3]                                 # epoch seconds, us resolution
    printf "calls: started=%d successful=%d failed=%d retransmissions=%d\n", made, ok, fail, retr
    printf "elapsed: %.2f s, achieved rate: %.1f successful calls/s\n", el, (el > 0 ? ok / el : 0)
    # response-time distribution per RTD (ms buckets), non-empty buckets only
    for (r = 1; r <= 9; r++) {
      line = ""
      p = "ResponseTimeRepartition" r "_"
      for (i = 1; i <= n; i++) if (index(name[i], p) == 1 && f[i] + 0 > 0)
        line = line sprintf(" %s:%d", substr(name[i], length(p) + 1), f[i])
      if (line != "") printf "response time rtd%d (ms bucket:count):%s\n", r, line
    }
    bad = (fail > 0 || ok < want || (rc != 0 && rc != 99))
    printf "sipp exit code %d -> %s\n", rc, bad ? "FAIL" : "OK"
    exit bad ? 1 : 0
  }' "$STAT" || { RES=1; }
RES=${RES:-0}
if [ -s "$OUT/$NAME.errors.log" ]; then
  echo "first errors ($OUT/$NAME.errors.log):"
  grep -v '^\s*$' "$OUT/$NAME.errors.log" | head -8
fi
exit $RES
