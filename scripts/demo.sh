#!/usr/bin/env bash
# The main command (`make demo`): builds and installs the extension (release), starts the embedded
# cluster in .pgdata (git-ignored, owned by postgres, port 26432 on 127.0.0.1), creates the
# extension and runs the SQL walk-through in scripts/demo.sql. Safe to run repeatedly.
# BIOMEDCLIP_MODEL_DIR selects another model directory (default: the generated tiny test model).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${DEMO_PORT:-26432}
PGDATA_DIR="$ROOT/.pgdata"

bash scripts/setup.sh
# The install overwrites the loaded .so in place: stop the cluster first.
bash scripts/pg_cluster.sh stop "$PGDATA_DIR"
# The port sits below Linux's ephemeral range (32768-60999), where no outgoing connection can hold
# it; a cluster an earlier demo made on another port (55432 until 2026-12) moves to this one.
if [ -f "$PGDATA_DIR/postgresql.conf" ] && [ "$(grep -E '^port = ' "$PGDATA_DIR/postgresql.conf" | tail -1)" != "port = $PORT" ]; then
  echo "port = $PORT" >> "$PGDATA_DIR/postgresql.conf"
fi
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

# The API service and its search page, as the role demo_reader (a token valid for 12 hours).
API_DIR="$ROOT/.api"
API_PORT=${DEMO_API_PORT:-26480}
mkdir -p "$API_DIR"
if [ -f "$API_DIR/pid" ]; then kill "$(cat "$API_DIR/pid")" 2>/dev/null || true; fi
[ -f "$API_DIR/jwt_secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n' > "$API_DIR/jwt_secret"
chmod 600 "$API_DIR/jwt_secret"
cat > "$API_DIR/api.toml" <<TOML
listen = "127.0.0.1:$API_PORT"
database = "host=127.0.0.1 port=$PORT user=biomedclip_authenticator dbname=postgres"
[jwt]
hs256_secret_file = "$API_DIR/jwt_secret"
TOML
nohup target/bin/biomedclip-api --config "$API_DIR/api.toml" > "$API_DIR/api.log" 2>&1 &
echo $! > "$API_DIR/pid"
token=$(target/pyenv/bin/python -c "import jwt, time, sys; print(jwt.encode({'role': 'demo_reader', 'exp': int(time.time()) + 43200}, open(sys.argv[1], 'rb').read(), algorithm='HS256'))" "$API_DIR/jwt_secret")
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "demo: the search page is at http://127.0.0.1:$API_PORT/ (API log: $API_DIR/api.log)"
echo "demo: sign in with this token (role demo_reader, 12 hours):"
echo "$token"
