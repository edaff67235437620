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
