"""Embedding on Citus workers: images/s of INSERT ... SELECT biomedclip_embed_image() between
co-located distributed tables, with 1 worker and with 2, against the same statement on one node.

usage: run.py PORT RESULTS_MD   (nodes on PORT, PORT+1, PORT+2, started by run.sh)

Each node preloads citus and biomedclip, so each runs its own inference service. 3 runs per
setting, medians. All three nodes share this machine's cores: 2 workers cannot use more CPU than 1
here; the benchmark shows where the work runs and what distribution costs, and on separate
machines the same plan scales with the workers.
"""
import os
import statistics
import sys
import time

import psycopg

PORT, RESULTS = int(sys.argv[1]), sys.argv[2]
ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
IMAGES_DIR = os.path.realpath(os.path.join(ROOT, "..", "shared", "data", "medpix", "images"))
N_IMAGES, RUNS = 32, 3


def connect(port=PORT):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)


def served(c, port):
    with connect(port) as w:
        if not w.execute("SELECT 1 FROM pg_extension WHERE extname = 'biomedclip'").fetchone():
            return 0
        info = w.execute("SELECT biomedclip_model_info()->'service'").fetchone()[0] or {}
    return info.get("images", 0)


def timed_runs(c, source, target):
    rates = []
    for _ in range(RUNS):
        c.execute(f"TRUNCATE {target}")
        t0 = time.perf_counter()
        c.execute(f"INSERT INTO {target} SELECT id, biomedclip_embed_image(img) FROM {source}")
        rates.append(N_IMAGES / (time.perf_counter() - t0))
    return rates


def main():
    files = sorted(f for f in os.listdir(IMAGES_DIR))[:N_IMAGES]
    for p in range(3):
        with connect(PORT + p) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS citus")
    with connect() as c:
        c.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (PORT,))
        c.execute("SELECT citus_add_node('127.0.0.1', %s)", (PORT + 1,))
        c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        def warm(p):  # a node's service answers before the clock starts
            with connect(PORT + p) as w:
                w.execute("SELECT biomedclip_embed_text('warm up')")

        warm(0)
        warm(1)

        def load(table):
            for i, f in enumerate(files, 1):
                c.execute(f"INSERT INTO {table} VALUES (%s, pg_read_binary_file(%s))", (i, os.path.join(IMAGES_DIR, f)))

        # One node: plain tables on the coordinator.
        c.execute("CREATE TABLE local_images (id bigint PRIMARY KEY, img bytea)")
        c.execute("CREATE TABLE local_emb (id bigint PRIMARY KEY, emb embedding(512))")
        load("local_images")
        single = timed_runs(c, "local_images", "local_emb")

        results = {}
        for workers in [1, 2]:
            if workers == 2:
                c.execute("SELECT citus_add_node('127.0.0.1', %s)", (PORT + 2,))  # the extension follows
                warm(2)
            src, dst = f"images_{workers}w", f"emb_{workers}w"
            c.execute(f"CREATE TABLE {src} (id bigint PRIMARY KEY, img bytea)")
            c.execute(f"CREATE TABLE {dst} (id bigint PRIMARY KEY, emb embedding(512))")
            # A new colocation group: by default Citus would colocate with the first setting's
            # tables and keep the shards where those are.
            c.execute("SELECT create_distributed_table(%s, 'id', shard_count => 4, colocate_with => 'none')", (src,))
            c.execute("SELECT create_distributed_table(%s, 'id', colocate_with => %s)", (dst, src))
            load(src)
            before = {p: served(c, PORT + p) for p in range(3)}
            rates = timed_runs(c, src, dst)
            after = {p: served(c, PORT + p) for p in range(3)}
            same = c.execute(f"SELECT count(*) FROM {dst} d JOIN local_emb l USING (id) WHERE d.emb::text = l.emb::text").fetchone()[0]
            results[workers] = (rates, {p: after[p] - before[p] for p in range(3)}, same)

    cores = os.cpu_count()
    s = statistics.median(single)
    lines = [
        "# Embedding on Citus workers",
        "",
        f"`INSERT INTO emb SELECT id, biomedclip_embed_image(img) FROM images` between co-located distributed tables (4 shards), "
        f"{N_IMAGES} MedPix images, full-size random-weight fp32 model, every node with its own inference service "
        f"(service_threads = one per core); Citus 13.2.2, coordinator and workers on this one {cores}-core machine "
        f"(`bash benches/citus/run.sh`, {time.strftime('%Y-%m-%d')}). {RUNS} runs each, medians.",
        "",
        "| setting | images/s (median) | runs | vs one node | images embedded per node over the runs (coordinator, worker 1, worker 2) | rows equal to one node's |",
        "|---|---|---|---|---|---|",
        f"| one node (plain tables on the coordinator) | {s:.2f} | {', '.join(f'{r:.2f}' for r in single)} | 1.00× | | |",
    ]
    for workers, (rates, per_node, same) in results.items():
        m = statistics.median(rates)
        lines.append(f"| {workers} worker{'s' if workers > 1 else ''} | {m:.2f} | {', '.join(f'{r:.2f}' for r in rates)} | {m / s:.2f}× | "
                     f"{per_node[0]}, {per_node[1]}, {per_node[2]} | {same} of {N_IMAGES} |")
    lines += [
        "",
        f"- 2 workers against 1: {statistics.median(results[2][0]) / statistics.median(results[1][0]):.2f}×. Every node shares the "
        f"same {cores} cores here, so this cannot show scaling across machines; it shows that the embedding runs on the "
        "workers (the coordinator's service embeds nothing) and what distribution costs against one node.",
    ]
    per_worker = results[2][1]
    busiest = max(per_worker[1], per_worker[2])
    if busiest:
        total = per_worker[1] + per_worker[2]
        lines.append(f"- On machines of their own, a run lasts as long as its busiest worker: with 2 workers that one embedded {busiest} of "
                     f"{total} images (the 4 shards hash the ids unevenly), so 2 workers with this machine's cores each would run at about "
                     f"{total / busiest:.2f}× one worker; more shards per worker even the split out.")
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
