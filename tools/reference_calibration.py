"""numpy/scipy reference for temperature scaling and ECE (the oracle for calibration.rs).
Usage: reference_calibration.py LOGITS.f64 LABELS.i64 K OUT.json
ECE: 15 equal-width bins over (0, 1], a sample with confidence c in bin ceil(c * 15) - 1."""
import json
import sys

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

logits = np.fromfile(sys.argv[1], dtype=np.float64).reshape(-1, int(sys.argv[3]))
labels = np.fromfile(sys.argv[2], dtype=np.int64)


def nll(t):
    return -log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels].mean()


def ece(t, bins=15):
    p = softmax(logits / t, axis=1)
    conf, pred = p.max(1), p.argmax(1)
    b = np.clip(np.ceil(conf * bins).astype(int), 1, bins) - 1
    total = 0.0
    for i in range(bins):
        m = b == i
        if m.any():
            total += abs((pred[m] == labels[m]).mean() - conf[m].mean()) * m.sum() / len(labels)
    return total


res = minimize_scalar(lambda lt: nll(np.exp(lt)), bounds=(np.log(1e-3), np.log(1e3)), method="bounded", options={"xatol": 1e-10})
t = float(np.exp(res.x))
json.dump({"temperature": t, "nll_before": nll(1.0), "nll_after": nll(t), "ece_before": ece(1.0), "ece_at_ref_t": ece(t),
           "accuracy": float((logits.argmax(1) == labels).mean())}, open(sys.argv[4], "w"))
