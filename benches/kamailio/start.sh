#!/usr/bin/env bash
# Start Kamailio 5.6 as an in-memory presence server (bench peer).
#
#   benches/kamailio/start.sh [PORT] [WORKERS]      (defaults 5070, 2)
#
# - installs kamailio + kamailio-presence-modules with apt-get when missing
# - prepares an empty db_text database in the run directory
#   ($KAM_RUNDIR, default /tmp/presenced-kamailio-PORT)
# - starts kamailio in the background (-DD -E: no daemonizing, logs to
#   RUNDIR/kamailio.log) with -x tlsf -X tlsf -m $KAM_SHM_MB -M $KAM_PKG_MB
#   -n WORKERS, listening on udp:$KAM_IP:PORT (KAM_IP default 127.0.0.1)
# - writes RUNDIR/kamailio.pid and waits until it answers OPTIONS with 200
# Stop it with benches/kamailio/stop.sh PORT.
set -euo pipefail
PORT=${1:-5070}
WORKERS=${2:-2}
IP=${KAM_IP:-127.0.0.1}
SHM_MB=${KAM_SHM_MB:-4096}
PKG_MB=${KAM_PKG_MB:-32}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
RUNDIR=$(kam_rundir "$PORT")
CFG=$HERE/kamailio-presence.cfg

[[ $PORT =~ ^[0-9]+$ ]] && [[ $WORKERS =~ ^[0-9]+$ ]] || { echo "usage: $0 [PORT] [WORKERS]" >&2; exit 2; }
case "$IP" in 127.*|::1) ;; *) echo "start.sh: loopback only (KAM_IP=$IP)" >&2; exit 2 ;; esac

# ---- packages
if ! command -v kamailio >/dev/null || [ ! -f "$KAM_MODDIR/presence.so" ] || [ ! -f "$KAM_MODDIR/presence_xml.so" ]; then
  echo "start.sh: installing kamailio kamailio-presence-modules"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq kamailio kamailio-presence-modules >/dev/null
fi

# ---- already running?
PIDF=$RUNDIR/kamailio.pid
if [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; then
  echo "start.sh: kamailio already running on port $PORT (pid $(cat "$PIDF")); stop.sh $PORT first" >&2
  exit 1
fi

# ---- run directory + empty db_text database (schema files from the package)
rm -rf "$RUNDIR/db"
mkdir -p "$RUNDIR/db"
SCHEMA=$(dpkg -L kamailio 2>/dev/null | grep -m1 '/dbtext/kamailio$' || true)
SCHEMA=${SCHEMA:-/usr/share/kamailio/dbtext/kamailio}
for t in version presentity active_watchers watchers xcap location location_attrs; do
  cp "$SCHEMA/$t" "$RUNDIR/db/$t"
done
rm -f "$RUNDIR/kamailio_ctl"

LISTEN="udp:$IP:$PORT"
[ "$IP" = "::1" ] && LISTEN="udp:[::1]:$PORT"
ARGS=(-DD -E -f "$CFG"
      -A "DBURL=\"text://$RUNDIR/db\"" -A "CTLSOCK=\"unix:$RUNDIR/kamailio_ctl\""
      -l "$LISTEN" -n "$WORKERS"
      -x tlsf -X tlsf -m "$SHM_MB" -M "$PKG_MB"
      -Y "$RUNDIR" -w "$RUNDIR")
kamailio -c "${ARGS[@]}" > "$RUNDIR/check.log" 2>&1 || { echo "start.sh: config check failed:" >&2; tail -20 "$RUNDIR/check.log" >&2; exit 1; }

echo "kamailio ${ARGS[*]}" > "$RUNDIR/cmdline"
# own session so that stop.sh can also reap the worker processes by group
setsid kamailio "${ARGS[@]}" > "$RUNDIR/kamailio.log" 2>&1 < /dev/null &
KPID=$!
echo "$KPID" > "$PIDF"
# until it answers, any exit (error, Ctrl-C) stops what was just started
UP=0
trap '[ "$UP" = 1 ] || "$HERE/stop.sh" "$PORT" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM

fail() {
  echo "start.sh: $*" >&2
  tail -20 "$RUNDIR/kamailio.log" >&2 || true
  exit 1   # the EXIT trap stops kamailio
}

# ---- wait until it answers OPTIONS (plain UDP probe, no SIPp needed)
probe() {
  python3 - "$IP" "$PORT" <<'PY'
import socket, sys, random
ip, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(0.5)
s.bind((ip, 0)); lport = s.getsockname()[1]
host = "[%s]" % ip if fam == socket.AF_INET6 else ip
b = "z9hG4bK-probe-%d" % random.randrange(1 << 30)
msg = ("OPTIONS sip:probe@%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=%s;rport\r\n"
       "Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=p1\r\nTo: <sip:probe@%s:%d>\r\n"
       "Call-ID: %s@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") % (
       host, port, host, lport, b, host, host, port, b)
s.sendto(msg.encode(), (ip, port))
try:
    data = s.recv(65535).decode("latin-1")
except socket.timeout:
    sys.exit(1)
sys.exit(0 if data.startswith("SIP/2.0 200") else 1)
PY
}
for i in $(seq 1 60); do
  kill -0 "$KPID" 2>/dev/null || fail "kamailio exited during startup"
  if probe; then
    UP=1
    echo "kamailio up: pid $KPID, udp $IP:$PORT, $WORKERS workers, shm ${SHM_MB} MiB tlsf, rundir $RUNDIR"
    exit 0
  fi
  sleep 0.5
done
fail "no 200 to OPTIONS after 30 s"
