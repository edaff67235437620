#!/usr/bin/env bash
# Opt-in check of tools/export_biomedclip.py (not in CI: it installs torch, about 5.5 GB):
# exports the BiomedCLIP architecture with random weights from the local config, then compares
# open_clip in torch against this extension's SQL functions on the same images and captions.
# Goal: cosine >= 0.9999 for every image and caption.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${CHECK_PORT:-54361}
bash scripts/setup.sh
VENV="$ROOT/target/export-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check torch open_clip_torch timm transformers onnx onnxruntime==1.32.0 pillow numpy safetensors==0.8.0
OUT="$ROOT/target/models/export-check"
"$VENV/bin/python" tools/export_biomedclip.py "$OUT" --random --shared "$ROOT/../shared/data" --reference-out "$ROOT/target/export-check"
chmod -R a+rX target/models
cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
work=$(mktemp -d /tmp/biomedclip-export.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" \
  "biomedclip.ort_library = '$ROOT/target/onnxruntime/libonnxruntime.so.1.32.0'" "biomedclip.model_dir = '$OUT'"
bash scripts/pg_cluster.sh reachable "$(realpath "$ROOT/../shared/data")/biomedclip"
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE EXTENSION biomedclip"
target/pyenv/bin/python - "$PORT" "$ROOT/target/export-check/torch_reference.json" "$(realpath "$ROOT/../shared/data")" <<'PY'
import json, sys
import numpy as np, psycopg
port, ref, shared = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
worst = 1.0
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as c:
    for name, emb in zip(ref["images"], ref["image_embeds"]):
        ours = c.execute("SELECT biomedclip_embed_image(pg_read_binary_file(%s))::real[]", (f"{shared}/biomedclip/example_images/{name}",)).fetchone()[0]
        cos = float(np.dot(ours, emb)); worst = min(worst, cos); print(f"image   {name}: cosine {cos:.6f}")
    for cap, emb in zip(ref["captions"], ref["text_embeds"]):
        ours = c.execute("SELECT biomedclip_embed_text(%s)::real[]", (cap,)).fetchone()[0]
        cos = float(np.dot(ours, emb)); worst = min(worst, cos); print(f"caption {cap!r}: cosine {cos:.6f}")
print(f"worst cosine torch vs SQL: {worst:.6f} (goal >= 0.9999)")
sys.exit(0 if worst >= 0.9999 else 1)
PY
