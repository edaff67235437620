"""Reference embeddings for the runtime test: Pillow preprocessing (reference_preprocess.py),
open_clip's cleaning + the HF tokenizers library padded to 256 (as open_clip's HFTokenizer does),
and the model run by onnxruntime's Python API.

Usage: reference_embed.py MODEL_DIR OUTDIR CAPTIONS_JSON IMAGE...  -> OUTDIR/images.f32, OUTDIR/texts.f32
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(__file__))
from reference_clean import clean  # noqa: E402
from reference_preprocess import open_clip_eval  # noqa: E402


def normalize(x):
    return (x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)


model_dir, outdir, captions, images = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
image = ort.InferenceSession(os.path.join(model_dir, "image_encoder.onnx"), opts, providers=["CPUExecutionProvider"])
text = ort.InferenceSession(os.path.join(model_dir, "text_encoder.onnx"), opts, providers=["CPUExecutionProvider"])
pixels = np.stack([open_clip_eval(p) for p in images])
normalize(image.run(["image_embeds"], {"pixel_values": pixels})[0]).tofile(os.path.join(outdir, "images.f32"))

tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))  # pads to 256 as shipped
ids = np.array([tok.encode(clean(c)).ids for c in captions], dtype=np.int64)
mask = (ids != 0).astype(np.int64)
normalize(text.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0]).tofile(os.path.join(outdir, "texts.f32"))
