#!/usr/bin/env bash
# Installs the extension (release build) and the inference service binary next to its library
# ($libdir/biomedclip-inference, where the supervisor worker starts it) into the system
# PostgreSQL. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
cargo build --profile service -p biomedclip-inference --quiet
target_dir=${CARGO_TARGET_DIR:-target}
install -m 755 "$target_dir/service/biomedclip-inference" "$("$PG_CONFIG" --pkglibdir)/biomedclip-inference"
