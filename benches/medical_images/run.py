"""DICOM rendering and slide patching benchmark: ours (Rust, examples/medical_bench.rs) against the
Python stack (pydicom + numpy + Pillow; tifffile + numpy + Pillow) on the same files, in one run.

usage: run.py BENCH_BINARY OUT_DIR   (benches/medical_images/run.sh passes both)
Writes benches/medical_images/results.md.
"""
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import pydicom
import tifffile
from PIL import Image

warnings.simplefilter("ignore")
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from medical_images_suite import reference_render  # noqa: E402
SHARED = ROOT.parent / "shared" / "data"
BIN, OUT = (sys.argv[1], pathlib.Path(sys.argv[2])) if len(sys.argv) > 2 else (None, None)
REPEATS = 15
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def preprocess(img):
    """open_clip's eval transform in Pillow: resize short side to 224 (bicubic), centre crop, normalize."""
    w, h = img.size
    s = 224 / min(w, h)
    img = img.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    arr = np.asarray(img.crop((left, top, left + 224, top + 224)).convert("RGB"), np.float32) / 255.0
    return ((arr - MEAN) / STD).transpose(2, 0, 1)


def pydicom_render(path):
    """The test suite's pydicom reference render (pydicom decoders and LUTs, numpy window)."""
    return Image.fromarray(reference_render(pydicom.dcmread(path)))


def median_ms(fn, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def run_ours(*args):
    out = subprocess.run([BIN, *map(str, args)], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def dicom_table():
    manifest = json.loads((SHARED / "dicom" / "reference_8bit" / "MANIFEST.json").read_text())
    files = sorted((SHARED / "dicom").glob("*.dcm"))
    ours = {pathlib.Path(r["file"]).name: r["median_ms"] for r in run_ours("dicom", REPEATS, *files)}
    rows = ["| file | transfer syntax | size | ours ms | ours renders/s | pydicom+numpy+Pillow ms | ratio |", "|---|---|---|---|---|---|---|"]
    for f in files:
        m = manifest[f.name]
        peer = median_ms(lambda: preprocess(pydicom_render(f)))
        o = ours[f.name]
        rows.append(f"| {f.name} | {m['transfer_syntax']} | {m['cols']}x{m['rows']} | {o:.2f} | {1000 / o:.0f} | {peer:.2f} | {peer / o:.1f}x |")
    return rows


def make_big_slide(path, side=16384):
    """A 16k x 16k pyramid-less JPEG TIFF tiled 256 x 256, tiles cut from the real slide."""
    with tifffile.TiffFile(SHARED / "wsi" / "CMU-1-Small-Region.svs") as tif:
        src = tif.pages[0].asarray()
    h, w = src.shape[:2]
    rng = np.random.default_rng(3)

    def tiles():
        for _ in range((side // 256) ** 2):
            y, x = int(rng.integers(0, h - 256)), int(rng.integers(0, w - 256))
            yield src[y:y + 256, x:x + 256]

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(256, 256), compression="jpeg", photometric="rgb")


def peer_slide(path, patch=224):
    t = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        level = tif.pages[0].asarray()
    n = 0
    for y in range(0, level.shape[0] - patch + 1, patch):
        for x in range(0, level.shape[1] - patch + 1, patch):
            preprocess(Image.fromarray(level[y:y + patch, x:x + patch]))
            n += 1
    s = time.perf_counter() - t
    return n, s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    lines = ["# DICOM rendering and slide patching", "",
             "`bash benches/medical_images/run.sh`. One run, same files, single thread, medians of "
             f"{REPEATS} runs. Ours: `dicom::render` + preprocessing (release build, no SQL, no model). "
             "Peer: pydicom 3 (pylibjpeg decoders) + numpy window + Pillow resize/crop/normalize.", "",
             "## DICOM: decode + window + preprocess, per file (transfer syntax)", ""]
    lines += dicom_table()
    svs = SHARED / "wsi" / "CMU-1-Small-Region.svs"
    big = OUT / "big_slide.tif"
    make_big_slide(big)
    lines += ["", "## Slides: tissue mask + patch cutting + preprocessing, no model", "",
              "All grid patches (224 x 224, tissue_threshold 0). Ours reads tile by tile (64-tile cache); the peer decodes the whole level with tifffile, then slices.", "",
              "| slide | level size | compressed | decoded level | patches | ours patches/s | ours peak RSS | peer patches/s | peer peak RSS |",
              "|---|---|---|---|---|---|---|---|---|"]
    for path in (svs, big):
        o = run_ours("slide", path)[0]
        # The peer runs in its own process so that its peak RSS is its own.
        peer = subprocess.run([sys.executable, __file__, "--peer-slide", str(path)], check=True, capture_output=True, text=True)
        n, s, rss = json.loads(peer.stdout)
        lines.append(f"| {path.name} | {o['width']}x{o['height']} | {o['file_mib']:.0f} MiB | {o['decoded_level_mib']:.0f} MiB | {o['patches']} | "
                     f"{o['patches_per_s']:.0f} | {o['peak_rss_mib']:.0f} MiB | {int(n) / float(s):.0f} | {float(rss):.0f} MiB |")
    lines += ["", "Peak RSS includes the compressed file held in memory (as a bytea is in the backend)."]
    (ROOT / "benches" / "medical_images" / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1] == "--peer-slide":
        print(json.dumps(peer_slide(sys.argv[2])))
    else:
        main()
