"""Inference benchmark: the SQL functions against the same model through the direct Rust runner
(crates/biomedclip-core/examples/direct_runner.rs), side by side in one run, on the full-size
random-weight model (ViT-B/16 + BERT-base shapes), fp32 and int8, batch 1 and 8; plus the
length-aware text batching against open_clip's pad-to-256, the int8/fp32 cosine, and the backend
RSS after loading. Medians of REPEATS runs; writes benches/inference/results.md.

Run with: bash benches/inference/run.sh   (generates the models, builds, starts a cluster)
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORT, LIB, REPEATS = sys.argv[1], sys.argv[2], int(os.environ.get("REPEATS", "5"))
SHARED = os.path.realpath(os.path.join(ROOT, "..", "shared", "data"))
MODELS = {"fp32": os.path.join(ROOT, "target/models/base"), "int8": os.path.join(ROOT, "target/models/base-int8")}
RUNNER = os.path.join(ROOT, "target/release/examples/direct_runner")
IMAGES = sorted(os.path.join(SHARED, "medpix/images", f) for f in os.listdir(os.path.join(SHARED, "medpix/images")))[:16]
CAPTIONS = os.path.join(SHARED, "captions/roco_validation_radiology.jsonl")


class Session:
    """One psql session; statements are timed by psql's \\timing (server round trip, no start-up)."""

    def __init__(self, model_dir):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", PORT, "-U", "postgres", "-d", "postgres"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.run(f"SET biomedclip.model_dir = '{model_dir}'")

    def run(self, sql):
        marker = f"__done_{time.monotonic_ns()}__"
        text = sql if sql.lstrip().startswith("\\") else sql.rstrip(";") + ";"
        self.p.stdin.write(text + "\n\\echo " + marker + "\n")
        self.p.stdin.flush()
        lines = []
        for line in self.p.stdout:
            if line.strip() == marker:
                return lines
            lines.append(line.rstrip("\n"))

    def timed(self, sql):
        out = self.run("\\timing on\n" + sql + ";\n\\timing off")
        ms = [float(m.group(1)) for l in out if (m := re.match(r"Time: ([\d.]+) ms", l))]
        if not ms:
            raise SystemExit(f"no timing for {sql}: {out}")
        return ms[-1] / 1000.0

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def direct(mode, model_dir, batch, extra):
    out = subprocess.run([RUNNER, mode, model_dir, LIB, str(batch), str(REPEATS)] + extra, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main():
    rows, notes = [], []
    sessions = {}
    for precision, model_dir in MODELS.items():
        s = Session(model_dir)
        sessions[precision] = s
        s.run("CREATE TEMP TABLE imgs AS SELECT row_number() OVER () AS i, pg_read_binary_file(f) AS b FROM unnest(ARRAY[%s]) f"
              % ",".join(f"'{p}'" for p in IMAGES))
        s.run("CREATE TEMP TABLE caps AS SELECT row_number() OVER () AS i, l::jsonb ->> 'text' AS t "
              f"FROM regexp_split_to_table(pg_read_file('{CAPTIONS}'), E'\\n') l WHERE l <> '' LIMIT 400")
        load_s = s.timed("SELECT biomedclip_load_model() IS NOT NULL")
        rss = s.run("SELECT pg_backend_pid()")[-1]
        with open(f"/proc/{rss}/status") as f:
            vmrss = next(l for l in f if l.startswith("VmRSS")).split()[1]
        notes.append(f"{precision}: model load {load_s:.1f} s; backend RSS after loading {int(vmrss) / 1024:.0f} MiB")
        for mode, table, fn in [("images", "imgs", "biomedclip_embed_images(array_agg(b))"), ("texts", "caps", "biomedclip_embed_texts(array_agg(t))")]:
            for batch in (1, 8):
                s.run(f"SET biomedclip.batch_size = {batch}")
                s.timed(f"SELECT cardinality({fn}) FROM (SELECT * FROM {table} ORDER BY i LIMIT {batch}) x")  # warm-up
                # Same model, same inputs, back to back: SQL, then the direct runner.
                sql_t = [s.timed(f"SELECT cardinality({fn}) FROM (SELECT * FROM {table} ORDER BY i LIMIT {batch} OFFSET {(r * batch) % 16}) x")
                         for r in range(REPEATS)]
                sql_med = statistics.median(sql_t)
                dir_med = direct(mode, model_dir, batch, IMAGES if mode == "images" else [CAPTIONS])
                rows.append((precision, mode, batch, batch / sql_med, batch / dir_med, sql_med / dir_med))
                print(rows[-1], flush=True)

    # int8 against fp32 on the same images.
    cos = []
    for i in range(1, 9):
        a = sessions["fp32"].run(f"SELECT biomedclip_embed_image(b)::text FROM imgs WHERE i = {i}")[-1]
        b = sessions["int8"].run(f"SELECT biomedclip_embed_image(b)::text FROM imgs WHERE i = {i}")[-1]
        va = [float(x) for x in a.strip("[]").split(",")]
        vb = [float(x) for x in b.strip("[]").split(",")]
        cos.append(sum(x * y for x, y in zip(va, vb)))
    for s in sessions.values():
        s.close()

    # Length-aware text batching against pad-to-256 (direct runner, fp32).
    length = []
    for batch in (1, 8):
        aware = direct("texts", MODELS["fp32"], batch, [CAPTIONS])
        padded = direct("texts", MODELS["fp32"], batch, [CAPTIONS, "pad256"])
        length.append((batch, batch / aware, batch / padded, padded / aware))

    # Decode + preprocess alone, one core, the 512x512 MedPix PNGs (target: under 5 ms each).
    medpix = sorted(os.path.join(SHARED, "medpix/images", f) for f in os.listdir(os.path.join(SHARED, "medpix/images")))
    pre = subprocess.run([RUNNER, "preprocess", MODELS["fp32"], LIB, "1", "100"] + medpix, capture_output=True, text=True, check=True)
    pre_ms = json.loads(pre.stdout.strip().splitlines()[-1])["median_s"] * 1000

    with open(os.path.join(ROOT, "benches/inference/results.md"), "w") as f:
        f.write("# Inference benchmark results\n\n")
        f.write(f"Full-size random-weight model (ViT-B/16 at 224, BERT-base + MLP projection), 1 intra-op thread, "
                f"this project's 2-core machine; medians of {REPEATS} runs each, SQL and direct runner back to back on the same inputs. "
                f"Generated by `bash benches/inference/run.sh` on {time.strftime('%Y-%m-%d')}.\n\n")
        f.write("| precision | input | batch | SQL items/s | direct items/s | SQL time / direct time |\n|---|---|---|---|---|---|\n")
        for p, m, b, sq, di, ratio in rows:
            f.write(f"| {p} | {m} | {b} | {sq:.2f} | {di:.2f} | {ratio:.3f} |\n")
        f.write("\nTargets: SQL overhead ≤ 1.1× the direct runner; int8 ≥ 3× fp32 images/s; cosine int8 vs fp32 ≥ 0.998.\n\n")
        img = {(p, b): sq for p, m, b, sq, di, r in rows if m == "images"}
        f.write(f"- int8 / fp32 images/s (SQL): batch 1 {img[('int8', 1)] / img[('fp32', 1)]:.2f}×, batch 8 {img[('int8', 8)] / img[('fp32', 8)]:.2f}×\n")
        f.write(f"- cosine int8 vs fp32 on 8 MedPix images: min {min(cos):.5f}, mean {statistics.mean(cos):.5f}\n")
        for n in notes:
            f.write(f"- {n}\n")
        f.write(f"- decode + preprocess of a 512x512 MedPix PNG, one core: median {pre_ms:.2f} ms (target < 5 ms)\n")
        f.write("\n## Length-aware text batching against pad-to-256 (real ROCO captions, direct runner, fp32)\n\n")
        f.write("| batch | length-aware texts/s | pad-to-256 texts/s | speed-up |\n|---|---|---|---|\n")
        for b, a, p, sp in length:
            f.write(f"| {b} | {a:.1f} | {p:.1f} | {sp:.1f}× |\n")
        f.write("\nTarget: typical captions ≥ 10× faster than pad-to-256.\n")
    print(open(os.path.join(ROOT, "benches/inference/results.md")).read())


if __name__ == "__main__":
    main()
