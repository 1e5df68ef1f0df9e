#!/usr/bin/env bash
# Stop the Kamailio started by start.sh for PORT (default 5070), by PID.
#   benches/kamailio/stop.sh [PORT]
set -uo pipefail
PORT=${1:-5070}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
RUNDIR=$(kam_rundir "$PORT")
PIDF=$RUNDIR/kamailio.pid
[ -f "$PIDF" ] || { echo "stop.sh: no pid file $PIDF"; exit 0; }
PID=$(cat "$PIDF")
if ! kill -0 "$PID" 2>/dev/null; then
  echo "stop.sh: pid $PID not running"; rm -f "$PIDF"; exit 0
fi
# sanity: only signal it if it is really our kamailio
if ! tr '\0' ' ' < "/proc/$PID/cmdline" | grep -q "kamailio.*$RUNDIR"; then
  echo "stop.sh: pid $PID is not the kamailio of $RUNDIR, not touching it" >&2; exit 1
fi
kill -TERM "$PID"
for i in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
if kill -0 "$PID" 2>/dev/null; then
  echo "stop.sh: pid $PID still alive, SIGKILL to its process group"
  kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID"
fi
# workers left behind (same process group, created by setsid in start.sh)
sleep 0.2
kill -KILL -- "-$PID" 2>/dev/null || true
rm -f "$PIDF"
echo "stop.sh: kamailio (pid $PID, port $PORT) stopped"
