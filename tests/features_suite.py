"""Features before the projection, the model's own projections, and projection adapters, against
outside references:

1. biomedclip_image_features / biomedclip_text_features (one input and array forms) equal the
   features output of the model's ONNX graphs run by onnxruntime's Python API on Pillow's
   preprocessing and HF tokenizers' ids (tools/reference_preprocess.py, tools/reference_clean.py);
2. biomedclip_project_image / _text equal numpy (scipy's erf for the text MLP's GELU) applying the
   projection files read with the safetensors library, and project(features(x)) equals
   embed(x): re-projecting stored features needs no second run of the towers;
3. a model directory written before features existed (graphs without the second output, manifest
   without "features") still embeds, and the features functions and projection training are 0A000;
4. kind 'projection' fine-tunes the model's heads on stored features: on pairs whose text
   features are a hidden linear map of the image features plus noise, held-out image→text R@1
   rises from near chance to ≥ 0.8; the same seed gives the same weights SHA-256; the use
   functions equal numpy applying the stored weights; the audit row names kind and base model;
   residual-sized pairs or residual-only options are 22023; without grants 42501.

Runs in both inference modes (scripts/regress.sh). Usage: features_suite.py PORT
"""
import glob
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import psycopg
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from suite import ROOT, SHARED, check, finish, fresh_database, sqlstate, vec  # noqa: E402
from reference_clean import clean  # noqa: E402
from reference_preprocess import open_clip_eval  # noqa: E402
from model_manifest import write_manifest  # noqa: E402

PORT = int(sys.argv[1])
DB = "biomedclip_features"
MODEL = os.path.join(ROOT, "target/models/tiny")
MANIFEST = json.load(open(os.path.join(MODEL, "manifest.json")))
CAPTIONS = ["chest x-ray showing pneumonia", "H&E stained histopathology slide", "brain MRI, axial T2",
            "a pie chart", "CT (3mm collimation) shows peripheral interlobular septal thickening with scattered focal consolidation and GGO."]


def connect(user="postgres"):
    return psycopg.connect(host="127.0.0.1", port=PORT, user=user, dbname=DB, autocommit=True)


def floats(text):
    return np.array(json.loads(text), dtype=np.float64)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def gelu(a):
    return 0.5 * a * (1 + erf(a / math.sqrt(2)))


def heads():
    image = load_file(os.path.join(MODEL, MANIFEST["image"]["features"]["projection"]))
    text = load_file(os.path.join(MODEL, MANIFEST["text"]["features"]["projection"]))
    return image["w"].astype(np.float64), text["w1"].astype(np.float64), text["w2"].astype(np.float64)


def setup():
    fresh_database(PORT, DB, ("fx_steward", "fx_half", "fx_nobody"))
    with connect() as c:
        c.execute("CREATE EXTENSION biomedclip")
        for r in ("fx_steward", "fx_half"):
            c.execute(f"SELECT count(*) FROM biomedclip_grant('{r}', 'steward')")


def features_against_onnxruntime():
    images = sorted(glob.glob(os.path.join(SHARED, "biomedclip", "example_images", "*")))
    images += sorted(glob.glob(os.path.join(SHARED, "medpix", "images", "*.png")))[:6]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    img_sess = ort.InferenceSession(os.path.join(MODEL, "image_encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    txt_sess = ort.InferenceSession(os.path.join(MODEL, "text_encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    want_img = img_sess.run([MANIFEST["image"]["features"]["output"]], {"pixel_values": np.stack([open_clip_eval(p) for p in images])})[0]
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_padding()
    want_txt = []
    for cap in CAPTIONS:
        ids = np.array([tok.encode(clean(cap)).ids], dtype=np.int64)
        want_txt.append(txt_sess.run([MANIFEST["text"]["features"]["output"]], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0])
    want_txt = np.array(want_txt)
    with connect() as c:
        got_img = np.array([floats(c.execute("SELECT biomedclip_image_features(pg_read_binary_file(%s))::text", (p,)).fetchone()[0]) for p in images])
        arr_img = c.execute("SELECT biomedclip_image_features(array_agg(pg_read_binary_file(p) ORDER BY i))::text[] "
                            "FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, i)", (images,)).fetchone()[0]
        got_txt = np.array([floats(c.execute("SELECT biomedclip_text_features(%s)::text", (t,)).fetchone()[0]) for t in CAPTIONS])
        arr_txt = c.execute("SELECT biomedclip_text_features(%s::text[])::text[]", (CAPTIONS[:2] + [None] + CAPTIONS[2:],)).fetchone()[0]
        emb_img = np.array([floats(c.execute("SELECT biomedclip_embed_image(pg_read_binary_file(%s))::text", (p,)).fetchone()[0]) for p in images])
        emb_txt = np.array([floats(c.execute("SELECT biomedclip_embed_text(%s)::text", (t,)).fetchone()[0]) for t in CAPTIONS])
        proj_img = np.array([floats(c.execute("SELECT biomedclip_project_image(%s::embedding)::text", (vec(f),)).fetchone()[0]) for f in got_img])
        proj_txt = np.array([floats(c.execute("SELECT biomedclip_project_text(%s::embedding)::text", (vec(f),)).fetchone()[0]) for f in got_txt])
        wrong_dim = sqlstate(c, "SELECT biomedclip_project_image('[1,2,3]'::embedding)")
        chained = c.execute("SELECT max(biomedclip_project_image(biomedclip_image_features(pg_read_binary_file(p))) "
                            "<-> biomedclip_embed_image(pg_read_binary_file(p))) FROM unnest(%s::text[]) AS p", (images,)).fetchone()[0]
    rel = lambda a, b: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))  # noqa: E731
    d_img, d_txt = rel(got_img, want_img), rel(got_txt, want_txt)
    arr_same = (np.allclose(np.array([floats(x) for x in arr_img]), got_img, rtol=0, atol=1e-6)
                and arr_txt[2] is None and np.allclose(np.array([floats(x) for x in arr_txt if x is not None]), got_txt, rtol=0, atol=1e-6))
    check(f"image and text features equal onnxruntime's {MANIFEST['image']['features']['output']} / {MANIFEST['text']['features']['output']} "
          "outputs on Pillow's preprocessing and HF tokenizers' ids; the array forms agree and keep NULLs",
          d_img < 1e-5 and d_txt < 1e-5 and got_img.shape[1] == MANIFEST["image"]["features"]["dim"] and arr_same,
          f"{len(images)} images, {len(CAPTIONS)} texts, max relative Δ {d_img:.1e} / {d_txt:.1e}, {got_img.shape[1]}-d")
    w, w1, w2 = heads()
    np_img, np_txt = unit(got_img @ w), unit(gelu(got_txt @ w1) @ w2)
    d_proj = max(float(np.abs(proj_img - np_img).max()), float(np.abs(proj_txt - np_txt).max()))
    check("biomedclip_project_image / _text equal numpy applying the safetensors projection files (scipy erf GELU), L2-normalized; "
          "features of another width are 22023", d_proj < 1e-6 and wrong_dim == "22023", f"max Δ {d_proj:.1e}, {wrong_dim}")
    d_emb = max(float(np.abs(proj_img - emb_img).max()), float(np.abs(proj_txt - emb_txt).max()))
    check("project(features(x)) equals embed(x) for images and texts (float rounding only), also chained in one query",
          d_emb < 1e-5 and chained < 1e-5, f"max Δ {d_emb:.1e}, chained max distance {chained:.1e}")


def old_model_directory():
    """A directory as written before features existed: no second graph output, no "features"."""
    tmp = tempfile.mkdtemp(prefix="biomedclip-oldmodel.")
    os.chmod(tmp, 0o755)
    try:
        for f in ("image_encoder.onnx", "text_encoder.onnx"):
            m = onnx.load(os.path.join(MODEL, f))
            keep = [o for o in m.graph.output if not o.name.endswith("_features")]
            del m.graph.output[:]
            m.graph.output.extend(keep)
            onnx.save(m, os.path.join(tmp, f))
        shutil.copyfile(os.path.join(MODEL, "tokenizer.json"), os.path.join(tmp, "tokenizer.json"))
        write_manifest(tmp, MANIFEST["name"] + "-without-features", MANIFEST["version"], "fp32", MANIFEST["logit_scale"])
        os.system(f"chmod -R a+rX {tmp}")
        with connect() as c:
            c.execute(f"SET biomedclip.model_dir = '{tmp}'")
            old = json.load(open(os.path.join(tmp, "manifest.json")))
            embeds = c.execute("SELECT biomedclip_embed_text('chest x-ray') IS NOT NULL, biomedclip_model_info()->>'name'").fetchone()
            codes = (sqlstate(c, "SELECT biomedclip_text_features('chest x-ray')"),
                     sqlstate(c, "SELECT biomedclip_image_features(pg_read_binary_file(%s))", (os.path.join(SHARED, "biomedclip/example_images/chest_X-ray.jpg"),)),
                     sqlstate(c, "SELECT biomedclip_project_text(%s::embedding)", (vec(np.ones(64)),)),
                     sqlstate(c, "SELECT biomedclip_train_adapter('old', 'SELECT 1 AS pair_id, NULL::embedding AS image, NULL::embedding AS text', "
                                 "'{\"kind\": \"projection\"}')"))
        check("a model directory without features still embeds; features, projections and projection training are 0A000 there",
              embeds[0] and embeds[1] == old["name"] and codes == ("0A000",) * 4, f"{embeds} {codes}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def projection_adapters():
    d = MANIFEST["image"]["features"]["dim"]
    n = 1000
    r = np.random.default_rng(51)
    m = r.standard_normal((d, d)) / math.sqrt(d)
    im = r.standard_normal((n, d))
    tx = im @ m.T + 0.1 * r.standard_normal((n, d))
    with connect() as c:
        c.execute(f"CREATE TABLE feats (pair_id int, img embedding({d}), txt embedding({d}), site text)")
        with c.cursor() as cur:
            with cur.copy("COPY feats FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((i, vec(im[i]), vec(tx[i]), "A" if i % 2 == 0 else "B"))
        c.execute("ALTER TABLE feats ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY half ON feats FOR SELECT USING (current_user <> 'fx_half' OR site = 'A')")
        c.execute("GRANT SELECT ON feats TO fx_steward, fx_half, fx_nobody")
        c.execute("CREATE TABLE embs (pair_id int, img embedding(32), txt embedding(32))")
        c.execute("INSERT INTO embs SELECT i, array_fill(0.1, ARRAY[32])::real[]::embedding, array_fill(0.2, ARRAY[32])::real[]::embedding FROM generate_series(1, 10) i")
        c.execute("GRANT SELECT ON embs TO fx_steward")
        model_sha = c.execute("SELECT biomedclip_model_info()->>'manifest_sha256'").fetchone()[0]
    q = "SELECT pair_id, img AS image, txt AS text FROM feats"
    opts = '{"kind": "projection", "seed": 3}'  # the defaults otherwise
    with connect("fx_steward") as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        out = c.execute("SELECT biomedclip_train_adapter('proj', %s, %s)", (q, opts)).fetchone()[0]
        towers_loaded = "onnxruntime" in open(f"/proc/{pid}/maps").read()
        again = c.execute("SELECT biomedclip_train_adapter('proj2', %s, %s)", (q, opts)).fetchone()[0]
        codes = (sqlstate(c, "SELECT biomedclip_train_adapter('p', 'SELECT pair_id, img AS image, txt AS text FROM embs', '{\"kind\": \"projection\"}')"),
                 sqlstate(c, "SELECT biomedclip_train_adapter('p', %s, '{\"kind\": \"projection\", \"alpha\": 0.5}')", (q,)))
    with connect("fx_half") as c:
        half = c.execute("SELECT biomedclip_train_adapter('proj_half', %s, %s)", (q, opts)).fetchone()[0]
    with connect("fx_nobody") as c:
        denied = (sqlstate(c, "SELECT biomedclip_train_adapter('n', %s, %s)", (q, opts)), sqlstate(c, "SELECT biomedclip_text_features('x')"))
    v = out["metrics"]["validation"]
    check("kind projection with default options lifts held-out image→text R@1 from near chance to ≥ 0.8 on a hidden linear relation between the towers' features",
          v["before"]["image_to_text"]["r1"] < 0.1 and v["after"]["image_to_text"]["r1"] >= 0.8 and v["after"]["text_to_image"]["r1"] >= 0.8,
          f"i→t R@1 {v['before']['image_to_text']['r1']:.3f} -> {v['after']['image_to_text']['r1']:.3f}, t→i "
          f"{v['before']['text_to_image']['r1']:.3f} -> {v['after']['text_to_image']['r1']:.3f}, {len(out['metrics']['epochs'])} epochs")
    check("the same features, options and seed give the same projection weights SHA-256",
          again["weights_sha256"] == out["weights_sha256"], out["weights_sha256"][:12])
    with connect() as c:
        row = c.execute("SELECT kind, dim, hidden, alpha, image_w1, image_w2, text_w1, text_w2 FROM biomedclip.adapters WHERE name = 'proj'").fetchone()
        run = c.execute("SELECT kind, base_model_sha256, options_used->>'kind' FROM biomedclip.training_runs WHERE run_id = %s", (out["run_id"],)).fetchone()
        start = c.execute("SELECT biomedclip_adapt_image('proj', %s::embedding) <-> biomedclip_project_image(%s::embedding)", (vec(im[0]), vec(im[0]))).fetchone()[0]
    kind, dim, hidden, alpha = row[:4]
    w = np.array(row[4]).reshape(dim, -1)
    w1, w2 = np.array(row[6]).reshape(dim, hidden), np.array(row[7]).reshape(hidden, -1)
    worst = 0.0
    with connect("fx_steward") as c:
        for i in range(5):
            got_i = floats(c.execute("SELECT biomedclip_adapt_image('proj', %s::embedding)::text", (vec(im[i]),)).fetchone()[0])
            got_t = floats(c.execute("SELECT biomedclip_adapt_text('proj', %s::embedding)::text", (vec(tx[i]),)).fetchone()[0])
            xi, xt = floats(vec(im[i])), floats(vec(tx[i]))
            worst = max(worst, float(np.abs(got_i - unit(xi @ w)).max()), float(np.abs(got_t - unit(gelu(xt @ w1) @ w2)).max()))
    check("biomedclip_adapt_image / _adapt_text of a projection adapter equal numpy applying its stored heads, L2-normalized; "
          "the row and its training run say kind projection and name the base model",
          worst < 1e-6 and kind == "projection" and alpha is None and row[5] == [] and run == ("projection", model_sha, "projection") and start > 1e-3,
          f"max Δ {worst:.1e}, heads {dim}→{w.shape[1]} and {dim}→{hidden}→{w2.shape[1]}, moved {start:.3f} from the base projection")
    check("under RLS a projection adapter trains on exactly the visible half; 22023 for embedding-sized pairs or a residual-only option; "
          "42501 without grants", half["rows"]["train"] + half["rows"]["validation"] == n // 2 and codes == ("22023", "22023")
          and denied == ("42501", "42501"), f"{half['rows']} {codes} {denied}")
    check("training kind projection reads the manifest and the projection files only: the training backend never maps ONNX Runtime",
          not towers_loaded, f"ONNX Runtime mapped in the training backend: {towers_loaded}")


setup()
features_against_onnxruntime()
old_model_directory()
projection_adapters()
finish()
