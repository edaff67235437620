-- The biomedclip walk-through. Run by `make demo`; safe to run again.
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS biomedclip CASCADE;
CREATE EXTENSION biomedclip;
RESET client_min_messages;

\echo '--- 1. embedding(n) columns hold fixed-dimension float vectors; halfembedding stores 16-bit floats'
CREATE TABLE demo_findings (
    id      int PRIMARY KEY,
    dept    text NOT NULL,
    finding text NOT NULL,
    emb     embedding(4) NOT NULL
);
INSERT INTO demo_findings VALUES
    (1, 'radiology', 'right lower lobe consolidation',  '[0.9, 0.1, 0.0, 0.2]'),
    (2, 'radiology', 'left pleural effusion',           '[0.8, 0.3, 0.1, 0.1]'),
    (3, 'radiology', 'normal chest radiograph',         '[0.1, 0.9, 0.1, 0.0]'),
    (4, 'pathology', 'invasive ductal carcinoma',       '[0.0, 0.1, 0.9, 0.4]'),
    (5, 'pathology', 'benign fibroadenoma',             '[0.1, 0.2, 0.7, 0.6]');
SELECT id, dept, finding, emb, emb::halfembedding AS as_half FROM demo_findings ORDER BY id;

\echo '--- 2. nearest neighbours by cosine distance (<=>), L2 (<->), negative inner product (<#>), L1 (<+>)'
SELECT id, finding,
       round((emb <=> '[1, 0.2, 0, 0.1]')::numeric, 4) AS cosine_distance,
       round((emb <-> '[1, 0.2, 0, 0.1]')::numeric, 4) AS l2,
       round((emb <#> '[1, 0.2, 0, 0.1]')::numeric, 4) AS neg_inner_product,
       round((emb <+> '[1, 0.2, 0, 0.1]')::numeric, 4) AS l1
FROM demo_findings ORDER BY emb <=> '[1, 0.2, 0, 0.1]' LIMIT 3;

\echo '--- 3. department centroids with avg(embedding) and their similarity'
SELECT dept, avg(emb) AS centroid, embedding_norm(avg(emb))::numeric(6,4) AS norm
FROM demo_findings GROUP BY dept ORDER BY dept;
SELECT round((r.c <=> p.c)::numeric, 4) AS radiology_vs_pathology_cosine_distance
FROM (SELECT avg(emb) c FROM demo_findings WHERE dept = 'radiology') r,
     (SELECT avg(emb) c FROM demo_findings WHERE dept = 'pathology') p;

\echo '--- 4. arrays, normalization, and a clear error for bad input'
SELECT l2_normalize(ARRAY[3, 4, 0, 0]::real[]::embedding) AS unit, subvector('[1,2,3,4]'::embedding, 2, 2) AS sub;
\set ON_ERROR_STOP 0
SELECT '[1, 2, 3]'::embedding(4);
SELECT '[1, NaN, 3, 4]'::embedding;
\set ON_ERROR_STOP 1
DROP TABLE demo_findings;

\echo '--- 5. the model: every file verified against its SHA-256; the load is recorded'
SELECT biomedclip_model_info() ->> 'name' AS model, biomedclip_model_info() ->> 'precision' AS precision,
       biomedclip_model_info() ->> 'execution_provider' AS provider,
       left(biomedclip_model_info() ->> 'manifest_sha256', 16) || '...' AS manifest_sha256;
\echo 'NOTE: the default model is the generated tiny test model with RANDOM weights: the rankings below'
\echo '      show the mechanics only. Point BIOMEDCLIP_MODEL_DIR at an exported BiomedCLIP for real results.'

\echo '--- 6. embed the 100 MedPix images and their captions (server-side files from ../shared/data)'
DROP TABLE IF EXISTS demo_images;
CREATE TABLE demo_images (
    image    text PRIMARY KEY,
    modality text,
    caption  text,
    img_emb  embedding(512),
    txt_emb  embedding(512)
);
CREATE TEMP TABLE captions_raw AS
SELECT line::jsonb AS line
FROM regexp_split_to_table(pg_read_file(:'shared' || '/medpix/captions.jsonl'), E'\n') AS line WHERE line <> '';
\timing on
INSERT INTO demo_images (image, modality, caption, img_emb, txt_emb)
SELECT line ->> 'image', line ->> 'modality', line ->> 'caption',
       biomedclip_embed_image(pg_read_binary_file(:'shared' || '/medpix/images/' || (line ->> 'image'))),
       biomedclip_embed_text(line ->> 'caption')
FROM captions_raw;
\timing off
SELECT count(*) AS images_embedded, min(embedding_dims(img_emb)) AS dims FROM demo_images;

\echo '--- 7. an ivf index for cosine search, and text -> image through it'
CREATE INDEX demo_images_ivf ON demo_images USING ivf (img_emb embedding_cosine_ops) WITH (lists = 4);
SET ivf.probes = 2;
SET enable_seqscan = off;  -- 100 rows: the planner would rightly prefer a scan; show the index
EXPLAIN (COSTS OFF) SELECT image FROM demo_images ORDER BY img_emb <=> biomedclip_embed_text('axial CT of the chest') LIMIT 5;
SELECT image, modality, round((img_emb <=> biomedclip_embed_text('axial CT of the chest with pulmonary nodules'))::numeric, 4) AS distance
FROM demo_images ORDER BY img_emb <=> biomedclip_embed_text('axial CT of the chest with pulmonary nodules') LIMIT 5;

\echo '--- 8. image -> image: the images nearest to the first MedPix image (through the index, itself left out)'
EXPLAIN (COSTS OFF) SELECT image FROM demo_images WHERE image <> (SELECT min(image) FROM demo_images)
ORDER BY img_emb <=> (SELECT img_emb FROM demo_images WHERE image = (SELECT min(image) FROM demo_images)) LIMIT 5;
SELECT image, modality,
       round((img_emb <=> (SELECT img_emb FROM demo_images WHERE image = (SELECT min(image) FROM demo_images)))::numeric, 4) AS distance
FROM demo_images WHERE image <> (SELECT min(image) FROM demo_images)
ORDER BY img_emb <=> (SELECT img_emb FROM demo_images WHERE image = (SELECT min(image) FROM demo_images)) LIMIT 5;

RESET enable_seqscan;

\echo '--- 9. zero-shot labelling of three images (probabilities are uncalibrated; not a diagnosis)'
SELECT i.image, z.label, round(z.probability::numeric, 3) AS probability, z.rank
FROM (SELECT * FROM demo_images ORDER BY image LIMIT 3) i,
     biomedclip_zero_shot(i.img_emb, ARRAY['CT scan', 'MRI scan', 'X-ray'],
                          ARRAY['this is a photo of {}', '{} presented in image']) z
WHERE z.rank = 1 ORDER BY i.image;

\echo '--- 10. image -> caption retrieval: how often the own caption ranks first'
SELECT count(*) FILTER (WHERE rank = 1) AS own_caption_first, count(*) AS images
FROM (SELECT i.image, (SELECT count(*) FROM demo_images c WHERE (i.img_emb <=> c.txt_emb) <= (i.img_emb <=> i.txt_emb)) AS rank
      FROM demo_images i) r;

\echo '--- 11. a DICOM series from server files, in the lung window; bulk mode turns unusable files into NULL rows'
DROP TABLE IF EXISTS demo_dicom;
CREATE TABLE demo_dicom (file text PRIMARY KEY, emb embedding(512));
SET biomedclip.on_error = 'null';
INSERT INTO demo_dicom
SELECT f, biomedclip_embed_dicom(pg_read_binary_file(:'shared' || '/dicom/' || f), 'lung')
FROM unnest(ARRAY['CT1_UNC.dcm', 'CT1_JPLL.dcm', 'CT1_RLE.dcm', 'US1_UNC.dcm']) f;
RESET biomedclip.on_error;
SELECT file, emb IS NOT NULL AS embedded FROM demo_dicom ORDER BY file;

\echo '--- 12. the same file from the client through a large object (psql \\lo_import)'
\lo_import :shared/dicom/CT1_UNC.dcm
SELECT (biomedclip_embed_dicom(lo_get(:LASTOID), 'lung') = (SELECT emb FROM demo_dicom WHERE file = 'CT1_UNC.dcm')) AS same_as_server_file;
SELECT lo_unlink(:LASTOID) AS unlinked;

\echo '--- 13. search for apps: a registered collection, searched as a role under its privileges; the API serves it'
ALTER TABLE demo_images ADD COLUMN IF NOT EXISTS thumb bytea;
UPDATE demo_images SET thumb = pg_read_binary_file(:'shared' || '/medpix/images/' || image);
SELECT biomedclip_register_collection('medpix', 'demo_images', 'image', 'img_emb', ARRAY['modality', 'caption'], 'thumb', replace => true);
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'biomedclip_authenticator') THEN
        CREATE ROLE biomedclip_authenticator LOGIN NOINHERIT;  -- the API connects as this role only
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo_reader') THEN
        CREATE ROLE demo_reader NOLOGIN;                        -- the role a demo token names
    END IF;
END $$;
GRANT demo_reader TO biomedclip_authenticator;
GRANT SELECT ON demo_images TO demo_reader;
SELECT count(*) AS functions_granted FROM biomedclip_grant('demo_reader', 'analyst');
SELECT count(*) AS functions_granted FROM biomedclip_grant('demo_reader', 'monitor');
ALTER DATABASE postgres SET biomedclip.query_log = on;
SET ROLE demo_reader;
SELECT rank, id, round(distance::numeric, 4) AS distance, display ->> 'modality' AS modality
FROM biomedclip_search('medpix', '{"text": "axial CT of the chest"}', 5);
RESET ROLE;
