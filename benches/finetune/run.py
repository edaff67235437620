"""benches/finetune: training time and the backend's peak memory of biomedclip_train_probe on
50,000 × 512 embeddings with 20 classes, of biomedclip_train_adapter kind residual on 10,000 pairs
of 512-d embeddings for 10 epochs, and of kind projection on 10,000 pairs of 768-d features for 10
epochs (the base-size model's heads: 768→512 linear, 768→640→512 MLP), on a running cluster; beside
each, its peer in the same run: scikit-learn's LogisticRegression (lbfgs, the same objective and
tolerance) fitting the same 40,000 training rows, and tests/finetune_reference.py's numpy
implementations of the same two trainings, all on arrays in memory with numpy's BLAS on all cores.
Writes results.md.

Usage: run.py PORT MODEL_DIR   (benches/finetune/run.sh starts a throwaway cluster)
"""
import datetime
import json
import os
import sys
import time

import numpy as np
import psycopg
from sklearn.linear_model import LogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../tests"))
from suite import vec  # noqa: E402

PORT = int(sys.argv[1])
MODEL_DIR = sys.argv[2]
DB = "biomedclip_finetune_bench"
PROJECTION = "projection adapter: 10,000 pairs × 768 features, 10 epochs"


def peak_kib(pid):
    return int(open(f"/proc/{pid}/status").read().split("VmHWM:")[1].split()[0])


with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True) as c:
    c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    c.execute(f"CREATE DATABASE {DB}")
rng = np.random.default_rng(2)
results = {}
with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname=DB, autocommit=True) as c:
    c.execute("CREATE EXTENSION biomedclip")
    n, d, k = 50_000, 512, 20
    centers = rng.standard_normal((k, d)) * 0.3
    y = rng.integers(0, k, n)
    x = centers[y] + rng.standard_normal((n, d))
    c.execute(f"CREATE TABLE ex (id int, emb embedding({d}), label text)")
    with c.cursor() as cur:
        with cur.copy("COPY ex FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i, vec(x[i]), f"c{y[i]:02d}"))
    m, p = 10_000, 512
    im = rng.standard_normal((m, p))
    tx = im @ (rng.standard_normal((p, p)) / np.sqrt(p)) + 0.3 * rng.standard_normal((m, p))
    c.execute(f"CREATE TABLE pairs (id int, img embedding({p}), txt embedding({p}))")
    with c.cursor() as cur:
        with cur.copy("COPY pairs FROM STDIN") as cp:
            for i in range(m):
                cp.write_row((i, vec(im[i]), vec(tx[i])))
    f = 768
    fi = rng.standard_normal((m, f))
    ft = fi @ (rng.standard_normal((f, f)) / np.sqrt(f)) + 0.3 * rng.standard_normal((m, f))
    c.execute(f"CREATE TABLE feats (id int, img embedding({f}), txt embedding({f}))")
    with c.cursor() as cur:
        with cur.copy("COPY feats FROM STDIN") as cp:
            for i in range(m):
                cp.write_row((i, vec(fi[i]), vec(ft[i])))
    for name, sql, opts in [
        ("probe: 50,000 × 512, 20 classes", "SELECT biomedclip_train_probe('bench_probe', 'SELECT id AS example_id, emb AS embedding, label FROM ex', %s)",
         {"seed": 1, "replace": True}),
        ("residual adapter: 10,000 pairs × 512, 10 epochs", "SELECT biomedclip_train_adapter('bench_adapter', 'SELECT id AS pair_id, img AS image, txt AS text FROM pairs', %s)",
         {"epochs": 10, "patience": 10, "seed": 1, "replace": True}),
        (PROJECTION, "SELECT biomedclip_train_adapter('bench_projection', 'SELECT id AS pair_id, img AS image, txt AS text FROM feats', %s)",
         {"kind": "projection", "epochs": 10, "patience": 10, "seed": 1, "replace": True}),
    ]:
        with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname=DB, autocommit=True) as s:
            pid = s.execute("SELECT pg_backend_pid()").fetchone()[0]
            base = peak_kib(pid)
            t = time.monotonic()
            out = s.execute(sql, (json.dumps(opts),)).fetchone()[0]
            took = time.monotonic() - t
            results[name] = (took, (peak_kib(pid) - base) / 1024, peak_kib(pid) / 1024, out["options"])
            print(name, f"{took:.1f} s", flush=True)

# scikit-learn on the probe's own training rows (the extension's seeded split), in memory.
sys.path.insert(0, os.path.join(HERE, "../../tests"))
from splitmix import SplitMix64  # noqa: E402
ids = sorted(range(n), key=lambda i: str(i))
order = list(range(n))
SplitMix64(1).shuffle(order)
train_rows = [ids[j] for j in order[round(n * 0.2):]]
sk_times = []
for _ in range(3):
    t = time.monotonic()
    LogisticRegression(C=1.0, tol=1e-8, max_iter=1000).fit(x[train_rows], y[train_rows])
    sk_times.append(time.monotonic() - t)
sk = sorted(sk_times)[1]
print(f"scikit-learn fit {sk:.1f} s", flush=True)

# The adapter's peer: tests/finetune_reference.py's numpy implementation of the same training
# (same split, shuffles, minibatches, AdamW and early stopping; equal to the Rust run within 1e-4
# there), on the same 10,000 pairs with the options the SQL run reported, arrays in memory.
from finetune_reference import np_train  # noqa: E402
used = results["residual adapter: 10,000 pairs × 512, 10 epochs"][3]
assert not used["learn_logit_scale"], "the numpy peer keeps the logit scale fixed"
np_times = []
for _ in range(3):
    t = time.monotonic()
    np_train(im, tx, used)
    np_times.append(time.monotonic() - t)
np_adapter = sorted(np_times)[1]
print(f"numpy adapter training {np_adapter:.1f} s", flush=True)

# The projection kind's peer: the same numpy module's np_train_projection, from the model's own
# heads (read from its safetensors files), the same options.
from finetune_reference import np_train_projection  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
manifest = json.load(open(os.path.join(MODEL_DIR, "manifest.json")))
heads = {"image_w": load_file(os.path.join(MODEL_DIR, manifest["image"]["features"]["projection"]))["w"].astype(np.float64)}
text_head = load_file(os.path.join(MODEL_DIR, manifest["text"]["features"]["projection"]))
heads["text_w1"], heads["text_w2"] = text_head["w1"].astype(np.float64), text_head["w2"].astype(np.float64)
used = results[PROJECTION][3]
np_times = []
for _ in range(3):
    t = time.monotonic()
    np_train_projection(fi, ft, heads, used)
    np_times.append(time.monotonic() - t)
np_projection = sorted(np_times)[1]
print(f"numpy projection training {np_projection:.1f} s", flush=True)

lines = [f"# Fine-tuning benchmark\n\nRun: `python benches/finetune/run.py PORT` on {datetime.date.today()} ({os.cpu_count()} cores, shared machine; "
         "single-threaded, deterministic training inside one backend). Synthetic data; times include reading the rows through SPI.\n",
         "| run | time s | backend peak RSS MiB (growth) | target |", "|---|---|---|---|"]
targets = {"probe: 50,000 × 512, 20 classes": "≤ 20 s", "residual adapter: 10,000 pairs × 512, 10 epochs": "(none of its own)", PROJECTION: "≤ 60 s"}
for name, (took, growth, peak, _) in results.items():
    lines.append(f"| {name} | {took:.1f} | {peak:.0f} (+{growth:.0f}) | {targets[name]} |")
lines.append(f"| scikit-learn LogisticRegression(lbfgs, tol 1e-8) on the same 40,000 training rows, fit only, in memory (median of 3) | {sk:.1f} | | reference |")
lines.append(f"| numpy (tests/finetune_reference.py's np_train) training the same residual adapter on the same 10,000 pairs with the same options, in memory (median of 3) | {np_adapter:.1f} | | reference |")
lines.append(f"| numpy (np_train_projection) training the same projection heads on the same 10,000 feature pairs with the same options, in memory (median of 3) | {np_projection:.1f} | | reference |")
lines.append("\nThe probe's time is the whole SQL call: reading the rows through an SPI cursor, the split, the fit "
             "(L-BFGS to a gradient tolerance of 1e-8, single-threaded matrix products), the temperature fit and the metrics; "
             "scikit-learn's is the fit alone, on arrays already in memory, with numpy's BLAS on every core. "
             "The adapter's peer is numpy running the same algorithm (tests/finetune_reference.py, where it equals the Rust "
             "run's weights within 1e-4) on arrays in memory, also with BLAS on every core; the SQL call also reads the pairs "
             "and computes retrieval metrics before and after. "
             "Peak RSS is the backend's VmHWM (the rows as f64 plus the training matrix). The projection kind trains "
             "both heads of the base-size model (1.2 M parameters) from their own weights; its peer is numpy's "
             "np_train_projection, equal to the Rust run within 1e-4 in tests/finetune_reference.py.")
open(os.path.join(HERE, "results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
