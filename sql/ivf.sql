-- The ivf index access method (src/ivf) and its operator classes.
CREATE FUNCTION ivfhandler(internal) RETURNS index_am_handler
    AS 'MODULE_PATHNAME', 'ivfhandler_wrapper' LANGUAGE C;
CREATE ACCESS METHOD ivf TYPE INDEX HANDLER ivfhandler;
COMMENT ON ACCESS METHOD ivf IS 'inverted-file approximate nearest-neighbour index for embedding and halfembedding';

CREATE FUNCTION ivf_support_embedding_l2(internal) RETURNS integer AS 'MODULE_PATHNAME', 'ivf_support_embedding_l2_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION ivf_support_embedding_ip(internal) RETURNS integer AS 'MODULE_PATHNAME', 'ivf_support_embedding_ip_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION ivf_support_embedding_cosine(internal) RETURNS integer AS 'MODULE_PATHNAME', 'ivf_support_embedding_cosine_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION ivf_support_halfembedding_l2(internal) RETURNS integer AS 'MODULE_PATHNAME', 'ivf_support_halfembedding_l2_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION ivf_support_halfembedding_ip(internal) RETURNS integer AS 'MODULE_PATHNAME', 'ivf_support_halfembedding_ip_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION ivf_support_halfembedding_cosine(internal) RETURNS integer AS 'MODULE_PATHNAME', 'ivf_support_halfembedding_cosine_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS embedding_l2_ops FOR TYPE embedding USING ivf AS
    OPERATOR 1 <-> (embedding, embedding) FOR ORDER BY float_ops,
    FUNCTION 1 ivf_support_embedding_l2(internal);
CREATE OPERATOR CLASS embedding_ip_ops FOR TYPE embedding USING ivf AS
    OPERATOR 1 <#> (embedding, embedding) FOR ORDER BY float_ops,
    FUNCTION 1 ivf_support_embedding_ip(internal);
CREATE OPERATOR CLASS embedding_cosine_ops FOR TYPE embedding USING ivf AS
    OPERATOR 1 <=> (embedding, embedding) FOR ORDER BY float_ops,
    FUNCTION 1 ivf_support_embedding_cosine(internal);
CREATE OPERATOR CLASS halfembedding_l2_ops FOR TYPE halfembedding USING ivf AS
    OPERATOR 1 <-> (halfembedding, halfembedding) FOR ORDER BY float_ops,
    FUNCTION 1 ivf_support_halfembedding_l2(internal);
CREATE OPERATOR CLASS halfembedding_ip_ops FOR TYPE halfembedding USING ivf AS
    OPERATOR 1 <#> (halfembedding, halfembedding) FOR ORDER BY float_ops,
    FUNCTION 1 ivf_support_halfembedding_ip(internal);
CREATE OPERATOR CLASS halfembedding_cosine_ops FOR TYPE halfembedding USING ivf AS
    OPERATOR 1 <=> (halfembedding, halfembedding) FOR ORDER BY float_ops,
    FUNCTION 1 ivf_support_halfembedding_cosine(internal);

-- Tuning: what a build chose (lists, dims), how full each list is, and the index's size.
CREATE FUNCTION ivf_index_info(index regclass) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'ivf_index_info_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION ivf_index_info(regclass) IS
    'lists, dims, metric, element, rows, rows_per_list {min, max, mean, empty_lists}, imbalance (max / mean), pages, size_bytes, list_sizes of an ivf index (needs SELECT on its table)';

-- Recall of a query through the index against the same query as an exact scan (index scans off),
-- as VectorChord's vchordrq_evaluate_query_recall: the query returns one column of ids, e.g.
-- 'SELECT id FROM t ORDER BY emb <=> ''[...]'' LIMIT 10'. Runs as the caller, with the caller's
-- search_path for the query (it is the caller's own SQL); the wrapper's names are qualified.
CREATE FUNCTION ivf_evaluate_recall(query text) RETURNS double precision
    LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
    approx pg_catalog.text[];
    exact pg_catalog.text[];
    old_index pg_catalog.text := pg_catalog.current_setting('enable_indexscan');
    old_bitmap pg_catalog.text := pg_catalog.current_setting('enable_bitmapscan');
BEGIN
    EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(x::pg_catalog.text) FROM (%s) AS q(x)', query) INTO approx;
    PERFORM pg_catalog.set_config('enable_indexscan', 'off', true);
    PERFORM pg_catalog.set_config('enable_bitmapscan', 'off', true);
    BEGIN
        EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(x::pg_catalog.text) FROM (%s) AS q(x)', query) INTO exact;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_catalog.set_config('enable_indexscan', old_index, true);
        PERFORM pg_catalog.set_config('enable_bitmapscan', old_bitmap, true);
        RAISE;
    END;
    PERFORM pg_catalog.set_config('enable_indexscan', old_index, true);
    PERFORM pg_catalog.set_config('enable_bitmapscan', old_bitmap, true);
    IF exact IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(approx) AS a(v)
            WHERE a.v OPERATOR(pg_catalog.=) ANY (exact))::pg_catalog.float8
           OPERATOR(pg_catalog./) pg_catalog.cardinality(exact)::pg_catalog.float8;
END
$$;
