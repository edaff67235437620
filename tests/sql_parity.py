"""Parity through SQL: biomedclip_tokenize on every shared caption against the reference ids,
and biomedclip_preprocess on images against Pillow (tools/reference_preprocess.py).

Usage: sql_parity.py PORT   (a running cluster with the extension and the tiny model configured)
"""
import csv
import glob
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from reference_preprocess import make_cases, open_clip_eval  # noqa: E402

PORT = sys.argv[1]
SHARED = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


PSQL = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", PORT, "-U", "postgres", "-d", "biomedclip_regress"]


def psql(sql):
    out = subprocess.run(PSQL + ["-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {out.stderr}")
    return out.stdout


def main():
    failures = 0
    # Captions: one session for load + query.
    rows = []
    for path in sorted(glob.glob(os.path.join(SHARED, "captions", "*.jsonl"))) + [os.path.join(SHARED, "medpix", "captions.jsonl")]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    v = json.loads(line)
                    rows.append((v.get("text", v.get("caption")), v["ids"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, (text, _) in enumerate(rows):
        w.writerow([i, text])
    script = ("CREATE TEMP TABLE c (i int, t text);\n"
              "COPY c FROM STDIN WITH (FORMAT csv);\n" + buf.getvalue() + "\\.\n"
              "SELECT i || ' ' || array_to_string(biomedclip_tokenize(t), ',') FROM c ORDER BY i;\n")
    out = subprocess.run(PSQL, input=script, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {out.stderr}")
    got = {}
    for line in out.stdout.splitlines():
        i, ids = line.split(" ", 1)
        got[int(i)] = [int(x) for x in ids.split(",")]
    tok_bad = sum(1 for i, (_, ids) in enumerate(rows) if got.get(i) != ids)
    print(f"sql parity: biomedclip_tokenize identical on {len(rows) - tok_bad} of {len(rows)} captions")
    failures += tok_bad

    # Images: example images, a sample of MedPix, and the generated edge cases.
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        images = sorted(glob.glob(os.path.join(SHARED, "biomedclip", "example_images", "*")))
        images += sorted(glob.glob(os.path.join(SHARED, "medpix", "images", "*.png")))[:10]
        images += make_cases(os.path.join(tmp, "cases"))
        subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
        worst = 0.0
        img_bad = 0
        for path in images:
            text = psql(f"SELECT array_to_string(biomedclip_preprocess(pg_read_binary_file('{path}')), ',')")
            ours = np.array([float(x) for x in text.strip().split(",")], dtype=np.float32)
            ref = open_clip_eval(path).reshape(-1)
            diff = float(np.abs(ours - ref).max())
            worst = max(worst, diff)
            if diff != 0.0:
                img_bad += 1
                print(f"  differs: {os.path.basename(path)} max {diff}")
        print(f"sql parity: biomedclip_preprocess identical to Pillow on {len(images) - img_bad} of {len(images)} images (max abs diff {worst})")
        failures += img_bad
    print(f"{2 - (tok_bad > 0) - (img_bad > 0)} passed, {(tok_bad > 0) + (img_bad > 0)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
