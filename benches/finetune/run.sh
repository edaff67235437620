#!/usr/bin/env bash
# Fine-tuning benchmark (see run.py): a throwaway cluster with the installed extension; writes
# benches/finetune/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=${PGPORT:-54471}
work=$(mktemp -d /tmp/biomedclip-ftbench.XXXXXX)
chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "work_mem = '64MB'" >/dev/null
target/pyenv/bin/python benches/finetune/run.py "$PORT"
