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
