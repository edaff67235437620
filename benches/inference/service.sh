#!/usr/bin/env bash
# Inference service against backend mode (benchmark, not a test): one cluster with
# shared_preload_libraries = 'biomedclip' and the full-size random-weight fp32 model; writes
# benches/inference/service_results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25332}
LIB="$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0"
bash scripts/setup.sh
if [ ! -f target/models/base/manifest.json ]; then
  target/pyenv/bin/python tools/make_test_model.py target/models/base --size base --int8 --shared "$ROOT/../shared/data"
fi
chmod -R a+rX target/models
bash scripts/install.sh
work=$(mktemp -d /tmp/biomedclip-bench.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "shared_preload_libraries = 'biomedclip'" "max_connections = 60" \
  "biomedclip.ort_library = '$LIB'" "biomedclip.model_dir = '$ROOT/target/models/base'"
bash scripts/pg_cluster.sh reachable "$(realpath "$ROOT/../shared/data")/medpix"
target/pyenv/bin/python benches/inference/service.py "$PORT" "$work/data" "${RESULTS:-benches/inference/service_results.md}"
