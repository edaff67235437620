"""Reference tensors for the image preprocessing parity test.

Reproduces open_clip 3.x's evaluation transform for BiomedCLIP with Pillow and numpy only:
torchvision's Resize(224, BICUBIC) on a PIL image is `img.resize((w, h), Image.BICUBIC)` with
torchvision's size arithmetic, CenterCrop(224) is `img.crop(...)` with `int(round(...))`, then
`convert("RGB")`, ToTensor (float32 / 255) and Normalize (float32). torch itself is too heavy for CI.

Also writes edge-case images (odd sizes, upscaling, palette, RGBA, LA, 1-bit, 16-bit, tall portraits,
BMP/TIFF/WebP) into OUTDIR/cases, so that the test covers modes the shared data lacks.

Usage: reference_preprocess.py OUTDIR IMAGE...   -> OUTDIR/manifest.json, OUTDIR/NNN.f32
"""
import json
import os
import sys

import numpy as np
from PIL import Image

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def open_clip_eval(path):
    im = Image.open(path)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(SIZE * long / short)
    new_w, new_h = (SIZE, new_long) if w <= h else (new_long, SIZE)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - SIZE) / 2.0))
    left = int(round((new_w - SIZE) / 2.0))
    im = im.crop((left, top, left + SIZE, top + SIZE))
    im = im.convert("RGB")
    x = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def make_cases(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:400, 0:300]
    smooth = ((np.sin(xx / 17.0) + np.cos(yy / 11.0)) * 60 + 128).astype(np.uint8)
    noise = rng.integers(0, 256, size=(400, 300, 3), dtype=np.uint8)
    rgb = np.dstack([smooth, noise[..., 1], (xx + yy).astype(np.uint8)])
    base = Image.fromarray(rgb, "RGB")
    out = []

    def save(im, name, **kw):
        p = os.path.join(dirpath, name)
        im.save(p, **kw)
        out.append(p)

    save(base.resize((333, 517)), "odd_333x517.png")
    save(base.resize((517, 333)), "odd_517x333.png")
    save(base.resize((224, 224)), "exact_224.png")
    save(base.resize((225, 224)), "one_wider_225x224.png")
    save(base.resize((7, 5)), "tiny_upscale_7x5.png")
    save(base.resize((100, 300)), "tall_upscale_100x300.png")
    save(base.resize((300, 1000)), "portrait_3to1_300x1000.png")
    save(base.resize((1000, 250)), "landscape_4to1_1000x250.png")
    save(base.resize((230, 700)), "portrait_tall_230x700.png")
    save(base.quantize(64), "palette.png")
    save(base.resize((97, 61)).quantize(16), "palette_upscale.png")
    rgba = base.copy()
    alpha = Image.fromarray(((xx * 255) // 299).astype(np.uint8), "L")
    rgba.putalpha(alpha)
    save(rgba, "rgba_gradient_alpha.png")
    save(rgba.resize((150, 90)), "rgba_upscale.png")
    la = Image.merge("LA", [Image.fromarray(smooth, "L"), alpha])
    save(la, "la.png")
    save(Image.fromarray(smooth, "L"), "gray.png")
    save(Image.fromarray(smooth, "L").convert("1"), "bilevel.png")
    i16 = Image.fromarray((smooth.astype(np.uint16) * 3).astype(np.uint16))
    save(i16, "gray16.png")
    save(base, "rgb.bmp")
    save(base, "rgb.tiff")
    save(base, "rgb_lossless.webp", lossless=True)
    save(base, "q90_444.jpg", quality=90, subsampling=0)
    save(base, "q75_420.jpg", quality=75, subsampling=2)
    save(base, "q80_422.jpg", quality=80, subsampling=1)
    save(base, "progressive.jpg", quality=85, progressive=True)
    save(Image.fromarray(smooth, "L"), "gray.jpg", quality=85)
    save(base.resize((301, 223)), "odd_301x223.jpg", quality=88)
    return out


def main():
    outdir = sys.argv[1]
    images = sys.argv[2:] + make_cases(os.path.join(outdir, "cases"))
    manifest = []
    for i, path in enumerate(images):
        ref = os.path.join(outdir, f"{i:03d}.f32")
        open_clip_eval(path).tofile(ref)
        manifest.append({"image": path, "reference": ref, "mode": Image.open(path).mode})
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f)


if __name__ == "__main__":
    main()
