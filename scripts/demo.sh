#!/usr/bin/env bash
# The main command (`make demo`): builds and installs the extension (release), starts the embedded
# cluster in .pgdata (git-ignored, owned by postgres, port 55432 on 127.0.0.1), creates the
# extension and runs the SQL walk-through in scripts/demo.sql. Safe to run repeatedly.
# BIOMEDCLIP_MODEL_DIR selects another model directory (default: the generated tiny test model).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${DEMO_PORT:-55432}
PGDATA_DIR="$ROOT/.pgdata"

bash scripts/setup.sh
# The install overwrites the loaded .so in place: stop the cluster first.
bash scripts/pg_cluster.sh stop "$PGDATA_DIR"
echo "demo: building and installing the extension (release)"
bash scripts/install.sh
bash scripts/pg_cluster.sh start "$PGDATA_DIR" "$PORT" \
  "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" \
  "biomedclip.model_dir = '${BIOMEDCLIP_MODEL_DIR:-$ROOT/target/models/tiny}'"
# The MedPix images and captions are read server-side from ../shared/data.
SHARED=$(realpath "$ROOT/../shared/data")
bash scripts/pg_cluster.sh reachable "$SHARED/medpix"
bash scripts/pg_cluster.sh reachable "$SHARED/dicom"
echo "demo: cluster running in $PGDATA_DIR on 127.0.0.1:$PORT (stop it with: make clean-demo)"
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -v shared="$SHARED" -f scripts/demo.sql
echo "demo: connect with: psql -h 127.0.0.1 -p $PORT -U postgres"
