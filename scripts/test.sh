#!/usr/bin/env bash
# The project's test command (`make test`): installs what is missing, then runs every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export ORT_DYLIB_PATH="$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0"
export BIOMEDCLIP_TEST_MODEL_DIR="$ROOT/target/models/tiny"

bash scripts/setup.sh

echo "== library crate tests (cargo test)"
cargo test --release -p biomedclip-core

echo "== extension tests (cargo pgrx test)"
pgdata=$(mktemp -d /tmp/biomedclip-pgrx-test.XXXXXX)
chown postgres:postgres "$pgdata"; chmod 755 "$pgdata"
trap 'rm -rf "$pgdata"' EXIT
cargo pgrx test pg15 --runas postgres --pgdata "$pgdata/data"

echo "== install the release build"
cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null

echo "== SQL regression tests (pg_regress)"
bash scripts/regress.sh
echo "== all suites passed"
