"""The manifest.json of a biomedclip model directory (shared by the generator and the exporter)."""
import hashlib
import json
import os

EMBED_DIM = 512
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
FILES = ["image_encoder.onnx", "text_encoder.onnx", "tokenizer.json"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(outdir, name, version, precision, logit_scale):
    """Writes manifest.json listing the SHA-256 of every model file (which must exist already)."""
    manifest = {
        "name": name,
        "version": version,
        "precision": precision,
        "embed_dim": EMBED_DIM,
        "logit_scale": logit_scale,
        "image": {"size": 224, "mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "shortest",
                  "input": "pixel_values", "output": "image_embeds"},
        "text": {"context_length": 256, "input_ids": "input_ids", "attention_mask": "attention_mask", "output": "text_embeds"},
        "files": {f: sha256(os.path.join(outdir, f)) for f in FILES},
    }
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
