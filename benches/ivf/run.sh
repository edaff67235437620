#!/usr/bin/env bash
# ivf benchmark (not a test): a throwaway cluster; our ivf against pgvector 0.8.6 (built from
# ../shared/peers into the system PostgreSQL) and FAISS. Writes benches/ivf/results.md.
# DATASETS=real,clustered (default) N=100000 (clustered rows; N=1000000 is the scale run, with
# RESULTS=benches/ivf/results_1m.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25351}
bash scripts/setup.sh
target/pyenv/bin/pip install -q --disable-pip-version-check -r benches/requirements.txt
bash scripts/install.sh
work=$(mktemp -d /tmp/biomedclip-bench.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
tar -xzf "$ROOT/../shared/peers/pgvector-0.8.6.tar.gz" -C "$work"
make -s -C "$work/pgvector-0.8.6" PG_CONFIG=/usr/bin/pg_config >/dev/null
make -s -C "$work/pgvector-0.8.6" install PG_CONFIG=/usr/bin/pg_config >/dev/null
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "shared_buffers = '1GB'"
target/pyenv/bin/python benches/ivf/run.py "$PORT"
