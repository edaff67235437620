#!/usr/bin/env bash
# Runs the pg_regress suite in tests/pg_regress against a throwaway cluster that is always stopped.
# Expects the extension to be installed (scripts/test.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/section.sh
PORT=${REGRESS_PORT:-25329}
# backend: every backend runs its own model (no shared_preload_libraries), and every suite runs;
# service: shared_preload_libraries = 'biomedclip' (the inference service runs the model), and
# the suites that call the model run again.
INFERENCE=${REGRESS_INFERENCE:-backend}
preload=()
if [ "$INFERENCE" = service ]; then
  preload=("shared_preload_libraries = 'biomedclip'")
fi
work=$(mktemp -d /tmp/biomedclip-regress.XXXXXX)
chmod 755 "$work"
cleanup() {
  bash "$ROOT/scripts/pg_cluster.sh" stop "$work/data" immediate
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/pg_cluster.sh start "$work/data" "$PORT" "max_parallel_workers_per_gather = 2" "${preload[@]}" \
  "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" \
  "biomedclip.model_dir = '$ROOT/target/models/tiny'"
mkdir -p "$work/out"
# Fixtures: a model with a tampered file and one whose manifest names the wrong ONNX input.
for fixture in tampered wrong_names rescaled; do
  cp -r "$ROOT/target/models/tiny" "$work/$fixture"
done
printf ' ' >> "$work/tampered/tokenizer.json"
sed -i 's/"input": "pixel_values"/"input": "pixels"/' "$work/wrong_names/manifest.json"
# The same ONNX files under another manifest (another logit scale): another model identity.
sed -i 's/"logit_scale": \([0-9.]*\)/"logit_scale": 3.0/' "$work/rescaled/manifest.json"
chmod -R a+rX "$work"
export BIOMEDCLIP_SHARED_DATA="$(realpath "$ROOT/../shared/data")"
export BIOMEDCLIP_TAMPERED_MODEL="$work/tampered" BIOMEDCLIP_WRONG_NAMES_MODEL="$work/wrong_names"
export BIOMEDCLIP_RESCALED_MODEL="$work/rescaled"
if [ "${REGRESS_ACCEPT:-0}" = 1 ]; then
  for f in $(sed -n 's/^test: //p' tests/pg_regress/schedule); do touch "tests/pg_regress/expected/$f.out"; done
fi
status=0
/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress \
  --bindir=/usr/lib/postgresql/15/bin --host=127.0.0.1 --port="$PORT" --user=postgres \
  --dbname=biomedclip_regress --inputdir="$ROOT/tests/pg_regress" --outputdir="$work/out" \
  --schedule="$ROOT/tests/pg_regress/schedule" || status=$?
if [ "${REGRESS_ACCEPT:-0}" = 1 ]; then
  # Developer aid: take the new outputs as expected. Review them with `git diff` before committing.
  cp "$work/out/results/"*.out tests/pg_regress/expected/
  echo "pg_regress: outputs copied to tests/pg_regress/expected; review with git diff"
  exit 0
fi
if [ $status -ne 0 ]; then
  echo "pg_regress failed; differences:"
  cat "$work/out/regression.diffs" 2>/dev/null || true
  exit $status
fi
total=$(grep -c '^test:' tests/pg_regress/schedule)
echo "pg_regress ($INFERENCE mode): $total passed, 0 failed"
if [ "$INFERENCE" = service ]; then
  # The calls above went through the service: it has served requests, and no backend runs a model.
  served=$(su postgres -s /bin/bash -c "/usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -p $PORT -XAtq -d biomedclip_regress \
    -c \"SELECT (biomedclip_model_info()->'service'->>'requests')::int, biomedclip_model_info()->>'inference'\"")
  echo "inference service after pg_regress: requests|mode = $served"
  case "$served" in
    *"|service") [ "${served%%|*}" -gt 0 ] || { echo "the service served no request"; exit 1; } ;;
    *) echo "pg_regress did not run through the inference service"; exit 1 ;;
  esac
fi
if [ "${REGRESS_SUITES:-1}" = 0 ]; then
  exit 0  # developer aid: pg_regress only
fi

section "parity through SQL (tokenize, preprocess)"
"$ROOT/target/pyenv/bin/python" tests/sql_parity.py "$PORT"

section "DICOM and slides through SQL (pydicom test objects, OpenCV tissue mask, numpy pooling)"
"$ROOT/target/pyenv/bin/python" tests/medical_images_suite.py "$PORT"

section "security: search_path traps, catalog privilege sweep, model-load registry"
"$ROOT/target/pyenv/bin/python" tests/security_suite.py "$PORT"

section "the README's SQL, executed verbatim"
"$ROOT/target/pyenv/bin/python" tests/readme_suite.py "$PORT"

section "ONNX Runtime hygiene in backends (telemetry, cancel, timeout, terminations, load cancel)"
"$ROOT/target/pyenv/bin/python" tests/runtime_hygiene.py "$PORT" "$work/data/server.log"

section "features before the projection, the model's projections, projection adapters (onnxruntime, safetensors, numpy)"
"$ROOT/target/pyenv/bin/python" tests/features_suite.py "$PORT"

if [ "$INFERENCE" = service ]; then
  exit 0  # the suites below do not call the model, or start clusters of their own
fi

section "search for apps: collections, biomedclip_search under RLS, query log (HMAC), feedback, drift report"
"$ROOT/target/pyenv/bin/python" tests/search_suite.py "$PORT" "$work/data"

section "linear probes in SQL against scikit-learn, run audit, RLS, reproducibility, tampering"
"$ROOT/target/pyenv/bin/python" tests/finetune_suite.py "$PORT"

section "upgrade from the previous release, pg_dump and restore"
"$ROOT/target/pyenv/bin/python" tests/upgrade_suite.py "$PORT"

section "pgvector 0.8.6's own SQL tests against pgvector and against embedding, side by side"
"$ROOT/target/pyenv/bin/python" tests/pgvector_parity.py "$PORT"

section "ivf: recall, vacuum, filters/RLS, concurrency, standby, crash (own clusters), full vectors and RaBitQ codes"
"$ROOT/target/pyenv/bin/python" tests/ivf_suite.py "$work/ivf" $((PORT + 10)) none
"$ROOT/target/pyenv/bin/python" tests/ivf_suite.py "$work/ivf_rabitq" $((PORT + 20)) rabitq

section "ivf corners: training sample, strict order, memory, vacuum space, wide halfembedding, plans, cancel"
"$ROOT/target/pyenv/bin/python" tests/ivf_correctness_suite.py "$work/ivf_corners" $((PORT + 30))
