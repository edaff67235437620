-- Zero-shot classification and temperature-scaling calibration (src/zero_shot_sql.rs).
-- Zero-shot scores support triage, weak labelling and ranking candidates for human review; they
-- are not diagnoses, and uncalibrated probabilities are not probabilities of disease.

CREATE FUNCTION biomedclip_zero_shot(image embedding, labels text[],
                                     templates text[] DEFAULT ARRAY['this is a photo of {}'],
                                     calibration text DEFAULT NULL)
    RETURNS TABLE(label text, probability double precision, logit double precision, rank integer)
    AS 'MODULE_PATHNAME', 'biomedclip_zero_shot_wrapper' LANGUAGE C STABLE PARALLEL RESTRICTED COST 1000 ROWS 10;
CREATE FUNCTION biomedclip_zero_shot_logits(image embedding, labels text[],
                                            templates text[] DEFAULT ARRAY['this is a photo of {}'])
    RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'biomedclip_zero_shot_logits_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 1000;
CREATE FUNCTION biomedclip_softmax(logits double precision[], temperature double precision DEFAULT 1)
    RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'biomedclip_softmax_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION biomedclip_prompt_cache_misses() RETURNS bigint
    AS 'MODULE_PATHNAME', 'biomedclip_prompt_cache_misses_wrapper' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Aggregates over (logits, true_index) rows; true_index is 1-based like SQL arrays.
CREATE FUNCTION biomedclip_calibration_accum(internal, double precision[], integer) RETURNS internal
    AS 'MODULE_PATHNAME', 'biomedclip_calibration_accum_wrapper' LANGUAGE C PARALLEL SAFE;
CREATE FUNCTION biomedclip_calibration_accum(internal, double precision[], integer, integer) RETURNS internal
    AS 'MODULE_PATHNAME', 'biomedclip_calibration_accum_bins_wrapper' LANGUAGE C PARALLEL SAFE;
CREATE FUNCTION biomedclip_fit_temperature_final(internal) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_fit_temperature_final_wrapper' LANGUAGE C PARALLEL SAFE;
CREATE FUNCTION biomedclip_reliability_final(internal) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_reliability_final_wrapper' LANGUAGE C PARALLEL SAFE;

-- jsonb: temperature, nll_before, nll_after, ece_before, ece_after (15 bins), accuracy, n.
CREATE AGGREGATE biomedclip_fit_temperature(logits double precision[], true_index integer) (
    SFUNC = biomedclip_calibration_accum, STYPE = internal, FINALFUNC = biomedclip_fit_temperature_final
);
-- jsonb array of {bin, lower, upper, confidence, accuracy, count} (raw logits, 15 bins or as given).
CREATE AGGREGATE biomedclip_reliability(logits double precision[], true_index integer) (
    SFUNC = biomedclip_calibration_accum, STYPE = internal, FINALFUNC = biomedclip_reliability_final
);
CREATE AGGREGATE biomedclip_reliability(logits double precision[], true_index integer, bins integer) (
    SFUNC = biomedclip_calibration_accum, STYPE = internal, FINALFUNC = biomedclip_reliability_final
);

CREATE TABLE biomedclip.calibrations (
    name         text PRIMARY KEY,
    model_sha256 text NOT NULL,
    labels       text[] NOT NULL,
    templates    text[] NOT NULL,
    temperature  double precision NOT NULL CHECK (temperature > 0),
    ece_before   double precision,
    ece_after    double precision,
    n            bigint,
    fitted_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE biomedclip.calibrations IS 'Temperature-scaling calibrations, tied to the model (manifest SHA-256) and the exact label and template lists they were fitted for.';
GRANT SELECT ON biomedclip.calibrations TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('biomedclip.calibrations', '');

-- Stores a biomedclip_fit_temperature() result for the active model.
CREATE FUNCTION biomedclip_save_calibration(name text, fit jsonb, labels text[],
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

-- Default deny: the functions that run the model (CPU-heavy, and reading the superuser-configured
-- model) are not granted to PUBLIC. A DBA grants them to the analyst roles that need them; see the
-- README ("Privileges"). The vector types, operators and the ivf index stay usable by everyone.
REVOKE ALL ON FUNCTION biomedclip_embed_image(bytea), biomedclip_embed_text(text),
    biomedclip_embed_images(bytea[]), biomedclip_embed_texts(text[]), biomedclip_tokenize(text),
    biomedclip_preprocess(bytea), biomedclip_model_info(), biomedclip_load_model(),
    biomedclip_zero_shot(embedding, text[], text[], text), biomedclip_zero_shot_logits(embedding, text[], text[]),
    biomedclip_save_calibration(text, jsonb, text[], text[]), biomedclip_prompt_cache_misses(),
    biomedclip_embed_dicom(bytea, text, integer),
    biomedclip_slide_patches(bytea, integer, integer, double precision, integer),
    biomedclip_embed_slide(bytea, text, embedding, integer, integer, double precision, integer, double precision)
FROM PUBLIC;
