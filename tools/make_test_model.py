"""Writes an architecture-faithful BiomedCLIP model directory with random weights.

The graphs follow open_clip's BiomedCLIP towers, built directly with `onnx` + `numpy`:

* image: timm ViT (patch-16 convolution, CLS token, learned positions, pre-LN blocks with
  multi-head attention and GELU MLP, final LayerNorm, CLS pooling) and a bias-free linear
  projection to 512;
* text: BERT (word + position + token-type embeddings, LayerNorm, post-LN blocks with
  masked multi-head attention and GELU MLP), CLS of the last hidden state, and open_clip's MLP
  projection hidden -> (hidden + 512) / 2 -> GELU -> 512 without biases.

Both have dynamic batch (and, for text, sequence) axes and the ONNX contract the extension's
manifest names: `pixel_values` -> `image_embeds`, (`input_ids`, `attention_mask`) -> `text_embeds`.
Embeddings are returned unnormalized, as open_clip's encode_image/encode_text do. Each graph has a
second output, the pooled features before the projection (`image_features`, `text_features`), and
each projection is also written on its own (image_projection.safetensors, text_projection.safetensors)
for fine-tuning on stored features.

    make_test_model.py OUTDIR --size tiny   # CI model: real vocabulary (28,895), small layers
    make_test_model.py OUTDIR --size base   # ViT-B/16 + BERT-base shapes, for benchmarks
    make_test_model.py OUTDIR --size base --int8   # plus ORT dynamic int8 quantization

The tokenizer.json comes from ../shared/data/biomedclip (the real one).
"""
import argparse
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_manifest import EMBED_DIM, write_manifest, write_projections

OPSET = 17
SIZES = {
    # width, heads, layers, mlp
    "tiny": {"vision": (64, 4, 2, 128), "text": (64, 4, 2, 128)},
    "base": {"vision": (768, 12, 12, 3072), "text": (768, 12, 12, 3072)},
}
VOCAB = 28895
MAX_POSITIONS = 512


class Graph:
    def __init__(self, seed):
        self.nodes, self.inits, self.n = [], [], 0
        self.rng = np.random.default_rng(seed)

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def weight(self, hint, shape, std=0.02, value=None):
        name = self.name(hint)
        arr = value if value is not None else self.rng.normal(0, std, size=shape)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def const(self, hint, arr):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x, d_in, d_out, bias=True):
        y = self.op("MatMul", [x, self.weight("w", (d_in, d_out))])
        return self.op("Add", [y, self.weight("b", (d_out,))]) if bias else y

    def layer_norm(self, x, d, eps):
        return self.op("LayerNormalization", [x, self.weight("ln_g", None, value=np.ones(d)), self.weight("ln_b", None, value=np.zeros(d))], axis=-1, epsilon=eps)

    def gelu(self, x):
        # Exact (erf) GELU, as torch.nn.GELU and BERT use.
        scaled = self.op("Div", [x, self.const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))])
        inner = self.op("Add", [self.op("Erf", [scaled]), self.const("one", np.array(1.0, dtype=np.float32))])
        return self.op("Mul", [self.op("Mul", [x, inner]), self.const("half", np.array(0.5, dtype=np.float32))])

    def attention(self, x, d, heads, mask_bias=None):
        dh = d // heads
        split_shape = self.const("shape", np.array([0, 0, heads, dh], dtype=np.int64))
        def heads_first(t):
            return self.op("Transpose", [self.op("Reshape", [t, split_shape])], perm=[0, 2, 1, 3])
        q = heads_first(self.linear(x, d, d))
        k = heads_first(self.linear(x, d, d))
        v = heads_first(self.linear(x, d, d))
        scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = self.op("Mul", [scores, self.const("scale", np.array(1.0 / np.sqrt(dh), dtype=np.float32))])
        if mask_bias is not None:
            scores = self.op("Add", [scores, mask_bias])
        probs = self.op("Softmax", [scores], axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, self.const("shape", np.array([0, 0, d], dtype=np.int64))])
        return self.linear(ctx, d, d)

    def mlp(self, x, d, hidden):
        return self.linear(self.gelu(self.linear(x, d, hidden)), hidden, d)

    def cls_token_of(self, x):
        return self.op("Gather", [x, self.const("zero", np.array(0, dtype=np.int64))], axis=1)

    def model(self, inputs, outputs, name):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="biomedclip tools/make_test_model.py")
        m.ir_version = 8
        return m


def image_tower(size, seed):
    d, heads, layers, hidden = SIZES[size]["vision"]
    g = Graph(seed)
    patches = g.op("Conv", ["pixel_values", g.weight("patch_w", (d, 3, 16, 16)), g.weight("patch_b", (d,))], kernel_shape=[16, 16], strides=[16, 16])
    tokens = g.op("Transpose", [g.op("Reshape", [patches, g.const("shape", np.array([0, d, -1], dtype=np.int64))])], perm=[0, 2, 1])
    batch = g.op("Slice", [g.op("Shape", [tokens]), g.const("s", np.array([0], dtype=np.int64)), g.const("e", np.array([1], dtype=np.int64))])
    cls_shape = g.op("Concat", [batch, g.const("rest", np.array([1, d], dtype=np.int64))], axis=0)
    cls = g.op("Expand", [g.weight("cls", (1, 1, d)), cls_shape])
    x = g.op("Concat", [cls, tokens], axis=1)
    x = g.op("Add", [x, g.weight("pos", (1, 197, d))])
    for _ in range(layers):
        x = g.op("Add", [x, g.attention(g.layer_norm(x, d, 1e-6), d, heads)])
        x = g.op("Add", [x, g.mlp(g.layer_norm(x, d, 1e-6), d, hidden)])
    pooled = g.cls_token_of(g.layer_norm(x, d, 1e-6))
    g.nodes[-1].output[0] = pooled = "image_features"
    proj = g.rng.normal(0, 0.02, size=(d, EMBED_DIM))
    g.op("MatMul", [pooled, g.weight("proj", None, value=proj)])
    g.nodes[-1].output[0] = "image_embeds"
    model = g.model(
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", EMBED_DIM]),
         helper.make_tensor_value_info("image_features", TensorProto.FLOAT, ["batch", d])],
        "biomedclip_image_tower",
    )
    return model, proj


def text_tower(size, seed):
    d, heads, layers, hidden = SIZES[size]["text"]
    g = Graph(seed)
    words = g.op("Gather", [g.weight("word_emb", (VOCAB, d)), "input_ids"], axis=0)
    seq_len = g.op("Squeeze", [g.op("Slice", [g.op("Shape", ["input_ids"]), g.const("s", np.array([1], dtype=np.int64)), g.const("e", np.array([2], dtype=np.int64))]), g.const("ax", np.array([0], dtype=np.int64))])
    positions = g.op("Range", [g.const("zero", np.array(0, dtype=np.int64)), seq_len, g.const("one", np.array(1, dtype=np.int64))])
    pos = g.op("Gather", [g.weight("pos_emb", (MAX_POSITIONS, d)), positions], axis=0)
    x = g.op("Add", [g.op("Add", [words, pos]), g.weight("type_emb0", (d,))])
    x = g.layer_norm(x, d, 1e-12)
    # Additive attention mask, [batch, 1, 1, seq]: 0 where attended, a large negative elsewhere.
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask, g.const("axes", np.array([1, 2], dtype=np.int64))])
    mask_bias = g.op("Mul", [g.op("Sub", [g.const("one", np.array(1.0, dtype=np.float32)), mask]), g.const("neg", np.array(-1e9, dtype=np.float32))])
    for _ in range(layers):
        x = g.layer_norm(g.op("Add", [x, g.attention(x, d, heads, mask_bias)]), d, 1e-12)
        x = g.layer_norm(g.op("Add", [x, g.mlp(x, d, hidden)]), d, 1e-12)
    g.cls_token_of(x)
    g.nodes[-1].output[0] = pooled = "text_features"
    proj_hidden = (d + EMBED_DIM) // 2 if size == "tiny" else 640
    w1 = g.rng.normal(0, 0.02, size=(d, proj_hidden))
    h = g.gelu(g.op("MatMul", [pooled, g.weight("proj1", None, value=w1)]))
    w2 = g.rng.normal(0, 0.02, size=(proj_hidden, EMBED_DIM))
    g.op("MatMul", [h, g.weight("proj2", None, value=w2)])
    g.nodes[-1].output[0] = "text_embeds"
    model = g.model(
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", EMBED_DIM]),
         helper.make_tensor_value_info("text_features", TensorProto.FLOAT, ["batch", d])],
        "biomedclip_text_tower",
    )
    return model, w1, w2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--int8", action="store_true", help="also write OUTDIR-int8 with ORT dynamic quantization")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../shared/data"))
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    image, image_w = image_tower(args.size, args.seed)
    onnx.save(image, os.path.join(args.outdir, "image_encoder.onnx"))
    text, text_w1, text_w2 = text_tower(args.size, args.seed + 1)
    onnx.save(text, os.path.join(args.outdir, "text_encoder.onnx"))
    shutil.copyfile(os.path.join(args.shared, "biomedclip/tokenizer.json"), os.path.join(args.outdir, "tokenizer.json"))
    features = write_projections(args.outdir, image_w, text_w1, text_w2)
    # ln(100): the value open_clip's CLIP models converge to (the real one is read from the checkpoint).
    write_manifest(args.outdir, f"biomedclip-random-{args.size}", f"seed{args.seed}", "fp32", float(np.log(100.0)), features)
    if args.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        q = args.outdir.rstrip("/") + "-int8"
        os.makedirs(q, exist_ok=True)
        for f in ["image_encoder.onnx", "text_encoder.onnx"]:
            quantize_dynamic(os.path.join(args.outdir, f), os.path.join(q, f), weight_type=QuantType.QInt8)
        shutil.copyfile(os.path.join(args.outdir, "tokenizer.json"), os.path.join(q, "tokenizer.json"))
        # No "features" entry: the int8 graphs quantize the projection MatMuls, so the fp32
        # projection files would not reproduce their embeddings.
        write_manifest(q, f"biomedclip-random-{args.size}", f"seed{args.seed}", "int8", float(np.log(100.0)))


if __name__ == "__main__":
    main()
