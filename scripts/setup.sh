#!/usr/bin/env bash
# Installs everything the build and tests need on a fresh Debian 12 machine (run as root).
# Idempotent: each step is skipped when its result is already present.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

need_apt=()
pgver=$(dpkg-query -W -f='${Version}' postgresql-15)
dpkg-query -W -f='${Status}' "postgresql-server-dev-15" 2>/dev/null | grep -q "ok installed" \
  || need_apt+=("postgresql-server-dev-15=${pgver}")
# chromium: the search page's browser test (tests/browser_suite.py, driven by Playwright from PyPI).
for p in libclang-dev clang pkg-config sudo cmake strace python3-venv chromium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
  echo "setup: cargo install cargo-pgrx 0.18.1 (about 6 minutes)"
  cargo install cargo-pgrx --version 0.18.1 --locked --quiet
fi
if [ ! -f "${PGRX_HOME:-$HOME/.pgrx}/config.toml" ] || ! grep -q pg15 "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  cargo pgrx init --pg15 /usr/bin/pg_config >/dev/null
fi

# ONNX Runtime shared library from the PyPI wheel (ort uses load-dynamic).
ORT_DIR="$ROOT/target/onnxruntime"
if [ ! -f "$ORT_DIR/libonnxruntime.so.1.32.0" ]; then
  echo "setup: fetching onnxruntime 1.32.0 wheel from PyPI"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: onnxruntime==1.32.0 -d "$tmp"
  mkdir -p "$ORT_DIR"
  unzip -q -o -j "$tmp"/onnxruntime-1.32.0-*.whl 'onnxruntime/capi/libonnxruntime*.so*' -d "$ORT_DIR"
  rm -rf "$tmp"
fi
chmod -R a+rX "$ORT_DIR"

# Python reference tools (numpy, Pillow, ...) live in a git-ignored venv.
VENV="$ROOT/target/pyenv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
req_sum=$(sha256sum "$ROOT/tools/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_sum" ]; then
  echo "setup: installing Python reference packages (tools/requirements.txt)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/tools/requirements.txt"
  echo "$req_sum" > "$VENV/.requirements.sha256"
fi

# The tiny test model (generated, never committed).
MODEL_DIR="$ROOT/target/models/tiny"
if [ ! -f "$MODEL_DIR/manifest.json" ] || [ "$MODEL_DIR/manifest.json" -ot "$ROOT/tools/make_test_model.py" ]; then
  echo "setup: generating the tiny test model in target/models/tiny"
  "$VENV/bin/python" "$ROOT/tools/make_test_model.py" "$MODEL_DIR" --size tiny --shared "$ROOT/../shared/data"
fi

# PostgreSQL (user postgres) reads the library and models from target/: grant traversal.
bash "$ROOT/scripts/pg_cluster.sh" reachable "$ROOT/target/models"
chmod -R a+rX "$ROOT/target/models"
echo "setup: ok"
