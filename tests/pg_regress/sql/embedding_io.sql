-- Text and binary I/O, typmod enforcement and every bad-input class.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS biomedclip;
RESET client_min_messages;

-- Text round trips, whitespace tolerated, shortest exact decimals.
SELECT '[1,2,3]'::embedding;
SELECT '  [ 1 ,2.5,	-3 ]  '::embedding;
SELECT '[1e-40, 3.4028235e38, -1.17549435e-38, 0.1]'::embedding;
SELECT '[0.1]'::embedding::text::embedding = '[0.1]'::embedding AS round_trips;
SELECT '[1,2,3]'::halfembedding;
SELECT '[0.1, 65504, -0.00006103515625]'::halfembedding;

-- Bad text input
SELECT ''::embedding;
SELECT '[]'::embedding;
SELECT '[1,2'::embedding;
SELECT '1,2]'::embedding;
SELECT '[1,,2]'::embedding;
SELECT '[1,two]'::embedding;
SELECT '[1 2]'::embedding;
SELECT '[NaN]'::embedding;
SELECT '[1,Infinity]'::embedding;
SELECT '[-inf]'::embedding;
SELECT '[1e39]'::embedding;
SELECT '[70000]'::halfembedding;
SELECT '[NaN]'::halfembedding;
SELECT ('[' || repeat('1,', 16000) || '1]')::embedding;
SELECT embedding_dims(('[' || repeat('1,', 15999) || '1]')::embedding);

-- Typmod: enforced on cast and on insert; limits checked.
SELECT '[1,2,3]'::embedding(3);
SELECT '[1,2]'::embedding(3);
SELECT '[1,2]'::halfembedding(3);
SELECT '[1]'::embedding(0);
SELECT '[1]'::embedding(16001);
SELECT '[1]'::embedding(3, 4);
CREATE TABLE typmod_t (v embedding(3), h halfembedding(2));
INSERT INTO typmod_t (v) VALUES ('[1,2,3]');
INSERT INTO typmod_t (v) VALUES ('[1,2]');
INSERT INTO typmod_t (h) VALUES ('[1,2,3]');
INSERT INTO typmod_t (v) VALUES (ARRAY[1,2,3,4]::real[]);
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'typmod_t'::regclass AND attnum > 0 ORDER BY attnum;
DROP TABLE typmod_t;

-- Binary I/O uses pgvector's wire layout: int16 dims, int16 0, big-endian elements.
-- 1.0f = 3f800000, -2.0f = c0000000; 1.0 half = 3c00, -2.0 half = c000.
SELECT embedding_send('[1,-2]');
SELECT halfembedding_send('[1,-2]');
CREATE TABLE bin_t (id int, v embedding, h halfembedding);
INSERT INTO bin_t VALUES (1, '[1,-2,3.5]', '[1,-2,3.5]'), (2, '[0.1,1e-30,-7]', '[0.1,0.5,-7]');
COPY bin_t TO '/tmp/biomedclip_regress_bin.dat' (FORMAT binary);
CREATE TABLE bin_back (LIKE bin_t);
COPY bin_back FROM '/tmp/biomedclip_regress_bin.dat' (FORMAT binary);
SELECT a.id, a.v = b.v AS v_same, a.h = b.h AS h_same, b.v, b.h
FROM bin_t a JOIN bin_back b USING (id) ORDER BY id;
-- A binary value of the wrong dimension is refused by a typed column.
CREATE TABLE bin_typed (id int, v embedding(2), h halfembedding);
COPY bin_typed FROM '/tmp/biomedclip_regress_bin.dat' (FORMAT binary);
DROP TABLE bin_t, bin_back, bin_typed;
