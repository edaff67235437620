"""Distributed top-10 on Citus against one node: 1M x 512 clustered unit vectors (generated, the
clustered set of benches/ivf), an ivf index (default lists, quantizer none) on a plain table on the
coordinator and on a table distributed over 2 workers (SHARDS shards, 2 by default), the same
queries through both, ivf.probes swept on every node alike.

usage: search.py PORT RESULTS_MD   (nodes on PORT, PORT+1, PORT+2, started by search.sh)

Recall@10 against numpy's exact neighbours of the 1M rows; p50/p95 are client round trips through
psycopg on loopback. Every node runs on this one 2-core machine: the 2 shards of a query are
scanned at the same time by 2 worker backends, so the distributed p50 shows the coordination cost
and the parallel scan, not what separate machines would add (a network hop each way).
"""
import os
import re
import sys
import time

os.environ.setdefault("N", "1000000")
import numpy as np  # noqa: E402
import psycopg  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ivf"))
from run import clustered, copy_binary, exact_neighbours, recall, text  # noqa: E402

PORT, RESULTS = int(sys.argv[1]), sys.argv[2]
SHARDS = int(os.environ.get("SHARDS", "2"))
PROBES = (1, 2, 3, 4, 6, 8, 12, 16)
TARGET = 0.95


def connect(port=PORT):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)


def set_probes(p):
    """ivf.probes on every node (the workers' shard queries read their own setting)."""
    for n in range(3):
        with connect(PORT + n) as c:
            c.execute("LOAD 'biomedclip'")  # defines ivf.probes in this session, for ALTER SYSTEM
            c.execute(f"ALTER SYSTEM SET ivf.probes = {int(p)}")
            c.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)


def timed(conn, table, queries):
    ids, lat = [], []
    sql = f"SELECT id FROM {table} ORDER BY emb <=> %s::embedding LIMIT 10"
    for q in queries:
        t = time.perf_counter()
        rows = conn.execute(sql, (text(q),)).fetchall()
        lat.append(time.perf_counter() - t)
        ids.append([r[0] for r in rows])
    return ids, np.array(lat) * 1000


def alternating(conn, queries, rounds=5):
    """Both tables over the same queries, in alternating rounds of 40, so that a slow spell of
    this shared machine falls on both sides."""
    ids = {"single": [None] * len(queries), "dist": [None] * len(queries)}
    lat = {"single": [], "dist": []}
    for r in range(rounds):
        part = list(range(r, len(queries), rounds))
        for table in ("single", "dist"):
            found, ms = timed(conn, table, queries[part])
            for i, f in zip(part, found):
                ids[table][i] = f
            lat[table].extend(ms)
    return ids["single"], np.array(lat["single"]), ids["dist"], np.array(lat["dist"])


def seconds(conn, sql):
    t = time.perf_counter()
    conn.execute(sql)
    return time.perf_counter() - t


def main():
    title, base, queries = clustered()
    truth = exact_neighbours(base, queries)
    print(f"data: {title}", flush=True)
    for n in range(3):
        with connect(PORT + n) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS citus")
    with connect() as c:
        c.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (PORT,))
        c.execute("SELECT citus_add_node('127.0.0.1', %s)", (PORT + 1,))
        c.execute("SELECT citus_add_node('127.0.0.1', %s)", (PORT + 2,))
        c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        c.execute("CREATE TABLE single (id int, emb embedding(512))")
        c.execute("CREATE TABLE dist (id int, emb embedding(512))")
        c.execute("SELECT create_distributed_table('dist', 'id', shard_count => %s)", (SHARDS,))
        placements = c.execute("SELECT nodeport, count(*) FROM citus_shards WHERE table_name = 'dist'::regclass GROUP BY 1 ORDER BY 1").fetchall()
        load = {}
        for table in ("single", "dist"):
            t = time.perf_counter()
            copy_binary(c, table, base)
            load[table] = time.perf_counter() - t
            c.execute(f"VACUUM ANALYZE {table}")
            print(f"loaded {table} in {load[table]:.1f} s", flush=True)
        build = {t: seconds(c, f"CREATE INDEX {t}_idx ON {t} USING ivf (emb embedding_cosine_ops)") for t in ("single", "dist")}
        print(f"built: {build}", flush=True)
        size_single = c.execute("SELECT pg_relation_size('single_idx')").fetchone()[0]
        size_dist = c.execute("SELECT sum(result::bigint) FROM run_command_on_shards('dist', "
                              "$$SELECT sum(pg_relation_size(indexrelid)) FROM pg_index WHERE indrelid = '%s'::regclass$$)").fetchone()[0]
        lists_single = c.execute("SELECT (ivf_index_info('single_idx')->>'lists')::int").fetchone()[0]
        lists_shard = [r[0] for r in c.execute("SELECT result FROM run_command_on_shards('dist', "
                                               "$$SELECT ivf_index_info(indexrelid)->>'lists' FROM pg_index WHERE indrelid = '%s'::regclass$$)").fetchall()]
        set_probes(10)
        # A literal, not a parameter: Citus explains a parameterized multi-shard query without the workers' plans.
        plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN SELECT id FROM dist ORDER BY emb <=> '{text(queries[0])}'::embedding LIMIT 10").fetchall())
        plan = re.sub(r"'\[[^']*\]'", "'[...]'", plan)
        c.execute("SET max_parallel_workers_per_gather = 0")
        timed(c, "single", queries[:50])  # warm caches
        timed(c, "dist", queries[:50])
        rows = []
        for p in PROBES:
            set_probes(p)
            s_ids, s_lat, d_ids, d_lat = alternating(c, queries)
            rows.append((p, float(np.median(s_lat)), float(np.percentile(s_lat, 95)), recall(s_ids, truth),
                         float(np.median(d_lat)), float(np.percentile(d_lat, 95)), recall(d_ids, truth)))
            print(rows[-1], flush=True)
        set_probes(max(lists_single, *[int(x) for x in lists_shard]))
        exact_single = recall(timed(c, "single", queries[:50])[0], truth[:50])
        exact_dist = recall(timed(c, "dist", queries[:50])[0], truth[:50])
    write(title, placements, load, build, size_single, size_dist, lists_single, lists_shard, rows, plan, exact_single, exact_dist)


def write(title, placements, load, build, size_single, size_dist, lists_single, lists_shard, rows, plan, exact_single, exact_dist):
    def fastest(col_p50, col_recall):
        ok = [r for r in rows if r[col_recall] >= TARGET]
        return min(ok, key=lambda r: r[col_p50]) if ok else None

    bs, bd = fastest(1, 3), fastest(4, 6)
    with open(RESULTS, "w") as f:
        f.write("# Distributed top-10 on Citus\n\n")
        f.write(f"{title}; `SELECT id FROM t ORDER BY emb <=> q LIMIT 10` on a plain table on the coordinator (one node) and on "
                f"a table distributed over 2 workers ({SHARDS} shards; placements per worker port: "
                f"{', '.join(f'{p}: {n}' for p, n in placements)}), each with an ivf index at its defaults (quantizer none; lists "
                f"{lists_single} on the one node, {', '.join(lists_shard)} per shard), `ivf.probes` set alike on every node. "
                f"Citus 13.2.2, all three nodes on this one 2-core machine (`bash benches/citus/search.sh`, "
                f"{time.strftime('%Y-%m-%d')}). Recall@10 against numpy's exact neighbours; latencies are client round trips, "
                "200 queries per setting through both tables in 5 alternating rounds, one client.\n\n")
        f.write("| | one node | distributed |\n|---|---|---|\n")
        f.write(f"| load (binary COPY), s | {load['single']:.1f} | {load['dist']:.1f} |\n")
        f.write(f"| CREATE INDEX ... USING ivf, s | {build['single']:.1f} | {build['dist']:.1f} |\n")
        f.write(f"| index size, MiB | {size_single / 2**20:.0f} | {size_dist / 2**20:.0f} (all shards) |\n")
        f.write(f"| recall@10 with every list probed (50 queries) | {exact_single:.3f} | {exact_dist:.3f} |\n\n")
        f.write("| ivf.probes | one node p50 ms | p95 ms | recall@10 | distributed p50 ms | p95 ms | recall@10 | p50 distributed / one node |\n"
                "|---|---|---|---|---|---|---|---|\n")
        for p, sp50, sp95, sr, dp50, dp95, dr in rows:
            f.write(f"| {p} | {sp50:.2f} | {sp95:.2f} | {sr:.3f} | {dp50:.2f} | {dp95:.2f} | {dr:.3f} | {dp50 / sp50:.2f} |\n")
        f.write("\n")
        if bs and bd:
            f.write(f"- Each at its fastest probes reaching recall@10 >= {TARGET}: one node probes {bs[0]}, p50 {bs[1]:.2f} ms, "
                    f"recall {bs[3]:.3f}; distributed probes {bd[0]}, p50 {bd[4]:.2f} ms, recall {bd[6]:.3f}: "
                    f"**{bd[4] / bs[1]:.2f}×** the one-node p50, recall {bd[6] - bs[3]:+.3f}.\n")
        f.write("- Lists are chosen per shard from its own row count (rows / 1000), so a shard's lists hold as many rows as "
                "the one node's: at the same probes each shard reads as many vectors as the one node does, twice as many in "
                "all, in two worker backends at once, and recall is at least as high.\n\n")
        f.write("Plan (default probes):\n\n```\n" + plan + "\n```\n")
    print(open(RESULTS).read())


if __name__ == "__main__":
    main()
