#!/usr/bin/env bash
# Installs the extension (release build) and the inference service binary next to its library
# ($libdir/biomedclip-inference, where the supervisor worker starts it) into the system
# PostgreSQL. Honours CARGO_TARGET_DIR; BIOMEDCLIP_PROFILE=service (set by the test command)
# installs the extension built in the service profile instead (no LTO; shares the test builds).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
if [ "${BIOMEDCLIP_PROFILE:-release}" = release ]; then
  cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
else
  cargo pgrx install --profile "$BIOMEDCLIP_PROFILE" --pg-config "$PG_CONFIG" >/dev/null
fi
cargo build --profile service -p biomedclip-inference --quiet
target_dir=${CARGO_TARGET_DIR:-target}
install -m 755 "$target_dir/service/biomedclip-inference" "$("$PG_CONFIG" --pkglibdir)/biomedclip-inference"
# The API service (crates/biomedclip-api): not part of PostgreSQL; the tests, the demo and the
# README's command run it from target/bin.
cargo build --profile service -p biomedclip-api --quiet
mkdir -p target/bin
install -m 755 "$target_dir/service/biomedclip-api" target/bin/biomedclip-api
