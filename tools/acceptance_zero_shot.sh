#!/usr/bin/env bash
# Acceptance test of a real BiomedCLIP export (tools/export_biomedclip.py) against the real
# model's zero-shot outputs: bash tools/acceptance_zero_shot.sh MODEL_DIR
# It cannot pass with the generated random-weight test models; it is ready for real weights.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODEL=$(realpath "${1:?usage: acceptance_zero_shot.sh MODEL_DIR}")
PORT=${ACCEPT_PORT:-54371}
bash scripts/setup.sh >/dev/null
cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
work=$(mktemp -d /tmp/biomedclip-accept.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
chmod -R a+rX "$MODEL"; bash scripts/pg_cluster.sh reachable "$MODEL"
SHARED=$(realpath "$ROOT/../shared/data"); bash scripts/pg_cluster.sh reachable "$SHARED/biomedclip"
bash scripts/pg_cluster.sh start "$work/data" "$PORT" \
  "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" "biomedclip.model_dir = '$MODEL'"
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE EXTENSION biomedclip"
target/pyenv/bin/python tools/acceptance_zero_shot.py "$PORT" "$SHARED"
