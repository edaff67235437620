#!/usr/bin/env bash
# Distributed top-10 on Citus (benchmark, not a test): 1M x 512 generated vectors, an ivf index on a
# plain table on one node and on a table distributed over 2 workers, the same queries through both;
# writes benches/citus/search_results.md. About 15 minutes on a 2-core machine; needs ~12 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25461}
bash scripts/setup.sh >/dev/null
target/pyenv/bin/pip install -q --disable-pip-version-check -r benches/requirements.txt
bash scripts/install.sh
bash scripts/citus.sh
work=$(mktemp -d /tmp/biomedclip-citus-search.XXXXXX); chmod 755 "$work"
trap 'for p in 0 1 2; do bash scripts/pg_cluster.sh stop "$work/node$p" immediate || true; done; rm -rf "$work"' EXIT
for p in 0 1 2; do
  # biomedclip is not preloaded: no model runs here, the index access method loads on first use.
  bash scripts/pg_cluster.sh start "$work/node$p" $((PORT + p)) "shared_preload_libraries = 'citus'" \
    "shared_buffers = '2GB'" "maintenance_work_mem = '1GB'" "max_connections = 60" "max_prepared_transactions = 100" \
    "citus.node_conninfo = 'sslmode=disable'" "max_wal_size = '8GB'" "synchronous_commit = off"
done
target/pyenv/bin/python benches/citus/search.py "$PORT" "${RESULTS:-benches/citus/search_results.md}"
