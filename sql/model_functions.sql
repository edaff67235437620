-- Model registry and the embedding functions (src/embed_sql.rs).
--
-- Volatility: STABLE. For a pinned model (biomedclip.model_dir unchanged, files verified by
-- SHA-256) the result depends only on the input, but a superuser can point the setting at another
-- model between statements, so IMMUTABLE would be a lie (and would allow them in index
-- expressions, which a model change would silently invalidate).
-- PARALLEL RESTRICTED: a parallel worker would load a copy of its own (about 0.9 GB RSS for the
-- full-size fp32 model) for every query; restricted functions run in the leader only, so a
-- parallel plan still scans in parallel while the model runs once per backend. Functions that
-- return per-process state (biomedclip_model_info, the prompt cache counter) are restricted too.

CREATE SCHEMA biomedclip;

CREATE TABLE biomedclip.models (
    manifest_sha256 text PRIMARY KEY,
    name            text NOT NULL,
    version         text NOT NULL,
    precision       text NOT NULL,
    files           jsonb NOT NULL,
    first_loaded_at timestamptz NOT NULL DEFAULT now(),
    loaded_at       timestamptz NOT NULL,
    load_count      bigint NOT NULL DEFAULT 1
);
COMMENT ON TABLE biomedclip.models IS 'Every model a backend has loaded, identified by the SHA-256 of its manifest (which lists the SHA-256 of each file). Written by the biomedclip model registry background worker, never inside a user''s statement.';
CREATE TABLE biomedclip.model_activity (
    manifest_sha256 text NOT NULL,
    day             date NOT NULL,
    loads           bigint NOT NULL,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    PRIMARY KEY (manifest_sha256, day)
);
COMMENT ON TABLE biomedclip.model_activity IS 'Which model (manifest SHA-256) was loaded on which UTC day, how often, first and last time: the audit answer to "what was active on date X".';
GRANT USAGE ON SCHEMA biomedclip TO PUBLIC;
GRANT SELECT ON biomedclip.models, biomedclip.model_activity TO PUBLIC;
-- pg_dump keeps their rows (the extension creates the tables, so it must say so).
SELECT pg_catalog.pg_extension_config_dump('biomedclip.models', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.model_activity', '');

CREATE FUNCTION biomedclip_embed_image(bytea) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_embed_image_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 100000;
CREATE FUNCTION biomedclip_embed_text(text) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_embed_text_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 50000;
CREATE FUNCTION biomedclip_embed_images(bytea[]) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'biomedclip_embed_images_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 100000;
CREATE FUNCTION biomedclip_embed_texts(text[]) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'biomedclip_embed_texts_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 50000;
CREATE FUNCTION biomedclip_tokenize(text) RETURNS integer[]
    AS 'MODULE_PATHNAME', 'biomedclip_tokenize_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 1000;
CREATE FUNCTION biomedclip_preprocess(bytea) RETURNS real[]
    AS 'MODULE_PATHNAME', 'biomedclip_preprocess_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 10000;
CREATE FUNCTION biomedclip_model_info() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_model_info_wrapper' LANGUAGE C STABLE PARALLEL RESTRICTED;
CREATE FUNCTION biomedclip_load_model() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_load_model_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;
