#!/usr/bin/env bash
# Bytes per presentity (~500-byte PIDF) and per subscription, presenced
# (VmRSS growth) vs Kamailio 5.6 (shared-memory growth, shmem.sh).
#
#   benches/compare/memory.sh [N] [M] [--shards N] [--rate CPS] [--settle S] [--no-build]
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/compare.py" memory "$@"
