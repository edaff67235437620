#!/usr/bin/env bash
# Fine-tuning benchmark (see run.py): a throwaway cluster with the installed extension and the
# base-size random model (BiomedCLIP's shapes: 768-d features, a 768→512 image head and a
# 768→640→512 text MLP, which kind 'projection' fine-tunes); writes benches/finetune/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${PGPORT:-25471}
if ! grep -q '"features"' target/models/base/manifest.json 2>/dev/null; then
  echo "generating the base-size random model (target/models/base)"
  target/pyenv/bin/python tools/make_test_model.py target/models/base --size base --int8 --shared "$ROOT/../shared/data"
fi
chmod -R a+rX target/models
work=$(mktemp -d /tmp/biomedclip-ftbench.XXXXXX)
chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "work_mem = '64MB'" \
  "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" "biomedclip.model_dir = '$ROOT/target/models/base'" >/dev/null
target/pyenv/bin/python benches/finetune/run.py "$PORT" "$ROOT/target/models/base"
