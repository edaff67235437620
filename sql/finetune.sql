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
