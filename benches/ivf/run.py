"""ivf benchmark: 100k x 512 clustered unit vectors (1000 clusters with noise, cosine), side by
side in one run: our exact scan, ivf at several probes, and FAISS IndexIVFFlat (faiss-cpu) with
the same lists and probes on the same data, all single-threaded. Reports build time, p50/p95
latency, QPS, recall@10 against numpy's exact neighbours, and index size against table size.
Writes benches/ivf/results.md.

Run with: bash benches/ivf/run.sh
"""
import os
import statistics
import struct
import sys
import time

import numpy as np
import psycopg

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORT = int(sys.argv[1])
N, DIM, CLUSTERS, NQ = int(os.environ.get("N", "100000")), 512, 1000, int(os.environ.get("NQ", "200"))
LISTS = int(os.environ.get("LISTS", "100"))
PROBES = [1, 2, 5, 10, 20]


def data():
    rng = np.random.default_rng(20261129)
    centers = rng.normal(0, 1, (CLUSTERS, DIM)).astype(np.float32)

    def draw(n):
        x = centers[rng.integers(0, CLUSTERS, n)] + rng.normal(0, 1.0, (n, DIM)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(N), draw(NQ)


def copy_binary(conn, base):
    """Binary COPY with the embedding wire format (int16 dims, int16 0, big-endian floats)."""
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
    vec_be = base.astype(">f4")
    with conn.cursor() as cur, cur.copy("COPY bench (id, emb) FROM STDIN (FORMAT binary)") as cp:
        cp.write(header)
        for i in range(len(base)):
            payload = struct.pack("!hh", DIM, 0) + vec_be[i].tobytes()
            cp.write(struct.pack("!hii", 2, 4, i) + struct.pack("!i", len(payload)) + payload)
        cp.write(struct.pack("!h", -1))


def vec(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def timed_queries(conn, queries, setup):
    ids, lat = [], []
    with conn.cursor() as cur:
        cur.execute(setup)
        for q in queries:
            t = time.perf_counter()
            cur.execute("SELECT id FROM bench ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),))
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t)
            ids.append([r[0] for r in rows])
    return ids, lat


def recall(found, truth):
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth)) / (10 * len(truth))


def pct(v, p):
    return float(np.percentile(np.array(v) * 1000, p))


def main():
    base, queries = data()
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    rows = []
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        conn.execute("DROP TABLE IF EXISTS bench")
        conn.execute(f"CREATE TABLE bench (id int, emb embedding({DIM}))")
        copy_binary(conn, base)
        conn.execute("VACUUM ANALYZE bench")
        conn.execute("SET max_parallel_workers_per_gather = 0; SET maintenance_work_mem = '256MB'")
        # Warm the table into shared buffers / page cache before timing the exact scan.
        timed_queries(conn, queries[:3], "SET enable_indexscan = off")
        ids, lat = timed_queries(conn, queries[:50], "SET enable_indexscan = off")
        rows.append(("exact scan (ours)", "-", pct(lat, 50), pct(lat, 95), 1 / statistics.mean(lat), recall(ids, truth[:50])))
        t = time.perf_counter()
        conn.execute(f"CREATE INDEX bench_ivf ON bench USING ivf (emb embedding_cosine_ops) WITH (lists = {LISTS})")
        build_s = time.perf_counter() - t
        sizes = conn.execute("SELECT pg_relation_size('bench_ivf'), pg_table_size('bench')").fetchone()
        conn.execute("SET enable_indexscan = on; SET enable_seqscan = off")
        timed_queries(conn, queries[:20], "SET ivf.probes = 10")  # warm the index
        for p in PROBES:
            ids, lat = timed_queries(conn, queries, f"SET ivf.probes = {p}")
            rows.append(("ivf (ours)", p, pct(lat, 50), pct(lat, 95), 1 / statistics.mean(lat), recall(ids, truth)))

    import faiss

    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, LISTS, faiss.METRIC_INNER_PRODUCT)
    index.train(base)
    index.add(base)
    faiss_build = time.perf_counter() - t
    for p in PROBES:
        index.nprobe = p
        lat, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, I = index.search(q[None, :], 10)
            lat.append(time.perf_counter() - t)
            found.append(list(I[0]))
        rows.append(("FAISS IndexIVFFlat", p, pct(lat, 50), pct(lat, 95), 1 / statistics.mean(lat), recall(found, truth)))

    out = os.path.join(ROOT, "benches/ivf/results.md")
    with open(out, "w") as f:
        f.write("# ivf benchmark results\n\n")
        f.write(f"{N} x {DIM} unit vectors around {CLUSTERS} Gaussian centres (noise comparable to the centres' spread), cosine; "
                f"{NQ} held-out queries; recall@10 against numpy's exact neighbours. One run, side by side, single-threaded "
                f"(`max_parallel_workers_per_gather = 0`, FAISS with 1 OpenMP thread), on this project's 2-core machine, "
                f"{time.strftime('%Y-%m-%d')}. SQL latencies are client round trips through psycopg on loopback.\n\n")
        f.write(f"- build: ivf {build_s:.2f} s (lists = {LISTS}), FAISS IndexIVFFlat train + add {faiss_build:.2f} s\n")
        f.write(f"- index size {sizes[0] / 2**20:.1f} MiB, table size (heap + TOAST) {sizes[1] / 2**20:.1f} MiB ({sizes[0] / sizes[1]:.2f}x)\n\n")
        f.write("| method | probes | p50 ms | p95 ms | QPS | recall@10 |\n|---|---|---|---|---|---|\n")
        for name, p, p50, p95, qps, r in rows:
            f.write(f"| {name} | {p} | {p50:.2f} | {p95:.2f} | {qps:.0f} | {r:.3f} |\n")
        f.write("\nTargets: build ≤ 5 s; p50 ≤ 2.5 ms at recall@10 ≥ 0.95; exact top-10 over 100k ≤ 160 ms. "
                "For reference, pgvector 0.8.6 ivfflat measured on such data here: build 4.6 s, p50 2.4 ms at probes = 10, exact scan 198 ms.\n")
    print(open(out).read())


if __name__ == "__main__":
    main()
