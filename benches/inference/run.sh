#!/usr/bin/env bash
# Inference benchmark (not a test): generates the full-size random-weight model (fp32 + int8,
# about 1.6 GB in target/models, never committed), builds the direct runner, starts a throwaway
# cluster and runs benches/inference/run.py, which writes benches/inference/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25331}
LIB="$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0"
bash scripts/setup.sh
if [ ! -f target/models/base-int8/manifest.json ]; then
  echo "bench: generating the full-size random-weight model (fp32 and int8)"
  target/pyenv/bin/python tools/make_test_model.py target/models/base --size base --int8 --shared "$ROOT/../shared/data"
fi
chmod -R a+rX target/models
cargo build --release -q -p biomedclip-core --example direct_runner
bash scripts/install.sh
work=$(mktemp -d /tmp/biomedclip-bench.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "biomedclip.ort_library = '$LIB'"
bash scripts/pg_cluster.sh reachable "$(realpath "$ROOT/../shared/data")/medpix"
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE EXTENSION biomedclip"
target/pyenv/bin/python benches/inference/run.py "$PORT" "$LIB"
