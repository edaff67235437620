"""Linear probes in SQL (biomedclip_train_probe, biomedclip_probe) against scikit-learn: the
stored coefficients and the probabilities equal LogisticRegression's on the same training rows
(reproduced here with the same seeded split), validation AUROC equals roc_auc_score; separable
classes reach ≥ 0.95; the same seed gives the same weights SHA-256; a role under row-level
security trains on exactly its rows (counts and dataset fingerprint); tampered weights are
refused; privileges are default-deny; bad input gets 22023.

Usage: finetune_suite.py PORT
"""
import json
import math
import os
import sys
import threading
import time

import numpy as np
import psycopg
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(__file__))
from splitmix import SplitMix64  # noqa: E402
from suite import check, finish, fresh_database, sqlstate, vec  # noqa: E402

PORT = int(sys.argv[1])
DB = "biomedclip_finetune"
N, D, K = 600, 16, 4


def connect(user="postgres"):
    return psycopg.connect(host="127.0.0.1", port=PORT, user=user, dbname=DB, autocommit=True)


rng = np.random.default_rng(31)
centers = rng.standard_normal((K, D)) * 0.8
y = rng.choice(K, size=N, p=[0.4, 0.3, 0.2, 0.1])
X = centers[y] + rng.standard_normal((N, D))
AGE = 50 + 10 * y + rng.standard_normal(N) * 8
LAB = rng.standard_normal(N)
LABELS = ["copd", "effusion", "normal", "pneumonia"]
IDS = [f"ex{i:04d}" for i in range(N)]


def setup():
    fresh_database(PORT, DB, ("ft_steward", "ft_half", "ft_user", "ft_nobody", "ft_auditor"))
    with connect() as c:
        c.execute("CREATE EXTENSION biomedclip")
        c.execute(f"CREATE TABLE examples (example_id text, emb embedding({D}), finding text, age float8, lab float8, site text)")
        with c.cursor() as cur:
            with cur.copy("COPY examples FROM STDIN") as cp:
                for i in range(N):
                    cp.write_row((IDS[i], vec(X[i]), LABELS[y[i]], AGE[i], LAB[i], "A" if i % 2 == 0 else "B"))
        c.execute("ALTER TABLE examples ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY half ON examples FOR SELECT USING (current_user <> 'ft_half' OR site = 'A')")
        c.execute("GRANT SELECT ON examples TO ft_steward, ft_half")
        for r in ("ft_steward", "ft_half"):
            c.execute(f"SELECT count(*) FROM biomedclip_grant('{r}', 'steward')")
        c.execute("SELECT count(*) FROM biomedclip_grant('ft_user', 'analyst')")
        c.execute("SELECT count(*) FROM biomedclip_grant('ft_auditor', 'auditor')")


def split(ids, seed, val_fraction=0.2):
    """The extension's split: ids sorted, shuffled by SplitMix64(seed), the first round(n·f) validate."""
    order = list(range(len(ids)))
    SplitMix64(seed).shuffle(order)
    n_val = min(max(int(math.floor(len(ids) * val_fraction + 0.5)), 1), len(ids) - 2)
    return order[n_val:], order[:n_val]


QUERY = ("SELECT example_id, emb AS embedding, finding AS label, ARRAY[age, lab] AS features FROM examples")


def parity():
    with connect("ft_steward") as c:
        out = c.execute("SELECT biomedclip_train_probe('risk', %s, '{\"C\": 0.5, \"seed\": 7}')", (QUERY,)).fetchone()[0]
    with connect() as c:
        coef, intercept, temperature, mean, scale = c.execute(
            "SELECT coef, intercept, temperature, feature_mean, feature_scale FROM biomedclip.probes WHERE name = 'risk'").fetchone()
    order = np.argsort(IDS)  # the ids are already in order; kept explicit
    feats = np.column_stack([AGE, LAB])[order]
    xs, ys = X[order], y[order]
    train, val = split([IDS[i] for i in order], 7)
    scaler = StandardScaler().fit(feats[train])
    full = np.hstack([xs, scaler.transform(feats)])
    sk = LogisticRegression(C=0.5, tol=1e-12, max_iter=10000).fit(full[train], ys[train])
    d_coef = np.abs(np.array(coef).reshape(K, D + 2) - sk.coef_).max()
    d_int = np.abs(np.array(intercept) - sk.intercept_).max()
    d_std = max(np.abs(np.array(mean) - scaler.mean_).max(), np.abs(np.array(scale) - scaler.scale_).max())
    check("stored coefficients, intercepts and feature standardization equal scikit-learn's on the same training rows",
          d_coef < 1e-4 and d_int < 1e-4 and d_std < 1e-9 and out["rows"] == {"train": len(train), "validation": len(val)},
          f"Δcoef {d_coef:.1e}, Δintercept {d_int:.1e}, Δscaler {d_std:.1e}, rows {out['rows']}")
    # biomedclip_probe = softmax(decision_function / T) for a few validation rows.
    worst = 0.0
    with connect("ft_user") as c:
        for j in val[:25]:
            rows = c.execute("SELECT label, probability FROM biomedclip_probe('risk', %s::embedding, %s)",
                             (vec(xs[j]), [float(feats[j][0]), float(feats[j][1])])).fetchall()
            got = dict(rows)
            z = sk.decision_function(full[j:j + 1])[0] / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            worst = max(worst, max(abs(got[LABELS[k]] - p[k]) for k in range(K)))
    check("biomedclip_probe's probabilities equal scikit-learn's decision function softmaxed at the stored temperature (25 rows)",
          worst < 1e-4, f"max Δp {worst:.1e}, temperature {temperature:.4f}")
    p_val = np.array([[dict(connect().execute("SELECT label, probability FROM biomedclip_probe('risk', %s::embedding, %s)",
                                               (vec(xs[j]), [float(feats[j][0]), float(feats[j][1])])).fetchall())[l] for l in LABELS] for j in val])
    auc = roc_auc_score(ys[val], p_val, multi_class="ovr", average="macro")
    check("the reported validation AUROC (one-vs-rest, macro) equals scikit-learn's roc_auc_score",
          abs(out["metrics"]["validation"]["auroc_ovr"] - auc) < 1e-9, f"{out['metrics']['validation']['auroc_ovr']:.6f} vs {auc:.6f}")
    return out


def behaviour(first):
    with connect("ft_steward") as c:
        again = c.execute("SELECT biomedclip_train_probe('risk', %s, '{\"C\": 0.5, \"seed\": 7, \"replace\": true}')", (QUERY,)).fetchone()[0]
        other = c.execute("SELECT biomedclip_train_probe('risk2', %s, '{\"C\": 0.5, \"seed\": 8}')", (QUERY,)).fetchone()[0]
        dup = sqlstate(c, "SELECT biomedclip_train_probe('risk', %s)", (QUERY,))
    check("the same rows, options and seed give the same weights SHA-256; another seed another; an existing name needs replace (42710)",
          again["weights_sha256"] == first["weights_sha256"] and other["weights_sha256"] != first["weights_sha256"] and dup == "42710",
          f"{first['weights_sha256'][:12]} {again['weights_sha256'][:12]} {other['weights_sha256'][:12]} {dup}")
    # Separable classes: centers far apart relative to the noise.
    xs = centers[y] * 5 + rng.standard_normal((N, D))
    with connect() as c:
        c.execute(f"CREATE TABLE sep (example_id text, emb embedding({D}), finding text)")
        with c.cursor() as cur:
            with cur.copy("COPY sep FROM STDIN") as cp:
                for i in range(N):
                    cp.write_row((IDS[i], vec(xs[i]), LABELS[y[i]]))
        c.execute("GRANT SELECT ON sep TO ft_steward")
    with connect("ft_steward") as c:
        sep = c.execute("SELECT biomedclip_train_probe('sep', 'SELECT example_id, emb AS embedding, finding AS label FROM sep', '{\"seed\": 1}')").fetchone()[0]
    check("a probe on well separated classes reaches ≥ 0.95 validation accuracy", sep["metrics"]["validation"]["accuracy"] >= 0.95,
          f"accuracy {sep['metrics']['validation']['accuracy']:.3f}")
    # Row-level security: ft_half sees the site A half; its run says so, and its fingerprint is that of the half.
    with connect("ft_half") as c:
        half = c.execute("SELECT biomedclip_train_probe('half', %s, '{\"seed\": 3}')", (QUERY,)).fetchone()[0]
    with connect("ft_steward") as c:
        same = c.execute("SELECT biomedclip_train_probe('half_ref', %s, '{\"seed\": 3}')", (QUERY + " WHERE site = 'A'",)).fetchone()[0]
    check("a role that sees half the rows trains on exactly that half (row counts and the dataset fingerprint of the half)",
          half["rows"]["train"] + half["rows"]["validation"] == N // 2 and half["dataset_fingerprint"] == same["dataset_fingerprint"]
          and half["weights_sha256"] == same["weights_sha256"], f"{half['rows']} {half['dataset_fingerprint'][:12]} vs {same['dataset_fingerprint'][:12]}")
    with connect() as c:
        run = c.execute("SELECT kind, trained_by, row_counts, seed, status, options_given, options_used ->> 'C', query, weights_sha256, dataset_fingerprint "
                        "FROM biomedclip.training_runs WHERE run_id = %s", (half["run_id"],)).fetchone()
    check("the training run is recorded: kind, who, counts, seed, options as given and as defaulted, the query, the hashes",
          run[0] == "probe" and run[1] == "ft_half" and run[2] == half["rows"] and run[3] == 3 and run[4] == "succeeded"
          and run[5] == {"seed": 3} and run[6] == "1.0" and run[7] == QUERY and run[8] == half["weights_sha256"], str(run[:7]))


def safety():
    with connect("ft_nobody") as c:
        codes = (sqlstate(c, "SELECT biomedclip_train_probe('x', 'SELECT 1')"),
                 sqlstate(c, f"SELECT * FROM biomedclip_probe('risk', '{vec(np.zeros(D))}'::embedding, ARRAY[1.0, 2.0])"),
                 sqlstate(c, "SELECT * FROM biomedclip.training_runs"), sqlstate(c, "SELECT * FROM biomedclip.probes"))
    check("default deny: training, using a probe and reading the runs or weights need grants (42501)", codes == ("42501",) * 4, str(codes))
    with connect("ft_user") as c:
        wrong = sqlstate(c, f"SELECT * FROM biomedclip_probe('risk', '{vec(np.zeros(D))}'::embedding)")
        cannot_train = sqlstate(c, "SELECT biomedclip_train_probe('x', 'SELECT 1')")
    with connect("ft_steward") as c:
        bad = (sqlstate(c, "SELECT biomedclip_train_probe('x', %s, '{\"lr\": 1}')", (QUERY,)),
               sqlstate(c, "SELECT biomedclip_train_probe('x', 'SELECT example_id, emb AS embedding, ''one'' AS label FROM examples')"),
               sqlstate(c, "SELECT biomedclip_train_probe('x', 'SELECT ''same'' AS example_id, emb AS embedding, finding AS label FROM examples')"))
    check("a probe needs its features (22023); an analyst may use but not train (42501); unknown option, one label, duplicate ids: 22023",
          wrong == "22023" and cannot_train == "42501" and bad == ("22023",) * 3, f"{wrong} {cannot_train} {bad}")
    with connect() as c:
        c.execute("UPDATE biomedclip.probes SET coef[1] = coef[1] + 1e-9 WHERE name = 'risk'")
    with connect("ft_user") as c:
        tampered = sqlstate(c, f"SELECT * FROM biomedclip_probe('risk', '{vec(np.zeros(D))}'::embedding, ARRAY[1.0, 2.0])")
    check("weights changed behind the extension's back are refused (XX001, the stored SHA-256 no longer matches)", tampered == "XX001", str(tampered))


def adapters():
    """Residual adapters on synthetic pairs whose texts are a hidden linear map of the images plus
    noise: held-out recall must rise well above chance; numpy applies the stored weights."""
    d, n = 32, 1200
    r = np.random.default_rng(41)
    m = r.standard_normal((d, d)) / math.sqrt(d)
    im = r.standard_normal((n, d))
    tx = im @ m.T + 0.2 * r.standard_normal((n, d))
    with connect() as c:
        c.execute(f"CREATE TABLE pairs (pair_id int, img embedding({d}), txt embedding({d}), site text)")
        with c.cursor() as cur:
            with cur.copy("COPY pairs FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((i, vec(im[i]), vec(tx[i]), "A" if i % 2 == 0 else "B"))
        c.execute("ALTER TABLE pairs ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY half ON pairs FOR SELECT USING (current_user <> 'ft_half' OR site = 'A')")
        c.execute("GRANT SELECT ON pairs TO ft_steward, ft_half")
    q = "SELECT pair_id, img AS image, txt AS text FROM pairs"
    opts = '{"epochs": 40, "lr": 0.003, "hidden": 32, "seed": 5, "patience": 5}'
    notices = []
    with connect("ft_steward") as c:
        c.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        out = c.execute("SELECT biomedclip_train_adapter('syn', %s, %s)", (q, opts)).fetchone()[0]
        epoch_notices = [x for x in notices if "epoch" in x]
        again = c.execute("SELECT biomedclip_train_adapter('syn2', %s, %s)", (q, opts)).fetchone()[0]
    v = out["metrics"]["validation"]
    epochs = len(out["metrics"]["epochs"])
    check("a residual adapter lifts held-out image→text R@1 well above its start on a hidden linear relation; a NOTICE per epoch",
          v["after"]["image_to_text"]["r1"] >= v["before"]["image_to_text"]["r1"] + 0.3 and len(epoch_notices) == epochs,
          f"R@1 {v['before']['image_to_text']['r1']:.3f} -> {v['after']['image_to_text']['r1']:.3f}, MRR t2i {v['before']['text_to_image']['mrr']:.3f} -> "
          f"{v['after']['text_to_image']['mrr']:.3f}, {epochs} epochs, {len(epoch_notices)} notices")
    check("the same pairs, options and seed give the same adapter SHA-256", again["weights_sha256"] == out["weights_sha256"], out["weights_sha256"][:12])
    with connect() as c:
        w = c.execute("SELECT alpha, image_w1, image_w2, text_w1, text_w2, hidden FROM biomedclip.adapters WHERE name = 'syn'").fetchone()
    alpha, h = w[0], w[5]
    iw1, iw2, tw1, tw2 = (np.array(w[k]).reshape(s) for k, s in ((1, (h, d)), (2, (d, h)), (3, (h, d)), (4, (d, h))))
    worst = 0.0
    with connect("ft_user") as c:
        for i in range(5):
            got_i = json.loads(c.execute("SELECT biomedclip_adapt_image('syn', %s::embedding)::text", (vec(im[i]),)).fetchone()[0])
            got_t = json.loads(c.execute("SELECT biomedclip_adapt_text('syn', %s::embedding)::text", (vec(tx[i]),)).fetchone()[0])
            xi, xt = np.array(json.loads(vec(im[i]))), np.array(json.loads(vec(tx[i])))
            want_i = xi + alpha * np.maximum(xi @ iw1.T, 0) @ iw2.T
            want_t = xt + alpha * np.maximum(xt @ tw1.T, 0) @ tw2.T
            worst = max(worst, np.abs(np.array(got_i) - want_i).max() / max(1, np.abs(want_i).max()), np.abs(np.array(got_t) - want_t).max() / max(1, np.abs(want_t).max()))
    check("biomedclip_adapt_image / _adapt_text equal numpy applying the stored weights (float4 output)", worst < 1e-6, f"max relative Δ {worst:.1e}")
    with connect("ft_half") as c:
        half = c.execute("SELECT biomedclip_train_adapter('syn_half', %s, %s)", (q, opts)).fetchone()[0]
    with connect("ft_steward") as c:
        ref = c.execute("SELECT biomedclip_train_adapter('syn_ref', %s, %s)", (q + " WHERE site = 'A'", opts)).fetchone()[0]
        # (kind 'projection' is tests/features_suite.py's: it reads the model's heads, and this
        # suite's provenance check needs no model loaded before it.)
        codes = (sqlstate(c, "SELECT biomedclip_train_adapter('p', %s, '{\"epochz\": 3}')", (q,)),
                 sqlstate(c, "SELECT biomedclip_train_adapter('syn', %s)", (q,)))
    check("under RLS an adapter trains on exactly the visible half (counts, fingerprint and weights equal an explicit WHERE)",
          half["rows"]["train"] + half["rows"]["validation"] == n // 2 and half["dataset_fingerprint"] == ref["dataset_fingerprint"]
          and half["weights_sha256"] == ref["weights_sha256"], f"{half['rows']}")
    with connect("ft_user") as c:
        user_codes = (sqlstate(c, "SELECT biomedclip_train_adapter('u', %s)", (q,)),)
    with connect() as c:
        c.execute("UPDATE biomedclip.adapters SET text_w2[1] = text_w2[1] + 1e-9 WHERE name = 'syn'")
    with connect("ft_user") as c:
        tampered = sqlstate(c, "SELECT biomedclip_adapt_text('syn', %s::embedding)", (vec(tx[0]),))
    check("unknown option 22023, an existing name 42710, an analyst cannot train (42501), tampered weights XX001",
          codes == ("22023", "42710") and user_codes == ("42501",) and tampered == "XX001", f"{codes} {user_codes} {tampered}")


def no_signal():
    """Texts independent of the images: nothing to learn, so with the default options validation
    retrieval stays at chance and early stopping ends the run long before its epoch limit."""
    d, n = 32, 600
    r = np.random.default_rng(43)
    im, tx = r.standard_normal((n, d)), r.standard_normal((n, d))
    with connect() as c:
        c.execute(f"CREATE TABLE noise (pair_id int, img embedding({d}), txt embedding({d}))")
        with c.cursor() as cur:
            with cur.copy("COPY noise FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((i, vec(im[i]), vec(tx[i])))
        c.execute("GRANT SELECT ON noise TO ft_steward")
    with connect("ft_steward") as c:
        out = c.execute("SELECT biomedclip_train_adapter('noise', 'SELECT pair_id, img AS image, txt AS text FROM noise', "
                        "'{\"epochs\": 40, \"seed\": 5}')").fetchone()[0]
    v, m = out["metrics"]["validation"], out["metrics"]
    n_val = out["rows"]["validation"]
    # Chance R@1 is 1/n_val; with n_val = 120 a real gain of 0.3 (as in adapters()) is far outside noise.
    flat = all(abs(v["after"][k]["r1"] - v["before"][k]["r1"]) <= 0.05 and v["after"][k]["r1"] <= 5.0 / n_val for k in ("image_to_text", "text_to_image"))
    check("with no signal, training claims no improvement: validation R@1 stays at chance and early stopping fires",
          flat and m["stopped_early"] and len(m["epochs"]) < 40,
          f"R@1 {v['before']['image_to_text']['r1']:.3f} -> {v['after']['image_to_text']['r1']:.3f}, {len(m['epochs'])} of 40 epochs, best {m['best_epoch']}")


def progress_and_provenance():
    """A run is visible while it runs (biomedclip_training_progress, from another session) and gone
    when it ends or is cancelled; biomedclip_provenance(at) names the run that was current at each
    moment, and the model loaded by then."""
    q = "SELECT pair_id, img AS image, txt AS text FROM pairs"
    slow = '{"epochs": 400, "lr": 0.0001, "hidden": 32, "seed": 1, "patience": 400, "replace": true}'
    seen, result, pid = [], {}, {}
    counted = threading.Event()

    def train(name):
        with connect("ft_steward") as c:
            pid[name] = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            try:
                result[name] = c.execute("SELECT biomedclip_train_adapter(%s, %s, %s)", (name, q, slow)).fetchone()[0]
            except psycopg.Error as e:
                result[name] = e.diag.sqlstate
            # The session stays open (its backend alive) until the progress was read again: only
            # the run's own cleanup can make its row go, not the backend's exit.
            counted.wait(60)

    t = threading.Thread(target=train, args=("watched",))
    t.start()
    with connect("ft_auditor") as c:
        deadline = time.time() + 60
        while time.time() < deadline and not any(r[4] >= 2 for r in seen):
            seen += c.execute("SELECT pid, kind, name, trained_by, step, steps, phase, val_loss FROM biomedclip_training_progress()").fetchall()
            time.sleep(0.1)
        with connect() as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (pid["watched"],))
        deadline = time.time() + 60
        while "watched" not in result and time.time() < deadline:
            time.sleep(0.05)
        after = c.execute("SELECT count(*) FROM biomedclip_training_progress()").fetchone()[0]
        counted.set()
        t.join()
    mine = [r for r in seen if r[0] == pid["watched"]]
    check("a running training run is visible from another session (kind, name, role, epoch of epochs, losses) and gone after it is cancelled",
          mine and all(r[1:4] == ("residual", "watched", "ft_steward") and r[5] == 400 for r in mine)
          and any(r[4] >= 2 and r[6] == "training" and r[7] is not None for r in mine) and result["watched"] == "57014" and after == 0,
          f"{len(mine)} samples, last {mine[-1] if mine else None}, ended {result['watched']}, {after} rows after")
    with connect() as c:
        clock = lambda: c.execute("SELECT clock_timestamp()").fetchone()[0]  # noqa: E731
        t0 = clock()
        c.execute("SELECT biomedclip_embed_text('a chest radiograph')")
        sha = c.execute("SELECT biomedclip_model_info() ->> 'manifest_sha256'").fetchone()[0]
        time.sleep(0.05)
        c.execute("SELECT biomedclip_train_adapter('prov', %s, '{\"epochs\": 2, \"seed\": 1}')", (q,))
        first = c.execute("SELECT weights_sha256 FROM biomedclip.adapters WHERE name = 'prov'").fetchone()[0]
        t1 = clock()
        c.execute("SELECT biomedclip_train_adapter('prov', %s, '{\"epochs\": 2, \"seed\": 2, \"replace\": true}')", (q,))
        second = c.execute("SELECT weights_sha256 FROM biomedclip.adapters WHERE name = 'prov'").fetchone()[0]
        t2 = clock()
        deadline = time.time() + 20
        while time.time() < deadline and not c.execute("SELECT count(*) FROM biomedclip.model_activity").fetchone()[0]:
            time.sleep(0.2)
    with connect("ft_auditor") as c:
        p = [c.execute("SELECT biomedclip_provenance(%s)", (t,)).fetchone()[0] for t in (t0, t1, t2)]
    with connect("ft_user") as c:
        denied = sqlstate(c, "SELECT biomedclip_provenance(now())")

    def prov(doc):
        return [(a["weights_sha256"], a["replaced_later"]) for a in doc["adapters"] if a["name"] == "prov"]

    check("biomedclip_provenance(at): no adapter before it was trained, the first weights (replaced later) between the runs, "
          "the second after; the model loaded by then and not before; an analyst is refused (42501)",
          prov(p[0]) == [] and prov(p[1]) == [(first, True)] and prov(p[2]) == [(second, False)] and first != second
          and [m["manifest_sha256"] for m in p[0]["models"]] == [] and [m["manifest_sha256"] for m in p[2]["models"]] == [sha]
          and denied == "42501", f"{prov(p[0])} {prov(p[1])} {prov(p[2])} models {[m['manifest_sha256'][:12] for m in p[0]['models']]} {[m['manifest_sha256'][:12] for m in p[2]['models']]} {denied}")


setup()
first = parity()
behaviour(first)
safety()
adapters()
no_signal()
progress_and_provenance()
finish()
