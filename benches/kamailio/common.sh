# sourced by start.sh / stop.sh / shmem.sh
# Run directory of the Kamailio instance for port $PORT: PID file, binrpc
# control socket, db_text database, log.
kam_rundir() { echo "${KAM_RUNDIR:-/tmp/presenced-kamailio-$1}"; }
KAM_MODDIR=/usr/lib/x86_64-linux-gnu/kamailio/modules
