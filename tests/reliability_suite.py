"""Reliability and security suite (run by the test command against its own throwaway cluster):

* corpus: >= 2,000 malformed inputs through the SQL functions; each raises an ERROR (or, for a
  bit-flipped image that is still a valid image, returns a valid embedding), and the server is
  the same server afterwards (postmaster start time unchanged, no crashed backend in the log);
* rls: hospital roles radiology_analyst / pathology_analyst, a department policy, 1,000 text and
  image-embedding queries through the ivf index: no row of the other department, 10 rows whenever
  10 are visible;
* kill: `pg_ctl stop -m immediate` at random points during bulk insert, index build and vacuum,
  N iterations; after each restart the table and the index agree and every committed row is
  found by an exact query and by an index query with probes = lists.

* shutdown: `pg_ctl stop -m fast` while sessions are inside long inference runs, 5 times: no
  backend dies from a signal.

Usage: reliability_suite.py WORKDIR PORT [corpus|rls|kill|shutdown ...] [--kill-iterations N]
"""
import io
import os
import random
import struct
import sys
import threading
import time
import zlib

import numpy as np
import psycopg

from suite import PGBIN, SHARED, as_pg, check, finish, start_cluster, stop_cluster, vec

WORK, PORT = sys.argv[1], int(sys.argv[2])
PARTS = [a for a in sys.argv[3:] if not a.startswith("--")] or ["corpus", "rls", "kill", "shutdown"]
KILL_ITERATIONS = int(sys.argv[sys.argv.index("--kill-iterations") + 1]) if "--kill-iterations" in sys.argv else 20


def start(data):
    start_cluster(data, PORT)


def connect(db="postgres", **kw):
    return psycopg.connect(host="127.0.0.1", port=PORT, user="postgres", dbname=db, autocommit=True, **kw)


# ---------------------------------------------------------------------------- corpus
def png_with_size(w, h):
    ihdr = struct.pack("!IIBBBBB", w, h, 8, 6, 0, 0, 0)
    chunk = lambda t, d: struct.pack("!I", len(d)) + t + d + struct.pack("!I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_with_size(data, w, h):
    data = bytearray(data)
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack("!H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack("!HH", h, w)
    return bytes(data)


def dicom_header_lies():
    """Header values the pixel decoders trust: RLE segment counts/offsets, bit depths, sizes."""
    cases = []
    ct = open(f"{SHARED}/dicom/CT1_UNC.dcm", "rb").read()
    for group, element, value in [(0x28, 0x101, 0), (0x28, 0x101, 17), (0x28, 0x100, 12), (0x28, 0x10, 65535),
                                  (0x28, 0x11, 0), (0x28, 0x2, 2), (0x28, 0x4, None)]:
        d = bytearray(ct)
        at = d.find(struct.pack("<HH", group, element) + b"US\x02\x00")
        if value is None:  # PhotometricInterpretation -> an unknown value of the same length
            at = d.find(struct.pack("<HH", 0x28, 0x4) + b"CS")
            length = struct.unpack("<H", d[at + 6:at + 8])[0]
            d[at + 8:at + 8 + length] = b"HSV".ljust(length)
        else:
            d[at + 8:at + 10] = struct.pack("<H", value)
        cases.append(("dicom header lie", bytes(d), True))
    rle = open(f"{SHARED}/dicom/CT1_RLE.dcm", "rb").read()
    pixel = rle.rfind(b"\xe0\x7f\x10\x00")
    first = rle.find(b"\xfe\xff\x00\xe0", pixel)
    header = first + 8 + struct.unpack("<I", rle[first + 4:first + 8])[0] + 8
    for at, value in [(0, 0xFFFFFFFF), (0, 15), (0, 0), (4, 0x7FFFFFFF), (8, 10), (8, 0xFFFFFF)]:
        d = bytearray(rle)
        d[header + at:header + at + 4] = struct.pack("<I", value)
        cases.append(("dicom RLE header lie", bytes(d), True))
    return cases


def slide_corpus(rng):
    """Truncated and bit-flipped copies of the real SVS for the slide functions."""
    svs = open(f"{SHARED}/wsi/CMU-1-Small-Region.svs", "rb").read()
    cases = [("truncated slide", svs[:rng.randrange(0, len(svs) - 1)], True) for _ in range(40)]
    for _ in range(40):
        d = bytearray(svs)
        for _ in range(rng.randrange(1, 16)):
            # half of the flips in the header and directories, half anywhere
            d[rng.randrange(4096 if rng.random() < 0.5 else len(d))] ^= 1 << rng.randrange(8)
        cases.append(("bit-flipped slide", bytes(d), False))
    return cases


def image_corpus(rng):
    from PIL import Image

    sources = {}
    for f in sorted(os.listdir(f"{SHARED}/biomedclip/example_images")):
        sources[f] = open(f"{SHARED}/biomedclip/example_images/{f}", "rb").read()
    for f in sorted(os.listdir(f"{SHARED}/medpix/images"))[:6]:
        sources[f] = open(f"{SHARED}/medpix/images/{f}", "rb").read()
    im = Image.open(f"{SHARED}/medpix/images/{sorted(os.listdir(f'{SHARED}/medpix/images'))[0]}").convert("RGB").resize((128, 128))
    for fmt in ("TIFF", "BMP", "WEBP"):
        b = io.BytesIO()
        im.save(b, fmt)
        sources[f"generated.{fmt.lower()}"] = b.getvalue()
    for f in sorted(os.listdir(f"{SHARED}/dicom"))[:18]:
        if f.endswith(".dcm"):
            sources[f] = open(f"{SHARED}/dicom/{f}", "rb").read()
    cases = []  # (kind, bytes, must_error)
    for name, data in sources.items():
        for _ in range(25):
            cut = rng.randrange(0, max(1, len(data) - 1))
            cases.append((f"truncated {name}", data[:cut], True))
        for _ in range(20):
            d = bytearray(data)
            for _ in range(rng.randrange(1, 16)):
                d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            cases.append((f"bit-flipped {name}", bytes(d), False))
    jpg = sources["bone_X-ray.jpg"]
    for _ in range(60):
        w, h = rng.randrange(20000, 65000), rng.randrange(20000, 65000)
        cases.append(("huge PNG header", png_with_size(w, h), True))
        cases.append(("huge JPEG header", jpeg_with_size(jpg, w, h), True))
    cases += dicom_header_lies()
    cases.append(("zero-length", b"", True))
    magics = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"\x00" * 128 + b"DICM"]
    for i in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        cases.append(("random bytes" + (" after a magic" if i % 2 else ""), (magics[i % len(magics)] if i % 2 else b"") + body, True))
    return cases


def text_corpus(rng):
    bad = ["", "[", "]", "[]", "[,]", "[1,]", "[,1]", "[1,,2]", "[1 2]", "[a]", "[1e39]", "[-1e39]", "[NaN]", "[nan]",
           "[Infinity]", "[-inf]", "[1,2", "1,2]", "{1,2}", "(1,2)", "[1;2]", "[0x10]", "[1_0]", "[--1]", "[1e]", "[.]",
           "[\u00a01]", "[１]", "[1,2]]", "[[1,2]]", "[" + "1," * 16000 + "1]"]
    cases = [(f"malformed embedding text {b[:20]!r}", "SELECT %s::embedding", (b,)) for b in bad]
    for i in range(300):
        s = "".join(rng.choice("[],.-+eE0123456789naNIfy x\t") for _ in range(rng.randrange(1, 30)))
        if s.startswith("[") and s.endswith("]"):
            s = s[:-1]  # keep it malformed: no closing bracket
        cases.append(("random embedding text", "SELECT %s::embedding", (s,)))
        cases.append(("random halfembedding text", "SELECT %s::halfembedding", (s + "x",)))
    for d in (0, -1, 16001, 100000, 2147483647):
        cases.append((f"absurd typmod {d}", f"SELECT '[1]'::embedding({d})", None))
    for n in (0, 16001, 20000):
        cases.append((f"array of {n} elements", f"SELECT array_fill(1.0::real, ARRAY[{n}])::embedding", None))
    cases += [("NaN array", "SELECT ARRAY['NaN']::real[]::embedding", None),
              ("NaN in a distance", "SELECT '[1,2]'::embedding <-> ARRAY['NaN', 1]::real[]::embedding", None),
              ("dimension mismatch", "SELECT '[1,2]'::embedding <=> '[1,2,3]'", None),
              ("half overflow", "SELECT '[1e6]'::embedding::halfembedding", None),
              ("empty text", "SELECT biomedclip_embed_text('')", None),
              ("whitespace text", "SELECT biomedclip_embed_text(E' \\t\\n')", None),
              ("zero-shot without labels", "SELECT * FROM biomedclip_zero_shot(biomedclip_embed_text('x'), ARRAY[]::text[])", None),
              ("calibration index out of range", "SELECT biomedclip_fit_temperature(ARRAY[1,2]::float8[], 5)", None)]
    return cases


def clean_error(e):
    """A clean ERROR: a specific SQLSTATE (not XX000, internal error) and a message that says
    something (not a bare 'error' or a Rust panic text)."""
    code = e.diag.sqlstate or ""
    msg = (e.diag.message_primary or "").strip()
    return code and code != "XX000" and len(msg) >= 12 and "panicked" not in msg and "unwrap" not in msg


def input_class(kind):
    for prefix in ("truncated slide", "bit-flipped slide", "truncated", "bit-flipped", "huge", "dicom", "random bytes", "zero-length"):
        if kind.startswith(prefix):
            return prefix
    return kind


def run_corpus():
    rng = random.Random(7)
    log = os.path.join(WORK, "corpus", "server.log")
    split = {}  # class -> [accepted, refused]
    unclean = []

    def outcome(kind, accepted, error=None):
        split.setdefault(input_class(kind), [0, 0])[0 if accepted else 1] += 1
        if error is not None and not clean_error(error):
            unclean.append(f"{kind}: {error.diag.sqlstate} {str(error).strip()[:60]}")

    with connect() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        started = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        errors = ok_embeddings = unexpected = 0
        images = image_corpus(rng)
        for kind, data, must_error in images:
            try:
                dims, norm = c.execute("SELECT embedding_dims(e), embedding_norm(e) FROM biomedclip_embed_image(%s) e", (data,)).fetchone()
                if must_error or dims != 512 or abs(norm - 1) > 1e-5:
                    unexpected += 1
                    print(f"  unexpected success: {kind}")
                ok_embeddings += 1
                outcome(kind, True)
            except psycopg.errors.Error as e:
                errors += 1
                outcome(kind, False, e)
        slides = slide_corpus(rng)
        for kind, data, must_error in slides:
            try:
                c.execute("SELECT count(*) FROM biomedclip_slide_patches(%s, max_patches => 2)", (data,))
                if must_error:
                    unexpected += 1
                    print(f"  unexpected success: {kind}")
                ok_embeddings += 1
                outcome(kind, True)
            except psycopg.errors.Error as e:
                errors += 1
                outcome(kind, False, e)
        texts = text_corpus(rng)
        for kind, sql, params in texts:
            try:
                c.execute(sql, params)
                unexpected += 1
                print(f"  unexpected success: {kind}")
            except psycopg.errors.Error as e:
                errors += 1
                outcome("vector/text/parameter input", False, e)
    # Invalid UTF-8 in a path setting: only expressible in a SQL_ASCII database.
        c.execute("DROP DATABASE IF EXISTS corpus_ascii")
        c.execute("CREATE DATABASE corpus_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    with connect("corpus_ascii") as a:
        a.execute("CREATE EXTENSION biomedclip")
        for raw in (b"/tmp/\xff\xfe", b"/\xc3\x28model", b"\xed\xa0\x80/x"):
            a.execute(b"SET biomedclip.model_dir = '" + raw + b"'")
            try:
                a.execute("SELECT biomedclip_embed_text('x')")
                unexpected += 1
            except psycopg.errors.Error as e:
                errors += 1
                if "not valid UTF-8" not in str(e):
                    unexpected += 1
                    print(f"  unexpected error for an invalid UTF-8 path: {e}")
    with connect() as c:
        c.execute("DROP DATABASE corpus_ascii")
        after = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    crashed = [l for l in open(log, errors="replace") if "terminated by signal" in l or "server process" in l and "exited with exit code" in l]
    total = len(images) + len(slides) + len(texts) + 3
    # Every class that must be refused is refused in full; bit-flipped inputs are counted both ways.
    must_refuse = {k: v for k, v in split.items() if not k.startswith("bit-flipped")}
    leaks = {k: v for k, v in must_refuse.items() if v[0] != 0}
    flipped = {k: v for k, v in split.items() if k.startswith("bit-flipped")}
    check("malformed inputs through SQL: every must-refuse class refused in full", unexpected == 0 and not leaks and total >= 2000,
          f"{total} inputs, {errors} ERRORs, {unexpected} unexpected; [accepted, refused] per class: {split}")
    check("bit-flipped inputs are counted: both outcomes occur and every accepted one is a unit 512-d embedding",
          all(v[0] + v[1] > 0 for v in flipped.values()) and sum(v[1] for v in flipped.values()) > 0 and unexpected == 0,
          f"[accepted, refused]: {flipped}")
    check("every refusal is a clean ERROR (SQLSTATE other than XX000, a message naming the problem)", not unclean,
          f"{len(unclean)} unclean: {unclean[:3]}")
    check("the server is the same server afterwards", started == after and not crashed,
          f"postmaster start time {'unchanged' if started == after else 'CHANGED'}, {len(crashed)} crashed backends in the log")


# ---------------------------------------------------------------------------- rls
def run_rls():
    rng = np.random.default_rng(11)
    with connect() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
        for r in ("radiology_analyst", "pathology_analyst"):
            c.execute(f"DROP ROLE IF EXISTS {r}")
            c.execute(f"CREATE ROLE {r}")
        c.execute("DROP TABLE IF EXISTS findings")
        c.execute("CREATE TABLE findings (id int PRIMARY KEY, dept text NOT NULL, emb embedding(512))")
        # Real model embeddings (tiny test model) of MedPix images and captions, plus perturbed
        # copies to reach 6,000 rows; 8% radiology, the rest pathology.
        c.execute("""CREATE TEMP TABLE src AS
            SELECT row_number() OVER () AS i, biomedclip_embed_image(pg_read_binary_file(%s || '/medpix/images/' || (l::jsonb ->> 'image'))) AS img,
                   biomedclip_embed_text(l::jsonb ->> 'caption') AS txt
            FROM regexp_split_to_table(pg_read_file(%s || '/medpix/captions.jsonl'), E'\\n') l WHERE l <> ''""", (SHARED, SHARED))
        base = np.array([[float(x) for x in r[0].strip("[]").split(",")] for r in c.execute("SELECT img::text FROM src UNION ALL SELECT txt::text FROM src")], dtype=np.float32)
        n = 6000
        rows = base[rng.integers(0, len(base), n)] + rng.normal(0, 0.02, (n, 512)).astype(np.float32)
        depts = np.where(rng.random(n) < 0.08, "radiology", "pathology")
        with c.cursor().copy("COPY findings (id, dept, emb) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i, depts[i], vec(rows[i])))
        c.execute("CREATE INDEX ON findings USING ivf (emb embedding_cosine_ops) WITH (lists = 30)")
        c.execute("ANALYZE findings")
        c.execute("ALTER TABLE findings ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY radiology_rows ON findings FOR SELECT TO radiology_analyst USING (dept = 'radiology')")
        c.execute("CREATE POLICY pathology_rows ON findings FOR SELECT TO pathology_analyst USING (dept = 'pathology')")
        c.execute("GRANT SELECT ON findings TO radiology_analyst, pathology_analyst")
        c.execute("GRANT EXECUTE ON FUNCTION biomedclip_embed_text(text), biomedclip_embed_image(bytea) TO radiology_analyst, pathology_analyst")
        queries = [r[0] for r in c.execute("SELECT txt::text FROM src UNION ALL SELECT img::text FROM src")]
    # 1,000 queries: the 200 real text and image embeddings, each also perturbed 4 times.
    qs = []
    for i in range(1000):
        q = np.array([float(x) for x in queries[i % len(queries)].strip("[]").split(",")], dtype=np.float32)
        qs.append(vec(q + (rng.normal(0, 0.02, 512).astype(np.float32) if i >= len(queries) else 0)))
    leaked = short = 0
    used_index = True
    for role, dept in (("radiology_analyst", "radiology"), ("pathology_analyst", "pathology")):
        with connect() as c:
            c.execute(f"SET ROLE {role}; SET enable_seqscan = off; SET ivf.probes = 1")
            plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT id FROM findings ORDER BY emb <=> %s::embedding LIMIT 10", (qs[0],)))
            used_index &= "Index Scan" in plan
            for q in qs[:500]:
                got = c.execute("SELECT id, dept FROM findings ORDER BY emb <=> %s::embedding LIMIT 10", (q,)).fetchall()
                leaked += sum(1 for _, d in got if d != dept)
                short += len(got) < 10
            # A text query embedded inside the analyst's own statement.
            got = c.execute("SELECT dept FROM findings ORDER BY emb <=> biomedclip_embed_text('axial CT of the chest') LIMIT 10").fetchall()
            leaked += sum(1 for (d,) in got if d != dept)
            short += len(got) < 10
    check("RLS: 1,000 queries through ivf, no row of the other department", leaked == 0 and used_index,
          f"{leaked} leaked rows; plans use the ivf index: {used_index}")
    check("RLS: 10 rows whenever 10 are visible (iterative scan, probes = 1)", short == 0, f"{short} of 1,002 queries short")
    with connect() as c:
        c.execute("DROP TABLE findings")
        for r in ("radiology_analyst", "pathology_analyst"):
            c.execute(f"DROP OWNED BY {r}; DROP ROLE {r}")


# ---------------------------------------------------------------------------- kill
# (PostgreSQL logs "invalid record length" at the normal end of WAL during recovery: not trouble.)
RECOVERY_TROUBLE = ("PANIC", "invalid page", "could not read block", "checksum", "redo failed",
                    "invalid memory alloc", "corrupt", "failed to re-find", "unexpected zero page")


def run_kill(data):
    rng = random.Random(5)
    log = os.path.join(data, "server.log")
    log_start = os.path.getsize(log)
    passed = 0
    for it in range(KILL_ITERATIONS):
        phase = ["insert", "build", "vacuum"][it % 3]
        with connect() as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS biomedclip")
            c.execute("DROP TABLE IF EXISTS kt")
            c.execute("CREATE TABLE kt (id int PRIMARY KEY, emb embedding(64))")
            c.execute("INSERT INTO kt SELECT i, (SELECT array_agg(sin(i * 0.37 + j)) FROM generate_series(1, 64) j)::real[]::embedding FROM generate_series(1, 3000) i")
            if phase != "build":
                c.execute("CREATE INDEX kt_idx ON kt USING ivf (emb embedding_l2_ops) WITH (lists = 8)")
        committed = []

        def work():
            try:
                with connect() as w:
                    if phase == "insert":
                        for i in range(3001, 200000):
                            w.execute("INSERT INTO kt SELECT %s, (SELECT array_agg(cos(%s * 0.11 + j)) FROM generate_series(1, 64) j)::real[]::embedding", (i, i))
                            committed.append(i)
                    elif phase == "build":
                        for _ in range(50):
                            w.execute("CREATE INDEX kt_idx ON kt USING ivf (emb embedding_l2_ops) WITH (lists = 8)")
                            w.execute("DROP INDEX kt_idx")
                    else:
                        for _ in range(200):
                            w.execute("DELETE FROM kt WHERE id IN (SELECT id FROM kt ORDER BY random() LIMIT 50)")
                            w.execute("VACUUM kt")
                            w.execute("INSERT INTO kt SELECT i, (SELECT array_agg(sin(i * 0.5 + j)) FROM generate_series(1, 64) j)::real[]::embedding FROM generate_series((SELECT max(id) + 1 FROM kt), (SELECT max(id) + 50 FROM kt)) i")
            except psycopg.Error:
                return

        t = threading.Thread(target=work)
        t.start()
        time.sleep(0.5 + rng.random() * 2.0)
        as_pg(f"{PGBIN}/pg_ctl -D {data} -m immediate stop")
        t.join()
        start(data)
        with connect() as c:
            if not c.execute("SELECT count(*) FROM pg_class WHERE relname = 'kt_idx'").fetchone()[0]:
                c.execute("CREATE INDEX kt_idx ON kt USING ivf (emb embedding_l2_ops) WITH (lists = 8)")
            c.execute("SET enable_seqscan = off; SET ivf.probes = 8")
            heap_ids = {r[0] for r in c.execute("SELECT id FROM kt").fetchall()}
            total = len(heap_ids)
            index_sql = "SELECT id FROM kt ORDER BY emb <-> (SELECT emb FROM kt LIMIT 1) LIMIT 100000000"
            plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + index_sql).fetchall())
            index_ids = [r[0] for r in c.execute(index_sql).fetchall()]
            via_index = len(index_ids)
            same_set = "kt_idx" in plan and set(index_ids) == heap_ids and len(index_ids) == len(set(index_ids))
            if phase != "insert":  # sample committed ids of every kind: those present before the kill
                committed = sorted(heap_ids)
            missing = 0
            for rid in rng.sample(committed, min(30, len(committed))) if committed else []:
                exact = c.execute("SELECT count(*) FROM kt WHERE id = %s", (rid,)).fetchone()[0]
                top = c.execute("SELECT id FROM kt ORDER BY emb <-> (SELECT emb FROM kt WHERE id = %s) LIMIT 1", (rid,)).fetchone()
                missing += exact != 1 or top is None or top[0] != rid
            c.execute("VACUUM kt")
        ok = same_set and missing == 0
        passed += ok
        if not ok:
            print(f"  iteration {it} ({phase}): table {total}, index {via_index}, same set through the index {same_set}, committed rows missing {missing}")
    with open(log, errors="replace") as f:
        f.seek(log_start)
        recovery_errors = [l.strip() for l in f if any(t in l for t in RECOVERY_TROUBLE)]
    check("pg_ctl stop -m immediate during bulk insert / index build / vacuum", passed == KILL_ITERATIONS and not recovery_errors,
          f"{passed} of {KILL_ITERATIONS} iterations passed (the set of ids through the index, EXPLAIN-checked, equals the heap's; "
          f"sampled committed rows found exactly and via the index); recovery errors in the log: {recovery_errors[:2]}")


# ---------------------------------------------------------------------------- shutdown
def run_shutdown(data, iterations=5):
    """`pg_ctl stop -m fast` while 3 sessions are inside long inference runs: every backend exits
    without a signal death (which the postmaster would log as "terminated by signal"), the stop
    completes, and the server comes back."""
    log = os.path.join(data, "server.log")
    log_start = os.path.getsize(log)
    long_call = ("SELECT count(*) FROM unnest(biomedclip_embed_texts(array_fill(repeat('effusion ', 300), ARRAY[256])))")
    stopped = 0
    for _ in range(iterations):
        def work():
            try:
                with connect() as w:
                    w.execute("SET biomedclip.batch_size = 256")
                    for _ in range(20):
                        w.execute(long_call)
            except psycopg.Error:
                return
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # the model is loaded and the runs are in flight
        out = as_pg(f"{PGBIN}/pg_ctl -D {data} -m fast -w -t 60 stop")
        stopped += out.returncode == 0
        for t in threads:
            t.join()
        start(data)
    with open(log, errors="replace") as f:
        f.seek(log_start)
        bad = [l.strip() for l in f if "terminated by signal" in l or "was terminated" in l or "PANIC" in l]
    check("fast shutdown during inference: clean stops, no backend dies from a signal", stopped == iterations and not bad,
          f"{stopped} of {iterations} fast stops completed with 3 runs in flight; signal deaths in the log: {bad[:2]}")


def main():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    data = os.path.join(WORK, "corpus")
    start(data)
    try:
        if "corpus" in PARTS:
            run_corpus()
        if "rls" in PARTS:
            run_rls()
        if "kill" in PARTS:
            run_kill(data)
        if "shutdown" in PARTS:
            run_shutdown(data)
    finally:
        stop_cluster(data)
    finish()


if __name__ == "__main__":
    main()
