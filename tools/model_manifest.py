"""The manifest.json of a biomedclip model directory (shared by the generator and the exporter)."""
import hashlib
import json
import os

EMBED_DIM = 512
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
FILES = ["image_encoder.onnx", "text_encoder.onnx", "tokenizer.json"]
IMAGE_PROJECTION = "image_projection.safetensors"
TEXT_PROJECTION = "text_projection.safetensors"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_projections(outdir, image_w, text_w1, text_w2):
    """Writes each tower's projection as its own safetensors file, float32, row-major d_in x d_out
    (the layout of the ONNX MatMul initializers): the image head's "w" (a bias-free linear map)
    and the text head's "w1" and "w2" (open_clip's bias-free MLP, w1 -> exact GELU -> w2).
    Returns the manifest's "features" entries for both towers."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.ascontiguousarray(image_w, dtype=np.float32)}, os.path.join(outdir, IMAGE_PROJECTION))
    save_file({"w1": np.ascontiguousarray(text_w1, dtype=np.float32), "w2": np.ascontiguousarray(text_w2, dtype=np.float32)},
              os.path.join(outdir, TEXT_PROJECTION))
    return {
        "image": {"output": "image_features", "dim": int(image_w.shape[0]), "projection": IMAGE_PROJECTION},
        "text": {"output": "text_features", "dim": int(text_w1.shape[0]), "projection": TEXT_PROJECTION},
    }


def write_manifest(outdir, name, version, precision, logit_scale, features=None):
    """Writes manifest.json listing the SHA-256 of every model file (which must exist already).

    `features` (from write_projections) names each graph's second output, the pooled features
    before the projection, and the projection's file; model directories without it still load
    (no features functions and no projection fine-tuning for them)."""
    image = {"size": 224, "mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "shortest",
             "input": "pixel_values", "output": "image_embeds"}
    text = {"context_length": 256, "input_ids": "input_ids", "attention_mask": "attention_mask", "output": "text_embeds"}
    files = list(FILES)
    if features:
        image["features"], text["features"] = features["image"], features["text"]
        files += [features["image"]["projection"], features["text"]["projection"]]
    manifest = {
        "name": name,
        "version": version,
        "precision": precision,
        "embed_dim": EMBED_DIM,
        "logit_scale": logit_scale,
        "image": image,
        "text": text,
        "files": {f: sha256(os.path.join(outdir, f)) for f in files},
    }
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
