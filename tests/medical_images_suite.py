"""DICOM and whole-slide functions through SQL, against outside references.

usage: medical_images_suite.py PORT

- pydicom's own test files (the pydicom wheel from PyPI ships about 90 objects with pixel data):
  each is rendered by pydicom (its decoders via pylibjpeg, its modality LUT, its colour
  conversion and palette LUT) plus the PS3.3 window written out in numpy, and compared with
  biomedclip_render_dicom. The counts are reported; lossless objects must match exactly.
- biomedclip_dicom_info never returns a value of an identifying attribute of the file.
- The slide's tissue selection against OpenCV (HSV saturation, Otsu) on tifffile's thumbnail.
- Attention pooling against numpy on the patch rows.
"""
import io
import json
import os
import sys
import warnings

import numpy as np
import psycopg
import pydicom
from PIL import Image

from suite import SHARED, check, finish

warnings.simplefilter("ignore")
PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
# Lossy transfer syntaxes: JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000.
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}


def level(unit):
    return np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)  # numpy rounds half to even


def window(x, c, w, function):
    if function == "LINEAR_EXACT":
        return level(np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5)))
    if function == "SIGMOID":
        return level(1.0 / (1.0 + np.exp(-4.0 * (x - c) / w)))
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    return level(np.where(x <= lo, 0.0, np.where(x > hi, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5)))


def first(value):
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def reference_render(ds):
    """Frame 0 rendered by pydicom's decoders and LUT functions and the PS3.3 window in numpy."""
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    pi = ds.PhotometricInterpretation
    if pi == "PALETTE COLOR":
        rgb = pydicom.pixels.apply_color_lut(arr, ds)
        return rgb if rgb.dtype == np.uint8 else level(rgb / 65535.0)
    if ds.SamplesPerPixel == 3:
        if arr.dtype == np.uint8:
            return arr
        return level(arr / float(2 ** ds.BitsStored - 1))
    values = pydicom.pixels.apply_modality_lut(arr, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        entries, first_mapped, bits = [int(v) for v in item.LUTDescriptor]
        table = np.asarray(pydicom.pixels.apply_voi_lut(np.arange(first_mapped, first_mapped + (entries or 65536)), ds), np.float64)
        index = np.clip(values - first_mapped, 0, len(table) - 1).astype(np.int64)
        out = level(table[index] / float(2 ** bits - 1))
    elif "WindowCenter" in ds and "WindowWidth" in ds and first(ds.WindowWidth) >= 1:
        out = window(values, first(ds.WindowCenter), first(ds.WindowWidth), getattr(ds, "VOILUTFunction", "LINEAR"))
    else:
        lo, hi = values.min(), values.max()
        out = level((values - lo) / (hi - lo)) if hi > lo else np.zeros(values.shape, np.uint8)
    return 255 - out if pi == "MONOCHROME1" else out


def pydicom_objects():
    for root, _, files in os.walk(PYDICOM_FILES):
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:
                continue
            if "PixelData" in ds:
                yield os.path.relpath(path, PYDICOM_FILES), path, ds


# pydicom 3.0.2 test objects we refuse, by name: 12-bit JPEG extended (no 12-bit JPEG decoder among
# the allowed crates), 32-bit RLE (dicom-pixeldata's RLE decoder fails on it), 1-bit segmentations.
EXPECTED_REFUSALS = {"JPGExtended.dcm", "SC_rgb_rle_32bit.dcm", "SC_rgb_rle_32bit_2frame.dcm", "rtdose_rle.dcm",
                     "rtdose_rle_1frame.dcm", "liver_1frame.dcm", "liver_expb_1frame.dcm"}


def dicom_against_pydicom(cur):
    exact, within_one, differ, ours_refused, theirs_refused, lossy_close = [], [], [], [], [], []
    for name, path, ds in pydicom_objects():
        try:
            ref = reference_render(ds)
        except Exception as e:
            theirs_refused.append(f"{name} ({type(e).__name__})")
            continue
        data = open(path, "rb").read()
        try:
            cur.execute("SELECT biomedclip_render_dicom(%s)", (data,))
            ours = np.asarray(Image.open(io.BytesIO(cur.fetchone()[0])))
        except psycopg.Error as e:
            cur.connection.rollback()
            ours_refused.append(f"{name}: {e.diag.message_primary}")
            continue
        if ours.shape != ref.shape:
            differ.append(f"{name} (shape {ours.shape} vs {ref.shape})")
            continue
        delta = np.abs(ours.astype(int) - ref.astype(int))
        diff = int(delta.max())
        ts = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else ""
        if diff == 0:
            exact.append(name)
        elif diff <= 1:
            within_one.append(f"{name} (max 1)")
        elif ts in LOSSY and diff <= 3 and delta.mean() < 0.5:
            # Lossy JPEG: libjpeg-turbo (ours, as Pillow) and pylibjpeg's libjpeg upsample differently.
            lossy_close.append(f"{name} (max {diff}, mean {delta.mean():.3f})")
        else:
            differ.append(f"{name} (max {diff})")
    compared = len(exact) + len(within_one) + len(differ) + len(lossy_close)
    print(f"pydicom test objects with pixel data that pydicom renders: {compared + len(ours_refused)}; "
          f"we render {compared}: exact {len(exact)}, within 1 level {len(within_one)}, "
          f"lossy JPEG within decoder differences {len(lossy_close)}, differ {len(differ)}; we refuse {len(ours_refused)}")
    for line in within_one + lossy_close + differ:
        print("   ", line)
    print(f"refused by us ({len(ours_refused)}):")
    for line in ours_refused:
        print("   ", line)
    print(f"pydicom could not render ({len(theirs_refused)}): {', '.join(theirs_refused)}")
    check("pydicom test objects: exact renders", len(exact) >= 70, f"{len(exact)} of {compared} exact")
    check("pydicom test objects: none differs beyond decoder rounding", not differ, "; ".join(differ) or "none")
    check("pydicom test objects: every refusal names an unsupported feature",
          all("unsupported image" in r for r in ours_refused), f"{len(ours_refused)} refused")
    refused_names = {r.split(":", 1)[0] for r in ours_refused}
    check("pydicom test objects: the refusals are exactly the known unsupported features (a new refusal fails)",
          refused_names == EXPECTED_REFUSALS,
          f"new: {sorted(refused_names - EXPECTED_REFUSALS)}; no longer refused: {sorted(EXPECTED_REFUSALS - refused_names)}")
    return ours_refused


def voi_functions_against_pydicom(cur):
    """LINEAR_EXACT and SIGMOID windows and a VOI LUT sequence (none of pydicom's test objects has
    them), added to a real CT; the reference is pydicom's apply_voi_lut, rescaled from its output
    range to 0..255."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    worst = {}
    for variant in ("LINEAR_EXACT", "SIGMOID", "VOI LUT"):
        ds = pydicom.dcmread(os.path.join(SHARED, "dicom", "CT_small_pydicom.dcm"))
        if variant == "VOI LUT":
            item = Dataset()
            item.add_new(0x00283002, "SS", [2048, -1024, 12])  # LUTDescriptor: 2048 entries from -1024 HU, 12-bit
            curve = (np.linspace(0, 1, 2048) ** 0.5 * 4095).round().astype(np.uint16)
            item.add_new(0x00283006, "US", curve.tolist())  # LUTData
            ds.VOILUTSequence = Sequence([item])
        else:
            ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, variant
        modality = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
        out = pydicom.pixels.apply_voi_lut(modality, ds).astype(np.float64)
        if variant == "VOI LUT":
            unit = out / 4095.0
        else:
            lo = -(2 ** (ds.BitsStored - 1)) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            hi = (2 ** (ds.BitsStored - 1) - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            unit = (out - lo) / (hi - lo)
        ref = level(unit)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        cur.execute("SELECT biomedclip_render_dicom(%s)", (buf.getvalue(),))
        ours = np.asarray(Image.open(io.BytesIO(cur.fetchone()[0])))
        worst[variant] = int(np.abs(ours.astype(int) - ref.astype(int)).max())
    check("VOI LUT Function and VOI LUT sequence follow pydicom's apply_voi_lut", max(worst.values()) <= 1,
          ", ".join(f"{k}: max {v}" for k, v in worst.items()))


def multi_frame_against_pydicom(cur):
    """Frames other than 0 of pydicom's multi-frame test objects."""
    results = []
    for name in ("examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit_2frame.dcm", "rtdose.dcm", "rtdose_expb.dcm"):
        path = os.path.join(PYDICOM_FILES, name)
        ds = pydicom.dcmread(path)
        frames = int(ds.NumberOfFrames)
        frame = frames - 1
        arr = ds.pixel_array[frame]
        if ds.SamplesPerPixel == 3:
            ref = arr if arr.dtype == np.uint8 else level(arr / float(2 ** ds.BitsStored - 1))
        else:
            values = pydicom.pixels.apply_modality_lut(arr, ds).astype(np.float64)
            ref = level((values - values.min()) / (values.max() - values.min()))
        cur.execute("SELECT biomedclip_render_dicom(%s, 'auto', %s)", (open(path, "rb").read(), frame))
        ours = np.asarray(Image.open(io.BytesIO(cur.fetchone()[0])))
        results.append((name, frame, int(np.abs(ours.astype(int) - ref.astype(int)).max())))
    lossy = {"examples_ybr_color.dcm"}
    ok = all(d == 0 or (n in lossy and d <= 3) for n, _, d in results)
    check("multi-frame: the chosen frame matches pydicom's", ok, ", ".join(f"{n} frame {f}: max {d}" for n, f, d in results))


def slide_cancel(cur):
    """statement_timeout ends a slide call while it streams tiles, with PostgreSQL's own error."""
    import tifffile
    import time
    with tifffile.TiffFile(os.path.join(SHARED, "wsi", "CMU-1-Small-Region.svs")) as tif:
        src = tif.pages[0].asarray()[:2048, :2048]
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.tile(src, (4, 4, 1)), tile=(256, 256), compression="jpeg", photometric="rgb")
    cur.execute("SET statement_timeout = '300ms'")
    started = time.monotonic()
    try:
        cur.execute("SELECT count(*) FROM biomedclip_slide_patches(%s, tissue_threshold => 0, max_patches => 100000)", (buf.getvalue(),))
        outcome = "finished"
    except psycopg.errors.QueryCanceled as e:
        outcome = e.diag.message_primary
    except psycopg.Error as e:
        outcome = f"other error: {e.diag.message_primary}"
    took = time.monotonic() - started
    cur.execute("RESET statement_timeout")
    check("statement_timeout ends a slide call with the timeout error", "statement timeout" in outcome and took < 2.0,
          f"{outcome!r} after {took * 1000:.0f} ms (8192 x 8192 slide, timeout 300 ms)")


def dicom_wsi_against_svs(cur):
    """A DICOM whole-slide instance made from the SVS's pixels (native frames) gives the same patch
    embeddings as the SVS at the same positions."""
    import pathlib
    import tempfile
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    from reference_slide import make_dicom_wsi
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = make_dicom_wsi(pathlib.Path(tmp), "wsi", jpeg=False)
        dcm = open(path, "rb").read()
    svs = open(os.path.join(SHARED, "wsi", "CMU-1-Small-Region.svs"), "rb").read()
    rows = {}
    for name, data in (("svs", svs), ("dicom", dcm)):
        cur.execute("SELECT x, y, embedding::text FROM biomedclip_slide_patches(%s, tissue_threshold => 0, max_patches => 100000)", (data,))
        rows[name] = {(x, y): e for x, y, e in cur.fetchall()}
    same = sum(rows["svs"][k] == rows["dicom"].get(k) for k in rows["svs"])
    check("DICOM whole-slide instance: same patches and embeddings as the SVS it was made from",
          same == len(rows["svs"]) == len(rows["dicom"]) == 117, f"{same} of {len(rows['svs'])} patch embeddings identical")


def functional_groups_against_pydicom(cur):
    """Enhanced-style objects keep rescale and window only in the shared or per-frame functional
    groups; rendering one must equal pydicom's render of the same values at the top level."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def item(slope, intercept, center, width):
        transform, voi, group = Dataset(), Dataset(), Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "HU"
        voi.WindowCenter, voi.WindowWidth = center, width
        group.PixelValueTransformationSequence = Sequence([transform])
        group.FrameVOILUTSequence = Sequence([voi])
        return group

    def classic(slope, intercept, center, width):
        ds = pydicom.dcmread(os.path.join(SHARED, "dicom", "CT_small_pydicom.dcm"))
        ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = slope, intercept, center, width
        return reference_render(ds)

    def enhanced(groups, frames):
        ds = pydicom.dcmread(os.path.join(SHARED, "dicom", "CT_small_pydicom.dcm"))
        for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.update(groups)
        if frames > 1:
            ds.NumberOfFrames = frames
            ds.PixelData = ds.PixelData * frames
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    shared = Dataset()
    shared.SharedFunctionalGroupsSequence = Sequence([item(1, -1024, 40, 400)])
    per_frame = Dataset()
    per_frame.PerFrameFunctionalGroupsSequence = Sequence([item(1, -1024, 40, 400), item(2, -2048, -600, 1500)])
    cases = [("shared groups", enhanced(shared, 1), 0, classic(1, -1024, 40, 400)),
             ("per-frame groups, frame 0", enhanced(per_frame, 2), 0, classic(1, -1024, 40, 400)),
             ("per-frame groups, frame 1", enhanced(per_frame, 2), 1, classic(2, -2048, -600, 1500))]
    results = []
    for name, data, frame, ref in cases:
        cur.execute("SELECT biomedclip_render_dicom(%s, 'auto', %s)", (data, frame))
        ours = np.asarray(Image.open(io.BytesIO(cur.fetchone()[0])))
        results.append((name, int(np.abs(ours.astype(int) - ref.astype(int)).max())))
    check("functional-group rescale and window equal pydicom's render of the same values",
          all(d == 0 for _, d in results), ", ".join(f"{n}: max {d}" for n, d in results))


IDENTIFYING_WORDS = ("Name", "ID", "Date", "Time", "UID", "Description", "Comment", "Station", "Institution",
                     "Physician", "Operator", "Address", "Telephone", "Birth", "Accession", "Protocol", "Series", "Study")


# The technical attributes biomedclip_dicom_info may report (crates/biomedclip-core/src/dicom/info.rs).
WHITELIST = {"Modality", "BodyPartExamined", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
             "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation", "TransferSyntaxUID",
             "PixelSpacing", "SliceThickness", "WindowCenter", "WindowWidth", "VOILUTFunction", "RescaleSlope",
             "RescaleIntercept", "RescaleType", "Manufacturer", "ManufacturerModelName"}


def identifying_values(ds):
    """Values of the tags outside the whitelist: names, IDs, dates, times, UIDs, descriptions,
    comments, station, institution, people, and every private tag (minus any value that a
    whitelisted tag of the same file also holds)."""
    out = set()
    allowed = set()
    for el in ds.iterall():
        if el.keyword in WHITELIST:
            allowed.add(str(el.value).strip())
    for el in ds.iterall():
        if el.keyword in WHITELIST:
            continue
        if el.tag == 0x7FE00010 or el.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "UN") and not el.tag.is_private:
            continue
        sensitive = el.tag.is_private or el.VR in ("PN", "DA", "DT", "TM", "UI", "LO", "SH", "LT", "ST", "UT", "AE") \
            or any(w in (el.keyword or el.name) for w in IDENTIFYING_WORDS)
        if not sensitive:
            continue
        values = el.value if isinstance(el.value, (list, tuple, pydicom.multival.MultiValue)) else [el.value]
        for v in values:
            if isinstance(v, bytes):
                v = v.decode("latin-1", errors="ignore")
            v = str(v).strip().strip("\x00").strip()
            # Short or numeric-only values also occur as technical values; standard UIDs (transfer
            # syntaxes, SOP classes) are not identifying.
            if len(v) >= 4 and not v.replace(".", "").replace("-", "").replace(" ", "").isdigit() or (el.VR == "UI" and not v.startswith("1.2.840.10008.") and len(v) >= 8):
                out.add(v)
    return out - allowed, allowed


def info_has_no_phi(cur):
    """Every DICOM file in ../shared/data and every pydicom test object: no value of an
    identifying or private tag appears anywhere in biomedclip_dicom_info's output."""
    files = [(f, os.path.join(SHARED, "dicom", f)) for f in sorted(os.listdir(os.path.join(SHARED, "dicom"))) if f.endswith(".dcm")]
    files += [(name, path) for name, path, _ in pydicom_objects()]
    checked = values = 0
    leaks = []
    for name, path in files:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:
            continue
        secret, allowed = identifying_values(ds)
        try:
            cur.execute("SELECT biomedclip_dicom_info(%s)::text", (open(path, "rb").read(),))
        except psycopg.Error:
            cur.connection.rollback()
            continue
        text = cur.fetchone()[0]
        # Whitelisted values may contain an identifying one as a substring (Manufacturer
        # "TOSHIBA_MEC" and InstitutionName "TOSHIBA"): look for leaks in what remains.
        for a in sorted(allowed, key=len, reverse=True):
            if len(a) >= 3:
                text = text.replace(a, "")
        checked += 1
        values += len(secret)
        leaks += [f"{name}: {v!r}" for v in secret if v in text]
    check("dicom_info: no identifying or private value of any file appears in the output", checked >= 80 and values >= 500 and not leaks,
          f"{checked} files, {values} identifying values, {len(leaks)} in the output: {leaks[:4]}")


def unsupported_syntax_is_named(cur):
    ds = pydicom.dcmread(os.path.join(SHARED, "dicom", "CT1_UNC.dcm"))
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    try:
        cur.execute("SELECT biomedclip_render_dicom(%s)", (buf.getvalue(),))
        check("unsupported transfer syntax is an error", False, "rendered")
    except psycopg.Error as e:
        cur.connection.rollback()
        msg = e.diag.message_primary
        check("unsupported transfer syntax is an error naming it", "MPEG2" in msg or "1.2.840.10008.1.2.4.100" in msg, msg)


def tissue_against_opencv(cur):
    import cv2
    import tifffile
    svs = os.path.join(SHARED, "wsi", "CMU-1-Small-Region.svs")
    with tifffile.TiffFile(svs) as tif:
        thumb = tif.pages[1].asarray()  # Aperio's thumbnail page: the smallest image of the slide
        w0, h0 = tif.pages[0].imagewidth, tif.pages[0].imagelength
    sat = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[:, :, 1]
    otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = sat > max(int(otsu), 8)
    th, tw = mask.shape
    expected = set()
    for y in range(0, h0 - 223, 224):
        for x in range(0, w0 - 223, 224):
            cx0, cx1 = int(np.ceil(x / w0 * tw - 0.5)), int(np.ceil((x + 224) / w0 * tw - 0.5))
            cy0, cy1 = int(np.ceil(y / h0 * th - 0.5)), int(np.ceil((y + 224) / h0 * th - 0.5))
            if mask[cy0:cy1, cx0:cx1].mean() >= 0.5:
                expected.add((x, y))
    cur.execute("SELECT x, y FROM biomedclip_slide_patches(%s, max_patches => 100000)", (open(svs, "rb").read(),))
    ours = {tuple(r) for r in cur.fetchall()}
    grid = (w0 // 224) * (h0 // 224)
    check("tissue selection equals OpenCV saturation + Otsu on the thumbnail", ours == expected,
          f"grid {grid} patches, ours {len(ours)}, OpenCV {len(expected)}, Otsu threshold {otsu:.0f}, symmetric difference {len(ours ^ expected)}")
    white = thumb.reshape(-1, 3).min(axis=1) > 220
    check("tissue selection discards the white background", 0 < len(ours) < grid,
          f"kept {len(ours)} of {grid}; {white.mean():.0%} of thumbnail pixels are near-white")


def attention_against_numpy(cur):
    """Attention pooling against numpy at explicit temperatures, and the default temperature is
    the zero-shot scale exp(logit_scale), not the raw logit_scale (which is nearly the mean)."""
    svs = open(os.path.join(SHARED, "wsi", "CMU-1-Small-Region.svs"), "rb").read()
    cur.execute("SELECT embedding::real[] FROM biomedclip_slide_patches(%s, max_patches => 20)", (svs,))
    rows = np.array([r[0] for r in cur.fetchall()], np.float64)
    cur.execute("SELECT biomedclip_embed_text('tumor tissue')::real[], (biomedclip_model_info() ->> 'logit_scale')::float8")
    query, logit_scale = cur.fetchone()
    q = np.array(query, np.float64)
    sims = rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))

    def numpy_attention(t):
        weights = np.exp(t * sims - (t * sims).max())
        weights /= weights.sum()
        return weights @ rows

    sql = ("SELECT biomedclip_embed_slide(%s, 'attention', biomedclip_embed_text('tumor tissue'), max_patches => 20"
           "{})::real[]")
    for t in (1.0, 10.0, 100.0):
        cur.execute(sql.format(", temperature => %s"), (svs, t))
        ours = np.array(cur.fetchone()[0])
        err = float(np.abs(ours - numpy_attention(t)).max())
        check(f"attention pooling at temperature {t:g} equals numpy softmax(t * cos) weighting", err < 1e-5,
              f"max abs diff {err:.2e}")
    cur.execute(sql.format(""), (svs,))
    default = np.array(cur.fetchone()[0])
    scale = float(np.exp(logit_scale))
    err = float(np.abs(default - numpy_attention(scale)).max())
    from_mean = float(np.abs(default - rows.mean(axis=0)).max())
    check("default attention temperature is exp(logit_scale), and attention differs from the mean",
          err < 1e-5 and from_mean > 1e-3,
          f"exp(logit_scale) = {scale:.2f}: max abs diff {err:.2e}; distance from the mean {from_mean:.2e}")


def main():
    with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        dicom_against_pydicom(cur)
        voi_functions_against_pydicom(cur)
        multi_frame_against_pydicom(cur)
        functional_groups_against_pydicom(cur)
        info_has_no_phi(cur)
        unsupported_syntax_is_named(cur)
        tissue_against_opencv(cur)
        attention_against_numpy(cur)
        slide_cancel(cur)
        dicom_wsi_against_svs(cur)
        cur.execute("SELECT 1")
        check("server still up", cur.fetchone()[0] == 1, "SELECT 1")
    finish()


if __name__ == "__main__":
    main()
