-- Casts to and from arrays and between the two types.
SELECT ARRAY[1,2,3]::real[]::embedding, ARRAY[1.5,2,3]::float8[]::embedding, ARRAY[1,2,3]::int[]::embedding;
SELECT '[1,2.5]'::embedding::real[], '[1,2.5]'::embedding::float8[];
SELECT ARRAY[1,2,3]::real[]::halfembedding, '[1,2.5]'::halfembedding::real[];
SELECT ARRAY[1,2]::real[]::embedding(3);
SELECT ARRAY[]::real[]::embedding;
SELECT ARRAY[1,NULL]::real[]::embedding;
SELECT ARRAY[[1,2],[3,4]]::real[]::embedding;
SELECT ARRAY['NaN']::real[]::embedding;
SELECT ARRAY['Infinity']::float8[]::embedding;
SELECT ARRAY[1e300]::float8[]::embedding;
SELECT ARRAY[1e5]::float8[]::halfembedding;
-- embedding <-> halfembedding
SELECT '[1,0.5,-2]'::embedding::halfembedding, '[1,0.5,-2]'::halfembedding::embedding;
SELECT '[0.1]'::embedding::halfembedding::embedding;
SELECT '[1e5]'::embedding::halfembedding;
SELECT '[1,2]'::embedding::halfembedding(3);

-- avg and sum, including NULLs, empty input and mixed dimensions.
CREATE TABLE agg_t (g int, v embedding, h halfembedding);
INSERT INTO agg_t VALUES (1, '[1,2]', '[1,2]'), (1, '[3,4]', '[3,4]'), (1, NULL, NULL), (2, '[10,-10]', '[10,-10]');
SELECT g, avg(v), sum(v), avg(h), sum(h) FROM agg_t GROUP BY g ORDER BY g;
SELECT avg(v), sum(v) FROM agg_t WHERE false;
INSERT INTO agg_t VALUES (3, '[1,2,3]', NULL);
SELECT avg(v) FROM agg_t;
DROP TABLE agg_t;

-- Parallel aggregation uses the combine function and gives the same answer.
CREATE TABLE par_t AS
SELECT i, ARRAY[i % 7, (i % 11) * 0.5, -(i % 3)]::real[]::embedding AS v FROM generate_series(1, 100000) i;
ANALYZE par_t;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT avg(v) FROM par_t;
SELECT avg(v) AS parallel_avg, sum(v) AS parallel_sum FROM par_t;
SET max_parallel_workers_per_gather = 0;
SELECT avg(v) AS serial_avg, sum(v) AS serial_sum FROM par_t;
RESET ALL;
-- Exact expected values: mean of i%7 over 1..100000, and of (i%11)/2 and -(i%3).
SELECT avg(i % 7)::numeric(10,5), avg((i % 11) * 0.5)::numeric(10,5), avg(-(i % 3))::numeric(10,5) FROM par_t;
DROP TABLE par_t;

-- Every vector function is IMMUTABLE, STRICT and PARALLEL SAFE (and there are many of them):
-- the guard counts the functions taking a vector (or an aggregate state), then lists violators.
CREATE TEMP VIEW vector_functions AS
SELECT p.oid::regprocedure AS f, p.provolatile, p.proparallel, p.proisstrict
FROM pg_proc p
JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'biomedclip'
WHERE p.prokind = 'f' AND p.proname NOT LIKE 'biomedclip\_%'
  AND EXISTS (SELECT 1 FROM unnest(p.proargtypes) t
              WHERE t IN ('embedding'::regtype, 'halfembedding'::regtype, 'double precision[]'::regtype));
SELECT count(*) > 60 AS many_functions FROM vector_functions;
SELECT f FROM vector_functions WHERE provolatile <> 'i' OR proparallel <> 's' OR NOT proisstrict ORDER BY 1::text;
DROP VIEW vector_functions;
-- The model functions are STABLE (a superuser can switch models) and PARALLEL RESTRICTED (the
-- model runs in the parallel leader only: one model copy per backend).
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict FROM pg_proc p
JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'biomedclip'
WHERE p.proname ~ '^biomedclip_(embed|tokenize|preprocess|zero_shot)' ORDER BY 1;
