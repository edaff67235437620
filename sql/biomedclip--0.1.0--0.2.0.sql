-- biomedclip 0.1.0 -> 0.2.0. A test (tests/upgrade_suite.py) checks that the catalog after this
-- script equals a fresh 0.2.0 install, object by object.
\echo Use "ALTER EXTENSION biomedclip UPDATE TO '0.2.0'" to load this file. \quit

-- Vector types: pgvector parity.
-- A type category of their own, embedding preferred (CREATE TYPE ... CATEGORY, PREFERRED in a
-- fresh install; ALTER TYPE cannot change them): embedding_norm('[3,4]') is no longer ambiguous.
UPDATE pg_catalog.pg_type SET typcategory = 'Q', typispreferred = true WHERE oid = '@extschema@.embedding'::pg_catalog.regtype;
UPDATE pg_catalog.pg_type SET typcategory = 'Q' WHERE oid = '@extschema@.halfembedding'::pg_catalog.regtype;
-- embedding: || concatenation (within the dimension limit) and numeric[] casts (pgvector parity).
CREATE FUNCTION embedding_concat(embedding, embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_concat_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR || (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_concat);
CREATE FUNCTION array_numeric_to_embedding(numeric[], integer, boolean) RETURNS embedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN @extschema@.array_float8_to_embedding($1::pg_catalog.float8[], $2, $3);
CREATE CAST (numeric[] AS embedding) WITH FUNCTION array_numeric_to_embedding(numeric[], integer, boolean) AS ASSIGNMENT;

-- halfembedding: || concatenation (within the dimension limit) and numeric[] casts (pgvector parity).
CREATE FUNCTION halfembedding_concat(halfembedding, halfembedding) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_concat_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR || (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_concat);
CREATE FUNCTION array_numeric_to_halfembedding(numeric[], integer, boolean) RETURNS halfembedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN @extschema@.array_float8_to_halfembedding($1::pg_catalog.float8[], $2, $3);
CREATE CAST (numeric[] AS halfembedding) WITH FUNCTION array_numeric_to_halfembedding(numeric[], integer, boolean) AS ASSIGNMENT;

-- embedding * scalar (and scalar * embedding): every element times a number; overflow is an error.
CREATE FUNCTION embedding_scale(embedding, double precision) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_scale_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_scale(double precision, embedding) RETURNS embedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE RETURN @extschema@.embedding_scale($2, $1);
CREATE OPERATOR * (LEFTARG = embedding, RIGHTARG = double precision, PROCEDURE = embedding_scale, COMMUTATOR = *);
CREATE OPERATOR * (LEFTARG = double precision, RIGHTARG = embedding, PROCEDURE = embedding_scale, COMMUTATOR = *);

-- halfembedding * scalar (and scalar * halfembedding): every element times a number; overflow is an error.
CREATE FUNCTION halfembedding_scale(halfembedding, double precision) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_scale_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_scale(double precision, halfembedding) RETURNS halfembedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE RETURN @extschema@.halfembedding_scale($2, $1);
CREATE OPERATOR * (LEFTARG = halfembedding, RIGHTARG = double precision, PROCEDURE = halfembedding_scale, COMMUTATOR = *);
CREATE OPERATOR * (LEFTARG = double precision, RIGHTARG = halfembedding, PROCEDURE = halfembedding_scale, COMMUTATOR = *);

-- Model loads are recorded by a background worker, per model and per day.
CREATE TABLE biomedclip.model_activity (
    manifest_sha256 text NOT NULL,
    day             date NOT NULL,
    loads           bigint NOT NULL,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    PRIMARY KEY (manifest_sha256, day)
);
COMMENT ON TABLE biomedclip.model_activity IS 'Which model (manifest SHA-256) was loaded on which UTC day, how often, first and last time: the audit answer to "what was active on date X".';
GRANT SELECT ON biomedclip.model_activity TO PUBLIC;
-- What 0.1.0 knew: the first and the last load of each model.
INSERT INTO biomedclip.model_activity (manifest_sha256, day, loads, first_at, last_at)
SELECT manifest_sha256, pg_catalog.timezone('UTC', t)::pg_catalog.date, 1, t, t
FROM biomedclip.models, LATERAL (VALUES (first_loaded_at), (loaded_at)) AS v(t)
ON CONFLICT DO NOTHING;
COMMENT ON TABLE biomedclip.models IS 'Every model a backend has loaded, identified by the SHA-256 of its manifest (which lists the SHA-256 of each file). Written by the biomedclip model registry background worker, never inside a user''s statement.';

-- pg_dump keeps the rows of the tables the extension creates.
SELECT pg_catalog.pg_extension_config_dump('biomedclip.models', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.model_activity', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.calibrations', '');

-- Model functions run in the parallel leader only (one model copy per backend).
ALTER FUNCTION biomedclip_embed_image(bytea) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_embed_text(text) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_embed_images(bytea[]) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_embed_texts(text[]) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_tokenize(text) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_preprocess(bytea) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_model_info() PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_zero_shot(embedding, text[], text[], text) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_zero_shot_logits(embedding, text[], text[]) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_prompt_cache_misses() PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_embed_dicom(bytea, text, integer) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_slide_patches(bytea, integer, integer, double precision, integer) PARALLEL RESTRICTED;
ALTER FUNCTION biomedclip_embed_slide(bytea, text, embedding, integer, integer, double precision, integer, double precision) PARALLEL RESTRICTED;

-- Calibrations: SECURITY DEFINER with a pinned search_path; replace => true to overwrite; drop.
DROP FUNCTION biomedclip_save_calibration(text, jsonb, text[], text[]);
-- Stores a biomedclip_fit_temperature() result for the active model. SECURITY DEFINER (with
-- search_path pinned and every name qualified): a calibration steward needs EXECUTE on this
-- function and biomedclip_drop_calibration only, not table privileges or biomedclip_model_info.
-- An existing name is an error unless replace => true; a degenerate fit is refused.
CREATE FUNCTION biomedclip_save_calibration(name text, fit jsonb, labels text[],
                                            templates text[] DEFAULT ARRAY['this is a photo of {}'],
                                            replace boolean DEFAULT false)
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t pg_catalog.float8;
BEGIN
    IF fit IS NULL OR NOT (fit OPERATOR(pg_catalog.?) 'temperature') THEN
        RAISE EXCEPTION 'fit must be a biomedclip_fit_temperature() result (it has no "temperature")'
            USING ERRCODE = '22023';
    END IF;
    t := (fit OPERATOR(pg_catalog.->>) 'temperature')::pg_catalog.float8;
    IF t IS NULL OR NOT (t OPERATOR(pg_catalog.>) 0 AND t OPERATOR(pg_catalog.<) 'Infinity'::pg_catalog.float8) THEN
        RAISE EXCEPTION 'the fit''s temperature must be positive and finite, not %', t USING ERRCODE = '22023';
    END IF;
    IF (fit OPERATOR(pg_catalog.->>) 'at_search_bound') OPERATOR(pg_catalog.=) 'true' THEN
        RAISE EXCEPTION 'the fit is degenerate: its temperature % is the search bound', pg_catalog.round(t::pg_catalog.numeric, 4)
            USING ERRCODE = '22023', HINT = 'constant or perfectly separated logits carry no temperature; check the labelled sample';
    END IF;
    IF NOT replace AND EXISTS (SELECT 1 FROM biomedclip.calibrations c
                               WHERE c.name OPERATOR(pg_catalog.=) biomedclip_save_calibration.name) THEN
        RAISE EXCEPTION 'calibration "%" already exists', biomedclip_save_calibration.name
            USING ERRCODE = '42710', HINT = 'pass replace => true to overwrite it, or choose another name';
    END IF;
    INSERT INTO biomedclip.calibrations AS c (name, model_sha256, labels, templates, temperature, ece_before, ece_after, n)
    VALUES (biomedclip_save_calibration.name,
            @extschema@.biomedclip_model_info() OPERATOR(pg_catalog.->>) 'manifest_sha256',
            biomedclip_save_calibration.labels, biomedclip_save_calibration.templates, t,
            (fit OPERATOR(pg_catalog.->>) 'ece_before')::pg_catalog.float8,
            (fit OPERATOR(pg_catalog.->>) 'ece_after')::pg_catalog.float8,
            (fit OPERATOR(pg_catalog.->>) 'n')::pg_catalog.int8)
    ON CONFLICT ON CONSTRAINT calibrations_pkey DO UPDATE SET
        model_sha256 = EXCLUDED.model_sha256, labels = EXCLUDED.labels, templates = EXCLUDED.templates,
        temperature = EXCLUDED.temperature, ece_before = EXCLUDED.ece_before, ece_after = EXCLUDED.ece_after,
        n = EXCLUDED.n, fitted_at = pg_catalog.now();
END
$$;

-- Deletes a calibration; false when there was none.
CREATE FUNCTION biomedclip_drop_calibration(name text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM biomedclip.calibrations c WHERE c.name OPERATOR(pg_catalog.=) biomedclip_drop_calibration.name;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION biomedclip_save_calibration(text, jsonb, text[], text[], boolean), biomedclip_drop_calibration(text) FROM PUBLIC;

COMMENT ON FUNCTION biomedclip_embed_slide(bytea, text, embedding, integer, integer, double precision, integer, double precision) IS
    'One slide embedding: the mean of the patch embeddings (= avg() over biomedclip_slide_patches), or attention pooling with weights softmax(temperature * cos(patch, query)); temperature defaults to exp(logit_scale), the zero-shot logit scale (100 for BiomedCLIP).';

-- Tuning: what a build chose (lists, dims), how full each list is, and the index's size.
CREATE FUNCTION ivf_index_info(index regclass) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'ivf_index_info_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION ivf_index_info(regclass) IS
    'lists, dims, metric, element, rows, rows_per_list {min, max, mean, empty_lists}, imbalance (max / mean), pages, size_bytes, list_sizes of an ivf index (needs SELECT on its table)';

-- Recall of a query through the index against the same query as an exact scan (index scans off),
-- as VectorChord's vchordrq_evaluate_query_recall: the query returns one column of ids, e.g.
-- 'SELECT id FROM t ORDER BY emb <=> ''[...]'' LIMIT 10'. Runs as the caller, with the caller's
-- search_path for the query (it is the caller's own SQL); the wrapper's names are qualified.
CREATE FUNCTION ivf_evaluate_recall(query text) RETURNS double precision
    LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
    approx pg_catalog.text[];
    exact pg_catalog.text[];
    old_index pg_catalog.text := pg_catalog.current_setting('enable_indexscan');
    old_bitmap pg_catalog.text := pg_catalog.current_setting('enable_bitmapscan');
BEGIN
    EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(x::pg_catalog.text) FROM (%s) AS q(x)', query) INTO approx;
    PERFORM pg_catalog.set_config('enable_indexscan', 'off', true);
    PERFORM pg_catalog.set_config('enable_bitmapscan', 'off', true);
    BEGIN
        EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(x::pg_catalog.text) FROM (%s) AS q(x)', query) INTO exact;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_catalog.set_config('enable_indexscan', old_index, true);
        PERFORM pg_catalog.set_config('enable_bitmapscan', old_bitmap, true);
        RAISE;
    END;
    PERFORM pg_catalog.set_config('enable_indexscan', old_index, true);
    PERFORM pg_catalog.set_config('enable_bitmapscan', old_bitmap, true);
    IF exact IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(approx) AS a(v)
            WHERE a.v OPERATOR(pg_catalog.=) ANY (exact))::pg_catalog.float8
           OPERATOR(pg_catalog./) pg_catalog.cardinality(exact)::pg_catalog.float8;
END
$$;

-- Grants a role everything one job needs, so the privilege model is coherent: what one bundle
-- withholds is not reachable through another function it grants (embed_image reads DICOM too, so
-- it goes with embed_dicom).
--   'analyst': every function that runs the model or reports on it (embedding, tokenizing,
--              preprocessing, DICOM and slide embedding, zero-shot, model info);
--   'steward': 'analyst' plus saving and dropping calibrations and reloading the model;
--   'auditor': model info, provenance and training progress (which model, which hashes, which
--              adapters and probes when), with SELECT on biomedclip.training_runs; nothing that runs inference;
--   'monitor': the drift report, and SELECT on the query log and its feedback (granted with it).
-- 'analyst' includes searching collections, giving feedback and using probes and adapters; 'steward'
-- registering collections, training probes and adapters and watching the runs in progress.
-- Runs as the caller, who must be able to grant (the extension's owner or a superuser).
-- biomedclip_revoke(role, job) takes a bundle back.
CREATE FUNCTION biomedclip_job_functions(job text) RETURNS SETOF regprocedure
    LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT f::pg_catalog.regprocedure FROM pg_catalog.unnest(
        CASE WHEN job OPERATOR(pg_catalog.=) 'auditor' THEN ARRAY['@extschema@.biomedclip_model_info()',
            '@extschema@.biomedclip_provenance(timestamptz)', '@extschema@.biomedclip_training_progress()']
             WHEN job OPERATOR(pg_catalog.=) 'monitor' THEN ARRAY['@extschema@.biomedclip_drift_report(interval, tstzrange)']
             WHEN job OPERATOR(pg_catalog.=) ANY (ARRAY['analyst', 'steward']) THEN ARRAY[
            '@extschema@.biomedclip_model_info()', '@extschema@.biomedclip_embed_image(bytea)',
            '@extschema@.biomedclip_embed_text(text)', '@extschema@.biomedclip_embed_images(bytea[])',
            '@extschema@.biomedclip_embed_texts(text[])', '@extschema@.biomedclip_tokenize(text)',
            '@extschema@.biomedclip_preprocess(bytea)', '@extschema@.biomedclip_prompt_cache_misses()',
            '@extschema@.biomedclip_zero_shot(@extschema@.embedding, text[], text[], text)',
            '@extschema@.biomedclip_zero_shot_logits(@extschema@.embedding, text[], text[])',
            '@extschema@.biomedclip_embed_dicom(bytea, text, integer)',
            '@extschema@.biomedclip_slide_patches(bytea, integer, integer, double precision, integer)',
            '@extschema@.biomedclip_embed_slide(bytea, text, @extschema@.embedding, integer, integer, double precision, integer, double precision)',
            '@extschema@.biomedclip_search(text, jsonb, integer, jsonb)', '@extschema@.biomedclip_thumbnail(text, text)',
            '@extschema@.biomedclip_feedback(bigint, text, text, text)',
            '@extschema@.biomedclip_probe(text, @extschema@.embedding, double precision[])',
            '@extschema@.biomedclip_adapt_image(text, @extschema@.embedding)', '@extschema@.biomedclip_adapt_text(text, @extschema@.embedding)',
            '@extschema@.biomedclip_image_features(bytea)', '@extschema@.biomedclip_text_features(text)',
            '@extschema@.biomedclip_image_features(bytea[])', '@extschema@.biomedclip_text_features(text[])',
            '@extschema@.biomedclip_project_image(@extschema@.embedding)', '@extschema@.biomedclip_project_text(@extschema@.embedding)']
        END
        OPERATOR(pg_catalog.||) CASE WHEN job OPERATOR(pg_catalog.=) 'steward' THEN ARRAY[
            '@extschema@.biomedclip_save_calibration(text, jsonb, text[], text[], boolean)',
            '@extschema@.biomedclip_drop_calibration(text)', '@extschema@.biomedclip_load_model()',
            '@extschema@.biomedclip_register_collection(text, regclass, text, text, text[], text, boolean)',
            '@extschema@.biomedclip_drop_collection(text)', '@extschema@.biomedclip_train_probe(text, text, jsonb)',
            '@extschema@.biomedclip_train_adapter(text, text, jsonb)', '@extschema@.biomedclip_training_progress()']
            ELSE ARRAY[]::pg_catalog.text[] END) AS u(f)
$$;

CREATE FUNCTION biomedclip_grant(role name, job text) RETURNS SETOF regprocedure
    LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f pg_catalog.regprocedure;
    n integer := 0;
BEGIN
    FOR f IN SELECT * FROM @extschema@.biomedclip_job_functions(job) LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, role);
        IF job OPERATOR(pg_catalog.=) 'monitor' THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON biomedclip.query_log, biomedclip.query_feedback TO %I', role);
        END IF;
        IF job OPERATOR(pg_catalog.=) 'auditor' THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON biomedclip.training_runs TO %I', role);
        END IF;
        n := n OPERATOR(pg_catalog.+) 1;
        RETURN NEXT f;
    END LOOP;
    IF n OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION 'unknown job "%"', job USING ERRCODE = '22023', HINT = 'jobs: analyst, steward, auditor, monitor';
    END IF;
END
$$;

CREATE FUNCTION biomedclip_revoke(role name, job text) RETURNS SETOF regprocedure
    LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f pg_catalog.regprocedure;
    n integer := 0;
BEGIN
    FOR f IN SELECT * FROM @extschema@.biomedclip_job_functions(job) LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', f, role);
        IF job OPERATOR(pg_catalog.=) 'monitor' THEN
            EXECUTE pg_catalog.format('REVOKE SELECT ON biomedclip.query_log, biomedclip.query_feedback FROM %I', role);
        END IF;
        IF job OPERATOR(pg_catalog.=) 'auditor' THEN
            EXECUTE pg_catalog.format('REVOKE SELECT ON biomedclip.training_runs FROM %I', role);
        END IF;
        n := n OPERATOR(pg_catalog.+) 1;
        RETURN NEXT f;
    END LOOP;
    IF n OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION 'unknown job "%"', job USING ERRCODE = '22023', HINT = 'jobs: analyst, steward, auditor, monitor';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION biomedclip_grant(name, text), biomedclip_revoke(name, text) FROM PUBLIC;

-- Search for apps: registered collections, biomedclip_search (as the caller, so row-level
-- security applies), the de-identified query log with feedback, and the drift report.

-- What may be searched. Written only by biomedclip_register_collection / _drop_collection;
-- clients name a collection, never a table or a column.
CREATE TABLE biomedclip.collections (
    name              text PRIMARY KEY,
    table_oid         regclass NOT NULL,
    id_column         name NOT NULL,
    embedding_column  name NOT NULL,
    display_columns   name[] NOT NULL,
    thumbnail         text,
    registered_by     name NOT NULL DEFAULT CURRENT_USER,
    registered_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE biomedclip.collections IS 'Searchable collections: a table, its id, embedding and display columns, and an optional thumbnail (a bytea column, or an expression that renders one). Searches run as the caller, so the table''s privileges and row-level security decide what anyone sees.';
GRANT SELECT ON biomedclip.collections TO PUBLIC;

-- One row per search while biomedclip.query_log is on. Never the query text, image or embedding:
-- a keyed hash (HMAC-SHA-256 with a key kept in a file of the server) of the normalized text or
-- the image bytes. Written only by biomedclip_search; readable by roles granted SELECT (monitoring).
CREATE TABLE biomedclip.query_log (
    query_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    collection      text NOT NULL,
    role            name NOT NULL,
    model_sha256    text,
    adapter         text,
    query_kind      text NOT NULL CHECK (query_kind IN ('text', 'image', 'dicom', 'embedding')),
    query_hmac      text NOT NULL,
    k               integer NOT NULL,
    filter_columns  text[] NOT NULL,
    result_ids      text[] NOT NULL,
    distances       double precision[] NOT NULL,
    latency_ms      double precision NOT NULL
);
CREATE INDEX query_log_at ON biomedclip.query_log (at);
COMMENT ON TABLE biomedclip.query_log IS 'De-identified search log (biomedclip.query_log = on): who, when, which collection and model, a keyed hash of the query (never the query), the result ids and distances, latency.';

-- Clicks, relevance marks, corrections and flags on a logged search's results.
CREATE TABLE biomedclip.query_feedback (
    feedback_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_id     bigint NOT NULL REFERENCES biomedclip.query_log (query_id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    role         name NOT NULL,
    result_id    text NOT NULL,
    result_rank  integer,
    action       text NOT NULL CHECK (action IN ('click', 'relevant', 'wrong', 'correction', 'flag')),
    note         text
);
CREATE INDEX query_feedback_query ON biomedclip.query_feedback (query_id);
COMMENT ON TABLE biomedclip.query_feedback IS 'Feedback on logged searches (biomedclip_feedback). The free-text note is kept only when biomedclip.query_log_notes = on: people type names and findings into notes, so a note may hold PHI.';

SELECT pg_catalog.pg_extension_config_dump('biomedclip.collections', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.query_log', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.query_feedback', '');

-- Registers (or with replace => true re-registers) a collection. Checked as the caller: the
-- caller must own the table (or be a superuser), the columns must exist, the embedding column
-- must be an embedding, and a thumbnail that is not a bytea column is an SQL expression that every
-- searcher will run, so only a superuser may register one. The registry row is then written as
-- the extension's owner (callers get no table privilege on biomedclip.collections).
CREATE FUNCTION biomedclip_register_collection(name text, "table" regclass, id_column text, embedding_column text,
                                               display_columns text[], thumbnail text DEFAULT NULL,
                                               replace boolean DEFAULT false)
    RETURNS void AS 'MODULE_PATHNAME', 'biomedclip_register_collection_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Removes a collection (the caller must own its table or be a superuser); false when there was none.
CREATE FUNCTION biomedclip_drop_collection(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'biomedclip_drop_collection_wrapper' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION biomedclip_search(collection text, query jsonb, k integer DEFAULT 10, filters jsonb DEFAULT '{}')
    RETURNS TABLE (rank integer, id text, distance double precision, display jsonb, query_id bigint)
    AS 'MODULE_PATHNAME', 'biomedclip_search_wrapper' LANGUAGE C VOLATILE PARALLEL RESTRICTED COST 100000 ROWS 10;
COMMENT ON FUNCTION biomedclip_search(text, jsonb, integer, jsonb) IS
    'Top-k of a registered collection by cosine distance, as the caller (privileges and row-level security apply), through the collection''s index. query: {"text": ...}, {"image": base64}, {"dicom": base64, "window": ..., "frame": ...} or {"embedding": [...]}; filters: {"column": value} or {"column": {"gte": .., "lt": ..}} on display columns. query_id is the log row (NULL when biomedclip.query_log is off).';

CREATE FUNCTION biomedclip_thumbnail(collection text, id text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'biomedclip_thumbnail_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 10000;
COMMENT ON FUNCTION biomedclip_thumbnail(text, text) IS
    'The thumbnail of one row of a collection, as the caller (NULL when the row is not visible or has none).';

CREATE FUNCTION biomedclip_feedback(query_id bigint, result_id text, action text, note text DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'biomedclip_feedback_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION biomedclip_feedback(bigint, text, text, text) IS
    'Records a click, relevant, wrong, correction or flag on a result of one of the caller''s own logged searches; the note is kept only when biomedclip.query_log_notes = on.';

CREATE FUNCTION biomedclip_drift_report("window" interval DEFAULT '7 days', baseline tstzrange DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_drift_report_wrapper' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION biomedclip_drift_report(interval, tstzrange) IS
    'Per collection and UTC day of the window: queries, quantiles of top-1 and top-k distances, click-through by rank, correction rate, and the PSI of top-1 distances against the baseline period (default: the window before this one), with flags. Reads the query log as the caller.';

REVOKE ALL ON FUNCTION biomedclip_register_collection(text, regclass, text, text, text[], text, boolean),
    biomedclip_drop_collection(text), biomedclip_search(text, jsonb, integer, jsonb), biomedclip_thumbnail(text, text),
    biomedclip_feedback(bigint, text, text, text), biomedclip_drift_report(interval, tstzrange) FROM PUBLIC;

-- Light fine-tuning on stored embeddings: linear probes (multinomial logistic regression, with
-- optional tabular EHR features) trained in SQL, with every run recorded for audit.

-- Every training run: who trained what, on which rows (a fingerprint over them), with which
-- options (as given and as defaulted), the weights' SHA-256 and the metrics. Written only by the
-- training functions (as the extension's owner); not readable by PUBLIC (the query text may name
-- patients): grant SELECT to auditors.
CREATE TABLE biomedclip.training_runs (
    run_id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                 text NOT NULL CHECK (kind IN ('probe', 'residual', 'projection')),
    name                 text NOT NULL,
    base_model_sha256    text,
    weights_sha256       text NOT NULL,
    options_given        jsonb NOT NULL,
    options_used         jsonb NOT NULL,
    seed                 bigint NOT NULL,
    dataset_fingerprint  text NOT NULL,
    row_counts           jsonb NOT NULL,
    query                text NOT NULL,
    metrics              jsonb NOT NULL,
    status               text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    trained_by           name NOT NULL,
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    software_version     text NOT NULL
);
COMMENT ON TABLE biomedclip.training_runs IS 'Audit record of every probe or adapter training run: options, seed, dataset fingerprint (SHA-256 over the rows in example_id order), row counts, weights SHA-256, metrics, who and when.';

-- The probes themselves: weights with their SHA-256, verified on every use.
CREATE TABLE biomedclip.probes (
    name            text PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES biomedclip.training_runs (run_id),
    labels          text[] NOT NULL,
    dim             integer NOT NULL,
    features        integer NOT NULL,
    feature_mean    double precision[] NOT NULL,
    feature_scale   double precision[] NOT NULL,
    coef            double precision[] NOT NULL,
    intercept       double precision[] NOT NULL,
    temperature     double precision NOT NULL,
    weights_sha256  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE biomedclip.probes IS 'Linear probes trained by biomedclip_train_probe; used through biomedclip_probe (which checks the weights against weights_sha256).';

SELECT pg_catalog.pg_extension_config_dump('biomedclip.training_runs', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.probes', '');

CREATE FUNCTION biomedclip_train_probe(name text, examples_query text, options jsonb DEFAULT '{}') RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_train_probe_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION biomedclip_train_probe(text, text, jsonb) IS
    'Trains a linear probe (L2 multinomial logistic regression, scikit-learn''s objective) on the rows of examples_query, run as the caller: (example_id, embedding, label [, features float8[]]). Options: C (1), class_weight (null or "balanced"), val_fraction (0.2), seed (0), calibrate (true: temperature on the validation rows), replace (false). Records the run in biomedclip.training_runs.';

CREATE FUNCTION biomedclip_probe(name text, embedding embedding, features double precision[] DEFAULT NULL)
    RETURNS TABLE (label text, probability double precision, rank integer)
    AS 'MODULE_PATHNAME', 'biomedclip_probe_wrapper' LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 10;
COMMENT ON FUNCTION biomedclip_probe(text, embedding, double precision[]) IS
    'The calibrated class probabilities of a trained probe, ranked; features are the tabular values in training order (standardized as in training).';

REVOKE ALL ON FUNCTION biomedclip_train_probe(text, text, jsonb), biomedclip_probe(text, embedding, double precision[]) FROM PUBLIC;

-- Features before the projection (src/features_sql.rs): each tower's pooled output as the model
-- computes it, and the model's own projections (files in the model directory, hashed in its
-- manifest), so an archive's features are computed once and re-projected cheaply later.
-- project_image(image_features(x)) = embed_image(x) up to float rounding. 0A000 for model
-- directories written before features existed.
CREATE FUNCTION biomedclip_image_features(bytea) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_image_features_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 100000;
CREATE FUNCTION biomedclip_text_features(text) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_text_features_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 50000;
CREATE FUNCTION biomedclip_image_features(bytea[]) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'biomedclip_image_features_array_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 100000;
CREATE FUNCTION biomedclip_text_features(text[]) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'biomedclip_text_features_array_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 50000;
CREATE FUNCTION biomedclip_project_image(features embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_project_image_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 1000;
CREATE FUNCTION biomedclip_project_text(features embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_project_text_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 1000;
COMMENT ON FUNCTION biomedclip_image_features(bytea) IS
    'The image tower''s pooled features before its projection (768-d for BiomedCLIP), unnormalized; biomedclip_project_image turns them into the embedding.';
COMMENT ON FUNCTION biomedclip_text_features(text) IS
    'The text tower''s pooled features before its projection (768-d for BiomedCLIP), unnormalized; biomedclip_project_text turns them into the embedding.';
REVOKE ALL ON FUNCTION biomedclip_image_features(bytea), biomedclip_text_features(text), biomedclip_image_features(bytea[]),
    biomedclip_text_features(text[]), biomedclip_project_image(embedding), biomedclip_project_text(embedding) FROM PUBLIC;

-- Adapters, trained on pairs with the symmetric contrastive loss; weights with their SHA-256.
-- kind 'residual' (CLIP-Adapter style, y = x + α·W₂·relu(W₁·x) per tower, on embeddings): dim, hidden,
-- alpha and the four matrices. kind 'projection' (the model's own heads fine-tuned on its features):
-- dim is the features' width, image_w1 the image head (dim × 512), image_w2 empty, text_w1 / text_w2
-- the text MLP (dim × hidden, hidden × 512), alpha NULL.
CREATE TABLE biomedclip.adapters (
    name            text PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES biomedclip.training_runs (run_id),
    kind            text NOT NULL CHECK (kind IN ('residual', 'projection')),
    dim             integer NOT NULL,
    hidden          integer NOT NULL,
    alpha           double precision CHECK ((kind OPERATOR(pg_catalog.=) 'residual') OPERATOR(pg_catalog.=) (alpha IS NOT NULL)),
    image_w1        double precision[] NOT NULL,
    image_w2        double precision[] NOT NULL,
    text_w1         double precision[] NOT NULL,
    text_w2         double precision[] NOT NULL,
    logit_scale     double precision NOT NULL,
    weights_sha256  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE biomedclip.adapters IS 'Residual and projection adapters trained by biomedclip_train_adapter; applied through biomedclip_adapt_image / biomedclip_adapt_text (which check the weights against weights_sha256).';
SELECT pg_catalog.pg_extension_config_dump('biomedclip.adapters', '');

CREATE FUNCTION biomedclip_train_adapter(name text, pairs_query text, options jsonb DEFAULT '{}') RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_train_adapter_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION biomedclip_train_adapter(text, text, jsonb) IS
    'Trains an adapter on the rows of pairs_query, run as the caller: (pair_id, image, text). kind residual (default): a residual adapter per tower on embeddings, starting at the identity; kind projection: the model''s own projection heads on its features (biomedclip_image_features / biomedclip_text_features), starting from the model''s weights. Symmetric contrastive loss, AdamW with a pull toward the starting weights, seeded split, early stopping on the validation loss; a NOTICE per epoch. Records the run in biomedclip.training_runs.';
CREATE FUNCTION biomedclip_adapt_image(name text, embedding embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_adapt_image_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION biomedclip_adapt_text(name text, embedding embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_adapt_text_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION biomedclip_train_adapter(text, text, jsonb), biomedclip_adapt_image(text, embedding),
    biomedclip_adapt_text(text, embedding) FROM PUBLIC;

-- Runs visible while they run (src/training_progress.rs): one row per training function now
-- running in this database, with its phase, step and latest losses. No query text, rows or weights.
CREATE FUNCTION biomedclip_training_progress()
    RETURNS TABLE (pid integer, kind text, name text, trained_by text, phase text, step bigint, steps bigint,
                   train_loss double precision, val_loss double precision, started_at timestamptz, updated_at timestamptz)
    AS 'MODULE_PATHNAME', 'biomedclip_training_progress_wrapper' LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 4;
COMMENT ON FUNCTION biomedclip_training_progress() IS
    'Training runs now in progress in this database (their audit rows appear when they commit): kind, name, role, phase, step of steps, latest training and validation loss.';

-- "What exactly was in production at that moment?": the models (manifest SHA-256) loaded on or
-- before it (biomedclip.model_activity; a day's row gives its first and last load, so a load later
-- that same day is not counted as before), and the adapters and probes that existed then, each
-- with the training run that made it (the latest succeeded run of that name finished by then).
-- Runs as the caller, who needs SELECT on biomedclip.training_runs (the 'auditor' job grants it).
CREATE FUNCTION biomedclip_provenance(at timestamptz) RETURNS jsonb
    LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH runs AS (
        SELECT DISTINCT ON (t.kind OPERATOR(pg_catalog.=) 'probe', t.name) t.*
        FROM biomedclip.training_runs t
        WHERE t.status OPERATOR(pg_catalog.=) 'succeeded' AND t.finished_at OPERATOR(pg_catalog.<=) at
        ORDER BY t.kind OPERATOR(pg_catalog.=) 'probe', t.name, t.finished_at DESC, t.run_id DESC
    ), described AS (
        SELECT r.kind OPERATOR(pg_catalog.=) 'probe' AS is_probe, r.name, pg_catalog.jsonb_build_object(
            'name', r.name, 'kind', r.kind, 'run_id', r.run_id, 'weights_sha256', r.weights_sha256,
            'base_model_sha256', r.base_model_sha256, 'options', r.options_used, 'seed', r.seed,
            'dataset_fingerprint', r.dataset_fingerprint, 'row_counts', r.row_counts, 'metrics', r.metrics,
            'trained_by', r.trained_by, 'started_at', r.started_at, 'finished_at', r.finished_at,
            'software_version', r.software_version,
            'replaced_later', EXISTS (SELECT 1 FROM biomedclip.training_runs l
                                      WHERE l.name OPERATOR(pg_catalog.=) r.name AND l.status OPERATOR(pg_catalog.=) 'succeeded'
                                        AND (l.kind OPERATOR(pg_catalog.=) 'probe') OPERATOR(pg_catalog.=) (r.kind OPERATOR(pg_catalog.=) 'probe')
                                        AND l.finished_at OPERATOR(pg_catalog.>) at)) AS item
        FROM runs r
    ), loads AS (
        SELECT m.manifest_sha256, m.name, m.version, m.precision, m.files, m.first_loaded_at,
               pg_catalog.max(CASE WHEN x.last_at OPERATOR(pg_catalog.<=) at THEN x.last_at ELSE x.first_at END) AS last_load_before,
               pg_catalog.bool_or(x.day OPERATOR(pg_catalog.=) (at AT TIME ZONE 'UTC')::date) AS loaded_that_day
        FROM biomedclip.models m
        JOIN biomedclip.model_activity x ON x.manifest_sha256 OPERATOR(pg_catalog.=) m.manifest_sha256
        WHERE x.first_at OPERATOR(pg_catalog.<=) at
        GROUP BY m.manifest_sha256, m.name, m.version, m.precision, m.files, m.first_loaded_at
    )
    SELECT pg_catalog.jsonb_build_object(
        'at', at,
        'models', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'manifest_sha256', l.manifest_sha256, 'name', l.name, 'version', l.version, 'precision', l.precision,
                       'files', l.files, 'first_loaded_at', l.first_loaded_at, 'last_load_before', l.last_load_before,
                       'loaded_that_day', l.loaded_that_day) ORDER BY l.last_load_before DESC, l.manifest_sha256), '[]'::pg_catalog.jsonb)
                   FROM loads l),
        'adapters', (SELECT COALESCE(pg_catalog.jsonb_agg(d.item ORDER BY d.name), '[]'::pg_catalog.jsonb) FROM described d WHERE NOT d.is_probe),
        'probes', (SELECT COALESCE(pg_catalog.jsonb_agg(d.item ORDER BY d.name), '[]'::pg_catalog.jsonb) FROM described d WHERE d.is_probe))
$$;
COMMENT ON FUNCTION biomedclip_provenance(timestamptz) IS
    'What was in production at a moment: the models (manifest SHA-256) loaded on or before it, and the adapters and probes that existed then with the training runs that made them.';
REVOKE ALL ON FUNCTION biomedclip_training_progress(), biomedclip_provenance(timestamptz) FROM PUBLIC;
