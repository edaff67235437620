"""Security and model-registry checks, from outside, against a running cluster:

1. search_path hijack: an attacker role with EXECUTE on every biomedclip_* function and a schema
   of its own plants traps for now(), lower(text), length(text), to_jsonb(text), + on int and
   bigint and = on text, sets search_path = its schema first, and calls every biomedclip_*
   function in a fresh session (so the model loads there). No trap may run as anyone but the
   attacker, and a table it does not own stays unowned by it.
2. Catalog sweep: every function of the extension has a privilege decision below; the model
   functions are not executable by PUBLIC according to proacl, a role without grants is refused
   by each of them, and calling every PUBLIC biomedclip_* function leaves ONNX Runtime unloaded
   in that backend (so none of them runs the model).
3. Model loads write nothing in the caller's statement: the first call works in a parallel
   plan, a read-only transaction and REPEATABLE READ, and the load still reaches
   biomedclip.models / biomedclip.model_activity (through the registry worker); a parallel plan
   loads exactly one model.

Usage: security_suite.py PORT
"""
import base64
import os
import re
import sys
import time

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from suite import SHARED, check, finish, fresh_database  # noqa: E402

PORT = int(sys.argv[1])
DB = "biomedclip_security"

# The privilege decision for every function of the extension whose name starts with biomedclip_:
# "deny" (runs the model or reads model state: not granted to PUBLIC) or "public".
DECISIONS = {
    "biomedclip_embed_image": "deny", "biomedclip_embed_text": "deny", "biomedclip_embed_images": "deny",
    "biomedclip_embed_texts": "deny", "biomedclip_tokenize": "deny", "biomedclip_preprocess": "deny",
    "biomedclip_model_info": "deny", "biomedclip_load_model": "deny", "biomedclip_zero_shot": "deny",
    "biomedclip_zero_shot_logits": "deny", "biomedclip_save_calibration": "deny", "biomedclip_drop_calibration": "deny",
    "biomedclip_prompt_cache_misses": "deny", "biomedclip_embed_dicom": "deny",
    "biomedclip_slide_patches": "deny", "biomedclip_embed_slide": "deny",
    "biomedclip_softmax": "public", "biomedclip_calibration_accum": "public",
    "biomedclip_fit_temperature_final": "public", "biomedclip_reliability_final": "public",
    "biomedclip_fit_temperature": "public", "biomedclip_reliability": "public",
    "biomedclip_render_dicom": "public", "biomedclip_dicom_info": "public",
    "biomedclip_window_presets": "public", "biomedclip_slide_levels": "public",
    "biomedclip_render_slide_region": "public", "biomedclip_vector_combine": "public",
    "biomedclip_job_functions": "public", "biomedclip_grant": "deny", "biomedclip_revoke": "deny",
    "biomedclip_register_collection": "deny", "biomedclip_drop_collection": "deny", "biomedclip_search": "deny",
    "biomedclip_thumbnail": "deny", "biomedclip_feedback": "deny", "biomedclip_drift_report": "deny",
    "biomedclip_train_probe": "deny", "biomedclip_probe": "deny", "biomedclip_train_adapter": "deny",
    "biomedclip_adapt_image": "deny", "biomedclip_adapt_text": "deny", "biomedclip_training_progress": "deny",
    "biomedclip_provenance": "deny", "biomedclip_image_features": "deny", "biomedclip_text_features": "deny",
    "biomedclip_project_image": "deny", "biomedclip_project_text": "deny",
}


def connect(user="postgres", **kw):
    return psycopg.connect(host="127.0.0.1", port=PORT, user=user, dbname=DB, autocommit=True, **kw)


def data(path):
    return open(os.path.join(SHARED, path), "rb").read()


PNG = data("biomedclip/example_images/" + sorted(os.listdir(os.path.join(SHARED, "biomedclip/example_images")))[0])
DICOM = data("dicom/" + sorted(f for f in os.listdir(os.path.join(SHARED, "dicom")) if f.startswith("CT"))[0])
SVS = data("wsi/CMU-1-Small-Region.svs")
FIT = '{"temperature": 1.5, "ece_before": 0.1, "ece_after": 0.05, "n": 10}'

# One call per function, with arguments that succeed.
CALLS = {
    "biomedclip_embed_image": ("SELECT embedding_dims(biomedclip_embed_image(%s))", (PNG,)),
    "biomedclip_embed_text": ("SELECT embedding_dims(biomedclip_embed_text('Pleural Effusion'))", ()),
    "biomedclip_embed_images": ("SELECT cardinality(biomedclip_embed_images(ARRAY[%s::bytea]))", (PNG,)),
    "biomedclip_embed_texts": ("SELECT cardinality(biomedclip_embed_texts(ARRAY['a', 'b']))", ()),
    "biomedclip_tokenize": ("SELECT cardinality(biomedclip_tokenize('Lower Length'))", ()),
    "biomedclip_preprocess": ("SELECT cardinality(biomedclip_preprocess(%s))", (PNG,)),
    "biomedclip_model_info": ("SELECT biomedclip_model_info() ->> 'precision'", ()),
    "biomedclip_load_model": ("SELECT biomedclip_load_model() ->> 'precision'", ()),
    "biomedclip_zero_shot": ("SELECT count(*) FROM biomedclip_zero_shot(biomedclip_embed_text('x'), ARRAY['a', 'b'])", ()),
    "biomedclip_zero_shot_logits": ("SELECT cardinality(biomedclip_zero_shot_logits(biomedclip_embed_text('x'), ARRAY['a'], ARRAY['{}']))", ()),
    "biomedclip_save_calibration": (f"SELECT biomedclip_save_calibration('sec_cal', '{FIT}', ARRAY['a', 'b'])", ()),
    "biomedclip_drop_calibration": ("SELECT biomedclip_drop_calibration('sec_cal')", ()),
    "biomedclip_prompt_cache_misses": ("SELECT biomedclip_prompt_cache_misses()", ()),
    "biomedclip_embed_dicom": ("SELECT embedding_dims(biomedclip_embed_dicom(%s))", (DICOM,)),
    "biomedclip_slide_patches": ("SELECT count(*) FROM biomedclip_slide_patches(%s, max_patches => 2)", (SVS,)),
    "biomedclip_embed_slide": ("SELECT embedding_dims(biomedclip_embed_slide(%s, max_patches => 2))", (SVS,)),
    "biomedclip_softmax": ("SELECT biomedclip_softmax(ARRAY[1.0, 2.0]::float8[])", ()),
    "biomedclip_fit_temperature": ("SELECT biomedclip_fit_temperature(ARRAY[1.0, 0.0]::float8[], 1) FROM generate_series(1, 3)", ()),
    "biomedclip_reliability": ("SELECT biomedclip_reliability(ARRAY[1.0, 0.0]::float8[], 1) FROM generate_series(1, 3)", ()),
    "biomedclip_render_dicom": ("SELECT length(biomedclip_render_dicom(%s)) > 0", (DICOM,)),
    "biomedclip_dicom_info": ("SELECT biomedclip_dicom_info(%s) ->> 'modality'", (DICOM,)),
    "biomedclip_window_presets": ("SELECT count(*) FROM biomedclip_window_presets()", ()),
    "biomedclip_slide_levels": ("SELECT count(*) FROM biomedclip_slide_levels(%s)", (SVS,)),
    "biomedclip_render_slide_region": ("SELECT length(biomedclip_render_slide_region(%s, 0, 0, 16, 16))", (SVS,)),
    "biomedclip_job_functions": ("SELECT count(*) FROM biomedclip_job_functions('analyst')", ()),
    # Without grant options the GRANTs inside only warn ("no privileges were granted").
    "biomedclip_grant": ("SELECT count(*) FROM biomedclip_grant('attacker', 'auditor')", ()),
    "biomedclip_revoke": ("SELECT count(*) FROM biomedclip_revoke('attacker', 'auditor')", ()),
    # Search: the attacker owns public.sec_items (collection 'sec', set up below) and one logged search.
    "biomedclip_register_collection": ("SELECT biomedclip_register_collection('sec2', 'public.sec_items', 'id', 'emb', ARRAY['label'], 'thumb', true)", ()),
    "biomedclip_drop_collection": ("SELECT biomedclip_drop_collection('sec2')", ()),
    "biomedclip_search": ("SELECT count(*) FROM biomedclip_search('sec', '{\"text\": \"pleural effusion\"}', 2, '{\"label\": \"a\"}')", ()),
    "biomedclip_thumbnail": ("SELECT biomedclip_thumbnail('sec', '1')", ()),
    "biomedclip_feedback": ("SELECT biomedclip_feedback((SELECT max(query_id) FROM biomedclip.query_log), '1', 'click')", ()),
    "biomedclip_drift_report": ("SELECT biomedclip_drift_report('1 day')", ()),
    "biomedclip_train_probe": ("SELECT biomedclip_train_probe('sec_probe', 'SELECT id AS example_id, emb AS embedding, label FROM public.sec_items', "
                               "'{\"replace\": true}')", ()),
    "biomedclip_probe": ("SELECT count(*) FROM biomedclip_probe('sec_probe', biomedclip_embed_text('x'))", ()),
    "biomedclip_train_adapter": ("SELECT biomedclip_train_adapter('sec_adapter', 'SELECT id AS pair_id, emb AS image, emb AS text FROM public.sec_items', "
                                 "'{\"replace\": true, \"epochs\": 2}')", ()),
    "biomedclip_adapt_image": ("SELECT embedding_dims(biomedclip_adapt_image('sec_adapter', biomedclip_embed_text('x')))", ()),
    "biomedclip_adapt_text": ("SELECT embedding_dims(biomedclip_adapt_text('sec_adapter', biomedclip_embed_text('x')))", ()),
    "biomedclip_training_progress": ("SELECT count(*) FROM biomedclip_training_progress()", ()),
    "biomedclip_provenance": ("SELECT biomedclip_provenance(now()) ? 'models'", ()),
    "biomedclip_image_features": ("SELECT cardinality(biomedclip_image_features(ARRAY[%s::bytea]))", (PNG,)),
    "biomedclip_text_features": ("SELECT embedding_dims(biomedclip_text_features('Pleural Effusion'))", ()),
    "biomedclip_project_image": ("SELECT embedding_dims(biomedclip_project_image(biomedclip_image_features(%s)))", (PNG,)),
    "biomedclip_project_text": ("SELECT embedding_dims(biomedclip_project_text((biomedclip_text_features(ARRAY['x']))[1]))", ()),
}
# Called only through the aggregates above.
INTERNAL = {"biomedclip_calibration_accum", "biomedclip_fit_temperature_final", "biomedclip_reliability_final",
            "biomedclip_vector_combine"}

TRAPS = """
CREATE TABLE trap.log (who name, what text);
CREATE FUNCTION trap.note(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO trap.log VALUES (pg_catalog.current_user(), what);
  IF pg_catalog.current_user() OPERATOR(pg_catalog.<>) 'attacker' THEN
    EXECUTE 'ALTER TABLE public.secret_notes OWNER TO attacker';
  END IF;
END $$;
CREATE FUNCTION trap.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION trap.lower(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('lower'); RETURN pg_catalog.lower($1); END $$;
CREATE FUNCTION trap.length(text) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('length'); RETURN pg_catalog.length($1); END $$;
CREATE FUNCTION trap.to_jsonb(text) RETURNS jsonb LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('to_jsonb'); RETURN pg_catalog.to_jsonb($1); END $$;
CREATE FUNCTION trap.plus4(integer, integer) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('int + int'); RETURN $1 OPERATOR(pg_catalog.+) $2; END $$;
CREATE OPERATOR trap.+ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = trap.plus4);
CREATE FUNCTION trap.plus8(bigint, bigint) RETURNS bigint LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('bigint + bigint'); RETURN $1 OPERATOR(pg_catalog.+) $2; END $$;
CREATE OPERATOR trap.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = trap.plus8);
CREATE FUNCTION trap.texteq(text, text) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM trap.note('text = text'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR trap.= (LEFTARG = text, RIGHTARG = text, FUNCTION = trap.texteq);
"""


def setup():
    fresh_database(PORT, DB, ("attacker", "nogrants"))
    with connect() as c:
        c.execute("CREATE EXTENSION biomedclip")
        c.execute("CREATE TABLE public.secret_notes (id int, note text)")
        c.execute("INSERT INTO public.secret_notes VALUES (1, 'patient note')")
        c.execute("ALTER TABLE public.secret_notes ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE SCHEMA trap AUTHORIZATION attacker")
        c.execute("GRANT CREATE ON SCHEMA public TO attacker")
        for name in DECISIONS:
            for (oid,) in c.execute("SELECT oid::regprocedure FROM pg_proc WHERE proname = %s AND prokind = 'f'", (name,)).fetchall():
                c.execute(f"GRANT EXECUTE ON FUNCTION {oid} TO attacker")
        c.execute("GRANT SELECT ON biomedclip.models TO attacker")
        if c.execute("SELECT to_regclass('biomedclip.model_activity')").fetchone()[0]:  # absent before 0.2.0
            c.execute("GRANT SELECT ON biomedclip.model_activity TO attacker")
    with connect("attacker") as c:
        c.execute(TRAPS)
        c.execute("CREATE TABLE public.sec_items (id int, label text, emb embedding(512), thumb bytea)")
        c.execute("INSERT INTO public.sec_items SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, biomedclip_embed_text('finding ' || i), '\\x01' "
                  "FROM generate_series(1, 8) i")
        c.execute("SELECT biomedclip_register_collection('sec', 'public.sec_items', 'id', 'emb', ARRAY['label'], 'thumb')")
    with connect() as c:
        # One logged search of the attacker's (feedback needs one); the log is readable to it for the drift report.
        c.execute("INSERT INTO biomedclip.query_log (role, collection, query_kind, query_hmac, k, filter_columns, result_ids, distances, latency_ms) "
                  "VALUES ('attacker', 'sec', 'text', 'h', 1, '{}', ARRAY['1'], ARRAY[0.5], 1)")
        c.execute("GRANT SELECT ON biomedclip.query_log, biomedclip.query_feedback TO attacker")
        # biomedclip_provenance reads the training runs as its caller (the 'auditor' job grants this).
        if c.execute("SELECT to_regclass('biomedclip.training_runs')").fetchone()[0]:
            c.execute("GRANT SELECT ON biomedclip.training_runs TO attacker")


def extension_functions(c):
    return c.execute("""
        SELECT p.oid::regprocedure::text, p.proname, p.prokind,
               EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
        FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'biomedclip'
        WHERE p.proname LIKE 'biomedclip%%' ORDER BY 1""").fetchall()


def hijack():
    attacker_path = "SET search_path = trap, pg_catalog, public"
    failures = []
    for name, (sql, args) in CALLS.items():
        # A fresh session per function: the model (and ONNX Runtime) loads inside the call.
        with connect("attacker") as c:
            c.execute(attacker_path)
            try:
                c.execute(sql, args).fetchall()
            except psycopg.Error as e:
                failures.append(f"{name}: {e.diag.sqlstate} {str(e).strip()[:80]}")
    check("every biomedclip_* function runs for the attacker under its own search_path", not failures, "; ".join(failures[:3]))
    time.sleep(1.5)  # let the registry worker record the loads (it is not subject to the traps either)
    with connect() as c:
        foreign = c.execute("SELECT who, what FROM trap.log WHERE who <> 'attacker'").fetchall()
        owner = c.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'secret_notes'").fetchone()[0]
    check("no trap ever ran as anyone but the attacker", not foreign, f"{len(foreign)} foreign trap calls: {foreign[:4]}")
    check("the attacker did not become owner of a table it cannot read", owner == "postgres", f"owner {owner}")
    # The traps are live: an attacker query that uses them unqualified does fire them (as itself).
    with connect("attacker") as c:
        c.execute(attacker_path)
        c.execute("SELECT now(), lower('A'), length('a'), to_jsonb('a'::text), 1 + 1, 1::bigint + 1::bigint, 'a'::text = 'a'")
    with connect() as c:
        fired = {r[0] for r in c.execute("SELECT what FROM trap.log WHERE who = 'attacker'").fetchall()}
    check("the traps fire when resolved through the attacker's search_path", len(fired) == 7, f"fired: {sorted(fired)}")


def catalog_sweep():
    with connect() as c:
        funcs = extension_functions(c)
    undecided = sorted({name for _, name, _, _ in funcs if name not in DECISIONS})
    check("every biomedclip_* function of the extension has a privilege decision", not undecided,
          f"{len(funcs)} functions; without a decision: {undecided}")
    leaked = sorted(sig for sig, name, _, public in funcs if DECISIONS.get(name) == "deny" and public)
    check("no model function is executable by PUBLIC (proacl)", not leaked, f"PUBLIC can execute: {leaked}")
    # Tried for real as a role without grants: each default-deny function is refused.
    not_refused = []
    for name, decision in DECISIONS.items():
        if decision != "deny":
            continue
        sql, args = CALLS[name]
        with connect("nogrants") as c:
            try:
                c.execute(sql, args)
                not_refused.append(name)
            except psycopg.errors.InsufficientPrivilege:
                pass
            except psycopg.Error as e:
                not_refused.append(f"{name} ({e.diag.sqlstate})")
    denied = sum(1 for d in DECISIONS.values() if d == "deny")
    check("a role without grants is refused by every default-deny function (42501)", not not_refused,
          f"{denied} functions tried; not refused: {not_refused}")
    # Everything PUBLIC may call leaves the backend without ONNX Runtime: none of it runs the model.
    with connect("nogrants") as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        errors = []
        public_names = sorted({name for _, name, kind, public in funcs if public and name not in INTERNAL})
        for name in public_names:
            if name not in CALLS:
                errors.append(f"{name}: no call in the suite")
                continue
            sql, args = CALLS[name]
            try:
                c.execute(sql, args).fetchall()
            except psycopg.Error as e:
                errors.append(f"{name}: {str(e).strip()[:60]}")
        maps = open(f"/proc/{pid}/maps").read()
    check("every PUBLIC biomedclip_* function runs without loading the model", not errors and "onnxruntime" not in maps,
          f"{len(public_names)} functions called; ONNX Runtime mapped: {'onnxruntime' in maps}; errors: {errors[:3]}")


def loads_of(c, sha):
    row = c.execute("SELECT load_count FROM biomedclip.models WHERE manifest_sha256 = %s", (sha,)).fetchone()
    return row[0] if row else 0


def wait_for_loads(c, sha, at_least, timeout=15.0):
    """The registry worker records loads asynchronously: wait until the count reaches `at_least`
    and then stays unchanged for a second."""
    end = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        n = loads_of(c, sha)
        if n != last:
            last, since = n, time.monotonic()
        elif n >= at_least and time.monotonic() - since >= 1.0:
            return n
        time.sleep(0.05)
    return last


def registry():
    with connect() as admin:
        sha = admin.execute("SELECT biomedclip_model_info() ->> 'manifest_sha256'").fetchone()[0]
        admin.execute("CREATE TABLE par_t AS SELECT i, 'finding ' || (i % 7) AS txt, "
                      "biomedclip_embed_text('seed')::embedding(512) AS emb FROM generate_series(1, 20000) i")
        admin.execute("ANALYZE par_t")
        base = wait_for_loads(admin, sha, 1)
        outcomes = {}
        cases = {
            "parallel plan (count with the model call in WHERE)":
                ["SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0",
                 "SET max_parallel_workers_per_gather = 2",
                 "SELECT count(*) FROM par_t WHERE emb <=> biomedclip_embed_text('pneumonia') < 2"],
            "read-only transaction": ["BEGIN READ ONLY", "SELECT embedding_dims(biomedclip_embed_text('x'))", "COMMIT"],
            "REPEATABLE READ": ["BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT count(*) FROM par_t",
                                "SELECT embedding_dims(biomedclip_embed_text('x'))", "COMMIT"],
            "inside a parallel-safe aggregate query": ["SET parallel_setup_cost = 0", "SET min_parallel_table_scan_size = 0",
                                                     "SELECT avg(emb <=> (SELECT biomedclip_embed_text('q'))) FROM par_t"],
        }
        for label, statements in cases.items():
            with connect() as c:
                try:
                    for s in statements:
                        c.execute(s)
                    outcomes[label] = "ok"
                except psycopg.Error as e:
                    outcomes[label] = f"{e.diag.sqlstate}: {str(e).strip()[:70]}"
        bad = {k: v for k, v in outcomes.items() if v != "ok"}
        check("a first model call works in a parallel plan, read-only and REPEATABLE READ transactions", not bad, str(bad or outcomes))
        after = wait_for_loads(admin, sha, base + len(cases))
        check("each of those sessions' loads is recorded by the registry worker", after == base + len(cases),
              f"load_count {base} -> {after} for {len(cases)} fresh sessions")
        # A parallel plan that embeds every row loads one model (in the leader), not one per worker.
        # Every load logs "biomedclip: using model" with its process id: count the lines the
        # statement's processes wrote (the registry's load_count can also take up a load of an
        # earlier session that waited in the spool for a background-worker slot).
        log_at = admin.execute("SELECT size FROM pg_stat_file('server.log')").fetchone()[0]
        with connect() as c:
            leader = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            for s in ("SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0",
                      "SET max_parallel_workers_per_gather = 2"):
                c.execute(s)
            plan = "\n".join(r[0] for r in c.execute(
                "EXPLAIN CREATE TABLE par_out AS SELECT i, biomedclip_embed_text(txt) AS emb FROM par_t WHERE i % 50 = 0").fetchall())
            c.execute("CREATE TABLE par_out AS SELECT i, biomedclip_embed_text(txt) AS emb FROM par_t WHERE i % 50 = 0")
            rows = c.execute("SELECT count(*) FROM par_out").fetchone()[0]
            log = admin.execute("SELECT pg_read_file('server.log', %s, (pg_stat_file('server.log')).size - %s)", (log_at, log_at)).fetchone()[0]
        loads = [int(m.group(1)) for m in re.finditer(r"\[(\d+)\] LOG:  biomedclip: using model", log)]
        final = wait_for_loads(admin, sha, after + 1)
        # The property checked is that no parallel worker loads (or connects to) a model. The leader
        # connected twice in 2 of about 9 service-mode CI runs (not reproduced in 50 runs since);
        # a session whose service connection was closed says so in the log, and the supervisor
        # says why (a restart or an exit): those lines are printed with the counts.
        service_lines = [ln.split("LOG:  ", 1)[-1] for ln in log.splitlines() if "inference service" in ln]
        check("a parallel CREATE TABLE AS that embeds 400 rows loads the model only in the leader (server log), and the registry records it",
              rows == 400 and loads and set(loads) == {leader} and final >= after + 1 and "Gather" in plan,
              f"rows {rows}, loads logged by the leader {loads.count(leader)} and by other processes {len(loads) - loads.count(leader)}, "
              f"registry load_count +{final - after}, parallel plan: {'Gather' in plan}"
              + (f"; the server log on the service: {service_lines}" if service_lines else ""))
        days = admin.execute("SELECT count(*), sum(loads) FROM biomedclip.model_activity WHERE manifest_sha256 = %s "
                             "AND day = (now() AT TIME ZONE 'UTC')::date", (sha,)).fetchone()
        check("biomedclip.model_activity answers which model was active today", days[0] == 1 and days[1] >= final - 1,
              f"rows {days[0]}, loads today {days[1]}")
        admin.execute("DROP TABLE par_t, par_out")


def main():
    setup()
    hijack()
    catalog_sweep()
    registry()
    finish()


if __name__ == "__main__":
    main()
