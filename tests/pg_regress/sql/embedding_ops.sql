-- Operators and functions against hand-checked values.
-- a = [1,2,3], b = [4,5,6]: a-b = [-3,-3,-3], |a-b|^2 = 27, a.b = 32, |a|^2 = 14, |b|^2 = 77.
SELECT '[1,2,3]'::embedding <-> '[4,5,6]' = sqrt(27::float8) AS l2_ok;
SELECT l2_distance('[0,0]'::embedding, '[3,4]');
SELECT '[1,2,3]'::embedding <#> '[4,5,6]', inner_product('[1,2,3]'::embedding, '[4,5,6]');
SELECT abs(('[1,2,3]'::embedding <=> '[4,5,6]') - (1 - 32 / sqrt(14 * 77::float8))) < 1e-7 AS cosine_ok;
SELECT '[1,0]'::embedding <=> '[0,1]', '[1,0]'::embedding <=> '[-1,0]', '[1,1]'::embedding <=> '[2,2]';
SELECT '[0,0]'::embedding <=> '[1,1]' AS cosine_of_zero_is_nan;
SELECT '[1,2,3]'::embedding <+> '[4,5,6]', l1_distance('[1,2,3]'::embedding, '[4,5,6]');
SELECT '[1,2,3]'::embedding + '[4,5,6]', '[1,2,3]'::embedding - '[4,5,6]', '[1,2,3]'::embedding * '[4,5,6]';
SELECT '[3e38]'::embedding + '[3e38]';
SELECT '[3e38]'::embedding * '[10]';
SELECT embedding_dims('[1,2,3]'::embedding), embedding_norm('[3,4]'::embedding);
SELECT l2_normalize('[3,4]'::embedding), l2_normalize('[0,0]'::embedding);
SELECT subvector('[1,2,3,4,5]'::embedding, 2, 3), subvector('[1,2,3]'::embedding, 3, 10);
SELECT subvector('[1,2,3]'::embedding, 4, 1);

-- The same on halfembedding (values exact in binary16).
SELECT '[1,2,3]'::halfembedding <-> '[4,5,6]' = sqrt(27::float8) AS l2_ok;
SELECT '[1,2,3]'::halfembedding <#> '[4,5,6]', '[1,2,3]'::halfembedding <+> '[4,5,6]';
SELECT abs(('[1,2,3]'::halfembedding <=> '[4,5,6]') - (1 - 32 / sqrt(14 * 77::float8))) < 1e-7 AS cosine_ok;
SELECT '[1,2,3]'::halfembedding + '[4,5,6]', '[1,2,3]'::halfembedding - '[4,5,6]', '[1,2,3]'::halfembedding * '[4,5,6]';
SELECT '[60000]'::halfembedding + '[60000]';
SELECT embedding_dims('[1,2]'::halfembedding), embedding_norm('[3,4]'::halfembedding), l2_normalize('[3,4]'::halfembedding);
SELECT subvector('[1,2,3,4]'::halfembedding, 2, 2);

-- Dimension mismatches name both dimensions.
SELECT '[1,2]'::embedding <-> '[1,2,3]';
SELECT '[1,2]'::embedding <=> '[1,2,3]';
SELECT '[1,2]'::embedding <#> '[1,2,3]';
SELECT '[1,2]'::embedding <+> '[1,2,3]';
SELECT '[1,2]'::embedding + '[1,2,3]';
SELECT '[1,2]'::halfembedding <-> '[1,2,3]';

-- Ordering, equality, hashing: ORDER BY, DISTINCT, GROUP BY, unique and hash indexes.
SELECT '[1,2]'::embedding < '[1,3]', '[1,2]'::embedding < '[1,2,0]', '[0]'::embedding = '[-0]', '[1,2]'::embedding <> '[1,2]';
CREATE TABLE ord_t (v embedding, h halfembedding);
INSERT INTO ord_t VALUES ('[2,1]', '[2,1]'), ('[1,2]', '[1,2]'), ('[1,2,0]', '[1,2,0]'), ('[1,2]', '[1,2]'), ('[-0,5]', '[-0,5]'), ('[0,5]', '[0,5]');
SELECT v FROM ord_t ORDER BY v;
SELECT DISTINCT h FROM ord_t ORDER BY h;
SELECT v, count(*) FROM ord_t GROUP BY v ORDER BY v;
SET enable_sort = off;
SELECT v, count(*) FROM ord_t GROUP BY v ORDER BY 2 DESC, 1;
RESET enable_sort;
CREATE UNIQUE INDEX ON ord_t (v);
CREATE INDEX ord_t_hash ON ord_t USING hash (v);
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT v FROM ord_t WHERE v = '[0,5]';
SELECT v FROM ord_t WHERE v = '[0,5]';
RESET enable_seqscan;
RESET enable_bitmapscan;
DELETE FROM ord_t WHERE v = '[1,2]' AND ctid <> (SELECT min(ctid) FROM ord_t WHERE v = '[1,2]');
DELETE FROM ord_t WHERE v = '[-0,5]';
CREATE UNIQUE INDEX ord_t_unique ON ord_t (v);
INSERT INTO ord_t VALUES ('[2,1]', NULL);
SET enable_seqscan = off;
SELECT v FROM ord_t WHERE v = '[1,2,0]';
EXPLAIN (COSTS OFF) SELECT v FROM ord_t WHERE v = '[1,2,0]';
RESET enable_seqscan;
DROP TABLE ord_t;
-- Scalar multiplication, both ways round; '[...]' literals still mean element-wise products.
SELECT '[1,-2.5]'::embedding * 2.0 AS times_two, 0.5 * '[2,4]'::embedding AS half, '[1,2]'::halfembedding * 3 AS half_times_three;
SELECT '[1,2]'::embedding * '[3,4]' AS elementwise;
SELECT '[3e38]'::embedding * 10;
SELECT '[60000]'::halfembedding * 2;
SELECT '[1,2]'::embedding * 'NaN'::float8;
