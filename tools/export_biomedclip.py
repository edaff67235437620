"""Export BiomedCLIP to a biomedclip model directory (image_encoder.onnx, text_encoder.onnx,
tokenizer.json, manifest.json), fp32 and an int8 variant (ONNX Runtime dynamic quantization).

Real weights (on a machine with internet access):
    python tools/export_biomedclip.py OUTDIR
        loads hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 through open_clip;
        logit_scale is read from the checkpoint.

Offline architecture check (no hub; see tools/check_export.sh):
    python tools/export_biomedclip.py OUTDIR --random --shared ../shared/data
        builds the same architecture from the local open_clip_config.json with random weights
        (timm ViT-B/16, BERT-base with BiomedBERT's vocabulary, MLP projection).

Both ONNX graphs have dynamic batch (and sequence) axes. The text graph takes (input_ids,
attention_mask); the image graph takes pixel_values [batch, 3, 224, 224]. Outputs are the
unnormalized embeddings, as open_clip's encode_image / encode_text return them, and as a second
output the pooled 768-d features before each projection; the projections themselves are written
as image_projection.safetensors and text_projection.safetensors (manifest "features" entries).
Requires: torch, open_clip_torch, timm, transformers, onnx, onnxruntime.
"""
import argparse
import json
import os
import shutil

import torch

from model_manifest import write_manifest, write_projections

HUB_ID = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


class TextTower(torch.nn.Module):
    """open_clip's HFTextEncoder forward, with the attention mask as an explicit input."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, input_ids, attention_mask):
        out = self.text.transformer(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.text.pooler(out, attention_mask)
        return self.text.proj(pooled), pooled


class ImageTower(torch.nn.Module):
    """open_clip's TimmModel forward (trunk, then head), returning the trunk's pooled features too."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values):
        features = self.visual.trunk(pixel_values)
        return self.visual.head(features), features


def projection_weights(visual, text):
    """The two heads' weights as d_in x d_out arrays (torch's Linear keeps d_out x d_in). BiomedCLIP's
    heads are bias-free: timm_proj "linear" and open_clip's "mlp" (Linear, GELU, Linear); anything
    else is refused rather than exported wrong."""
    linears = [m for m in visual.head.modules() if isinstance(m, torch.nn.Linear)]
    mlp = [m for m in text.proj.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != 1 or len(mlp) != 2 or any(m.bias is not None for m in linears + mlp):
        raise SystemExit("unexpected projection heads: expected a bias-free linear image head and a bias-free 2-layer text MLP")
    return [m.weight.detach().double().numpy().T for m in (linears[0], mlp[0], mlp[1])]


def random_model(shared):
    """The BiomedCLIP architecture from the local config, random weights, no downloads."""
    from open_clip.hf_model import HFTextEncoder
    from open_clip.timm_model import TimmModel
    from transformers import BertConfig

    cfg = json.load(open(os.path.join(shared, "biomedclip/open_clip_config.json")))["model_cfg"]
    vocab = sum(1 for _ in open(os.path.join(shared, "biomedclip/vocab.txt")))
    v = cfg["vision_cfg"]
    visual = TimmModel(v["timm_model_name"], embed_dim=cfg["embed_dim"], image_size=v["image_size"], pool=v["timm_pool"],
                       proj=v["timm_proj"], pretrained=False)
    bert = BertConfig(vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      max_position_embeddings=512)
    t = cfg["text_cfg"]
    text = HFTextEncoder(t["hf_model_name"], output_dim=cfg["embed_dim"], config=bert, pooler_type=t["pooler_type"],
                         proj_type=t["proj"], pretrained=False)
    return visual.eval(), text.eval(), float(torch.log(torch.tensor(100.0)))


def real_model():
    import open_clip

    model, _ = open_clip.create_model_from_pretrained(HUB_ID)
    model.eval()
    return model.visual, model.text, float(model.logit_scale.detach())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--random", action="store_true", help="random weights from the local config (offline check)")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../shared/data"))
    ap.add_argument("--tokenizer", help="tokenizer.json to ship (default: the shared BiomedCLIP tokenizer)")
    ap.add_argument("--reference-out", help="also write torch embeddings of the shared example images and captions here")
    args = ap.parse_args()
    visual, text, logit_scale = random_model(args.shared) if args.random else real_model()
    os.makedirs(args.outdir, exist_ok=True)
    # The wrappers are put in eval mode themselves: torch.onnx.export restores each module's
    # training flag after tracing, and a wrapper left in its default training mode would switch
    # the towers back to training (dropout on) recursively. That was the "cosine 0.90 after
    # export" once blamed on tracing: dropout, not a tracing side effect.
    image_tower, text_tower = ImageTower(visual).eval(), TextTower(text).eval()
    if args.reference_out:
        write_torch_reference(visual, text, args.shared, args.reference_out)
    with torch.no_grad():
        torch.onnx.export(image_tower, (torch.zeros(1, 3, 224, 224),), os.path.join(args.outdir, "image_encoder.onnx"),
                          input_names=["pixel_values"], output_names=["image_embeds", "image_features"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}, "image_features": {0: "batch"}},
                          opset_version=17, dynamo=False)
        ids = torch.tensor([[2, 1680, 3]], dtype=torch.int64)
        torch.onnx.export(text_tower, (ids, torch.ones_like(ids)), os.path.join(args.outdir, "text_encoder.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["text_embeds", "text_features"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                                        "text_embeds": {0: "batch"}, "text_features": {0: "batch"}}, opset_version=17, dynamo=False)
    shutil.copyfile(args.tokenizer or os.path.join(args.shared, "biomedclip/tokenizer.json"), os.path.join(args.outdir, "tokenizer.json"))
    name = "biomedclip-random-export-check" if args.random else "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    features = write_projections(args.outdir, *projection_weights(visual, text))
    write_manifest(args.outdir, name, "random" if args.random else "hf-hub", "fp32", logit_scale, features)

    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = args.outdir.rstrip("/") + "-int8"
    os.makedirs(q, exist_ok=True)
    for f in ["image_encoder.onnx", "text_encoder.onnx"]:
        quantize_dynamic(os.path.join(args.outdir, f), os.path.join(q, f), weight_type=QuantType.QInt8)
    shutil.copyfile(os.path.join(args.outdir, "tokenizer.json"), os.path.join(q, "tokenizer.json"))
    # No "features" entry for int8: its projection MatMuls are quantized, the fp32 files would not match.
    write_manifest(q, name, "random" if args.random else "hf-hub", "int8", logit_scale)
    print(f"wrote {args.outdir} and {q}")


CHECK_CAPTIONS = ["chest x-ray showing pneumonia", "H&E stained histopathology slide", "brain MRI, axial T2", "a pie chart"]


def write_torch_reference(visual, text, shared, outdir):
    """Embeddings by open_clip's own pipeline (its eval transform and HFTokenizer), in torch."""
    import open_clip
    from PIL import Image

    os.makedirs(outdir, exist_ok=True)
    images_dir = os.path.join(shared, "biomedclip/example_images")
    names = sorted(os.listdir(images_dir))
    transform = open_clip.image_transform(224, is_train=False, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    tokenizer = open_clip.tokenizer.HFTokenizer(os.path.join(shared, "biomedclip"), context_length=256)
    with torch.no_grad():
        img = visual(torch.stack([transform(Image.open(os.path.join(images_dir, n))) for n in names]))
        txt = text(tokenizer(CHECK_CAPTIONS))
    json.dump({"images": names, "captions": CHECK_CAPTIONS,
               "image_embeds": torch.nn.functional.normalize(img, dim=-1).tolist(),
               "text_embeds": torch.nn.functional.normalize(txt, dim=-1).tolist()},
              open(os.path.join(outdir, "torch_reference.json"), "w"))


if __name__ == "__main__":
    main()
