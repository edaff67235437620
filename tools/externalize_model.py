"""Rewrites a model directory's text_encoder.onnx with its tensors in an external data file, as
`onnx.save_model(save_as_external_data=True)` does for models over 2 GB, and updates the manifest
hash of the .onnx file (the data file is deliberately not listed). The extension must refuse it.

    externalize_model.py MODEL_DIR
"""
import hashlib
import json
import os
import sys

import onnx

d = sys.argv[1]
path = os.path.join(d, "text_encoder.onnx")
model = onnx.load(path)
onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                location="text_encoder.onnx.data", size_threshold=0)
manifest_path = os.path.join(d, "manifest.json")
manifest = json.load(open(manifest_path))
manifest["files"]["text_encoder.onnx"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
json.dump(manifest, open(manifest_path, "w"), indent=2)
