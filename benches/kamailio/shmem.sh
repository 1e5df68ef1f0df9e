#!/usr/bin/env bash
# Print Kamailio's used shared memory in bytes (for the memory comparison).
#   benches/kamailio/shmem.sh [PORT] [-v]
# Default output: one number, the statistic shmem:real_used_size (payload +
# allocator overhead, i.e. what the allocator has handed out).  Measure it
# right after start.sh and again after the load; the difference is what the
# presence state costs.  -v prints all shmem:* statistics.
# (kamcmd core.shmmem prints 32-bit values: with -m 4096 its "total" and
# "free" wrap around, hence the statistics are used here.)
set -euo pipefail
PORT=${1:-5070}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
RUNDIR=$(kam_rundir "$PORT")
OUT=$(kamcmd -s "unix:$RUNDIR/kamailio_ctl" stats.get_statistics shmem:)
if [ "${2:-}" = "-v" ]; then
  echo "$OUT"
else
  echo "$OUT" | awk '$1 == "shmem:real_used_size" { print $3 }'
fi
