-- Default deny: model functions are not granted to PUBLIC; vector types and the index are.
\set VERBOSITY terse
CREATE ROLE priv_analyst;
CREATE TABLE priv_t (id int, emb embedding(3));
INSERT INTO priv_t VALUES (1, '[1,0,0]'), (2, '[0,1,0]');
GRANT SELECT ON priv_t TO priv_analyst;
SET ROLE priv_analyst;
SELECT id FROM priv_t ORDER BY emb <-> '[1,0.1,0]' LIMIT 1;
SELECT avg(emb), '[1,2]'::embedding + '[3,4]' FROM priv_t;
SELECT biomedclip_embed_text('x');
SELECT biomedclip_model_info();
SELECT * FROM biomedclip_zero_shot('[1,0,0]', ARRAY['a', 'b']);
SELECT biomedclip_load_model();
SELECT biomedclip_embed_dicom('\x00');
SELECT count(*) FROM biomedclip_slide_patches('\x00');
SELECT biomedclip_embed_slide('\x00');
-- The renderers and metadata functions do not run the model: usable (and they check their input).
SELECT count(*) AS presets FROM biomedclip_window_presets();
SELECT biomedclip_dicom_info('\x00');
SELECT count(*) >= 0 AS can_read_registry FROM biomedclip.models;
INSERT INTO biomedclip.models VALUES ('x', 'x', 'x', 'x', '{}', now(), now(), 1);
INSERT INTO biomedclip.calibrations (name, model_sha256, labels, templates, temperature) VALUES ('x', 'x', '{}', '{}', 1);
RESET ROLE;
-- What a DBA grants to an analyst role (README "Privileges").
GRANT EXECUTE ON FUNCTION biomedclip_embed_text(text), biomedclip_embed_image(bytea),
    biomedclip_zero_shot(embedding, text[], text[], text), biomedclip_model_info() TO priv_analyst;
SET ROLE priv_analyst;
SELECT embedding_dims(biomedclip_embed_text('pleural effusion'));
SELECT count(*) FROM biomedclip_zero_shot(biomedclip_embed_text('x'), ARRAY['a', 'b']);
SELECT biomedclip_model_info() ->> 'precision' AS precision;
RESET ROLE;
-- A calibration steward needs EXECUTE on the two calibration functions only (SECURITY DEFINER):
-- no table privileges, no biomedclip_model_info.
CREATE ROLE priv_steward;
GRANT EXECUTE ON FUNCTION biomedclip_save_calibration(text, jsonb, text[], text[], boolean),
    biomedclip_drop_calibration(text) TO priv_steward;
SET ROLE priv_steward;
SELECT biomedclip_save_calibration('steward-cal', '{"temperature": 1.5, "n": 10}', ARRAY['a', 'b']);
SELECT name, temperature FROM biomedclip.calibrations WHERE name = 'steward-cal';
SELECT biomedclip_model_info();
INSERT INTO biomedclip.calibrations (name, model_sha256, labels, templates, temperature) VALUES ('x', 'x', '{}', '{}', 1);
SELECT biomedclip_drop_calibration('steward-cal') AS dropped;
RESET ROLE;
DROP OWNED BY priv_steward;
DROP ROLE priv_steward;
-- Job bundles: biomedclip_grant gives a role every function of one job and nothing else, and
-- biomedclip_revoke takes it back (checked in the catalog and by calling).
CREATE ROLE priv_job;
SELECT count(*) AS granted FROM biomedclip_grant('priv_job', 'analyst');
SELECT count(*) FILTER (WHERE has_function_privilege('priv_job', f, 'EXECUTE')) AS executable, count(*) AS in_bundle
FROM biomedclip_job_functions('analyst') f;
SELECT has_function_privilege('priv_job', 'biomedclip_save_calibration(text, jsonb, text[], text[], boolean)', 'EXECUTE') AS can_save,
       has_function_privilege('priv_job', 'biomedclip_load_model()', 'EXECUTE') AS can_reload,
       has_function_privilege('priv_job', 'biomedclip_embed_dicom(bytea, text, integer)', 'EXECUTE') AS can_embed_dicom;
SET ROLE priv_job;
SELECT embedding_dims(biomedclip_embed_text('pleural effusion')) AS dims;
SELECT count(*) FROM biomedclip_zero_shot(biomedclip_embed_text('x'), ARRAY['a', 'b']);
RESET ROLE;
SELECT count(*) AS granted FROM biomedclip_grant('priv_job', 'steward');
SELECT has_function_privilege('priv_job', 'biomedclip_save_calibration(text, jsonb, text[], text[], boolean)', 'EXECUTE') AS steward_can_save;
SELECT count(*) AS revoked FROM biomedclip_revoke('priv_job', 'steward');
SELECT count(*) FILTER (WHERE has_function_privilege('priv_job', f, 'EXECUTE')) AS still_executable
FROM biomedclip_job_functions('steward') f;
-- 'monitor': the drift report and SELECT on the query log and its feedback; revoke takes both back.
SELECT count(*) AS granted FROM biomedclip_grant('priv_job', 'monitor');
SELECT has_table_privilege('priv_job', 'biomedclip.query_log', 'SELECT') AS log,
       has_table_privilege('priv_job', 'biomedclip.query_feedback', 'SELECT') AS feedback,
       has_function_privilege('priv_job', 'biomedclip_drift_report(interval, tstzrange)', 'EXECUTE') AS drift;
SELECT count(*) AS revoked FROM biomedclip_revoke('priv_job', 'monitor');
SELECT has_table_privilege('priv_job', 'biomedclip.query_log', 'SELECT') AS log,
       has_function_privilege('priv_job', 'biomedclip_drift_report(interval, tstzrange)', 'EXECUTE') AS drift;
SELECT count(*) FROM biomedclip_grant('priv_job', 'janitor');
DROP ROLE priv_job;
DROP TABLE priv_t;
DROP OWNED BY priv_analyst;
DROP ROLE priv_analyst;
