#!/usr/bin/env bash
# presenced peak PUBLISH and fan-out rates against --shards (1..nproc),
# alternating shard counts, best of --rounds rate searches.
#
#   benches/compare/scaling.sh [--shard-list 1,2] [--scenarios publish,fanout] [--rounds N] [--no-build]
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/compare.py" scaling "$@"
