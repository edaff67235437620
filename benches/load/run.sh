#!/usr/bin/env bash
# The 10-minute load scenario (benches/load/results.md); DURATION=60 for the short version.
# SERVICE=1: the same with shared_preload_libraries = 'biomedclip' (the inference service runs the
# model; benches/load/results_service.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25391}
bash scripts/setup.sh >/dev/null
bash scripts/install.sh
work=$(mktemp -d /tmp/biomedclip-load.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
preload=()
results=benches/load/results.md
if [ "${SERVICE:-0}" = 1 ]; then
  preload=("shared_preload_libraries = 'biomedclip'")
  results=benches/load/results_service.md
fi
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "max_connections = 50" "${preload[@]}" \
  "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" "biomedclip.model_dir = '$ROOT/target/models/tiny'"
target/pyenv/bin/python benches/load/run.py "$PORT" "${DURATION:-600}" "${RESULTS:-$results}"
