"""numpy reference for k-means Lloyd iterations (float64), the test oracle for kmeans.rs.
Usage: reference_kmeans.py DATA.f32 INIT.f32 DIM ITERATIONS METRIC(l2|spherical) OUT_PREFIX
Writes OUT_PREFIX.assign (int64) and OUT_PREFIX.centroids (float64). An empty cluster keeps its
centroid; spherical re-normalizes centroids after each update (data is given normalized)."""
import sys

import numpy as np

data_path, init_path, dim, iters, metric, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
X = np.fromfile(data_path, dtype=np.float32).reshape(-1, dim).astype(np.float64)
C = np.fromfile(init_path, dtype=np.float32).reshape(-1, dim).astype(np.float64)
assign = None
for it in range(iters + 1):
    d = (X * X).sum(1)[:, None] + (C * C).sum(1)[None, :] - 2 * X @ C.T
    new = d.argmin(1)
    if it == iters or (assign is not None and (new == assign).all()):
        assign = new
        break
    assign = new
    for j in range(C.shape[0]):
        members = X[assign == j]
        if len(members):
            C[j] = members.mean(0)
    if metric == "spherical":
        n = np.linalg.norm(C, axis=1, keepdims=True)
        C = np.where(n > 0, C / np.where(n > 0, n, 1), C)
assign.astype(np.int64).tofile(out + ".assign")
C.tofile(out + ".centroids")
