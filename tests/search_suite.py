"""Search for apps, in SQL: registered collections, biomedclip_search as the caller, the
de-identified query log, feedback, and the drift report. Every answer is checked against an
outside reference: numpy's exact cosine top-k over the rows the role can see (RLS and filters
applied by numpy, not by us), Python's hmac for the log's keyed hash, numpy's quantiles and a numpy
PSI for the drift report.

Usage: search_suite.py PORT DATADIR   (DATADIR: the cluster's data directory, for the HMAC key)
"""
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import sys
import unicodedata

import numpy as np
import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from suite import SHARED, check, finish, fresh_database, sqlstate, vec  # noqa: E402

PORT = int(sys.argv[1])
DATADIR = sys.argv[2]
DB = "biomedclip_search"
N = 3000
DIM = 512
SITES = ["A", "B"]
MODALITIES = ["CT", "MR", "CR"]


def connect(user="postgres"):
    return psycopg.connect(host="127.0.0.1", port=PORT, user=user, dbname=DB, autocommit=True)


def parse(text):
    return np.array(json.loads(text), dtype=np.float64)


PNG = open(os.path.join(SHARED, "biomedclip/example_images", sorted(os.listdir(os.path.join(SHARED, "biomedclip/example_images")))[0]), "rb").read()
DICOM = open(os.path.join(SHARED, "dicom", sorted(f for f in os.listdir(os.path.join(SHARED, "dicom")) if f.startswith("CT"))[0]), "rb").read()

rng = np.random.default_rng(16)
X = rng.standard_normal((N, DIM)).astype(np.float32)
SITE = [SITES[i % 2] for i in range(N)]
MOD = [MODALITIES[(i // 2) % 3] for i in range(N)]
DAY = [dt.date(2026, 1, 1) + dt.timedelta(days=int(i % 300)) for i in range(N)]


def setup():
    fresh_database(PORT, DB, ("ward_a", "ward_b", "monitor", "owner_x", "stranger"))
    with connect() as c:
        c.execute("CREATE EXTENSION biomedclip")
        # A column name that needs quoting, to show names are quoted from the registry.
        c.execute('CREATE TABLE studies (id bigint PRIMARY KEY, site text, modality text, acquired date, "note ""x""" text, '
                  'secret text, emb embedding(512), thumb bytea, dicom bytea)')
        with c.cursor() as cur:
            with cur.copy("COPY studies (id, site, modality, acquired, \"note \"\"x\"\"\", secret, emb, thumb) FROM STDIN") as cp:
                for i in range(N):
                    cp.write_row((i, SITE[i], MOD[i], DAY[i], f"n{i}", f"s{i}", vec(X[i]), bytes([i % 256]) * 4))
        c.execute("UPDATE studies SET dicom = %s WHERE id < 3", (DICOM,))
        c.execute("CREATE INDEX ON studies USING ivf (emb embedding_cosine_ops) WITH (lists = 20)")
        c.execute("ANALYZE studies")
        c.execute("ALTER TABLE studies ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY by_site ON studies FOR SELECT USING (site = CASE current_user WHEN 'ward_a' THEN 'A' WHEN 'ward_b' THEN 'B' END)")
        for role in ("ward_a", "ward_b"):
            c.execute(f"GRANT SELECT ON studies TO {role}")
            c.execute(f"SELECT count(*) FROM biomedclip_grant('{role}', 'analyst')")
        c.execute("SELECT count(*) FROM biomedclip_grant('monitor', 'monitor')")
        c.execute("SELECT biomedclip_register_collection('studies', 'studies', 'id', 'emb', "
                  "ARRAY['site', 'modality', 'acquired', 'note \"x\"'], 'thumb')")


def exact(q, visible, k=10):
    """numpy's exact cosine top-k over the visible rows: (ids, distances)."""
    idx = np.array([i for i in range(N) if visible(i)])
    xs = X[idx].astype(np.float64)
    d = 1 - xs @ q / (np.linalg.norm(xs, axis=1) * np.linalg.norm(q))
    order = np.argsort(d, kind="stable")[:k]
    return [str(idx[j]) for j in order], d[order]


def search(conn, query, k=10, filters=None):
    return conn.execute("SELECT rank, id, distance, display, query_id FROM biomedclip_search('studies', %s, %s, %s)",
                        (json.dumps(query), k, json.dumps(filters or {}))).fetchall()


def correctness():
    with connect("ward_a") as c:
        c.execute("SET ivf.probes = 20")  # every list: the index answer must be the exact one
        bad = hidden = short = 0
        worst = 0.0
        for t in range(50):
            q = rng.standard_normal(DIM)
            rows = search(c, {"embedding": q.tolist()})
            ids, d = exact(q, lambda i: SITE[i] == "A")
            got = [r[1] for r in rows]
            hidden += sum(SITE[int(i)] != "A" for i in got)
            short += len(rows) != 10
            if got != ids:
                bad += 1
            else:
                worst = max(worst, float(np.max(np.abs(np.array([r[2] for r in rows]) - d))))
        check("50 embedding queries as a role under RLS: the exact top 10 of its visible rows (numpy), LIMIT filled, 0 hidden",
              bad == 0 and hidden == 0 and short == 0 and worst < 1e-5, f"mismatched {bad}, hidden {hidden}, short {short}, max |Δd| {worst:.2e}")
        ranks = [r[0] for r in rows]
        disp = rows[0][3]
        check("ranks are 1..k and display holds exactly the display columns (quoted names work)",
              ranks == list(range(1, 11)) and set(disp) == {"site", "modality", "acquired", 'note "x"'} and "secret" not in disp,
              f"ranks {ranks}; display keys {sorted(disp)}")
        # Filters: equality and a date range, checked by numpy over the same visible rows.
        q = rng.standard_normal(DIM)
        f = {"modality": "CT", "acquired": {"gte": "2026-03-01", "lt": "2026-06-01"}}
        rows = search(c, {"embedding": q.tolist()}, 10, f)
        lo, hi = dt.date(2026, 3, 1), dt.date(2026, 6, 1)
        ids, _ = exact(q, lambda i: SITE[i] == "A" and MOD[i] == "CT" and lo <= DAY[i] < hi)
        check("equality and range filters on display columns equal numpy's filtered exact top 10",
              [r[1] for r in rows] == ids, f"{len(rows)} rows; first {[r[1] for r in rows][:3]} vs {ids[:3]}")
        codes = {
            "filter on a column that is not a display column": sqlstate(c, "SELECT * FROM biomedclip_search('studies', '{\"embedding\": [1]}', 10, '{\"secret\": \"s1\"}')"),
            "unknown range operator": sqlstate(c, "SELECT * FROM biomedclip_search('studies', %s, 10, '{\"site\": {\"like\": \"A\"}}')", (json.dumps({"embedding": q.tolist()}),)),
            "two query kinds": sqlstate(c, "SELECT * FROM biomedclip_search('studies', '{\"text\": \"a\", \"embedding\": [1]}')"),
            "bad base64": sqlstate(c, "SELECT * FROM biomedclip_search('studies', '{\"image\": \"***\"}')"),
            "k out of range": sqlstate(c, "SELECT * FROM biomedclip_search('studies', '{\"text\": \"a\"}', 0)"),
        }
        check("bad requests are 22023", all(v == "22023" for v in codes.values()), str(codes))
        check("an unknown collection is 42704", sqlstate(c, "SELECT * FROM biomedclip_search('nope', '{\"text\": \"a\"}')") == "42704", "")
        # A filter value is a value, never SQL.
        rows = search(c, {"embedding": q.tolist()}, 5, {"site": "A'; DROP TABLE studies; --"})
        check("a filter value that looks like SQL is only a value (no rows, table intact)", rows == [], f"{len(rows)} rows")
        # Text, image and DICOM queries rank exactly as ORDER BY the model's own embedding.
        for kind, query, expr, args in [
            ("text", {"text": "Pleural  EFFUSION"}, "biomedclip_embed_text('pleural effusion')", ()),
            ("image", {"image": base64.b64encode(PNG).decode()}, "biomedclip_embed_image(%s)", (PNG,)),
            ("dicom", {"dicom": base64.b64encode(DICOM).decode(), "window": "lung"}, "biomedclip_embed_dicom(%s, 'lung')", (DICOM,)),
        ]:
            want = parse(c.execute(f"SELECT {expr}::text", args).fetchone()[0])
            ids, _ = exact(want, lambda i: SITE[i] == "A")
            got = [r[1] for r in search(c, query)]
            check(f"a {kind} query ranks as numpy's exact top 10 for the model's embedding of it", got == ids, f"{got[:3]} vs {ids[:3]}")
        c.execute("RESET ivf.probes")
    with connect() as admin:
        before = admin.execute("SELECT sum(idx_scan) FROM pg_stat_user_indexes WHERE relname = 'studies' AND indexrelname LIKE '%emb%'").fetchone()[0]
    with connect("ward_a") as c:
        for _ in range(3):
            search(c, {"embedding": rng.standard_normal(DIM).tolist()})
    import time
    time.sleep(0.7)  # statistics are flushed at most once a second... after the session ends
    with connect() as admin:
        after = admin.execute("SELECT sum(idx_scan) FROM pg_stat_user_indexes WHERE relname = 'studies' AND indexrelname LIKE '%emb%'").fetchone()[0]
    check("searches go through the collection's ivf index (idx_scan rises by 3)", after - before == 3, f"{before} -> {after}")


def thumbnails_and_registry():
    with connect("ward_a") as c:
        own = c.execute("SELECT biomedclip_thumbnail('studies', '2')").fetchone()[0]
        hidden = c.execute("SELECT biomedclip_thumbnail('studies', '1')").fetchone()[0]
        check("a thumbnail of a visible row comes back; one hidden by RLS is NULL", own == bytes([2]) * 4 and hidden is None, f"{own!r} {hidden!r}")
        check("a role that does not own the table cannot register it (42501)",
              sqlstate(c, "SELECT biomedclip_register_collection('mine', 'studies', 'id', 'emb', ARRAY['site'])") == "42501", "")
        check("the collection registry is not writable directly (42501)",
              sqlstate(c, "DELETE FROM biomedclip.collections") == "42501", "")
    with connect() as admin:
        admin.execute("CREATE TABLE owned (id int, emb embedding(512), label text, img bytea)")
        admin.execute("ALTER TABLE owned OWNER TO owner_x")
        admin.execute("SELECT count(*) FROM biomedclip_grant('owner_x', 'steward')")
    with connect("owner_x") as c:
        ok_col = sqlstate(c, "SELECT biomedclip_register_collection('owned', 'owned', 'id', 'emb', ARRAY['label'], 'img')")
        expr = sqlstate(c, "SELECT biomedclip_register_collection('owned2', 'owned', 'id', 'emb', ARRAY['label'], 'pg_catalog.decode(label, ''hex'')')")
        wrong = sqlstate(c, "SELECT biomedclip_register_collection('owned3', 'owned', 'id', 'label', ARRAY['label'])")
        missing = sqlstate(c, "SELECT biomedclip_register_collection('owned4', 'owned', 'id', 'emb', ARRAY['nope'])")
        dup = sqlstate(c, "SELECT biomedclip_register_collection('owned', 'owned', 'id', 'emb', ARRAY['label'])")
        check("a table owner registers a bytea thumbnail column; an expression needs a superuser (42501); a non-embedding column 42804; "
              "a missing column 42703; a taken name 42710",
              (ok_col, expr, wrong, missing, dup) == (None, "42501", "42804", "42703", "42710"), str((ok_col, expr, wrong, missing, dup)))
    with connect() as admin:
        admin.execute("SELECT biomedclip_register_collection('studies_dicom', 'studies', 'id', 'emb', ARRAY['site'], "
                      "'public.biomedclip_render_dicom(t.dicom, ''lung'')')")
        png = admin.execute("SELECT biomedclip_thumbnail('studies_dicom', '0')").fetchone()[0]
        want = admin.execute("SELECT biomedclip_render_dicom(dicom, 'lung') FROM studies WHERE id = 0").fetchone()[0]
        check("a superuser registers a thumbnail expression (a DICOM rendered with a window)", png == want and png[:4] == b"\x89PNG", f"{len(png or b'')} bytes")
        admin.execute("CREATE TABLE gone (id int, emb embedding(512))")
        admin.execute("ALTER TABLE gone OWNER TO owner_x")
        connect("owner_x").execute("SELECT biomedclip_register_collection('gone', 'gone', 'id', 'emb', ARRAY[]::text[])")
        admin.execute("DROP TABLE gone")
        searched = sqlstate(connect("owner_x"), "SELECT * FROM biomedclip_search('gone', '{\"embedding\": [1]}')")
        dropped = connect("owner_x").execute("SELECT biomedclip_drop_collection('gone')").fetchone()[0]
        check("a collection whose table was dropped: searching it is 42P01; whoever registered it can still drop it",
              searched == "42P01" and dropped is True, f"{searched} {dropped}")
        check("another role cannot drop a collection (42501); the owner can",
              sqlstate(connect("ward_a"), "SELECT biomedclip_drop_collection('owned')") == "42501"
              and connect("owner_x").execute("SELECT biomedclip_drop_collection('owned')").fetchone()[0] is True, "")


def key():
    return open(os.path.join(DATADIR, "biomedclip_query_log.key"), "rb").read()


def query_log():
    marker = "ZX81QUOKKA"
    with connect("ward_a") as c:
        rows = search(c, {"text": f"{marker} pleural effusion"})
        check("with the query log off, no query_id and no row", rows[0][4] is None, str(rows[0][4]))
        check("a role cannot turn the query log off or on for itself (42501)", sqlstate(c, "SET biomedclip.query_log = on") == "42501", "")
    with connect() as admin:
        admin.execute(f"ALTER DATABASE {DB} SET biomedclip.query_log = on")
    text = f"  {marker}   Pleural\tEffusion "
    with connect("ward_a") as c:
        rows = search(c, {"text": text}, 5, {"modality": f"{marker}-FILTERVALUE"})
        rows = search(c, {"text": text}, 5, {"site": "A"})
        img_rows = search(c, {"image": base64.b64encode(PNG).decode()}, 3)
        check("ward_a cannot read the query log (42501) nor write it (42501)",
              sqlstate(c, "SELECT * FROM biomedclip.query_log") == "42501"
              and sqlstate(c, "INSERT INTO biomedclip.query_log (collection, role, query_kind, query_hmac, k, filter_columns, result_ids, distances, latency_ms) "
                              "VALUES ('x', 'ward_b', 'text', 'h', 1, '{}', '{}', '{}', 0)") == "42501", "")
    qid = rows[0][4]
    with connect("monitor") as m:
        logged = m.execute("SELECT role, collection, query_kind, query_hmac, k, filter_columns, result_ids, distances, model_sha256, latency_ms "
                           "FROM biomedclip.query_log WHERE query_id = %s", (qid,)).fetchone()
        leak = m.execute("SELECT count(*) FROM biomedclip.query_log l WHERE l::text ILIKE %s OR l::text ILIKE '%%filtervalue%%'", (f"%{marker}%",)).fetchone()[0]
        img = m.execute("SELECT query_hmac FROM biomedclip.query_log WHERE query_id = %s", (img_rows[0][4],)).fetchone()[0]
    with connect() as admin:
        sha = admin.execute("SELECT biomedclip_model_info() ->> 'manifest_sha256'").fetchone()[0]
    norm = " ".join(unicodedata.normalize("NFC", text).lower().split())
    want = hmac.new(key(), b"text\x00" + norm.encode(), hashlib.sha256).hexdigest()
    want_img = hmac.new(key(), b"image\x00" + PNG, hashlib.sha256).hexdigest()
    check("the log row: the caller's role, the model's manifest SHA-256, k, filter names, result ids and distances as returned",
          logged[0] == "ward_a" and logged[1] == "studies" and logged[2] == "text" and logged[4] == 5 and logged[5] == ["site"]
          and logged[6] == [r[1] for r in rows] and np.allclose(logged[7], [r[2] for r in rows]) and logged[8] == sha and logged[9] > 0,
          f"{logged[0]}, {logged[2]}, k {logged[4]}, filters {logged[5]}")
    check("the query hash is HMAC-SHA-256 under the server's key file of the normalized text (Python's hmac), and of the image bytes",
          logged[3] == want and img == want_img, f"{logged[3][:12]}… vs {want[:12]}…")
    check("the query text and the filter values appear nowhere in the log (marker strings)", leak == 0, f"{leak} rows")
    return qid, rows


def feedback(qid, rows):
    with connect("ward_a") as c:
        fid = c.execute("SELECT biomedclip_feedback(%s, %s, 'click', 'patient John Doe said so')", (qid, rows[1][1])).fetchone()[0]
        bad_action = sqlstate(c, "SELECT biomedclip_feedback(%s, %s, 'like')", (qid, rows[0][1]))
        not_result = sqlstate(c, "SELECT biomedclip_feedback(%s, '999999', 'click')", (qid,))
        corr = sqlstate(c, "SELECT biomedclip_feedback(%s, '999999', 'correction')", (qid,))
        direct = sqlstate(c, "INSERT INTO biomedclip.query_feedback (query_id, role, result_id, action) VALUES (%s, 'ward_a', '1', 'click')", (qid,))
    with connect("ward_b") as c:
        other = sqlstate(c, "SELECT biomedclip_feedback(%s, %s, 'wrong')", (qid, rows[0][1]))
    with connect() as admin:
        row = admin.execute("SELECT role, result_rank, action, note FROM biomedclip.query_feedback WHERE feedback_id = %s", (fid,)).fetchone()
        admin.execute(f"ALTER DATABASE {DB} SET biomedclip.query_log_notes = on")
    with connect("ward_a") as c:
        fid2 = c.execute("SELECT biomedclip_feedback(%s, %s, 'flag', 'keep this note')", (qid, rows[0][1])).fetchone()[0]
    with connect() as admin:
        note2 = admin.execute("SELECT note FROM biomedclip.query_feedback WHERE feedback_id = %s", (fid2,)).fetchone()[0]
        admin.execute(f"ALTER DATABASE {DB} RESET biomedclip.query_log_notes")
    check("feedback records the role and the result's rank; the note is dropped while query_log_notes is off, kept when on",
          row == ("ward_a", 2, "click", None) and note2 == "keep this note", f"{row}, {note2!r}")
    check("feedback: unknown action 22023, an id not in the results 22023 (a correction may name any), another role's search 42704, "
          "direct INSERT 42501", (bad_action, not_result, corr, other, direct) == ("22023", "22023", None, "42704", "42501"),
          str((bad_action, not_result, corr, other, direct)))


def numpy_psi(base, cur):
    base, cur = np.sort(np.asarray(base)), np.asarray(cur)
    edges = np.unique(np.quantile(base, np.arange(1, 10) / 10))
    b = np.bincount(np.searchsorted(edges, base, side="left"), minlength=len(edges) + 1) / len(base)
    a = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1) / len(cur)
    a, b = np.maximum(a, 1e-4), np.maximum(b, 1e-4)
    return float(np.sum((a - b) * np.log(a / b)))


def drift():
    """Log rows written as the superuser at known times: a baseline 20 days ago (2,000 searches), then three groups of 400
    50, 26 and 2 hours ago (three UTC days), the third with shifted top-1 distances and the
    second with corrections. The expected numbers are numpy's, grouped by the rows' UTC days."""
    now = dt.datetime.now(dt.timezone.utc)
    r = np.random.default_rng(5)
    rows = []  # (at, distances, clicked ranks, corrected)
    for i in range(2000):
        rows.append((now - dt.timedelta(days=20, seconds=-30 * i), np.sort(r.uniform(0.2, 0.5, 5)), [1] if i % 4 == 0 else [], False))
    for hours, shift, corrections in [(50, 0.0, 0), (26, 0.0, 60), (2, 0.25, 0)]:
        for i in range(400):
            rows.append((now - dt.timedelta(hours=hours, seconds=-i), np.sort(r.uniform(0.2, 0.5, 5) + shift), [2] if i % 5 == 0 else [], i < corrections))
    base = [d[0] for at, d, _, _ in rows if at < now - dt.timedelta(days=3)]
    groups = {}
    for at, d, cl, corr in rows:
        if at >= now - dt.timedelta(days=3):
            groups.setdefault(str(at.date()), []).append((d, cl, corr))
    with connect() as admin:
        admin.execute("TRUNCATE biomedclip.query_log CASCADE")
        for at, d, cl, corr in rows:
            qid = admin.execute("INSERT INTO biomedclip.query_log (at, collection, role, query_kind, query_hmac, k, filter_columns, result_ids, distances, latency_ms) "
                                "VALUES (%s, 'studies', 'ward_a', 'text', 'h', 5, '{}', ARRAY['1','2','3','4','5'], %s, 1) RETURNING query_id",
                                (at, d.tolist())).fetchone()[0]
            for rank in cl:
                admin.execute("INSERT INTO biomedclip.query_feedback (query_id, role, result_id, result_rank, action) VALUES (%s, 'ward_a', %s, %s, 'click')",
                              (qid, str(rank), rank))
            if corr:
                admin.execute("INSERT INTO biomedclip.query_feedback (query_id, role, result_id, result_rank, action) VALUES (%s, 'ward_a', '1', 1, 'wrong')", (qid,))
    with connect("monitor") as m:
        rep = m.execute("SELECT biomedclip_drift_report('3 days', tstzrange(now() - interval '30 days', now() - interval '3 days'))").fetchone()[0]
    denied = sqlstate(connect("ward_a"), "SELECT biomedclip_drift_report('3 days')")
    got = {d["day"]: d for d in rep["collections"]["studies"]["days"]}
    errs = []
    for day, items in groups.items():
        g = got.get(day)
        if g is None:
            errs.append(f"{day} missing")
            continue
        top1 = [d[0] for d, _, _ in items]
        allk = np.concatenate([d for d, _, _ in items])
        for key_, vals in [("top1_distance", top1), ("topk_distance", allk)]:
            for q in ("p10", "p50", "p90"):
                if abs(g[key_][q] - np.quantile(vals, int(q[1:]) / 100)) > 1e-9:
                    errs.append(f"{day} {key_} {q}")
        if abs(g["psi_top1"] - numpy_psi(base, top1)) > 1e-9:
            errs.append(f"{day} psi {g['psi_top1']} vs {numpy_psi(base, top1)}")
        ctr = [sum(rank in cl for _, cl, _ in items) / len(items) for rank in range(1, 6)]
        corr = sum(c for _, _, c in items) / len(items)
        if not np.allclose(g["click_through_by_rank"], ctr) or abs(g["correction_rate"] - corr) > 1e-12 or g["queries"] != len(items):
            errs.append(f"{day} ctr/corrections/queries")
    check("drift report per UTC day: quantiles (numpy), PSI against the baseline (numpy), click-through by rank, correction rate",
          not errs and set(got) == set(groups), f"days {sorted(got)} vs {sorted(groups)}; {errs[:4]}")
    shifted = str((now - dt.timedelta(hours=2)).date())
    corrected = str((now - dt.timedelta(hours=26)).date())
    quiet = str((now - dt.timedelta(hours=50)).date())
    flags = {d: got[d]["flags"] for d in got}
    check("flags: the shifted day has top1_distance_shift, the corrected day corrections_up, the quiet day none",
          len(flags) == 3 and "top1_distance_shift" in flags[shifted] and "corrections_up" in flags[corrected] and flags[quiet] == [],
          str(flags))
    check("the drift report needs the monitor job (42501 for an analyst)", denied == "42501", str(denied))


def query_adapters():
    """A query may name a residual adapter: the query's embedding goes through that adapter's
    tower (text for text queries, image for image and DICOM ones) before the search, and the log
    names it. Checked against numpy applying the stored weights to the model's embedding, then
    numpy's exact top 10 of the visible rows."""
    with connect() as admin:
        # Each image paired with another row's embedding: an adapter that has to move (a pairing
        # of rows with themselves is already aligned and would leave the rankings as they were).
        admin.execute("SELECT biomedclip_train_adapter('qa', 'SELECT a.id::text AS pair_id, a.emb AS image, b.emb AS text "
                      "FROM studies a JOIN studies b ON b.id = (a.id * 7 + 3) % 400 WHERE a.id < 400', "
                      "'{\"epochs\": 5, \"lr\": 0.05, \"seed\": 1, \"hidden\": 16, \"replace\": true}')")
        w = admin.execute("SELECT alpha, hidden, dim, image_w1, image_w2, text_w1, text_w2 FROM biomedclip.adapters WHERE name = 'qa'").fetchone()
        x_text = np.array(parse(admin.execute("SELECT biomedclip_embed_text('pleural effusion')::text").fetchone()[0]), dtype=np.float64)
        x_image = np.array(parse(admin.execute("SELECT biomedclip_embed_image(%s)::text", (PNG,)).fetchone()[0]), dtype=np.float64)
    alpha, h, d = w[0], w[1], w[2]
    iw1, iw2, tw1, tw2 = (np.array(w[k]).reshape(s) for k, s in ((3, (h, d)), (4, (d, h)), (5, (h, d)), (6, (d, h))))
    adapted = {"text": x_text + alpha * np.maximum(x_text @ tw1.T, 0) @ tw2.T,
               "image": x_image + alpha * np.maximum(x_image @ iw1.T, 0) @ iw2.T}
    plain = {"text": x_text, "image": x_image}
    queries = {"text": {"text": "pleural effusion"}, "image": {"image": base64.b64encode(PNG).decode()}}
    results = {}
    with connect("ward_a") as c:
        c.execute("SET ivf.probes = 20")
        for kind, q in queries.items():
            rows = search(c, dict(q, adapter="qa"))
            want, dist = exact(adapted[kind], lambda i: SITE[i] == "A")
            unadapted, _ = exact(plain[kind], lambda i: SITE[i] == "A")
            results[kind] = ([r[1] for r in rows] == want and np.allclose([r[2] for r in rows], dist, atol=1e-5), want != unadapted, rows[0][4])
        codes = (sqlstate(c, "SELECT * FROM biomedclip_search('studies', %s)", (json.dumps({"embedding": [1.0] * DIM, "adapter": "qa"}),)),
                 sqlstate(c, "SELECT * FROM biomedclip_search('studies', '{\"text\": \"a\", \"adapter\": \"nope\"}')"),
                 sqlstate(c, "SELECT * FROM biomedclip_search('studies', '{\"text\": \"a\", \"adapter\": 3}')"))
    with connect("monitor") as m:
        logged = [m.execute("SELECT adapter FROM biomedclip.query_log WHERE query_id = %s", (results[k][2],)).fetchone()[0] for k in queries]
    check("a query naming an adapter ranks as numpy's exact top 10 for the adapter's tower applied to the model's embedding "
          "(and not as the plain embedding would); the log names the adapter",
          all(r[0] and r[1] for r in results.values()) and logged == ["qa", "qa"],
          f"{ {k: r[:2] for k, r in results.items()} } (equal to numpy, differs from unadapted); logged {logged}")
    check("an embedding query with an adapter 22023 (its tower is unknown), an unknown adapter 42704, a non-string adapter 22023",
          codes == ("22023", "42704", "22023"), str(codes))


setup()
correctness()
thumbnails_and_registry()
qid, rows = query_log()
query_adapters()
feedback(qid, rows)
drift()
finish()
