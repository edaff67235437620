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

-- Internal SQL runs with a pinned search_path and qualified operators.
CREATE OR REPLACE FUNCTION biomedclip_save_calibration(name text, fit jsonb, labels text[],
                                            templates text[] DEFAULT ARRAY['this is a photo of {}'])
    RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO biomedclip.calibrations (name, model_sha256, labels, templates, temperature, ece_before, ece_after, n)
    VALUES (name, @extschema@.biomedclip_model_info() OPERATOR(pg_catalog.->>) 'manifest_sha256', labels, templates,
            (fit OPERATOR(pg_catalog.->>) 'temperature')::pg_catalog.float8,
            (fit OPERATOR(pg_catalog.->>) 'ece_before')::pg_catalog.float8,
            (fit OPERATOR(pg_catalog.->>) 'ece_after')::pg_catalog.float8,
            (fit OPERATOR(pg_catalog.->>) 'n')::pg_catalog.int8)
    ON CONFLICT ON CONSTRAINT calibrations_pkey DO UPDATE SET
        model_sha256 = EXCLUDED.model_sha256, labels = EXCLUDED.labels, templates = EXCLUDED.templates,
        temperature = EXCLUDED.temperature, ece_before = EXCLUDED.ece_before, ece_after = EXCLUDED.ece_after,
        n = EXCLUDED.n, fitted_at = pg_catalog.now();
$$;

COMMENT ON FUNCTION biomedclip_embed_slide(bytea, text, embedding, integer, integer, double precision, integer, double precision) IS
    'One slide embedding: the mean of the patch embeddings (= avg() over biomedclip_slide_patches), or attention pooling with weights softmax(temperature * cos(patch, query)); temperature defaults to exp(logit_scale), the zero-shot logit scale (100 for BiomedCLIP).';
