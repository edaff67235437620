"""Reference reads of whole-slide images with tifffile (+ imagecodecs) and Pillow, for the slide tests.

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


def write_samples(name, path, out, size=224, levels=None):
    levels = levels or tiled_levels(path)
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


def make_dicom_wsi(out, name, jpeg):
    """A DICOM VL Whole Slide Microscopy instance (TILED_FULL, 256 x 256 tiles) of the SVS's level 0:
    native RGB frames, or JPEG baseline frames encoded by Pillow. Returns its path and the level as
    the reference reads it (tiles decoded by Pillow for the JPEG one)."""
    import io
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    with tifffile.TiffFile(SVS) as tif:
        level = tif.pages[0].asarray()
    h, w = level.shape[:2]
    t = 256
    across, down = -(-w // t), -(-h // t)
    padded = np.full((down * t, across * t, 3), 255, np.uint8)
    padded[:h, :w] = level
    tiles = [padded[r * t:(r + 1) * t, c * t:(c + 1) * t] for r in range(down) for c in range(across)]
    reference = padded.copy()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "SM"
    ds.Rows = ds.Columns = t
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(tiles)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.DimensionOrganizationType = "TILED_FULL"
    if jpeg:
        frames = []
        for i, tile in enumerate(tiles):
            b = io.BytesIO()
            Image.fromarray(tile).save(b, "JPEG", quality=90)
            frames.append(b.getvalue())
            r, c = divmod(i, across)
            reference[r * t:(r + 1) * t, c * t:(c + 1) * t] = np.asarray(Image.open(io.BytesIO(frames[-1])).convert("RGB"))
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = np.stack(tiles).tobytes()
    path = out / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, [(w, h, t, t, reference[:h, :w])]


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_samples("svs", SVS, out)
    write_samples("pyramid_jpeg", make_pyramid(out, "jpeg", "pyramid_jpeg"), out)
    write_samples("pyramid_deflate", make_pyramid(out, "zlib", "pyramid_deflate"), out)
    for name, jpeg in (("dicom_wsi_native", False), ("dicom_wsi_jpeg", True)):
        path, levels = make_dicom_wsi(out, name, jpeg)
        write_samples(name, path, out, levels=levels)


if __name__ == "__main__":
    main()
