"""The fine-tuning code (crates/biomedclip-core/src/finetune) against numpy:

1. the symmetric contrastive loss's gradients (inputs and logit scale) against central finite
   differences of numpy's own implementation of the loss;
2. the residual adapter's and the projection heads' (text MLP with exact GELU, image linear)
   backward passes against finite differences of numpy's forward passes;
3. a whole training run (seeded split and shuffles, minibatches, AdamW with the anchored pull,
   early stopping) against a numpy implementation of the same algorithm: weights within 1e-4,
   for residual adapters and for the projection heads (kind 'projection');
4. the linear probe against scikit-learn's LogisticRegression (multinomial, L2, with and without
   balanced class weights): coefficients and probabilities within 1e-4.

The Rust side runs through the finetune_reference example (JSON on stdin and stdout).
Usage: finetune_reference.py
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
from scipy.special import erf, logsumexp

sys.path.insert(0, os.path.dirname(__file__))
from suite import ROOT, check, finish  # noqa: E402
from splitmix import SplitMix64  # noqa: E402


def rust(query):
    # The service profile (optimized, no LTO) is the one `make test` builds the library's tests
    # and examples in just before, so nothing is compiled again here.
    out = subprocess.run(["cargo", "run", "--quiet", "--profile", "service", "-p", "biomedclip-core", "--example", "finetune_reference"],
                         input=json.dumps(query), capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def np_loss(images, texts, s_log):
    ui = images / np.linalg.norm(images, axis=1, keepdims=True)
    ut = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    logits = np.exp(s_log) * ui @ ut.T
    rows = logits - logsumexp(logits, axis=1, keepdims=True)
    cols = logits - logsumexp(logits, axis=0, keepdims=True)
    return -(np.trace(rows) + np.trace(cols)) / (2 * len(images))


def np_grad(images, texts, s_log):
    """Analytic gradients in numpy (used by the numpy training run)."""
    n = len(images)
    ni = np.linalg.norm(images, axis=1, keepdims=True)
    nt = np.linalg.norm(texts, axis=1, keepdims=True)
    ui, ut = images / ni, texts / nt
    s = np.exp(s_log)
    cos = ui @ ut.T
    logits = s * cos
    pr = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    pc = np.exp(logits - logsumexp(logits, axis=0, keepdims=True))
    g = 0.5 * (pr - np.eye(n) + pc - np.eye(n)) / n
    dui, dut = s * g @ ut, s * g.T @ ui
    back = lambda u, du, nrm: (du - u * np.sum(u * du, axis=1, keepdims=True)) / nrm  # noqa: E731
    return back(ui, dui, ni), back(ut, dut, nt), float(np.sum(g * cos) * s)


def fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        p, m = x.copy(), x.copy()
        p[idx] += h
        m[idx] -= h
        g[idx] = (f(p) - f(m)) / (2 * h)
    return g


def gradients():
    rng = np.random.default_rng(3)
    n, d, s_log = 6, 5, math.log(20.0)
    im, tx = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    r = rust({"op": "contrastive", "dim": d, "images": im.ravel().tolist(), "texts": tx.ravel().tolist(), "logit_scale": s_log})
    gi = fd(lambda x: np_loss(x, tx, s_log), im)
    gt = fd(lambda x: np_loss(im, x, s_log), tx)
    gs = (np_loss(im, tx, s_log + 1e-6) - np_loss(im, tx, s_log - 1e-6)) / 2e-6
    err = max(np.max(np.abs(np.array(r["d_images"]).reshape(n, d) - gi)), np.max(np.abs(np.array(r["d_texts"]).reshape(n, d) - gt)),
              abs(r["d_logit_scale"] - gs))
    check("contrastive loss: Rust's loss equals numpy's, its gradients equal numpy finite differences",
          abs(r["loss"] - np_loss(im, tx, s_log)) < 1e-12 and err < 1e-6, f"loss Δ {abs(r['loss'] - np_loss(im, tx, s_log)):.1e}, max gradient Δ {err:.1e}")
    hidden, alpha = 3, 0.6
    x, w1, w2, dy = rng.standard_normal((n, d)), rng.standard_normal((hidden, d)), rng.standard_normal((d, hidden)), rng.standard_normal((n, d))
    r = rust({"op": "adapter", "dim": d, "hidden": hidden, "alpha": alpha, "x": x.ravel().tolist(), "w1": w1.ravel().tolist(),
              "w2": w2.ravel().tolist(), "dy": dy.ravel().tolist()})
    fwd = lambda a, b: x + alpha * np.maximum(x @ a.T, 0) @ b.T  # noqa: E731
    g1 = fd(lambda a: np.sum(fwd(a, w2) * dy), w1)
    g2 = fd(lambda b: np.sum(fwd(w1, b) * dy), w2)
    err = max(np.max(np.abs(np.array(r["dw1"]).reshape(hidden, d) - g1)), np.max(np.abs(np.array(r["dw2"]).reshape(d, hidden) - g2)))
    check("residual adapter: forward equals numpy, backward equals numpy finite differences",
          np.max(np.abs(np.array(r["y"]).reshape(n, d) - fwd(w1, w2))) < 1e-12 and err < 1e-6, f"max gradient Δ {err:.1e}")
    # The model's projection heads (kind 'projection'): open_clip's text MLP d → h → GELU(erf) → o,
    # and the image tower's linear d → o; numpy's forward uses scipy's erf.
    h_mlp, d_out = 6, 4
    w1, w2, dy = rng.standard_normal((d, h_mlp)), rng.standard_normal((h_mlp, d_out)), rng.standard_normal((n, d_out))
    mlp = lambda a, b: (0.5 * (x @ a) * (1 + erf((x @ a) / np.sqrt(2)))) @ b  # noqa: E731
    r = rust({"op": "head", "dim": d, "hidden": h_mlp, "d_out": d_out, "w1": w1.ravel().tolist(), "w2": w2.ravel().tolist(),
              "x": x.ravel().tolist(), "dy": dy.ravel().tolist()})
    g = np.concatenate([fd(lambda a: np.sum(mlp(a, w2) * dy), w1).ravel(), fd(lambda b: np.sum(mlp(w1, b) * dy), w2).ravel()])
    err_mlp = np.max(np.abs(np.array(r["grad"]) - g))
    fwd_mlp = np.max(np.abs(np.array(r["y"]).reshape(n, d_out) - mlp(w1, w2)))
    r = rust({"op": "head", "dim": d, "hidden": 0, "d_out": d_out, "w1": w1[:, :d_out].ravel().tolist(),
              "x": x.ravel().tolist(), "dy": dy.ravel().tolist()})
    err_lin = np.max(np.abs(np.array(r["grad"]) - fd(lambda a: np.sum((x @ a) * dy), w1[:, :d_out].copy()).ravel()))
    check("projection heads (text MLP with exact GELU, image linear): forward equals numpy, backward equals numpy finite differences",
          fwd_mlp < 1e-12 and err_mlp < 1e-6 and err_lin < 1e-6, f"forward Δ {fwd_mlp:.1e}, MLP gradient Δ {err_mlp:.1e}, linear {err_lin:.1e}")


class Adam:
    def __init__(self, shape, lr, decay):
        self.lr, self.decay, self.m, self.v, self.t = lr, decay, np.zeros(shape), np.zeros(shape), 0

    def step(self, p, g, anchor):
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        upd = (self.m / (1 - 0.9 ** self.t)) / (np.sqrt(self.v / (1 - 0.999 ** self.t)) + 1e-8)
        return p - self.lr * (upd + self.decay * (p - anchor))


def np_split(n, o):
    """The seeded split; returns the generator (which goes on to shuffle), validation and training rows."""
    rng = SplitMix64(o["seed"])
    order = list(range(n))
    rng.shuffle(order)
    n_val = min(max(int(math.floor(n * o["val_fraction"] + 0.5)), 2), n - 2)
    return rng, order[:n_val], order[n_val:]


def np_epochs(w, rng, train, o, vloss, grads):
    """The training loop both kinds share: per epoch a shuffle, minibatches of at least 2 rows,
    AdamW with the pull toward the starting weights, early stopping on the validation loss (the
    best epoch's weights are kept). `grads(batch)` gives each weight's gradient; `w` is updated in place."""
    anchor = {k: v.copy() for k, v in w.items()}
    opt = {k: Adam(v.shape, o["lr"], o["pull"]) for k, v in w.items()}
    best, best_w, best_epoch, stale, losses = vloss(), {k: v.copy() for k, v in w.items()}, 0, 0, []
    for epoch in range(1, o["epochs"] + 1):
        rng.shuffle(train)
        for b in range(0, len(train), o["batch_size"]):
            batch = train[b:b + o["batch_size"]]
            if len(batch) < 2:
                continue
            g = grads(batch)
            for k in w:
                w[k] = opt[k].step(w[k], g[k], anchor[k])
        vl = vloss()
        losses.append(vl)
        if vl < best * (1 - o["min_delta"]):
            best, best_w, best_epoch, stale = vl, {k: v.copy() for k, v in w.items()}, epoch, 0
        else:
            stale += 1
        if stale >= o["patience"]:
            break
    return best_w, best_epoch, losses


def np_train(im, tx, o):
    """Residual adapters, starting at the identity (W1 drawn after the split, W2 zero)."""
    n, d = im.shape
    rng, val, train = np_split(n, o)
    h = o["hidden"] or max(d // 4, 1)
    bound = 1 / math.sqrt(d)
    w = {}
    for tower in ("image", "text"):
        w[tower + "_w1"] = np.array([(rng.f64() * 2 - 1) * bound for _ in range(h * d)]).reshape(h, d)
        w[tower + "_w2"] = np.zeros((d, h))
    fwd = lambda x, t: x + o["alpha"] * np.maximum(x @ w[t + "_w1"].T, 0) @ w[t + "_w2"].T  # noqa: E731
    vloss = lambda: np_loss(fwd(im[val], "image"), fwd(tx[val], "text"), o["logit_scale"])  # noqa: E731

    def grads(batch):
        g, ys, pres = {}, {}, {}
        for t, x in (("image", im[batch]), ("text", tx[batch])):
            pres[t] = x @ w[t + "_w1"].T
            ys[t] = x + o["alpha"] * np.maximum(pres[t], 0) @ w[t + "_w2"].T
        dyi, dyt, _ = np_grad(ys["image"], ys["text"], o["logit_scale"])
        for t, x, dy in (("image", im[batch], dyi), ("text", tx[batch], dyt)):
            g[t + "_w2"] = o["alpha"] * dy.T @ np.maximum(pres[t], 0)
            g[t + "_w1"] = ((o["alpha"] * dy @ w[t + "_w2"]) * (pres[t] > 0)).T @ x
        return g

    return np_epochs(w, rng, train, o, vloss, grads)


def training_run():
    rng = np.random.default_rng(11)
    n, d = 120, 12
    im = rng.standard_normal((n, d))
    tx = im @ rng.standard_normal((d, d)) / math.sqrt(d) + 0.1 * rng.standard_normal((n, d))
    o = {"epochs": 6, "batch_size": 32, "lr": 3e-3, "pull": 1e-2, "alpha": 1.0, "hidden": 6, "val_fraction": 0.25, "seed": 42,
         "patience": 3, "min_delta": 1e-3, "logit_scale": math.log(100.0), "learn_logit_scale": False}
    r = rust({"op": "train", "dim": d, "images": im.ravel().tolist(), "texts": tx.ravel().tolist(), "options": o})
    want, best_epoch, losses = np_train(im, tx, o)
    err = max(float(np.max(np.abs(np.array(r[k]).reshape(want[k].shape) - want[k]))) for k in want)
    check("a whole training run (seeded split and shuffles, minibatches, AdamW, early stopping) equals numpy's: weights within 1e-4",
          err < 1e-4 and r["best_epoch"] == best_epoch and np.allclose(r["val_losses"], losses, rtol=1e-9),
          f"max weight Δ {err:.1e}; best epoch {r['best_epoch']} vs {best_epoch}; {len(losses)} epochs")


def np_train_projection(im, tx, heads, o):
    """The same training for kind 'projection': the model's heads (image linear, text MLP with
    exact GELU) as the starting point and the anchor; no random initialization."""
    rng, val, train = np_split(len(im), o)
    w = {k: v.copy() for k, v in heads.items()}
    gelu = lambda a: 0.5 * a * (1 + erf(a / np.sqrt(2)))  # noqa: E731
    dgelu = lambda a: 0.5 * (1 + erf(a / np.sqrt(2))) + a * np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)  # noqa: E731
    vloss = lambda: np_loss(im[val] @ w["image_w"], gelu(tx[val] @ w["text_w1"]) @ w["text_w2"], o["logit_scale"])  # noqa: E731

    def grads(batch):
        xi, xt = im[batch], tx[batch]
        pre = xt @ w["text_w1"]
        dyi, dyt, _ = np_grad(xi @ w["image_w"], gelu(pre) @ w["text_w2"], o["logit_scale"])
        return {"image_w": xi.T @ dyi, "text_w2": gelu(pre).T @ dyt, "text_w1": xt.T @ ((dyt @ w["text_w2"].T) * dgelu(pre))}

    return np_epochs(w, rng, train, o, vloss, grads)


def projection_training_run():
    rng = np.random.default_rng(13)
    n, d, h, d_out = 120, 10, 7, 6
    im = rng.standard_normal((n, d))
    tx = im @ rng.standard_normal((d, d)) / math.sqrt(d) + 0.1 * rng.standard_normal((n, d))
    heads = {"image_w": rng.standard_normal((d, d_out)) * 0.3, "text_w1": rng.standard_normal((d, h)) * 0.3,
             "text_w2": rng.standard_normal((h, d_out)) * 0.3}
    o = {"epochs": 6, "batch_size": 32, "lr": 3e-3, "pull": 1e-2, "alpha": 1.0, "hidden": 0, "val_fraction": 0.25, "seed": 7,
         "patience": 3, "min_delta": 1e-3, "logit_scale": math.log(100.0), "learn_logit_scale": False}
    r = rust({"op": "train_projection", "dim": d, "hidden": h, "d_out": d_out, "images": im.ravel().tolist(), "texts": tx.ravel().tolist(),
              **{k: v.ravel().tolist() for k, v in heads.items()}, "options": o})
    want, best_epoch, losses = np_train_projection(im, tx, heads, o)
    err = max(float(np.max(np.abs(np.array(r[k]).reshape(want[k].shape) - want[k]))) for k in want)
    moved = max(float(np.max(np.abs(want[k] - heads[k]))) for k in want)
    check("a whole kind 'projection' run (the model's linear image head and GELU text MLP, from their weights) equals numpy's: weights within 1e-4",
          err < 1e-4 and moved > 1e-3 and r["best_epoch"] == best_epoch and np.allclose(r["val_losses"], losses, rtol=1e-9),
          f"max weight Δ {err:.1e} (the weights moved {moved:.1e}); best epoch {r['best_epoch']} vs {best_epoch}; {len(losses)} epochs")


def probes():
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(21)
    n, d, k = 600, 10, 4
    centers = rng.standard_normal((k, d)) * 1.5
    y = rng.choice(k, size=n, p=[0.5, 0.25, 0.15, 0.1])
    x = centers[y] + rng.standard_normal((n, d))
    worst = []
    for c, balanced in ((1.0, False), (0.05, True)):
        r = rust({"op": "probe", "dim": d, "x": x.ravel().tolist(), "labels": y.tolist(), "classes": k, "C": c, "balanced": balanced})
        sk = LogisticRegression(C=c, class_weight="balanced" if balanced else None, tol=1e-12, max_iter=10000).fit(x, y)
        coef = np.abs(np.array(r["coef"]).reshape(k, d) - sk.coef_).max()
        icpt = np.abs(np.array(r["intercept"]) - sk.intercept_).max()
        prob = np.abs(np.array(r["probabilities"]) - sk.predict_proba(x)).max()
        worst.append((c, balanced, coef, icpt, prob, r["converged"]))
    ok = all(w[2] < 1e-4 and w[3] < 1e-4 and w[4] < 1e-4 and w[5] for w in worst)
    check("linear probe = scikit-learn LogisticRegression (C 1 and C 0.05 with balanced class weights): coefficients, intercepts, probabilities within 1e-4",
          ok, "; ".join(f"C={w[0]} balanced={w[1]}: Δcoef {w[2]:.1e} Δintercept {w[3]:.1e} Δprob {w[4]:.1e}" for w in worst))


if __name__ == "__main__":  # benches/finetune imports np_train as the adapter's peer
    gradients()
    training_run()
    projection_training_run()
    probes()
    finish()
