-- The embedding vector types. Hand-written so that every marking is explicit; the C functions are
-- in src/vector_sql.rs (each declared there with `sql = false`).

CREATE FUNCTION biomedclip_vector_combine(double precision[], double precision[]) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'biomedclip_vector_combine_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- embedding: 32-bit float vectors, up to 16,000 dimensions.
-- I/O, typmod, operators, opclasses, casts and aggregates. STORAGE main keeps a vector in the row
-- (compressed if that helps, out of line only as a last resort), so that exact scans do not pay a
-- TOAST fetch per row. Every function is IMMUTABLE, STRICT and
-- PARALLEL SAFE: each result depends only on its arguments.

CREATE TYPE embedding;

CREATE FUNCTION embedding_in(cstring, oid, integer) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_in_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_out(embedding) RETURNS cstring
    AS 'MODULE_PATHNAME', 'embedding_out_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_typmod_in(cstring[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'embedding_typmod_in_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_recv(internal, oid, integer) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_recv_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_send(embedding) RETURNS bytea
    AS 'MODULE_PATHNAME', 'embedding_send_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE embedding (
    INPUT     = embedding_in,
    OUTPUT    = embedding_out,
    TYPMOD_IN = embedding_typmod_in,
    RECEIVE   = embedding_recv,
    SEND      = embedding_send,
    STORAGE   = main,
    -- A category of their own, embedding preferred: embedding_norm('[3,4]') resolves to the
    -- embedding function instead of being ambiguous between the two types.
    CATEGORY  = 'Q',
    PREFERRED = true
);

-- Typmod coercion: embedding(n) enforces its dimension count on insert and on cast.
CREATE FUNCTION embedding(embedding, integer, boolean) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_typmod_cast_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE CAST (embedding AS embedding) WITH FUNCTION embedding(embedding, integer, boolean) AS IMPLICIT;

-- Distances and functions

CREATE FUNCTION l2_distance(embedding, embedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'embedding_l2_distance_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION inner_product(embedding, embedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'embedding_inner_product_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION cosine_distance(embedding, embedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'embedding_cosine_distance_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION l1_distance(embedding, embedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'embedding_l1_distance_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_negative_inner_product(embedding, embedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'embedding_negative_inner_product_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_dims(embedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'embedding_dims_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_norm(embedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'embedding_norm_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION l2_normalize(embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_l2_normalize_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION subvector(embedding, integer, integer) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_subvector_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION embedding_add(embedding, embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_add_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_sub(embedding, embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_sub_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_mul(embedding, embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_mul_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_lt(embedding, embedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'embedding_lt_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_le(embedding, embedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'embedding_le_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_eq(embedding, embedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'embedding_eq_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_ne(embedding, embedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'embedding_ne_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_ge(embedding, embedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'embedding_ge_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_gt(embedding, embedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'embedding_gt_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_cmp(embedding, embedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'embedding_cmp_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_hash(embedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'embedding_hash_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Operators: <-> L2, <#> negative inner product, <=> cosine distance, <+> L1.
CREATE OPERATOR <-> (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <#> (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_negative_inner_product, COMMUTATOR = '<#>');
CREATE OPERATOR <=> (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = cosine_distance, COMMUTATOR = '<=>');
CREATE OPERATOR <+> (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = l1_distance, COMMUTATOR = '<+>');
CREATE OPERATOR + (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_add, COMMUTATOR = +);
CREATE OPERATOR - (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_sub);
CREATE OPERATOR * (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_mul, COMMUTATOR = *);

CREATE OPERATOR < (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_lt,
    COMMUTATOR = >, NEGATOR = >=, RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR <= (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_le,
    COMMUTATOR = >=, NEGATOR = >, RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR = (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_eq,
    COMMUTATOR = =, NEGATOR = <>, RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR <> (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_ne,
    COMMUTATOR = <>, NEGATOR = =, RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR >= (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_ge,
    COMMUTATOR = <=, NEGATOR = <, RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR > (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_gt,
    COMMUTATOR = <, NEGATOR = <=, RESTRICT = scalargtsel, JOIN = scalargtjoinsel);

CREATE OPERATOR CLASS embedding_ops DEFAULT FOR TYPE embedding USING btree AS
    OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
    FUNCTION 1 embedding_cmp(embedding, embedding);
CREATE OPERATOR CLASS embedding_hash_ops DEFAULT FOR TYPE embedding USING hash AS
    OPERATOR 1 =,
    FUNCTION 1 embedding_hash(embedding);

-- Array casts. NULL elements, multi-dimensional arrays, NaN and infinities are errors.
CREATE FUNCTION array_float4_to_embedding(real[], integer, boolean) RETURNS embedding
    AS 'MODULE_PATHNAME', 'array_float4_to_embedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_float8_to_embedding(double precision[], integer, boolean) RETURNS embedding
    AS 'MODULE_PATHNAME', 'array_float8_to_embedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_int4_to_embedding(integer[], integer, boolean) RETURNS embedding
    AS 'MODULE_PATHNAME', 'array_int4_to_embedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_to_float4_array(embedding, integer, boolean) RETURNS real[]
    AS 'MODULE_PATHNAME', 'embedding_to_float4_array_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_to_float8_array(embedding, integer, boolean) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'embedding_to_float8_array_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE CAST (real[] AS embedding) WITH FUNCTION array_float4_to_embedding(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS embedding) WITH FUNCTION array_float8_to_embedding(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS embedding) WITH FUNCTION array_int4_to_embedding(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (embedding AS real[]) WITH FUNCTION embedding_to_float4_array(embedding, integer, boolean) AS IMPLICIT;
CREATE CAST (embedding AS double precision[]) WITH FUNCTION embedding_to_float8_array(embedding, integer, boolean);

-- avg and sum: float8 running sums, combinable across parallel workers.
CREATE FUNCTION embedding_accum(double precision[], embedding) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'embedding_accum_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_avg(double precision[]) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_avg_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_sum(double precision[]) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_sum_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE AGGREGATE avg(embedding) (
    SFUNC = embedding_accum, STYPE = double precision[], FINALFUNC = embedding_avg,
    COMBINEFUNC = biomedclip_vector_combine, INITCOND = '{0}', PARALLEL = SAFE
);
CREATE AGGREGATE sum(embedding) (
    SFUNC = embedding_accum, STYPE = double precision[], FINALFUNC = embedding_sum,
    COMBINEFUNC = biomedclip_vector_combine, INITCOND = '{0}', PARALLEL = SAFE
);

-- halfembedding: 16-bit (IEEE binary16) float vectors, up to 16,000 dimensions.
-- I/O, typmod, operators, opclasses, casts and aggregates. STORAGE main keeps a vector in the row
-- (compressed if that helps, out of line only as a last resort), so that exact scans do not pay a
-- TOAST fetch per row. Every function is IMMUTABLE, STRICT and
-- PARALLEL SAFE: each result depends only on its arguments.

CREATE TYPE halfembedding;

CREATE FUNCTION halfembedding_in(cstring, oid, integer) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_in_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_out(halfembedding) RETURNS cstring
    AS 'MODULE_PATHNAME', 'halfembedding_out_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_typmod_in(cstring[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'halfembedding_typmod_in_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_recv(internal, oid, integer) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_recv_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_send(halfembedding) RETURNS bytea
    AS 'MODULE_PATHNAME', 'halfembedding_send_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE halfembedding (
    INPUT     = halfembedding_in,
    OUTPUT    = halfembedding_out,
    TYPMOD_IN = halfembedding_typmod_in,
    RECEIVE   = halfembedding_recv,
    SEND      = halfembedding_send,
    STORAGE   = main,
    CATEGORY  = 'Q'
);

-- Typmod coercion: halfembedding(n) enforces its dimension count on insert and on cast.
CREATE FUNCTION halfembedding(halfembedding, integer, boolean) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_typmod_cast_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE CAST (halfembedding AS halfembedding) WITH FUNCTION halfembedding(halfembedding, integer, boolean) AS IMPLICIT;

-- Distances and functions

CREATE FUNCTION l2_distance(halfembedding, halfembedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'halfembedding_l2_distance_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION inner_product(halfembedding, halfembedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'halfembedding_inner_product_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION cosine_distance(halfembedding, halfembedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'halfembedding_cosine_distance_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION l1_distance(halfembedding, halfembedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'halfembedding_l1_distance_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_negative_inner_product(halfembedding, halfembedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'halfembedding_negative_inner_product_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_dims(halfembedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'halfembedding_dims_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_norm(halfembedding) RETURNS double precision
    AS 'MODULE_PATHNAME', 'halfembedding_norm_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION l2_normalize(halfembedding) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_l2_normalize_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION subvector(halfembedding, integer, integer) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_subvector_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION halfembedding_add(halfembedding, halfembedding) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_add_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_sub(halfembedding, halfembedding) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_sub_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_mul(halfembedding, halfembedding) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_mul_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_lt(halfembedding, halfembedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'halfembedding_lt_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_le(halfembedding, halfembedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'halfembedding_le_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_eq(halfembedding, halfembedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'halfembedding_eq_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_ne(halfembedding, halfembedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'halfembedding_ne_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_ge(halfembedding, halfembedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'halfembedding_ge_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_gt(halfembedding, halfembedding) RETURNS boolean
    AS 'MODULE_PATHNAME', 'halfembedding_gt_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_cmp(halfembedding, halfembedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'halfembedding_cmp_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_hash(halfembedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'halfembedding_hash_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Operators: <-> L2, <#> negative inner product, <=> cosine distance, <+> L1.
CREATE OPERATOR <-> (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <#> (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_negative_inner_product, COMMUTATOR = '<#>');
CREATE OPERATOR <=> (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = cosine_distance, COMMUTATOR = '<=>');
CREATE OPERATOR <+> (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = l1_distance, COMMUTATOR = '<+>');
CREATE OPERATOR + (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_add, COMMUTATOR = +);
CREATE OPERATOR - (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_sub);
CREATE OPERATOR * (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_mul, COMMUTATOR = *);

CREATE OPERATOR < (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_lt,
    COMMUTATOR = >, NEGATOR = >=, RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR <= (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_le,
    COMMUTATOR = >=, NEGATOR = >, RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR = (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_eq,
    COMMUTATOR = =, NEGATOR = <>, RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR <> (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_ne,
    COMMUTATOR = <>, NEGATOR = =, RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR >= (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_ge,
    COMMUTATOR = <=, NEGATOR = <, RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR > (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_gt,
    COMMUTATOR = <, NEGATOR = <=, RESTRICT = scalargtsel, JOIN = scalargtjoinsel);

CREATE OPERATOR CLASS halfembedding_ops DEFAULT FOR TYPE halfembedding USING btree AS
    OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
    FUNCTION 1 halfembedding_cmp(halfembedding, halfembedding);
CREATE OPERATOR CLASS halfembedding_hash_ops DEFAULT FOR TYPE halfembedding USING hash AS
    OPERATOR 1 =,
    FUNCTION 1 halfembedding_hash(halfembedding);

-- Array casts. NULL elements, multi-dimensional arrays, NaN and infinities are errors.
CREATE FUNCTION array_float4_to_halfembedding(real[], integer, boolean) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'array_float4_to_halfembedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_float8_to_halfembedding(double precision[], integer, boolean) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'array_float8_to_halfembedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_int4_to_halfembedding(integer[], integer, boolean) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'array_int4_to_halfembedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_to_float4_array(halfembedding, integer, boolean) RETURNS real[]
    AS 'MODULE_PATHNAME', 'halfembedding_to_float4_array_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_to_float8_array(halfembedding, integer, boolean) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'halfembedding_to_float8_array_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE CAST (real[] AS halfembedding) WITH FUNCTION array_float4_to_halfembedding(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS halfembedding) WITH FUNCTION array_float8_to_halfembedding(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS halfembedding) WITH FUNCTION array_int4_to_halfembedding(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (halfembedding AS real[]) WITH FUNCTION halfembedding_to_float4_array(halfembedding, integer, boolean) AS IMPLICIT;
CREATE CAST (halfembedding AS double precision[]) WITH FUNCTION halfembedding_to_float8_array(halfembedding, integer, boolean);

-- avg and sum: float8 running sums, combinable across parallel workers.
CREATE FUNCTION halfembedding_accum(double precision[], halfembedding) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'halfembedding_accum_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_avg(double precision[]) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_avg_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_sum(double precision[]) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_sum_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE AGGREGATE avg(halfembedding) (
    SFUNC = halfembedding_accum, STYPE = double precision[], FINALFUNC = halfembedding_avg,
    COMBINEFUNC = biomedclip_vector_combine, INITCOND = '{0}', PARALLEL = SAFE
);
CREATE AGGREGATE sum(halfembedding) (
    SFUNC = halfembedding_accum, STYPE = double precision[], FINALFUNC = halfembedding_sum,
    COMBINEFUNC = biomedclip_vector_combine, INITCOND = '{0}', PARALLEL = SAFE
);

-- Conversions between the two types. Narrowing to half precision raises an error on overflow.
CREATE FUNCTION embedding_to_halfembedding(embedding, integer, boolean) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'embedding_to_halfembedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_to_embedding(halfembedding, integer, boolean) RETURNS embedding
    AS 'MODULE_PATHNAME', 'halfembedding_to_embedding_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE CAST (embedding AS halfembedding) WITH FUNCTION embedding_to_halfembedding(embedding, integer, boolean) AS IMPLICIT;
CREATE CAST (halfembedding AS embedding) WITH FUNCTION halfembedding_to_embedding(halfembedding, integer, boolean) AS ASSIGNMENT;

-- embedding: || concatenation (within the dimension limit) and numeric[] casts (pgvector parity).
CREATE FUNCTION embedding_concat(embedding, embedding) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_concat_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR || (LEFTARG = embedding, RIGHTARG = embedding, PROCEDURE = embedding_concat);
CREATE FUNCTION array_numeric_to_embedding(numeric[], integer, boolean) RETURNS embedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN @extschema@.array_float8_to_embedding($1::pg_catalog.float8[], $2, $3);
CREATE CAST (numeric[] AS embedding) WITH FUNCTION array_numeric_to_embedding(numeric[], integer, boolean) AS ASSIGNMENT;

-- halfembedding: || concatenation (within the dimension limit) and numeric[] casts (pgvector parity).
CREATE FUNCTION halfembedding_concat(halfembedding, halfembedding) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_concat_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR || (LEFTARG = halfembedding, RIGHTARG = halfembedding, PROCEDURE = halfembedding_concat);
CREATE FUNCTION array_numeric_to_halfembedding(numeric[], integer, boolean) RETURNS halfembedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN @extschema@.array_float8_to_halfembedding($1::pg_catalog.float8[], $2, $3);
CREATE CAST (numeric[] AS halfembedding) WITH FUNCTION array_numeric_to_halfembedding(numeric[], integer, boolean) AS ASSIGNMENT;

-- embedding * scalar (and scalar * embedding): every element times a number; overflow is an error.
CREATE FUNCTION embedding_scale(embedding, double precision) RETURNS embedding
    AS 'MODULE_PATHNAME', 'embedding_scale_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION embedding_scale(double precision, embedding) RETURNS embedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE RETURN @extschema@.embedding_scale($2, $1);
CREATE OPERATOR * (LEFTARG = embedding, RIGHTARG = double precision, PROCEDURE = embedding_scale, COMMUTATOR = *);
CREATE OPERATOR * (LEFTARG = double precision, RIGHTARG = embedding, PROCEDURE = embedding_scale, COMMUTATOR = *);

-- halfembedding * scalar (and scalar * halfembedding): every element times a number; overflow is an error.
CREATE FUNCTION halfembedding_scale(halfembedding, double precision) RETURNS halfembedding
    AS 'MODULE_PATHNAME', 'halfembedding_scale_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfembedding_scale(double precision, halfembedding) RETURNS halfembedding
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE RETURN @extschema@.halfembedding_scale($2, $1);
CREATE OPERATOR * (LEFTARG = halfembedding, RIGHTARG = double precision, PROCEDURE = halfembedding_scale, COMMUTATOR = *);
CREATE OPERATOR * (LEFTARG = double precision, RIGHTARG = halfembedding, PROCEDURE = halfembedding_scale, COMMUTATOR = *);
