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

-- Default deny: the functions that run the model (CPU-heavy, and reading the superuser-configured
-- model) are not granted to PUBLIC. A DBA grants them to the analyst roles that need them; see the
-- README ("Privileges"). The vector types, operators and the ivf index stay usable by everyone.
REVOKE ALL ON FUNCTION biomedclip_embed_image(bytea), biomedclip_embed_text(text),
    biomedclip_embed_images(bytea[]), biomedclip_embed_texts(text[]), biomedclip_tokenize(text),
    biomedclip_preprocess(bytea), biomedclip_model_info(), biomedclip_load_model(),
    biomedclip_zero_shot(embedding, text[], text[], text), biomedclip_zero_shot_logits(embedding, text[], text[]),
    biomedclip_save_calibration(text, jsonb, text[], text[], boolean), biomedclip_drop_calibration(text),
    biomedclip_prompt_cache_misses(),
    biomedclip_embed_dicom(bytea, text, integer),
    biomedclip_slide_patches(bytea, integer, integer, double precision, integer),
    biomedclip_embed_slide(bytea, text, embedding, integer, integer, double precision, integer, double precision)
FROM PUBLIC;

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
