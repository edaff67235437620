#!/usr/bin/env bash
# Throwaway or embedded PostgreSQL 15 clusters run as the postgres user (PostgreSQL refuses root).
# Usage: scripts/pg_cluster.sh start DIR PORT [extra postgresql.conf lines...]
#        scripts/pg_cluster.sh reachable DIR   (let postgres traverse to DIR)
#        scripts/pg_cluster.sh stop DIR [mode]
#        scripts/pg_cluster.sh status DIR
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
cmd=${1:?start|stop|status}; dir=${2:?data directory}
dir=$(realpath -m "$dir")

as_pg() { su postgres -s /bin/bash -c "$*"; }

# postgres must be able to reach the directory: grant traversal (not listing) on ancestors.
ensure_reachable() {
  local d; d=$(dirname "$1")
  while [ "$d" != "/" ]; do
    if ! su postgres -s /bin/bash -c "test -x '$d'" 2>/dev/null; then
      echo "pg_cluster: granting traversal (o+x) on $d so that postgres can reach $1" >&2
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
}

case "$cmd" in
  reachable)
    ensure_reachable "$dir/x" ;;
  start)
    port=${3:?port}; shift 3
    ensure_reachable "$dir"
    mkdir -p "$dir"; chown postgres:postgres "$dir"; chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$PGBIN/initdb -D '$dir' -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8" >/dev/null
      {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = on"
        echo "logging_collector = off"
        for line in "$@"; do echo "$line"; done
      } >> "$dir/postgresql.conf"
    fi
    if ! as_pg "$PGBIN/pg_ctl -D '$dir' status" >/dev/null 2>&1; then
      # Started without RUST_BACKTRACE: a backtrace per ERROR makes cancels 25x slower.
      as_pg "env -u RUST_BACKTRACE $PGBIN/pg_ctl -D '$dir' -l '$dir/server.log' -w -t 60 start" >/dev/null
    fi
    ;;
  stop)
    mode=${3:-fast}
    if [ -f "$dir/postmaster.pid" ]; then
      as_pg "$PGBIN/pg_ctl -D '$dir' -m $mode -w -t 60 stop" >/dev/null 2>&1 || true
    fi
    ;;
  status)
    as_pg "$PGBIN/pg_ctl -D '$dir' status" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
