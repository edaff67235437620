"""Script-driven tests of the ivf index on its own throwaway clusters:

1. recall: clustered 512-d vectors, recall@10 against numpy's exact neighbours rises with
   ivf.probes and reaches >= 0.95 at the documented setting;
2. crash: `pg_ctl stop -m immediate` during concurrent inserts; after restart every committed row
   is found through the index;
3. standby: a streaming standby (pg_basebackup over loopback) returns the same top-k;
4. filters and row-level security: LIMIT 10 is filled whenever 10 rows qualify, never with a
   hidden row;
5. concurrency: concurrent inserts and searches, no errors, no lost rows;
6. vacuum: after deleting half the rows and VACUUM, no deleted row comes back and recall holds.

Usage: ivf_suite.py WORKDIR BASE_PORT [none|rabitq]   (prints a summary line "N passed, M failed")
"""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg

from ivf_common import DIM, clustered, connect, exact_topk, index_topk, load, recall
from suite import PGBIN, as_pg, check, finish, start_cluster, stop_cluster, vec

WORK, BASE_PORT = sys.argv[1], int(sys.argv[2])
# The same suite runs over each storage layout: full vectors (none) and RaBitQ codes.
QUANTIZER = sys.argv[3] if len(sys.argv) > 3 else "none"


def test_recall_and_vacuum(port, rng):
    centers = rng.normal(0, 1, (200, DIM)).astype(np.float32)
    base = clustered(20000, centers, rng)
    queries = clustered(100, centers, rng)
    with connect(port) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        conn.execute("DROP TABLE IF EXISTS rt")
        conn.execute(f"CREATE TABLE rt (id int PRIMARY KEY, emb embedding({DIM}))")
        load(conn, "rt", base)
        t0 = time.monotonic()
        conn.execute(f"CREATE INDEX rt_idx ON rt USING ivf (emb embedding_cosine_ops) WITH (quantizer = {QUANTIZER})")
        build_s = time.monotonic() - t0
        # The lists the build chose, read from the index's metapage (pageinspect): the u32 after
        # magic, version and dims in the contents that start at the 24-byte page header.
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        lists = conn.execute("SELECT get_byte(p, 36) + (get_byte(p, 37) << 8) + (get_byte(p, 38) << 16) + (get_byte(p, 39) << 24) "
                             "FROM get_raw_page('rt_idx', 0) p").fetchone()[0]
        conn.execute("SET enable_seqscan = off")
        truth = exact_topk(base, queries, 10)
        sweep = {}
        for p in sorted({1, 2, 4, 8, lists}):
            sweep[p] = recall(index_topk(conn, "rt", queries, 10, p), truth)
        values = [sweep[p] for p in sorted(sweep)]
        monotonic = all(b >= a - 1e-9 for a, b in zip(values, values[1:]))
        check("recall rises with probes", monotonic, f"recall@10 by probes: {sweep}")
        check(f"recall@10 >= 0.95 at probes = 8 (of the default {lists} lists, rows / 1000 = 20 expected)",
              sweep[8] >= 0.95 and lists == 20,
              f"{sweep[8]:.3f} (20k x {DIM}, default lists = {lists}, build {build_s:.1f} s)")

        # Vacuum: delete half, VACUUM, compare with the exact neighbours among the survivors.
        conn.execute("DELETE FROM rt WHERE id % 2 = 0")
        conn.execute("VACUUM rt")
        alive = np.arange(len(base)) % 2 == 1
        found = index_topk(conn, "rt", queries, 10, 8)
        resurrected = sum(1 for f in found for i in f if i % 2 == 0)
        truth_alive = exact_topk(base, queries, 10, valid=alive)
        r = recall(found, truth_alive)
        check("vacuum: no deleted row comes back", resurrected == 0, f"{resurrected} deleted ids returned")
        check("vacuum: recall holds after deleting 50%", r >= 0.95, f"recall@10 {r:.3f} at probes = 8 (before: {sweep[8]:.3f})")
        # Insert after VACUUM (freed slots may be reused), then probe every list: the result must
        # be the exact top-10 of the live rows (a sequential scan), and no deleted id may come back.
        load(conn, "rt", clustered(5000, centers, rng), start=100000)
        found = index_topk(conn, "rt", queries[:30], 10, lists)
        conn.execute("SET enable_indexscan = off; SET enable_seqscan = on")
        truth_ids = index_topk(conn, "rt", queries[:30], 10, lists)  # an exact sequential scan now
        conn.execute("RESET enable_indexscan; SET enable_seqscan = off")
        stale = sum(1 for f in found for i in f if i < 100000 and i % 2 == 0)
        exact_match = sum(1 for f, t in zip(found, truth_ids) if set(f) == set(t))
        check("vacuum then insert: no stale entry, all lists probed equals the exact top-10 of the live rows",
              stale == 0 and exact_match == 30, f"{stale} stale ids; {exact_match} of 30 queries exact")
        conn.execute("DROP TABLE rt")


def test_filters_and_rls(port, rng):
    centers = rng.normal(0, 1, (50, DIM)).astype(np.float32)
    n = 10000
    base = clustered(n, centers, rng)
    # 5% radiology_private rows: the policy shows them only to the radiology role.
    depts = ["radiology" if i % 20 == 0 else "pathology" for i in range(n)]
    with connect(port) as conn:
        conn.execute("DROP TABLE IF EXISTS ft; DROP ROLE IF EXISTS ivf_radiology")
        conn.execute(f"CREATE TABLE ft (id int PRIMARY KEY, emb embedding({DIM}), dept text)")
        load(conn, "ft", base, extra_cols=depts)
        conn.execute(f"CREATE INDEX ON ft USING ivf (emb embedding_cosine_ops) WITH (lists = 50, quantizer = {QUANTIZER})")
        conn.execute("ANALYZE ft")
        conn.execute("CREATE ROLE ivf_radiology")
        conn.execute("GRANT SELECT ON ft TO ivf_radiology")
        conn.execute("ALTER TABLE ft ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY dept_only ON ft FOR SELECT TO ivf_radiology USING (dept = 'radiology')")
        queries = clustered(100, centers, rng)
        short_where = short_rls = leaked = 0
        with conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off; SET ivf.probes = 1")
            for q in queries:
                cur.execute("SELECT id, dept FROM ft WHERE dept = 'radiology' ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),))
                short_where += len(cur.fetchall()) < 10
            cur.execute("SET ROLE ivf_radiology")
            for q in queries:
                cur.execute("SELECT id, dept FROM ft ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),))
                rows = cur.fetchall()
                short_rls += len(rows) < 10
                leaked += sum(1 for _, d in rows if d != "radiology")
            plan = "\n".join(r[0] for r in cur.execute("EXPLAIN SELECT id FROM ft ORDER BY emb <=> %s::embedding LIMIT 10", (vec(queries[0]),)).fetchall())
            # All lists probed, the rows through the index are exactly the nearest *visible* rows:
            # an exact sequential scan as the same role is the reference.
            cur.execute("SET ivf.probes = 50")
            not_nearest = 0
            for q in queries[:40]:
                sql = "SELECT id FROM ft ORDER BY emb <=> %s::embedding LIMIT 10"
                got = [r[0] for r in cur.execute(sql, (vec(q),)).fetchall()]
                cur.execute("SET enable_indexscan = off; SET enable_seqscan = on")
                exact = [r[0] for r in cur.execute(sql, (vec(q),)).fetchall()]
                cur.execute("RESET enable_indexscan; SET enable_seqscan = off")
                not_nearest += got != exact
            # With ivf.max_probes capping the iterative scan: still no hidden row.
            cur.execute("SET ivf.probes = 1; SET ivf.max_probes = 4")
            capped_leaks = capped_rows = 0
            for q in queries:
                rows = cur.execute("SELECT id, dept FROM ft ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),)).fetchall()
                capped_rows += len(rows)
                capped_leaks += sum(1 for _, d in rows if d != "radiology")
            cur.execute("RESET ivf.max_probes; RESET ROLE")
        check("filter keeping 5%: LIMIT 10 always filled (probes = 1, iterative scan)", short_where == 0, f"{short_where} of 100 queries short")
        check("RLS keeping 5%: LIMIT 10 always filled", short_rls == 0 and "ft_emb_idx" in plan, f"{short_rls} of 100 queries short; index used: {'ft_emb_idx' in plan}")
        check("RLS: no hidden row returned", leaked == 0, f"{leaked} rows of other departments")
        check("RLS through the index (EXPLAIN) returns the nearest visible rows: equal to an exact scan as the same role",
              "ft_emb_idx" in plan and not_nearest == 0, f"{not_nearest} of 40 queries differ (all 50 lists probed)")
        check("RLS with ivf.max_probes = 4: no hidden row", capped_leaks == 0, f"{capped_rows} rows returned, {capped_leaks} hidden")
        conn.execute("DROP TABLE ft; DROP ROLE ivf_radiology")


def test_concurrency(port, rng):
    centers = rng.normal(0, 1, (20, DIM)).astype(np.float32)
    with connect(port) as conn:
        conn.execute("DROP TABLE IF EXISTS ct")
        conn.execute(f"CREATE TABLE ct (id int PRIMARY KEY, emb embedding({DIM}))")
        load(conn, "ct", clustered(2000, centers, rng))
        conn.execute(f"CREATE INDEX ON ct USING ivf (emb embedding_cosine_ops) WITH (lists = 20, quantizer = {QUANTIZER})")
    errors, inserted = [], []

    def writer(wid):
        r = np.random.default_rng(wid)
        try:
            with connect(port) as c:
                for i in range(400):
                    rid = 100000 * (wid + 1) + i
                    c.execute("INSERT INTO ct VALUES (%s, %s::embedding)", (rid, vec(clustered(1, centers, r)[0])))
                    inserted.append(rid)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    def reader(wid):
        r = np.random.default_rng(100 + wid)
        try:
            with connect(port) as c:
                c.execute("SET enable_seqscan = off")
                for _ in range(300):
                    c.execute("SELECT id FROM ct ORDER BY emb <=> %s::embedding LIMIT 10", (vec(clustered(1, centers, r)[0]),)).fetchall()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)] + [threading.Thread(target=reader, args=(w,)) for w in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    with connect(port) as conn:
        conn.execute("SET enable_seqscan = off; SET ivf.probes = 20")
        via_index = conn.execute("SELECT count(*) FROM (SELECT id FROM ct ORDER BY emb <=> %s::embedding LIMIT 100000) s", (vec(centers[0] / np.linalg.norm(centers[0])),)).fetchone()[0]
        exact = conn.execute("SELECT count(*) FROM ct").fetchone()[0]
        conn.execute("DROP TABLE ct")
    check("concurrent inserts and searches: no errors", not errors, f"{len(errors)} errors {errors[:2]}")
    check("concurrent inserts: no lost rows", via_index == exact == 2000 + len(inserted), f"index {via_index}, table {exact}, expected {2000 + len(inserted)}")


def test_crash(port, data, rng):
    centers = rng.normal(0, 1, (20, DIM)).astype(np.float32)
    with connect(port) as conn:
        conn.execute("DROP TABLE IF EXISTS kt")
        conn.execute(f"CREATE TABLE kt (id int PRIMARY KEY, emb embedding({DIM}))")
        load(conn, "kt", clustered(1000, centers, rng))
        conn.execute(f"CREATE INDEX ON kt USING ivf (emb embedding_l2_ops) WITH (lists = 10, quantizer = {QUANTIZER})")
    committed, stop = [], threading.Event()
    vectors = {}

    def writer(wid):
        r = np.random.default_rng(wid + 7)
        try:
            with connect(port) as c:
                for i in range(100000):
                    if stop.is_set():
                        return
                    rid = 1000000 * (wid + 1) + i
                    v = clustered(1, centers, r)[0]
                    c.execute("INSERT INTO kt VALUES (%s, %s::embedding)", (rid, vec(v)))
                    committed.append(rid)
                    vectors[rid] = v
        except Exception:  # noqa: BLE001  (the crash kills the connection)
            return

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    [t.start() for t in threads]
    time.sleep(3)
    as_pg(f"{PGBIN}/pg_ctl -D {data} -m immediate stop")
    stop.set()
    [t.join() for t in threads]
    start_cluster(data, port)
    missing = 0
    with connect(port) as conn:
        conn.execute("SET enable_seqscan = off; SET ivf.probes = 10")
        for rid in committed:
            got = conn.execute("SELECT id FROM kt ORDER BY emb <-> %s::embedding LIMIT 1", (vec(vectors[rid]),)).fetchone()
            missing += got is None or got[0] != rid
        total_index = conn.execute("SELECT count(*) FROM (SELECT id FROM kt ORDER BY emb <-> %s::embedding LIMIT 10000000) s", (vec(centers[0]),)).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM kt").fetchone()[0]
        conn.execute("DROP TABLE kt")
    check("crash during concurrent inserts: every committed row found via the index",
          missing == 0 and total_index == total and len(committed) > 0,
          f"{len(committed)} committed before the crash, {missing} not found; index {total_index} rows, table {total}")


def test_standby(port, data, rng):
    standby = os.path.join(WORK, "standby")
    sport = port + 1
    os.makedirs(standby, exist_ok=True)
    subprocess.run(["chown", "postgres:postgres", standby], check=True)
    os.chmod(standby, 0o700)
    r = as_pg(f"{PGBIN}/pg_basebackup -D {standby} -R -X stream -h 127.0.0.1 -p {port} -U postgres")
    if r.returncode != 0:
        check("standby: base backup", False, r.stderr.strip())
        return
    with open(os.path.join(standby, "postgresql.conf"), "a") as f:
        f.write(f"\nport = {sport}\nunix_socket_directories = '{standby}'\nhot_standby = on\n")
    as_pg(f"{PGBIN}/pg_ctl -D {standby} -l {standby}/server.log -w start")
    centers = rng.normal(0, 1, (20, DIM)).astype(np.float32)
    try:
        with connect(port) as conn:
            conn.execute("DROP TABLE IF EXISTS st")
            conn.execute(f"CREATE TABLE st (id int PRIMARY KEY, emb embedding({DIM}))")
            load(conn, "st", clustered(3000, centers, rng))
            conn.execute(f"CREATE INDEX ON st USING ivf (emb embedding_cosine_ops) WITH (lists = 20, quantizer = {QUANTIZER})")
            load(conn, "st", clustered(500, centers, rng), start=3000)  # inserts after the build (generic WAL)
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with connect(sport) as s:
            for _ in range(300):
                if s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
                    break
                time.sleep(0.1)
        queries = clustered(50, centers, rng)
        with connect(port) as p, connect(sport) as s:
            for c in (p, s):
                c.execute("SET enable_seqscan = off; SET ivf.probes = 5")
            same = sum(index_topk(p, "st", [q], 10, 5) == index_topk(s, "st", [q], 10, 5) for q in queries)
            plan = "\n".join(r[0] for r in s.execute("EXPLAIN SELECT id FROM st ORDER BY emb <=> %s::embedding LIMIT 10", (vec(queries[0]),)).fetchall())
        check("standby returns the same top-10 as the primary", same == len(queries) and "Index Scan" in plan,
              f"{same} of {len(queries)} queries identical; standby uses the index: {'Index Scan' in plan}")
        with connect(port) as conn:
            conn.execute("DROP TABLE st")
    finally:
        as_pg(f"{PGBIN}/pg_ctl -D {standby} -m fast -w stop")


def main():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    rng = np.random.default_rng(2026)
    # The standby replays generic WAL with full-page consistency checks.
    data = start_cluster(os.path.join(WORK, "primary"), BASE_PORT, "wal_consistency_checking = 'generic'")
    try:
        test_recall_and_vacuum(BASE_PORT, rng)
        test_filters_and_rls(BASE_PORT, rng)
        test_concurrency(BASE_PORT, rng)
        test_standby(BASE_PORT, data, rng)
        test_crash(BASE_PORT, data, rng)
    finally:
        stop_cluster(data)
    finish()


if __name__ == "__main__":
    main()
