-- pgvector parity items, each checked against PostgreSQL itself where it has an answer.
\set VERBOSITY terse
-- Text output lays out each element as PostgreSQL's float4out does (pgvector uses the same
-- routine): compare with float4's own text for a sweep over every binary exponent and both signs,
-- and 30,000 pseudo-random normal floats (exact in float8: 23-bit mantissa times a power of two).
WITH v AS (
  SELECT (s * pg_catalog.power(2::float8, e) * m)::float4 AS x
  FROM generate_series(-149, 127) e, (VALUES (1.0), (1.2345678), (1.5), (1.9999999)) AS mm(m), (VALUES (1), (-1)) AS ss(s)
  WHERE abs(pg_catalog.power(2::float8, e) * m) < 3.4e38
  UNION ALL
  SELECT ((1 - 2 * (i % 2)) * pg_catalog.power(2::float8, (i * 37) % 254 - 126)
          * (1 + ((i::int8 * 2654435761) % 8388608) / 8388608.0::float8))::float4
  FROM generate_series(1, 30000) i
)
SELECT count(*) AS values_compared,
       count(*) FILTER (WHERE ('[' || x::text || ']') <> ARRAY[x]::embedding::text) AS differing
FROM v;
SELECT '[1.5e38,-1e-7,1234567,123456,0.0001,0.00001,1e6,-0]'::embedding;
-- numeric[] casts (pgvector has them).
SELECT ARRAY[1.0, 2.5, -3]::embedding, ARRAY[1.0, 2.5]::numeric[]::halfembedding;
SELECT ARRAY[1.0, NULL]::numeric[]::embedding;
SELECT ARRAY[1e400]::numeric[]::embedding;
SELECT ARRAY[1.0, 2.0, 3.0]::numeric[]::embedding(2);
-- || concatenation, within the 16,000-dimension limit.
SELECT '[1,2]'::embedding || '[3]'::embedding, '[1]'::halfembedding || '[2.5]'::halfembedding;
SELECT embedding_dims(array_fill(1, ARRAY[15999])::embedding || '[1]'::embedding);
SELECT array_fill(1, ARRAY[16000])::embedding || '[1]'::embedding;
-- A product of non-zero elements that rounds to zero is an underflow error, as in pgvector.
SELECT '[1e-30,2]'::embedding * '[1e-30,3]'::embedding;
SELECT '[0.0001]'::halfembedding * '[0.0001]'::halfembedding;
SELECT '[0,2]'::embedding * '[1e-30,3]'::embedding;
