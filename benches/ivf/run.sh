#!/usr/bin/env bash
# ivf benchmark (not a test): throwaway cluster, 100k x 512 vectors, ours vs FAISS IndexIVFFlat.
# Writes benches/ivf/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-54351}
bash scripts/setup.sh
target/pyenv/bin/pip install -q --disable-pip-version-check -r benches/requirements.txt
cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
work=$(mktemp -d /tmp/biomedclip-bench.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "shared_buffers = '1GB'"
target/pyenv/bin/python benches/ivf/run.py "$PORT"
