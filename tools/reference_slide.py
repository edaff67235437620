"""Reference reads of whole-slide images with tifffile (+ imagecodecs), for the slide tests.

usage: reference_slide.py OUT_DIR

Writes, for the shared Aperio slide and for two pyramidal TIFFs it generates from it (JPEG and
deflate tiles, three levels written as pages the way vips and Aperio do):
  OUT_DIR/<name>.tif            the generated slides (the SVS is read in place)
  OUT_DIR/<name>.levels.json    width/height/tile size of each tiled level, as tifffile sees them
  OUT_DIR/<name>.L<level>.x<X>.y<Y>.s<S>.rgb   raw RGB bytes of sampled regions, from tifffile
"""
import json
import os
import pathlib
import sys

import numpy as np
import tifffile

SHARED = pathlib.Path(os.environ.get("BIOMEDCLIP_SHARED_DATA") or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
SVS = SHARED / "wsi" / "CMU-1-Small-Region.svs"


def tiled_levels(path):
    with tifffile.TiffFile(path) as tif:
        pages = [p for p in tif.pages if p.is_tiled and "label" not in p.description and "macro" not in p.description]
        pages.sort(key=lambda p: -p.imagewidth)
        return [(p.imagewidth, p.imagelength, p.tilewidth, p.tilelength, p.asarray()) for p in pages]


def write_samples(name, path, out, size=224):
    levels = tiled_levels(path)
    meta = [{"width": w, "height": h, "tile_width": tw, "tile_height": th} for w, h, tw, th, _ in levels]
    (out / f"{name}.levels.json").write_text(json.dumps({"path": str(path), "levels": meta}))
    rng = np.random.default_rng(7)
    for level, (w, h, _, _, arr) in enumerate(levels):
        if w < size or h < size:
            continue
        corners = [(0, 0), ((w // size - 1) * size, (h // size - 1) * size)]
        corners += [(int(rng.integers(0, w // size)) * size, int(rng.integers(0, h // size)) * size) for _ in range(6)]
        corners.append((w - 37, h - 41))  # partly outside: white fill
        for x, y in corners:
            region = np.full((size, size, 3), 255, np.uint8)
            part = arr[y:y + size, x:x + size, :3]
            region[: part.shape[0], : part.shape[1]] = part
            (out / f"{name}.L{level}.x{x}.y{y}.s{size}.rgb").write_bytes(region.tobytes())


def make_pyramid(out, compression, name):
    with tifffile.TiffFile(SVS) as tif:
        base = tif.pages[0].asarray()[:2048, :2048]
    path = out / f"{name}.tif"
    with tifffile.TiffWriter(path) as w:
        level = base
        for i in range(3):
            w.write(level, tile=(256, 256), compression=compression, photometric="rgb",
                    subfiletype=0 if i == 0 else 1, description=f"level {i}")
            level = level[::2, ::2].copy()
    return path


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_samples("svs", SVS, out)
    write_samples("pyramid_jpeg", make_pyramid(out, "jpeg", "pyramid_jpeg"), out)
    write_samples("pyramid_deflate", make_pyramid(out, "zlib", "pyramid_deflate"), out)


if __name__ == "__main__":
    main()
