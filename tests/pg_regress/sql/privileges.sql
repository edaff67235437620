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
DROP TABLE priv_t;
DROP OWNED BY priv_analyst;
DROP ROLE priv_analyst;
