"""Helpers shared by the ivf suites: clustered data, loading, exact neighbours, recall."""
import os

import numpy as np
import psycopg

from suite import vec

DIM = 512


def connect(port, db="postgres", autocommit=True):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, autocommit=autocommit)


NOISE = float(os.environ.get("IVF_TEST_NOISE", "1.0"))


def clustered(n, centers, rng, noise=None):
    """Unit vectors around Gaussian cluster centres; per-coordinate noise comparable to the centres'
    spread, so that clusters overlap and a query's neighbours fall into several lists."""
    idx = rng.integers(0, len(centers), n)
    x = centers[idx] + rng.normal(0, NOISE if noise is None else noise, (n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def load(conn, table, x, start=0, extra_cols=None):
    with conn.cursor() as cur:
        cols = "id, emb" + (", dept" if extra_cols is not None else "")
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            for i, row in enumerate(x):
                values = (start + i, vec(row)) + ((extra_cols[i],) if extra_cols is not None else ())
                cp.write_row(values)


def exact_topk(base, queries, k, valid=None):
    sims = queries @ base.T
    if valid is not None:
        sims[:, ~valid] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def index_topk(conn, table, queries, k, probes):
    out = []
    with conn.cursor() as cur:
        cur.execute(f"SET ivf.probes = {probes}")
        for q in queries:
            cur.execute(f"SELECT id FROM {table} ORDER BY emb <=> %s::embedding LIMIT {k}", (vec(q),))
            out.append([r[0] for r in cur.fetchall()])
    return out


def recall(found, truth, ids=None):
    hits = 0
    for f, t in zip(found, truth):
        tset = set(ids[t] if ids is not None else t)
        hits += len(tset & set(f))
    return hits / (len(truth) * len(truth[0]))
