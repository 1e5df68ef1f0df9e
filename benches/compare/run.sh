#!/usr/bin/env bash
# presenced vs Kamailio 5.6 side by side: PUBLISH, SUBSCRIBE-dialog and NOTIFY
# fan-out peak rates (open-loop rate search, alternating servers, >= 2 rounds)
# and p99 PUBLISH->NOTIFY at half the peak.  Installs Kamailio + presence
# modules when missing, starts both servers (fresh per rate search), stops
# them by PID, prints a side-by-side table with ratios and the machine.
#
#   benches/compare/run.sh [--duration S] [--rounds N] [--scenarios publish,subscribe,fanout,latency]
#                          [--shards N] [--no-build] [--out DIR] ...   (--help for all)
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/compare.py" run "$@"
