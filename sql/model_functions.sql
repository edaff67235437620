-- Model registry and the embedding functions (src/embed_sql.rs).
--
-- Volatility: STABLE. For a pinned model (biomedclip.model_dir unchanged, files verified by
-- SHA-256) the result depends only on the input, but a superuser can point the setting at another
-- model between statements, so IMMUTABLE would be a lie (and would allow them in index
-- expressions, which a model change would silently invalidate).
-- PARALLEL SAFE: each parallel worker loads its own copy of the model (about 520 MB for the
-- full-size fp32 model); the high COST keeps the planner from doing that for small inputs.

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
COMMENT ON TABLE biomedclip.models IS 'Every model a backend has loaded, identified by the SHA-256 of its manifest (which lists the SHA-256 of each file).';
GRANT USAGE ON SCHEMA biomedclip TO PUBLIC;
GRANT SELECT ON biomedclip.models TO PUBLIC;

CREATE FUNCTION biomedclip_embed_image(bytea) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_embed_image_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 100000;
CREATE FUNCTION biomedclip_embed_text(text) RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_embed_text_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 50000;
CREATE FUNCTION biomedclip_embed_images(bytea[]) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'biomedclip_embed_images_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 100000;
CREATE FUNCTION biomedclip_embed_texts(text[]) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'biomedclip_embed_texts_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 50000;
CREATE FUNCTION biomedclip_tokenize(text) RETURNS integer[]
    AS 'MODULE_PATHNAME', 'biomedclip_tokenize_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 1000;
CREATE FUNCTION biomedclip_preprocess(bytea) RETURNS real[]
    AS 'MODULE_PATHNAME', 'biomedclip_preprocess_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 10000;
CREATE FUNCTION biomedclip_model_info() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_model_info_wrapper' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION biomedclip_load_model() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_load_model_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;
