#!/usr/bin/env bash
# Embedding on Citus workers (benchmark, not a test): INSERT ... SELECT biomedclip_embed_image()
# between co-located distributed tables with 1 worker and with 2, against one node; full-size
# random-weight fp32 model; writes benches/citus/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25451}
bash scripts/setup.sh >/dev/null
bash scripts/install.sh
bash scripts/citus.sh
if [ ! -f target/models/base/manifest.json ]; then
  target/pyenv/bin/python tools/make_test_model.py target/models/base --size base --int8 --shared "$ROOT/../shared/data"
fi
chmod -R a+rX target/models
work=$(mktemp -d /tmp/biomedclip-citus-bench.XXXXXX); chmod 755 "$work"
trap 'for p in 0 1 2; do bash scripts/pg_cluster.sh stop "$work/node$p" immediate || true; done; rm -rf "$work"' EXIT
for p in 0 1 2; do
  bash scripts/pg_cluster.sh start "$work/node$p" $((PORT + p)) "shared_preload_libraries = 'citus, biomedclip'" \
    "max_connections = 60" "max_prepared_transactions = 100" "citus.node_conninfo = 'sslmode=disable'" \
    "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" "biomedclip.model_dir = '$ROOT/target/models/base'"
done
bash scripts/pg_cluster.sh reachable "$(realpath "$ROOT/../shared/data")/medpix"
target/pyenv/bin/python benches/citus/run.py "$PORT" "${RESULTS:-benches/citus/results.md}"
