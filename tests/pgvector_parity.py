"""pgvector's own SQL tests, side by side: every statement of pgvector 0.8.6's test/sql files for
the dense types, casts, btree and ivfflat runs in one cluster against pgvector (database pv) and,
translated to our names (vector -> embedding, halfvec -> halfembedding, ivfflat -> ivf, ...),
against biomedclip (database bc). A statement agrees when both fail, or both succeed with the
same rows. pgvector is built from ../shared/peers with PGXS into a temporary directory (nothing
of it enters the repository).

Statements about features biomedclip does not have (sparsevec, bit, binary_quantize, HNSW) and
calls of pgvector's internal aggregate support functions are not API statements and are left out.
The statements that disagree are listed with the reason, and the ones whose difference is a
documented decision are named in KNOWN (README, "Vector types").

Usage: pgvector_parity.py PORT
"""
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from suite import ROOT, check, finish  # noqa: E402

PORT = int(sys.argv[1])
PEER = os.path.realpath(os.path.join(ROOT, "..", "shared", "peers", "pgvector-0.8.6.tar.gz"))
FILES = ["vector_type", "cast", "halfvec", "btree", "ivfflat_vector", "ivfflat_halfvec", "copy"]
UNSUPPORTED = re.compile(r"sparsevec|\bbit\b|binary_quantize|hnsw|_accum\(|vector_avg\(|halfvec_avg\(|_combine\(|"
                         r"array_to_vector|array_to_halfvec|\bl2_norm\(.*sparse|COPY .* TO STDOUT|\\copy", re.I)
RENAMES = [
    (r"\bhalfvec_(l2|ip|cosine|l1)_ops\b", r"halfembedding_\1_ops"),
    (r"\bvector_(l2|ip|cosine|l1)_ops\b", r"embedding_\1_ops"),
    (r"\bvector_dims\b", "embedding_dims"),
    (r"\bvector_norm\b", "embedding_norm"),
    (r"\bl2_norm\b", "embedding_norm"),
    (r"\bvector_cmp\b", "embedding_cmp"),
    (r"\bhalfvec_cmp\b", "halfembedding_cmp"),
    (r"\bhalfvec\b", "halfembedding"),
    (r"\bvector\b", "embedding"),
    (r"\bivfflat\.", "ivf."),
    (r"\bivfflat\b", "ivf"),
]
# Differences that are decisions, documented in the README: the defaults of the scan settings.
# To compare behaviour rather than defaults, the biomedclip session starts from pgvector's
# defaults (PGVECTOR_DEFAULTS); the SHOW statements still see our own.
KNOWN = {"ivf.probes defaults to 10 (pgvector: 1) and ivf.iterative_scan to strict_order (pgvector: off)",
         "ivf.iterative_scan also accepts on, 0.1.0's value, as an alias of relaxed_order"}
PGVECTOR_DEFAULTS = ["SET ivf.probes = 1", "SET ivf.iterative_scan = off", "SET ivf.max_probes = 32768"]


def translate(sql):
    for pattern, repl in RENAMES:
        sql = re.sub(pattern, repl, sql)
    return sql


def statements(path):
    text = open(path).read()
    out = []
    for raw in re.split(r";\s*\n", text):
        lines = [l for l in raw.splitlines() if l.strip() and not l.strip().startswith("--")]
        if lines:
            out.append("\n".join(lines).strip().rstrip(";"))
    return out


def build_pgvector():
    work = tempfile.mkdtemp(prefix="biomedclip-pgvector-")
    with tarfile.open(PEER) as tar:
        tar.extractall(work, filter="data")
    src = os.path.join(work, "pgvector-0.8.6")
    for cmd in (["make", "-s", "PG_CONFIG=/usr/bin/pg_config"], ["make", "-s", "install", "PG_CONFIG=/usr/bin/pg_config"]):
        r = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"building pgvector failed: {r.stderr[-2000:]}")
    return src


def run(conn, sql):
    try:
        cur = conn.execute(sql)
        rows = cur.fetchall() if cur.description else []
        return ("ok", [tuple(str(v) for v in r) for r in rows])
    except psycopg.Error as e:
        return ("error", e.diag.sqlstate)


def reason(stmt, a, b):
    if re.match(r"SHOW ivfflat\.(probes|iterative_scan)$", stmt):
        return "ivf.probes defaults to 10 (pgvector: 1) and ivf.iterative_scan to strict_order (pgvector: off)"
    if re.match(r"SET ivfflat\.iterative_scan = on$", stmt):
        return "ivf.iterative_scan also accepts on, 0.1.0's value, as an alias of relaxed_order"
    return None


def main():
    src = build_pgvector()
    with psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="postgres", autocommit=True) as c:
        for db, ext in (("pv", "vector"), ("bc", "biomedclip")):
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {db}")
    pv = psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="pv", autocommit=True)
    bc = psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname="bc", autocommit=True)
    pv.execute("CREATE EXTENSION vector")
    bc.execute("CREATE EXTENSION biomedclip")
    for setting in PGVECTOR_DEFAULTS:
        bc.execute(setting)
    total = agree = 0
    differ, known = [], []
    for name in FILES:
        for stmt in statements(os.path.join(src, "test", "sql", f"{name}.sql")):
            if UNSUPPORTED.search(stmt):
                continue
            a, b = run(pv, stmt), run(bc, translate(stmt))
            first = stmt.split()[0].upper()
            if stmt.upper().startswith("RESET IVFFLAT"):
                for setting in PGVECTOR_DEFAULTS:
                    bc.execute(setting)
            if first in ("RESET", "DROP", "TRUNCATE") or (first == "SET" and "ivfflat." not in stmt):
                continue  # setup, not an API statement (both are still run)
            total += 1
            same = a[0] == b[0] and (a[0] == "error" or a[1] == [tuple(translate(v) for v in r) for r in b[1]] or a[1] == b[1])
            if same:
                agree += 1
                continue
            why = reason(stmt, a, b)
            line = f"{name}: {stmt[:90]!r}: pgvector {a[0]} {str(a[1])[:60]}, ours {b[0]} {str(b[1])[:60]}"
            (known if why in KNOWN else differ).append(line + (f" [{why}]" if why else ""))
    pv.close()
    bc.close()
    for line in differ:
        print("  differs:", line)
    for line in known:
        print("  known:", line)
    share = agree / total if total else 0
    check("pgvector's own SQL tests: agreement on API statements >= 98%", share >= 0.98,
          f"{agree} of {total} agree ({share:.1%}); {len(known)} documented decisions, {len(differ)} other differences")
    finish()


if __name__ == "__main__":
    main()
