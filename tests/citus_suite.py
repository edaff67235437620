"""biomedclip on a real Citus 13.2.2 cluster: a coordinator and 2 workers on this machine.

usage: citus_suite.py WORKDIR PORT   (uses PORT, PORT+1, PORT+2; Citus from scripts/citus.sh)

Every node preloads citus and biomedclip (so each node runs its own inference service with the
model its own settings name). Checks, each against an outside reference (numpy, or the same
function run on one node), never against the cluster's own answer:
- CREATE EXTENSION biomedclip on the coordinator reaches both workers, at the same version, and the
  type, operators and functions work there;
- an ivf index on a distributed embedding(512) table exists on every shard; with all lists probed,
  ORDER BY emb <=> q LIMIT 10 across 4 shards equals numpy's exact top 10 (20 queries), and
  EXPLAIN shows each shard running its own index scan under a Limit;
- avg(emb) and sum(emb) across shards equal numpy's mean and sum;
- INSERT ... SELECT id, biomedclip_embed_text(txt) between co-located tables runs on the workers
  (their services' counters grow, the coordinator's does not), with no distributed deadlock, and
  every embedding equals the one the coordinator computes for the same text;
- biomedclip_model_info() on every node names the same manifest SHA-256, and a worker given another
  model through its own settings is seen to differ;
- the README's Citus block runs verbatim.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import psycopg

from suite import ROOT, SHARED, check, finish, start_cluster, stop_cluster, vec

WORK, PORT = sys.argv[1], int(sys.argv[2])
NODES = {"coordinator": PORT, "worker 1": PORT + 1, "worker 2": PORT + 2}
DIM, ROWS, SHARDS, LISTS = 512, 4000, 4, 8


def connect(port):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)


def on_workers(c, sql):
    """run_command_on_workers: {port: result text}, failing loudly on any node's error."""
    out = {}
    for name, port, ok, result in c.execute("SELECT nodename, nodeport, success, result FROM run_command_on_workers(%s)", (sql,)).fetchall():
        if not ok:
            raise RuntimeError(f"{name}:{port}: {result}")
        out[port] = result
    return out


def start():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    for name, port in NODES.items():
        start_cluster(os.path.join(WORK, f"node{port}"), port, "shared_preload_libraries = 'citus, biomedclip'",
                      "max_prepared_transactions = 100", "citus.node_conninfo = 'sslmode=disable'")
        with connect(port) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS citus")
    with connect(PORT) as c:
        c.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (PORT,))
        for port in (PORT + 1, PORT + 2):
            c.execute("SELECT citus_add_node('127.0.0.1', %s)", (port,))


def run_extension(c):
    c.execute("CREATE EXTENSION biomedclip")
    version = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'biomedclip'").fetchone()[0]
    versions = on_workers(c, "SELECT extversion FROM pg_extension WHERE extname = 'biomedclip'")
    distance = on_workers(c, "SELECT '[0,0]'::embedding <-> '[3,4]'::embedding")
    dims = on_workers(c, "SELECT embedding_dims(biomedclip_embed_text('pleural effusion'))")
    check("CREATE EXTENSION on the coordinator reaches every worker, and its types, operators and functions work there",
          set(versions.values()) == {version} and len(versions) == 2 and set(distance.values()) == {"5"}
          and len(set(dims.values())) == 1 and int(next(iter(dims.values()))) > 0,
          f"coordinator {version}, workers {versions}; '[0,0]' <-> '[3,4]' on the workers {distance}; text embedding dims {dims}")


def run_ivf(c):
    rng = np.random.default_rng(17)
    centers = rng.normal(0, 1, (16, DIM)).astype(np.float32)
    data = centers[rng.integers(0, 16, ROWS)] + 0.5 * rng.normal(0, 1, (ROWS, DIM)).astype(np.float32)
    c.execute("CREATE TABLE dist_emb (id bigint PRIMARY KEY, emb embedding(512))")
    c.execute("SELECT create_distributed_table('dist_emb', 'id', shard_count => %s)", (SHARDS,))
    with c.cursor().copy("COPY dist_emb (id, emb) FROM STDIN") as cp:
        for i, v in enumerate(data, 1):
            cp.write_row((i, "[" + ",".join(f"{x:.9g}" for x in v) + "]"))  # 9 digits: float32 exactly
    c.execute(f"CREATE INDEX dist_emb_ivf ON dist_emb USING ivf (emb embedding_cosine_ops) WITH (lists = {LISTS})")
    c.execute("ANALYZE dist_emb")
    per_shard = c.execute(
        "SELECT result FROM run_command_on_shards('dist_emb', $$SELECT count(*) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = x.relam WHERE i.indrelid = '%s'::regclass AND a.amname = 'ivf'$$)").fetchall()
    check("CREATE INDEX ... USING ivf on a distributed table builds the index on every shard",
          len(per_shard) == SHARDS and all(r[0] == "1" for r in per_shard), f"ivf indexes per shard: {[r[0] for r in per_shard]}")

    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    queries = centers[rng.integers(0, 16, 20)] + 0.5 * rng.normal(0, 1, (20, DIM)).astype(np.float32)
    c.execute("SET citus.propagate_set_commands = 'local'")
    equal = 0
    with c.transaction():
        c.execute(f"SET LOCAL ivf.probes = {LISTS}")
        for q in queries:
            got = [r[0] for r in c.execute("SELECT id FROM dist_emb ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),)).fetchall()]
            exact = list(np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10] + 1)
            equal += got == [int(x) for x in exact]
        c.execute("SET LOCAL citus.explain_all_tasks = on")
        # A literal: Citus cannot EXPLAIN a query with bound parameters on the workers.
        plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN (COSTS OFF) SELECT id FROM dist_emb ORDER BY emb <=> '{vec(queries[0])}'::embedding LIMIT 10").fetchall())
    check("top-10 across 4 shards with every list probed equals numpy's exact top 10",
          equal == len(queries), f"{equal} of {len(queries)} queries identical, in order")
    tasks = plan.count("->  Task")
    index_scans = plan.count("Index Scan using dist_emb_ivf")
    check("EXPLAIN: each shard runs its own ivf index scan under a Limit, merged on the coordinator",
          "Custom Scan (Citus Adaptive)" in plan and tasks == SHARDS and index_scans == SHARDS and plan.count("Limit") >= SHARDS + 1,
          f"{tasks} tasks, {index_scans} ivf index scans, {plan.count('Limit')} Limit nodes" + ("" if index_scans == SHARDS else f"; plan:\n{plan}"))

    avg = np.array([float(x) for x in c.execute("SELECT avg(emb)::text FROM dist_emb").fetchone()[0].strip("[]").split(",")])
    total = np.array([float(x) for x in c.execute("SELECT sum(emb)::text FROM dist_emb").fetchone()[0].strip("[]").split(",")])
    ref_avg, ref_sum = data.astype(np.float64).mean(axis=0), data.astype(np.float64).sum(axis=0)
    err_avg = float(np.max(np.abs(avg - ref_avg)))
    err_sum = float(np.max(np.abs(total - ref_sum) / np.maximum(1.0, np.abs(ref_sum))))
    # Both accumulate in float64 and round once to float32: within float32's relative precision.
    check("avg(emb) and sum(emb) across shards equal numpy's float64 mean and sum, rounded to float32",
          err_avg < 1e-6 and err_sum < 1e-6, f"max |avg - numpy| {err_avg:.2e}, max relative sum error {err_sum:.2e}")


def texts_served(c):
    here = c.execute("SELECT (biomedclip_model_info()->'service'->>'texts')::bigint").fetchone()[0]
    there = on_workers(c, "SELECT biomedclip_model_info()->'service'->>'texts'")
    return here, {p: int(v) for p, v in there.items()}


def run_embedding_on_workers(c):
    c.execute("CREATE TABLE dist_captions (id bigint PRIMARY KEY, txt text)")
    c.execute("CREATE TABLE dist_text_emb (id bigint PRIMARY KEY, emb embedding)")
    c.execute("SELECT create_distributed_table('dist_captions', 'id', shard_count => %s)", (SHARDS,))
    c.execute("SELECT create_distributed_table('dist_text_emb', 'id', colocate_with => 'dist_captions')")
    c.execute("INSERT INTO dist_captions SELECT g, 'case ' || g || ': ' || (ARRAY['pleural effusion', 'normal chest radiograph', "
              "'fracture of the distal radius', 'axial ct of the abdomen'])[1 + g % 4] FROM generate_series(1, 200) g")
    before_here, before_there = texts_served(c)
    error = None
    try:
        c.execute("INSERT INTO dist_text_emb SELECT id, biomedclip_embed_text(txt) FROM dist_captions")
    except psycopg.Error as e:
        error = f"{e.sqlstate}: {str(e).splitlines()[0]}"
    after_here, after_there = texts_served(c)
    rows = c.execute("SELECT id, txt FROM dist_captions ORDER BY id").fetchall()
    stored = dict(c.execute("SELECT id, emb::text FROM dist_text_emb").fetchall())
    # The reference: the same function on one node (the coordinator's own, local call).
    local = {i: c.execute("SELECT (biomedclip_embed_texts(ARRAY[%s]))[1]::text", (t,)).fetchone()[0] for i, t in rows}
    same = sum(stored.get(i) == v for i, v in local.items())
    grew = {p: after_there[p] - before_there.get(p, 0) for p in after_there}
    check("INSERT ... SELECT biomedclip_embed_text() between co-located tables runs on the workers, without a distributed deadlock, "
          "and equals the single-node embeddings",
          error is None and same == len(rows) and all(v > 0 for v in grew.values()) and len(grew) == 2 and after_here == before_here,
          f"error {error}; {same} of {len(rows)} rows equal to the coordinator's own embedding; texts embedded by the workers' "
          f"services {grew}, by the coordinator's {after_here - before_here}")


def models(c):
    """The manifest SHA-256 each node serves: (coordinator's, {worker port: sha})."""
    here = c.execute("SELECT biomedclip_model_info()->>'manifest_sha256'").fetchone()[0]
    return here, on_workers(c, "SELECT biomedclip_model_info()->>'manifest_sha256'")


def agree(here, there):
    return bool(here) and set(there.values()) == {here} and len(there) == 2


def run_models_agree(c):
    here, there = models(c)
    check("biomedclip_model_info() on every node names the same manifest SHA-256",
          agree(here, there), f"coordinator {here[:12]}..., workers {[v[:12] for v in there.values()]}")
    # The check must be able to fail: worker 2 is given another model (the same weights, another
    # manifest version, so another manifest SHA-256) through its own settings, then its own back.
    base, other = os.path.join(ROOT, "target", "models", "tiny"), os.path.join(WORK, "model_other")
    shutil.copytree(base, other, dirs_exist_ok=True)
    manifest = json.load(open(os.path.join(base, "manifest.json")))
    manifest["version"] = str(manifest.get("version", "")) + "-other"
    json.dump(manifest, open(os.path.join(other, "manifest.json"), "w"))
    subprocess.run(["chmod", "-R", "a+rX", WORK], check=True)
    worker2 = PORT + 2
    with connect(worker2) as w:
        w.execute("ALTER SYSTEM SET biomedclip.model_dir = '%s'" % other.replace("'", "''"))
        w.execute("SELECT pg_reload_conf()")
    seen = there
    for _ in range(150):
        time.sleep(0.1)
        try:
            here2, seen = models(c)
        except (psycopg.Error, RuntimeError):
            continue
        if seen.get(worker2) != there.get(worker2):
            break
    with connect(worker2) as w:
        w.execute("ALTER SYSTEM RESET biomedclip.model_dir")
        w.execute("SELECT pg_reload_conf()")
    for _ in range(150):  # back to the cluster's model before the next check
        time.sleep(0.1)
        try:
            if agree(*models(c)):
                break
        except (psycopg.Error, RuntimeError):
            continue
    check("a worker serving another model is seen: its manifest SHA-256 differs and the agreement check fails",
          not agree(here, seen) and seen.get(worker2) not in (None, here),
          f"coordinator {here[:12]}..., worker 2 now {str(seen.get(worker2))[:12]}...")


def run_readme_block(c):
    """The README's Citus block, statement by statement, verbatim; 6 DICOM files are loaded into
    its `images` table before its INSERT ... SELECT."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = next(b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if "create_distributed_table" in b)
    statements = []
    for chunk in re.split(r";\s*\n", block):
        lines = [l for l in chunk.strip().splitlines() if not l.strip().startswith("--")]
        if lines:
            statements.append("\n".join(lines))
    dicom = os.path.join(SHARED, "dicom", "CT1_UNC.dcm").replace("'", "''")
    error, last = None, None
    try:
        for st in statements:
            if st.startswith("INSERT INTO image_emb"):
                c.execute(f"INSERT INTO images SELECT g, pg_read_binary_file('{dicom}') FROM generate_series(1, 6) g")
            cur = c.execute(st)
            last = cur.fetchall() if st.upper().startswith("SELECT") else None
    except psycopg.Error as e:
        error = f"{e.sqlstate}: {str(e).splitlines()[0]} (in {st.splitlines()[0]!r})"
    count = c.execute("SELECT count(*) FROM image_emb").fetchone()[0] if error is None else None
    check("the README's Citus block runs verbatim on the cluster",
          error is None and count == 6 and last is not None and sorted(r[0] for r in last) == list(range(1, 7)),
          f"{len(statements)} statements; error {error}; {count} images embedded; the final search returned {last and len(last)} rows")


def main():
    try:
        start()
        with connect(PORT) as c:
            run_extension(c)
            run_ivf(c)
            run_embedding_on_workers(c)
            run_models_agree(c)
            run_readme_block(c)
    finally:
        for port in NODES.values():
            stop_cluster(os.path.join(WORK, f"node{port}"), "fast")
    finish()


if __name__ == "__main__":
    main()
