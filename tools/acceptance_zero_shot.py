"""Acceptance test for a real BiomedCLIP export: biomedclip_zero_shot on Microsoft's 9 example
images must reproduce the real model's probabilities in
../shared/data/biomedclip/reference_zero_shot.json (same labels, template "this is a photo of ").
Passes when every image has the same top-1 label and every probability is within 0.01.
Usage: acceptance_zero_shot.py PORT SHARED_DATA_DIR
"""
import json
import sys

import psycopg

port, shared = sys.argv[1], sys.argv[2]
ref = json.load(open(f"{shared}/biomedclip/reference_zero_shot.json"))
labels, template = ref["labels"], ref["template"]
worst, top1_ok = 0.0, 0
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as c:
    info = c.execute("SELECT biomedclip_model_info() ->> 'name', biomedclip_model_info() ->> 'manifest_sha256'").fetchone()
    print(f"model {info[0]} ({info[1][:16]}...)")
    for image, expected in ref["softmax_probs"].items():
        rows = c.execute(
            "SELECT label, probability FROM biomedclip_zero_shot(biomedclip_embed_image(pg_read_binary_file(%s)), %s, ARRAY[%s])",
            (f"{shared}/biomedclip/example_images/{image}", labels, template),
        ).fetchall()
        got = dict(rows)
        diff = max(abs(got[l] - p) for l, p in expected.items())
        worst = max(worst, diff)
        same_top = rows[0][0] == max(expected, key=expected.get)
        top1_ok += same_top
        print(f"{image:45s} top-1 {rows[0][0]!r:42s} {'ok' if same_top else 'DIFFERS'}  max |dp| {diff:.4f}")
print(f"top-1 agreement {top1_ok}/{len(ref['softmax_probs'])}, max probability difference {worst:.4f} (tolerance 0.01)")
ok = top1_ok == len(ref["softmax_probs"]) and worst <= 0.01
print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
sys.exit(0 if ok else 1)
