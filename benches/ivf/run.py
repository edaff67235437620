"""ivf benchmark, side by side in one database and one run: our ivf (full vectors and RaBitQ
codes), pgvector 0.8.6 ivfflat and hnsw (built from ../shared/peers), and FAISS IndexIVFFlat and
IndexIVFRaBitQ (faiss-cpu), all single-threaded at query time.

Datasets (DATASETS=real,clustered by default):
- real: ../shared/data/ann/minilm_medical.npz, 31,152 x 384 real sentence embeddings, its 1,000
  queries, cosine;
- clustered: N x 512 unit vectors (N=100000 by default) around 1,000 Gaussian centres, 200
  queries, cosine. N=1000000 is the scale run (not part of the test command; written to
  RESULTS=benches/ivf/results_1m.md).

Our RaBitQ index is also built with sqrt(rows) lists (the README's tuning advice for it) and
compared head to head with hnsw, and its build time with pgvector ivfflat's at as many lists.

Each index is swept over its search setting (probes, ef_search); the table reports, per method,
the fastest setting whose recall@10 (against numpy's exact neighbours) is at least 0.95, with its
p50/p95 latency (client round trips through psycopg on loopback, the same for every SQL method),
build time and size. Per-vector scan cost: (p50 with every list probed - p50 with one) / the
extra vectors scored. Writes benches/ivf/results.md (or $RESULTS).

Run with: bash benches/ivf/run.sh
"""
import os
import struct
import sys
import time

import numpy as np
import psycopg

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORT = int(sys.argv[1])
TARGET = 0.95
N = int(os.environ.get("N", "100000"))
DATASETS = os.environ.get("DATASETS", "real,clustered").split(",")


SQRT_RABITQ = "ivf (ours, RaBitQ, sqrt(rows) lists)"


def real():
    d = np.load(os.path.join(ROOT, "..", "shared", "data", "ann", "minilm_medical.npz"))
    base, queries = d["base"].astype(np.float32), d["queries"].astype(np.float32)
    return "real text embeddings (minilm_medical, 31,152 x 384, 1,000 queries)", base, queries


def clustered():
    rng = np.random.default_rng(20261129)
    centers = rng.normal(0, 1, (1000, 512)).astype(np.float32)

    def draw(n):
        out = np.empty((n, 512), np.float32)
        for s in range(0, n, 100000):
            m = min(100000, n - s)
            x = centers[rng.integers(0, 1000, m)] + rng.normal(0, 1.0, (m, 512)).astype(np.float32)
            out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return f"clustered ({N:,} x 512 around 1,000 centres, 200 queries)", draw(N), draw(200)


def exact_neighbours(base, queries, k=10):
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for s in range(0, len(q), 100):
        sims = q[s:s + 100] @ b.T
        out.append(np.argsort(-sims, axis=1)[:, :k])
    return np.concatenate(out)


def copy_binary(conn, table, base):
    """Binary COPY: both extensions' vector wire format is int16 dims, int16 0, big-endian floats."""
    dim = base.shape[1]
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
    vec_be = base.astype(">f4")
    with conn.cursor() as cur, cur.copy(f"COPY {table} (id, emb) FROM STDIN (FORMAT binary)") as cp:
        cp.write(header)
        for i in range(len(base)):
            payload = struct.pack("!hh", dim, 0) + vec_be[i].tobytes()
            cp.write(struct.pack("!hii", 2, 4, i) + struct.pack("!i", len(payload)) + payload)
        cp.write(struct.pack("!h", -1))


def text(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def recall(found, truth):
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth)) / (10 * len(truth))


def timed(conn, table, cast, queries, setup):
    ids, lat = [], []
    with conn.cursor() as cur:
        cur.execute(setup)
        sql = f"SELECT id FROM {table} ORDER BY emb <=> %s::{cast} LIMIT 10"
        # The query texts are formatted before the clock starts (Python's formatting of 512
        # floats took about half a millisecond, which every SQL method paid inside its timing).
        texts = [text(q) for q in queries]
        for q in texts:
            t = time.perf_counter()
            cur.execute(sql, (q,))
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t)
            ids.append([r[0] for r in rows])
    return ids, np.array(lat) * 1000


def sweep(conn, table, cast, queries, truth, settings, setup_of):
    """Runs each setting until recall@10 reaches 0.99 (or the settings end); returns rows of
    (setting, p50, p95, recall)."""
    out = []
    timed(conn, table, cast, queries[:100], setup_of(settings[-1]))  # warm caches (index, table, TOAST)
    for s in settings:
        ids, lat = timed(conn, table, cast, queries, setup_of(s))
        r = recall(ids, truth)
        out.append((s, float(np.median(lat)), float(np.percentile(lat, 95)), r))
        if r >= 0.99:
            break
    return out


def best(rows):
    ok = [r for r in rows if r[3] >= TARGET]
    return min(ok, key=lambda r: r[1]) if ok else None


def build(conn, sql, name):
    t = time.perf_counter()
    conn.execute(sql)
    seconds = time.perf_counter() - t
    size = conn.execute("SELECT pg_relation_size(%s)", (name,)).fetchone()[0]
    return seconds, size


def plan_uses(conn, table, cast, q, index):
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN SELECT id FROM {table} ORDER BY emb <=> %s::{cast} LIMIT 10", (text(q),)).fetchall())
    return index in plan


def run_dataset(conn, title, base, queries):
    n, dim = base.shape
    lists = max(1, n // 1000) if n <= 1_000_000 else int(np.sqrt(n))
    truth = exact_neighbours(base, queries)
    conn.execute("DROP TABLE IF EXISTS b_ours; DROP TABLE IF EXISTS b_pgv")
    conn.execute(f"CREATE TABLE b_ours (id int, emb embedding({dim}))")
    conn.execute(f"CREATE TABLE b_pgv (id int, emb vector({dim}))")
    copy_binary(conn, "b_ours", base)
    copy_binary(conn, "b_pgv", base)
    conn.execute("VACUUM ANALYZE b_ours")
    conn.execute("VACUUM ANALYZE b_pgv")
    table_size = conn.execute("SELECT pg_table_size('b_ours')").fetchone()[0]
    result = {"title": title, "n": n, "dim": dim, "lists": lists, "table_size": table_size, "methods": {}}
    # RaBitQ with more lists (the README's advice for it): about sqrt(rows), FAISS's lower end.
    sqrt_lists = int(np.sqrt(n))
    result["sqrt_lists"] = sqrt_lists

    def probes_for(lists):
        return [p for p in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 25, 30, 40, 60, 80, 100, 150, 200) if p <= lists] or [1]
    probes = probes_for(lists)

    # Every build gets the memory to hold its data (pgvector's hnsw builds in memory only while
    # its graph fits; the graph is about 1.6x the vectors).
    conn.execute(f"SET maintenance_work_mem = '{max(256, int(n * dim * 4 * 1.6) // 2**20 + 64)}MB'")
    configs = [("ivf (ours, full vectors)", "none", None), ("ivf (ours, RaBitQ)", "rabitq", None)]
    if sqrt_lists != lists:
        configs.append((SQRT_RABITQ, "rabitq", sqrt_lists))
    for name, quantizer, with_lists in configs:
        options = f"quantizer = {quantizer}" + (f", lists = {with_lists}" if with_lists else "")
        index_lists = with_lists or lists
        secs, size = build(conn, f"CREATE INDEX b_ours_idx ON b_ours USING ivf (emb embedding_cosine_ops) WITH ({options})", "b_ours_idx")
        default_plan = plan_uses(conn, "b_ours", "embedding", queries[0], "b_ours_idx")
        conn.execute("SET enable_seqscan = off")
        rows = sweep(conn, "b_ours", "embedding", queries, truth, probes_for(index_lists), lambda p: f"SET ivf.probes = {p}")
        # Per-vector scan cost from the latency difference between all lists and one list.
        _, all_lat = timed(conn, "b_ours", "embedding", queries[:100], f"SET ivf.probes = {index_lists}")
        _, one_lat = timed(conn, "b_ours", "embedding", queries[:100], "SET ivf.probes = 1")
        per_vector_us = (np.median(all_lat) - np.median(one_lat)) * 1000 / max(1, n - n / index_lists)
        conn.execute("RESET enable_seqscan; RESET ivf.probes")
        conn.execute("DROP INDEX b_ours_idx")
        result["methods"][name] = {"build": secs, "size": size, "rows": rows, "setting": "probes", "default_plan_index": default_plan,
                                   "per_vector_us": per_vector_us}

    secs, size = build(conn, f"CREATE INDEX b_pgv_ivfflat ON b_pgv USING ivfflat (emb vector_cosine_ops) WITH (lists = {lists})", "b_pgv_ivfflat")
    conn.execute("SET enable_seqscan = off")
    rows = sweep(conn, "b_pgv", "vector", queries, truth, probes, lambda p: f"SET ivfflat.probes = {p}")
    conn.execute("RESET enable_seqscan; DROP INDEX b_pgv_ivfflat")
    result["methods"]["pgvector ivfflat"] = {"build": secs, "size": size, "rows": rows, "setting": "probes"}

    secs, size = build(conn, "CREATE INDEX b_pgv_hnsw ON b_pgv USING hnsw (emb vector_cosine_ops) WITH (m = 16, ef_construction = 64)", "b_pgv_hnsw")
    conn.execute("SET enable_seqscan = off")
    rows = sweep(conn, "b_pgv", "vector", queries, truth, [10, 20, 30, 40, 60, 80, 120, 200, 400], lambda e: f"SET hnsw.ef_search = {e}")
    conn.execute("RESET enable_seqscan")
    result["methods"]["pgvector hnsw (m 16, ef_construction 64)"] = {"build": secs, "size": size, "rows": rows, "setting": "ef_search"}
    result["head_to_head"] = head_to_head(conn, queries, result["methods"], "ivf (ours, RaBitQ)", lists)
    if SQRT_RABITQ in result["methods"]:
        result["head_to_head_sqrt"] = head_to_head(conn, queries, result["methods"], SQRT_RABITQ, sqrt_lists)
        # pgvector ivfflat with as many lists, for the build time at equal lists.
        secs, _ = build(conn, f"CREATE INDEX b_pgv_ivfflat ON b_pgv USING ivfflat (emb vector_cosine_ops) WITH (lists = {sqrt_lists})", "b_pgv_ivfflat")
        conn.execute("DROP INDEX b_pgv_ivfflat")
        result["ivfflat_sqrt_build"] = secs
    conn.execute("DROP INDEX b_pgv_hnsw")
    conn.execute("RESET maintenance_work_mem; DROP TABLE b_ours; DROP TABLE b_pgv")

    result["methods"].update(run_faiss(base, queries, truth, lists, probes))
    return result


def head_to_head(conn, queries, methods, name, lists, rounds=3):
    """An ivf RaBitQ index (`lists` lists) and pgvector hnsw, each at its fastest setting reaching
    the target, query by query in turn (the sweeps above run one method after the other, so load
    on a shared machine can favour either); the first round warms up. Returns (probes, ef_search,
    p50 ivf, p50 hnsw)."""
    ours, peer = best(methods[name]["rows"]), best(methods["pgvector hnsw (m 16, ef_construction 64)"]["rows"])
    if ours is None or peer is None:
        return None
    conn.execute(f"CREATE INDEX b_ours_idx ON b_ours USING ivf (emb embedding_cosine_ops) WITH (quantizer = rabitq, lists = {lists})")
    texts = [text(q) for q in queries]
    lat = {"ivf": [], "hnsw": []}
    with conn.cursor() as cur:
        cur.execute(f"SET enable_seqscan = off; SET ivf.probes = {ours[0]}; SET hnsw.ef_search = {peer[0]}")
        for r in range(rounds):
            for q in texts:
                for name, sql in (("ivf", "SELECT id FROM b_ours ORDER BY emb <=> %s::embedding LIMIT 10"),
                                  ("hnsw", "SELECT id FROM b_pgv ORDER BY emb <=> %s::vector LIMIT 10")):
                    t = time.perf_counter()
                    cur.execute(sql, (q,)).fetchall()
                    if r > 0:
                        lat[name].append((time.perf_counter() - t) * 1000)
        cur.execute("RESET enable_seqscan; RESET ivf.probes; RESET hnsw.ef_search")
    conn.execute("DROP INDEX b_ours_idx")
    return ours[0], peer[0], float(np.median(lat["ivf"])), float(np.median(lat["hnsw"]))


def run_faiss(base, queries, truth, lists, probes):
    import faiss

    faiss.omp_set_num_threads(1)
    dim = base.shape[1]
    b = np.ascontiguousarray(base / np.linalg.norm(base, axis=1, keepdims=True), dtype=np.float32)
    q = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), dtype=np.float32)
    out = {}
    makers = {
        "FAISS IndexIVFFlat": lambda: faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT),
    }
    if hasattr(faiss, "IndexIVFRaBitQ"):
        # RaBitQ distances are estimates: a flat refine stage re-ranks 4k candidates exactly.
        makers["FAISS IndexIVFRaBitQ + refine x4"] = lambda: faiss.IndexRefineFlat(
            faiss.IndexIVFRaBitQ(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT))
    for name, make in makers.items():
        t = time.perf_counter()
        index = make()
        index.train(b)
        index.add(b)
        secs = time.perf_counter() - t
        ivf = faiss.extract_index_ivf(index.base_index if hasattr(index, "base_index") else index)
        if hasattr(index, "k_factor"):
            index.k_factor = 4
        rows = []
        for p in probes:
            ivf.nprobe = p
            lat, found = [], []
            for v in q:
                t = time.perf_counter()
                _, ids = index.search(v[None, :], 10)
                lat.append((time.perf_counter() - t) * 1000)
                found.append(list(ids[0]))
            r = recall(found, truth)
            rows.append((p, float(np.median(lat)), float(np.percentile(lat, 95)), r))
            if r >= 0.99:
                break
        out[name] = {"build": secs, "size": None, "rows": rows, "setting": "nprobe"}
    return out


def write(results):
    out = os.path.join(ROOT, os.environ.get("RESULTS", "benches/ivf/results.md"))
    with open(out, "w") as f:
        f.write("# ivf benchmark results\n\n")
        f.write(f"One run, side by side, {time.strftime('%Y-%m-%d')}, on this project's 2-core machine: our ivf, pgvector 0.8.6 "
                "(built from ../shared/peers) ivfflat and hnsw in the same database (shared_buffers 1 GB, "
                "max_parallel_workers_per_gather = 0), and faiss-cpu 1.15.1 with one thread. SQL latencies are client round trips "
                "through psycopg on loopback (identical overhead for every SQL method; FAISS has none). Each method at the fastest "
                f"setting of its sweep that reaches recall@10 >= {TARGET} against numpy's exact neighbours; cosine distance. "
                "Builds use the default max_parallel_maintenance_workers (2).\n\n")
        for res in results:
            has_sqrt = SQRT_RABITQ in res["methods"]
            rule = "rows / 1000" if res["n"] <= 1_000_000 else "sqrt(rows)"
            others = f" for every IVF method but the one marked sqrt(rows) ({res['sqrt_lists']} lists)" if has_sqrt else ""
            f.write(f"## {res['title']}\n\nDefault lists ({rule}) = {res['lists']}{others}; table (heap + TOAST) {res['table_size'] / 2**20:.1f} MiB.\n\n")
            f.write("| method | setting | p50 ms | p95 ms | recall@10 | build s | index MiB | index / table |\n|---|---|---|---|---|---|---|---|\n")
            bests = {}
            for name, m in res["methods"].items():
                b = best(m["rows"])
                bests[name] = b
                size = f"{m['size'] / 2**20:.1f}" if m["size"] is not None else "-"
                ratio = f"{m['size'] / res['table_size']:.3f}" if m["size"] is not None else "-"
                if b is None:
                    f.write(f"| {name} | none reaches {TARGET} | - | - | {max(r[3] for r in m['rows']):.3f} | {m['build']:.2f} | {size} | {ratio} |\n")
                else:
                    f.write(f"| {name} | {m['setting']} {b[0]} | {b[1]:.2f} | {b[2]:.2f} | {b[3]:.3f} | {m['build']:.2f} | {size} | {ratio} |\n")
            f.write("\n")
            for name in [m for m in ("ivf (ours, full vectors)", "ivf (ours, RaBitQ)", SQRT_RABITQ) if m in res["methods"]]:
                m = res["methods"][name]
                f.write(f"- {name}: per-vector scan cost {m['per_vector_us']:.3f} µs; the planner uses it at default settings: "
                        f"{'yes' if m['default_plan_index'] else 'no'}.\n")
            for label, name, key in (("RaBitQ", "ivf (ours, RaBitQ)", "head_to_head"), ("RaBitQ sqrt(rows) lists", SQRT_RABITQ, "head_to_head_sqrt")):
                ours = bests.get(name)
                for peer in ("pgvector hnsw (m 16, ef_construction 64)", "pgvector ivfflat"):
                    if ours and bests.get(peer):
                        f.write(f"- ivf {label} p50 / {peer} p50 = {ours[1] / bests[peer][1]:.2f}\n")
                if res.get(key):
                    p, e, a, b = res[key]
                    f.write(f"- head to head, query by query in turn (every query, 2 rounds after a warm-up): "
                            f"ivf {label} probes {p} p50 {a:.2f} ms, hnsw ef_search {e} p50 {b:.2f} ms: **{a / b:.2f}**\n")
            flat_build = res["methods"]["ivf (ours, full vectors)"]["build"]
            rq_build = res["methods"]["ivf (ours, RaBitQ)"]["build"]
            pgv_build = res["methods"]["pgvector ivfflat"]["build"]
            f.write(f"- build / pgvector ivfflat build, {res['lists']} lists: full vectors {flat_build / pgv_build:.2f}, RaBitQ {rq_build / pgv_build:.2f}\n")
            if has_sqrt:
                f.write(f"- build at {res['sqrt_lists']} lists: RaBitQ {res['methods'][SQRT_RABITQ]['build']:.2f} s, pgvector ivfflat "
                        f"{res['ivfflat_sqrt_build']:.2f} s: {res['methods'][SQRT_RABITQ]['build'] / res['ivfflat_sqrt_build']:.2f}\n")
            f.write("\n")
            f.write("<details><summary>Every setting measured</summary>\n\n| method | setting | p50 ms | p95 ms | recall@10 |\n|---|---|---|---|---|\n")
            for name, m in res["methods"].items():
                for s, p50, p95, r in m["rows"]:
                    f.write(f"| {name} | {m['setting']} {s} | {p50:.2f} | {p95:.2f} | {r:.3f} |\n")
            f.write("\n</details>\n\n")
    print(open(out).read())


def main():
    results = []
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS biomedclip; CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("SET max_parallel_workers_per_gather = 0")
        for name in DATASETS:
            title, base, queries = {"real": real, "clustered": clustered}[name]()
            results.append(run_dataset(conn, title, base, queries))
            print(f"done: {title}", flush=True)
    write(results)


if __name__ == "__main__":
    main()
