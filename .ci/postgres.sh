#!/usr/bin/env bash
# Start a throw-away PostgreSQL server (the OS package) for the monitoring store tests and print the
# URL they read from $VISIONPIPE_TEST_POSTGRES. Runs as root (as CI does): the server runs as the
# postgres user on a temporary data folder and a free port on 127.0.0.1. Stop it with
#   .ci/postgres.sh stop DATA_DIR
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    runuser -u postgres -- "$bin/pg_ctl" -D "$2/db" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$2"
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    (apt-get update && apt-get install -y postgresql) >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
data=$(mktemp -d /tmp/visionpipe-pg.XXXXXX)
chown postgres "$data"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$bin/initdb" -D "$data/db" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null
echo "postgresql://postgres@127.0.0.1:$port/postgres $data"
