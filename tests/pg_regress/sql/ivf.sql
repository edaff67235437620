-- The ivf index access method.
SET client_min_messages = warning;
CREATE TABLE items (id int PRIMARY KEY, dept text, emb embedding(3), half halfembedding(3));
-- 12 vectors in 3 obvious clusters, plus a NULL and a zero vector.
INSERT INTO items
SELECT i, CASE WHEN i % 2 = 0 THEN 'radiology' ELSE 'pathology' END,
       ARRAY[c.x + i * 0.01, c.y - i * 0.01, c.z]::real[]::embedding,
       ARRAY[c.x + i * 0.01, c.y - i * 0.01, c.z]::real[]::halfembedding
FROM generate_series(1, 12) i
JOIN (VALUES (0, 1, 0, 0), (1, 0, 1, 0), (2, 0, 0, 1)) c(k, x, y, z) ON c.k = i % 3;
INSERT INTO items VALUES (13, 'radiology', NULL, NULL), (14, 'radiology', '[0,0,0]', '[0,0,0]');
RESET client_min_messages;

CREATE INDEX items_cos ON items USING ivf (emb embedding_cosine_ops) WITH (lists = 3);
CREATE INDEX items_l2 ON items USING ivf (emb embedding_l2_ops) WITH (lists = 3);
CREATE INDEX items_ip ON items USING ivf (emb embedding_ip_ops) WITH (lists = 3);
CREATE INDEX items_half_cos ON items USING ivf (half halfembedding_cosine_ops) WITH (lists = 3);
CREATE INDEX items_half_l2 ON items USING ivf (half halfembedding_l2_ops) WITH (lists = 3);
CREATE INDEX items_half_ip ON items USING ivf (half halfembedding_ip_ops) WITH (lists = 3);

-- The planner prefers a sequential scan on a small table...
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY emb <=> '[1,0,0]' LIMIT 3;
-- ...and uses the index for ORDER BY distance ... LIMIT when told seq scans are expensive.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY emb <=> '[1,0,0]' LIMIT 3;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY emb <-> '[1,0,0]' LIMIT 3;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY half <#> '[1,0,0]' LIMIT 3;
-- The README's image -> image form: the query row's vector as a scalar subquery uses the index
-- (the join form a.emb <=> b.emb cannot), and the row itself is left out; the rows equal an exact
-- ordering with every list probed.
SET ivf.probes = 3;
EXPLAIN (COSTS OFF) SELECT id FROM items WHERE id <> 4 ORDER BY emb <=> (SELECT emb FROM items WHERE id = 4) LIMIT 3;
SELECT array_agg(id ORDER BY id) AS through_index FROM (SELECT id FROM items WHERE id <> 4 ORDER BY emb <=> (SELECT emb FROM items WHERE id = 4) LIMIT 3) s;
SELECT array_agg(id ORDER BY id) AS exact FROM (SELECT id FROM items WHERE id <> 4 ORDER BY (emb <=> (SELECT emb FROM items WHERE id = 4)) + 0, id LIMIT 3) s;
RESET ivf.probes;
-- Tuning information: what the build chose and how full the lists are. The row count is that of
-- the indexable rows (non-NULL and, for cosine, non-zero), the sizes add up, the size is the
-- relation's.
SELECT (i ->> 'lists')::int AS lists, i ->> 'metric' AS metric, i ->> 'element' AS element, (i ->> 'dims')::int AS dims,
       (i ->> 'rows')::int = (SELECT count(*) FROM items WHERE emb IS NOT NULL AND embedding_norm(emb) > 0) AS rows_match,
       (SELECT sum(x::int) FROM jsonb_array_elements_text(i -> 'list_sizes') x) = (i ->> 'rows')::int AS sizes_add_up,
       (i ->> 'size_bytes')::bigint = pg_relation_size('items_cos') AS size_matches
FROM ivf_index_info('items_cos') i;
SELECT (ivf_index_info('items_half_l2') ->> 'rows')::int = (SELECT count(*) FROM items WHERE half IS NOT NULL) AS half_rows_match;
SELECT ivf_index_info('items_pkey');
-- Recall of a query through the index against an exact scan: every list probed is exact.
SET ivf.probes = 3;
SELECT ivf_evaluate_recall($$SELECT id FROM items ORDER BY emb <-> '[1,0,0]' LIMIT 5$$) AS recall_all_lists;
RESET ivf.probes;
SHOW enable_indexscan;
-- Never for queries without ORDER BY distance (an index-only count(*) would be wrong).
EXPLAIN (COSTS OFF) SELECT count(*) FROM items;
EXPLAIN (COSTS OFF) SELECT id FROM items WHERE emb = '[1,0,0]';

-- Index scans with probes = lists agree with exact results (distance ties broken by id).
SET ivf.probes = 3;
SELECT id, round((emb <=> '[1,0.1,0]')::numeric, 4) AS d FROM items ORDER BY emb <=> '[1,0.1,0]' LIMIT 5;
SELECT id, round((emb <-> '[0,1,0.1]')::numeric, 4) AS d FROM items ORDER BY emb <-> '[0,1,0.1]' LIMIT 5;
SELECT id, round((emb <#> '[0.1,0,1]')::numeric, 4) AS d FROM items ORDER BY emb <#> '[0.1,0,1]' LIMIT 5;
SELECT id FROM items ORDER BY half <=> '[1,0.1,0]' LIMIT 4;
SELECT id FROM items ORDER BY half <-> '[0,1,0.1]' LIMIT 4;
-- The same ids as the exact ordering ("+ 0" keeps the planner from using the index).
SELECT (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY emb <=> '[0.3,1,0.2]' LIMIT 8) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (emb <=> '[0.3,1,0.2]') + 0, id LIMIT 8) b) AS cosine_exact,
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY half <-> '[0.3,1,0.2]' LIMIT 8) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (half <-> '[0.3,1,0.2]') + 0, id LIMIT 8) b) AS half_l2_exact;
-- NULL and zero vectors are not returned by cosine index scans; the zero vector is by L2.
SELECT count(*) FROM (SELECT id FROM items ORDER BY emb <=> '[1,1,1]' LIMIT 100) s;
SELECT count(*) FROM (SELECT id FROM items ORDER BY emb <-> '[1,1,1]' LIMIT 100) s;

-- With one probe, only the nearest list is read unless iterative scan continues.
SET ivf.probes = 1;
SET ivf.iterative_scan = off;
SELECT count(*) AS one_list_only FROM (SELECT id FROM items ORDER BY emb <-> '[1,0,0]' LIMIT 10) s;
SET ivf.iterative_scan = on;
SELECT count(*) AS all_rows FROM (SELECT id FROM items ORDER BY emb <-> '[1,0,0]' LIMIT 10) s;
-- A filter that keeps rows of other lists: iterative scan still fills the LIMIT.
SELECT id FROM items WHERE id % 3 = 2 ORDER BY emb <-> '[1,0,0]' LIMIT 4;
SET ivf.max_probes = 1;
SELECT count(*) AS capped FROM (SELECT id FROM items WHERE id % 3 = 2 ORDER BY emb <-> '[1,0,0]' LIMIT 4) s;
RESET ivf.max_probes;

-- Inserts after the build are found; wrong dimensions are refused.
INSERT INTO items VALUES (15, 'radiology', '[0.9,0.9,0.9]', '[0.9,0.9,0.9]');
SET ivf.probes = 3;
SELECT id FROM items ORDER BY emb <-> '[0.9,0.9,0.9]' LIMIT 1;
CREATE TABLE untyped (emb embedding);
INSERT INTO untyped VALUES ('[1,2]'), ('[3,4]');
CREATE INDEX ON untyped USING ivf (emb embedding_l2_ops);
INSERT INTO untyped VALUES ('[1,2,3]');
SELECT emb FROM untyped ORDER BY emb <-> '[3,3]' LIMIT 1;
SELECT emb FROM untyped ORDER BY emb <-> '[3,3,3]' LIMIT 1;

-- Deletes + VACUUM: deleted rows never come back.
DELETE FROM items WHERE id % 2 = 0;
VACUUM items;
SELECT id FROM items ORDER BY emb <-> '[1,0,0]' LIMIT 20;
-- REINDEX and REINDEX CONCURRENTLY.
REINDEX INDEX items_l2;
REINDEX INDEX CONCURRENTLY items_cos;
SELECT id FROM items ORDER BY emb <=> '[0,0,1]' LIMIT 3;

-- Empty tables, fewer rows than lists, identical vectors.
CREATE TABLE empty_t (emb embedding(2));
CREATE INDEX ON empty_t USING ivf (emb embedding_l2_ops) WITH (lists = 10);
SELECT count(*) FROM (SELECT * FROM empty_t ORDER BY emb <-> '[1,1]' LIMIT 5) s;
INSERT INTO empty_t SELECT '[1,1]' FROM generate_series(1, 50);
SELECT count(*) FROM (SELECT * FROM empty_t ORDER BY emb <-> '[1,1]' LIMIT 100) s;
CREATE INDEX ON empty_t USING ivf (emb embedding_cosine_ops) WITH (lists = 100);
SELECT count(*) FROM (SELECT * FROM empty_t ORDER BY emb <=> '[1,1]' LIMIT 100) s;

-- An empty column without dimensions: refused (dims cannot be fixed later); with rows, taken
-- from them (above).
CREATE TABLE untyped_empty (emb embedding);
CREATE INDEX ON untyped_empty USING ivf (emb embedding_l2_ops);

-- RaBitQ codes: the same rows in the same order as the exact ordering when every list is
-- probed (the distances come from the table), on every opclass and on halfembedding. (7 rows
-- are left with a vector; the exact side would add the NULL one after them.)
CREATE INDEX items_rq_cos ON items USING ivf (emb embedding_cosine_ops) WITH (lists = 3, quantizer = rabitq);
CREATE INDEX items_rq_l2 ON items USING ivf (emb embedding_l2_ops) WITH (lists = 3, quantizer = 'rabitq');
CREATE INDEX items_rq_ip ON items USING ivf (emb embedding_ip_ops) WITH (lists = 3, quantizer = rabitq);
CREATE INDEX items_rq_half ON items USING ivf (half halfembedding_l2_ops) WITH (lists = 3, quantizer = rabitq);
SELECT ivf_index_info('items_rq_cos') ->> 'quantizer' AS quantizer, ivf_index_info('items_l2') ->> 'quantizer' AS flat;
SET ivf.probes = 3;
DROP INDEX items_cos, items_l2, items_ip, items_half_cos, items_half_l2, items_half_ip;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY emb <#> '[0.1,0,1]' LIMIT 5;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY emb <=> '[0.3,1,0.2]' LIMIT 6) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (emb <=> '[0.3,1,0.2]') + 0, id LIMIT 6) b) AS rq_cosine_exact,
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY emb <-> '[0.3,1,0.2]' LIMIT 6) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (emb <-> '[0.3,1,0.2]') + 0, id LIMIT 6) b) AS rq_l2_exact,
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY emb <#> '[0.3,1,0.2]' LIMIT 6) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (emb <#> '[0.3,1,0.2]') + 0, id LIMIT 6) b) AS rq_ip_exact,
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY half <-> '[0.3,1,0.2]' LIMIT 6) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY (half <-> '[0.3,1,0.2]') + 0, id LIMIT 6) b) AS rq_half_exact;
-- The distances returned are the operator's own; inserts, deletes, VACUUM and REINDEX
-- CONCURRENTLY keep the codes in step with the table.
SELECT id, round((emb <-> '[0,1,0.1]')::numeric, 4) AS d FROM items ORDER BY emb <-> '[0,1,0.1]' LIMIT 3;
INSERT INTO items VALUES (16, 'radiology', '[0.2,1,0.2]', '[0.2,1,0.2]'), (18, 'pathology', '[1,0.2,0.2]', '[1,0.2,0.2]');
DELETE FROM items WHERE id = 7;
VACUUM items;
REINDEX INDEX CONCURRENTLY items_rq_l2;
SELECT id, round((emb <-> '[0,1,0.1]')::numeric, 4) AS d FROM items ORDER BY emb <-> '[0,1,0.1]' LIMIT 3;
SELECT id, round((half <-> '[0,1,0.1]')::numeric, 4) AS d FROM items ORDER BY half <-> '[0,1,0.1]' LIMIT 3;
-- Re-ranking reads the table's column, so an expression index cannot use codes.
CREATE INDEX ON items USING ivf ((emb * 2) embedding_l2_ops) WITH (quantizer = rabitq);
RESET ivf.probes;

-- The iterative scan defaults to strict order (never a row closer than one already returned).
RESET ivf.iterative_scan;
SHOW ivf.iterative_scan;

-- Bad options.
CREATE INDEX ON items USING ivf (emb embedding_l2_ops) WITH (quantizer = pq);
CREATE INDEX ON items USING ivf (emb embedding_l2_ops) WITH (lists = 0);
CREATE INDEX ON items USING ivf (emb embedding_l2_ops) WITH (lists = 40000);
CREATE INDEX ON items USING ivf (emb);
RESET enable_seqscan;
DROP TABLE items, untyped, untyped_empty, empty_t;
