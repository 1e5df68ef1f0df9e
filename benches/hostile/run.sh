#!/usr/bin/env bash
# PUBLISH throughput and scrape latency with and without hostile clients
# (benches/README.md, "Idle and half-open connections"): one release server,
# then ROUNDS (default 3) pairs of runs, alternating: "none" (no extra
# connections) and "flood" (1,000 idle TCP connections on the SIP port and
# 500 half-open HTTP connections on the management plane, held by
# benches/hostile/flood.py, which reopens whatever the server closes).
# Each run: sipload publish closed loop for 5 s, then 50 timed scrapes of
# /metrics, one every 50 ms. Loopback only.
#   cargo build --release -p presenced -p presence-benches
#   benches/hostile/run.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
sip=127.0.0.1:15060
mgmt=127.0.0.1:19090
ulimit -n 20000
target/release/presenced --listen "$sip" --shards 2 --mgmt-listen "$mgmt" --default-policy allow --ephemeral \
    2>/tmp/presenced-hostile-bench.log &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
sleep 1
for round in $(seq 1 "$rounds"); do
    for mode in none flood; do
        holder=
        if [ "$mode" = flood ]; then
            python3 benches/hostile/flood.py hold --sip "$sip" --mgmt "$mgmt" \
                --sip-conns 1000 --mgmt-conns 500 --duration 20 &
            holder=$!
            sleep 3 # let the connections open
        fi
        publish=$(target/release/sipload publish --target "$sip" --duration 5 --warmup 1 --json |
            python3 -c 'import json,sys; print("%.0f PUBLISH/s" % json.load(sys.stdin)["achieved_rate"])')
        scrape=$(python3 benches/hostile/flood.py scrape --mgmt "$mgmt" --count 50 --interval 0.05)
        echo "round $round $mode: $publish; $scrape"
        if [ -n "$holder" ]; then wait "$holder"; fi
    done
done
