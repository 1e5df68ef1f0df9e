#!/usr/bin/env bash
# What scraping /metrics once a second costs the NOTIFY fan-out benchmark.
#
#   mgmt/bench/scrape_cost.sh [PAIRS] [RATE] [DURATION]   (defaults 3 1000 10)
#
# Against a fresh presenced per run (release build, 1 shard, loopback ports
# 5070 / 9191):
#
# 1. Fan-out runs, without and with a scraper (one GET /metrics per second),
#    alternating (and alternating which goes first), PAIRS times: `sipload fanout` with 100 presentities x 10
#    watchers at RATE PUBLISHes per second (a rate the server sustains). For
#    each run: the NOTIFY throughput achieved and the server's CPU time
#    (user + system, whole process) per NOTIFY delivered. A CPU-bound
#    server's capacity is inversely proportional to the latter.
# 2. The server CPU one scrape costs, measured directly: 500 back-to-back
#    scrapes on one keep-alive connection, minus the idle CPU over the same
#    time. At one scrape per second this bounds the capacity lost, far more
#    precisely than (1) can on a small machine.
#
# Everything it starts is stopped by PID (also on error or interrupt).
set -euo pipefail
PAIRS=${1:-3}; RATE=${2:-1000}; DURATION=${3:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/target/release
SIP=127.0.0.1:5070; MGMT=127.0.0.1:9191
[ -x "$BIN/presenced" ] && [ -x "$BIN/sipload" ] || { echo "build first: cargo build --release -p presenced -p presence-benches" >&2; exit 2; }

SERVER_PID=; SCRAPER_PID=
stop() {
  for pid in $SCRAPER_PID $SERVER_PID; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  SERVER_PID=; SCRAPER_PID=
}
trap stop EXIT
trap 'stop; exit 130' INT TERM

start_server() {
  "$BIN/presenced" --listen $SIP --shards 1 --mgmt-listen $MGMT 2>/dev/null &
  SERVER_PID=$!
  for _ in $(seq 50); do curl -sf "http://$MGMT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
}

cpu_ticks() { # user + system clock ticks of a process
  awk '{print $14 + $15}' "/proc/$1/stat"
}

fanout_run() { # $1 = with|without; prints "NOTIFY/s achieved" "server CPU µs per NOTIFY"
  start_server
  if [ "$1" = with ]; then
    # Like Prometheus: one kept-alive connection, one GET /metrics a second.
    python3 -c '
import http.client, sys, time
host, port = sys.argv[1].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=5)
while True:
    try:
        conn.request("GET", "/metrics")
        conn.getresponse().read()
    except Exception:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
    time.sleep(1)' "$MGMT" &
    SCRAPER_PID=$!
  fi
  local out before after rate delivered
  before=$(cpu_ticks "$SERVER_PID")
  out=$(timeout $((DURATION + 120)) "$BIN/sipload" fanout --target $SIP --rate "$RATE" --presentities 100 \
        --watchers 10 --warmup 2 --duration "$DURATION" --light-parse 2>/dev/null)
  after=$(cpu_ticks "$SERVER_PID")
  stop
  rate=$(echo "$out" | sed -n 's/^PUBLISH->NOTIFY: offered [0-9.]*\/s, achieved \([0-9.]*\)\/s.*/\1/p')
  delivered=$(echo "$out" | sed -n 's/.*notifies_received=\([0-9]*\).*/\1/p')
  python3 -c '
import os, sys
rate, delivered, ticks = float(sys.argv[1] or 0), max(int(sys.argv[2] or 1), 1), int(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
print(f"{rate:.0f} {ticks / hz * 1e6 / delivered:.2f}")' "$rate" "$delivered" "$((after - before))"
}

declare -a WITHOUT WITH
for i in $(seq "$PAIRS"); do
  # Alternate which mode goes first, so a drift in the machine's load
  # (other work on the same cores) does not favour one of them.
  if [ $((i % 2)) = 1 ]; then
    read -r a_rate a_cpu < <(fanout_run without)
    read -r b_rate b_cpu < <(fanout_run with)
  else
    read -r b_rate b_cpu < <(fanout_run with)
    read -r a_rate a_cpu < <(fanout_run without)
  fi
  WITHOUT+=("$a_cpu"); WITH+=("$b_cpu")
  echo "fan-out pair $i: without scraping ${a_rate} NOTIFY/s, ${a_cpu} µs CPU/NOTIFY;" \
       "with scraping ${b_rate} NOTIFY/s, ${b_cpu} µs CPU/NOTIFY"
done
python3 - "${WITHOUT[*]}" "${WITH[*]}" <<'EOF'
import sys
without = [float(x) for x in sys.argv[1].split()]
with_ = [float(x) for x in sys.argv[2].split()]
a, b = sum(without) / len(without), sum(with_) / len(with_)
spread = (max(without) - min(without)) / a * 100
print(f"fan-out mean server CPU per NOTIFY: without {a:.2f} µs, with {b:.2f} µs ({100 * (b - a) / a:+.1f}%;"
      f" run-to-run spread without scraping {spread:.0f}%)")
EOF

start_server
python3 - "$SERVER_PID" "$MGMT" <<'EOF'
import http.client, os, sys, time
pid, (host, port) = sys.argv[1], sys.argv[2].split(":")
hz = os.sysconf("SC_CLK_TCK")
def seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz
start = seconds(); time.sleep(5); idle = (seconds() - start) / 5
connection = http.client.HTTPConnection(host, int(port), timeout=10)
n = 500
start, wall = seconds(), time.time()
for _ in range(n):
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, response.status
wall = time.time() - wall
per_scrape = ((seconds() - start) - idle * wall) / n
print(f"one scrape ({len(body)} bytes) costs the server {per_scrape * 1e6:.0f} µs of CPU (idle {idle * 100:.2f}% of a core"
      f" subtracted): at one scrape per second, {per_scrape * 100:.3f}% of one core")
EOF
stop
