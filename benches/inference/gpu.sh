#!/usr/bin/env bash
# GPU benchmark of the inference service (run by hand on a machine with an NVIDIA GPU and its
# driver; never part of `make test`). Fetches the onnxruntime-gpu wheel of the same version as
# the CPU library (1.32.0; its libonnxruntime.so carries the CUDA execution provider in
# libonnxruntime_providers_cuda.so next to it), starts a cluster whose inference service runs
# with biomedclip.execution_provider = 'cuda' (strict: the service refuses to start the model
# without a device, and every model call then fails with the reason), and measures images/s and
# texts/s at batch 1, 32 and 256 through SQL, against the same server with the CPU provider.
# Writes benches/inference/gpu_results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PORT=${BENCH_PORT:-25333}
bash scripts/setup.sh
GPU_DIR="$ROOT/target/onnxruntime-gpu"
if [ ! -f "$GPU_DIR/libonnxruntime.so.1.32.0" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: onnxruntime-gpu==1.32.0 -d "$tmp"
  mkdir -p "$GPU_DIR"
  unzip -q -o -j "$tmp"/onnxruntime_gpu-1.32.0-*.whl 'onnxruntime/capi/libonnxruntime*.so*' -d "$GPU_DIR"
  rm -rf "$tmp"
fi
# The CUDA provider needs the CUDA 12 runtime, cuBLAS and cuDNN 9 (pip wheels, on the loader path).
target/pyenv/bin/python -m pip install -q "nvidia-cuda-runtime-cu12" "nvidia-cublas-cu12" "nvidia-cudnn-cu12" "nvidia-cufft-cu12" "nvidia-curand-cu12"
NV=$(target/pyenv/bin/python -c "import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))")/nvidia
export LD_LIBRARY_PATH="$(ls -d "$NV"/*/lib | paste -sd:):${LD_LIBRARY_PATH:-}"
if [ ! -f target/models/base/manifest.json ]; then
  target/pyenv/bin/python tools/make_test_model.py target/models/base --size base --int8 --shared "$ROOT/../shared/data"
fi
chmod -R a+rX target/models "$GPU_DIR"
bash scripts/install.sh
work=$(mktemp -d /tmp/biomedclip-gpu.XXXXXX); chmod 755 "$work"
trap 'bash scripts/pg_cluster.sh stop "$work/data" immediate; rm -rf "$work"' EXIT
bash scripts/pg_cluster.sh start "$work/data" "$PORT" "shared_preload_libraries = 'biomedclip'" \
  "biomedclip.ort_library = '$GPU_DIR/libonnxruntime.so.1.32.0'" "biomedclip.model_dir = '$ROOT/target/models/base'" \
  "biomedclip.execution_provider = 'cuda'" "biomedclip.max_batch_images = 256" "biomedclip.max_batch_tokens = 65536"
bash scripts/pg_cluster.sh reachable "$(realpath "$ROOT/../shared/data")/medpix"
target/pyenv/bin/python - "$PORT" "$work/data" <<'PY'
import os, statistics, subprocess, sys, time
import psycopg
port, data = int(sys.argv[1]), sys.argv[2]
d = os.path.realpath("../shared/data/medpix/images")
imgs = [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))[:32]]
c = psycopg.connect(host="127.0.0.1", port=port, user="postgres", autocommit=True)
c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
info = c.execute("SELECT biomedclip_model_info()").fetchone()[0]
rows = []
for provider in ["cuda", "cpu"]:
    if provider == "cpu":
        c.execute("ALTER SYSTEM SET biomedclip.execution_provider = 'cpu'"); c.execute("SELECT pg_reload_conf()")
        time.sleep(5); c.close(); c = psycopg.connect(host="127.0.0.1", port=port, user="postgres", autocommit=True)
    for batch in [1, 32, 256]:
        c.execute(f"SET biomedclip.batch_size = {batch}")
        arr = [imgs[i % len(imgs)] for i in range(batch)]
        texts = [f"chest radiograph {i} with a small left pleural effusion" for i in range(batch)]
        c.execute("SELECT biomedclip_embed_images(%s)", (arr,))  # warm-up
        ti, tt = [], []
        for r in range(5):
            t0 = time.perf_counter(); c.execute("SELECT biomedclip_embed_images(%s)", (arr,)); ti.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); c.execute("SELECT biomedclip_embed_texts(%s)", ([t + f" run {r}" for t in texts],)); tt.append(time.perf_counter() - t0)
        rows.append((provider, batch, batch / statistics.median(ti), batch / statistics.median(tt)))
lines = ["# Inference service on a GPU", "", f"Model {info['name']} (fp32), service provider in use: {info.get('execution_provider')}; "
         f"{time.strftime('%Y-%m-%d')}; medians of 5 runs; images decoded and tokenized in the backend, the model in the service.", "",
         "| provider | batch | images/s | texts/s |", "|---|---|---|---|"]
lines += [f"| {p} | {b} | {i:.1f} | {t:.1f} |" for p, b, i, t in rows]
open("benches/inference/gpu_results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
