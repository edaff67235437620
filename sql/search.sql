-- Search for apps: registered collections, biomedclip_search (as the caller, so row-level
-- security applies), the de-identified query log with feedback, and the drift report.

-- What may be searched. Written only by biomedclip_register_collection / _drop_collection;
-- clients name a collection, never a table or a column.
CREATE TABLE biomedclip.collections (
    name              text PRIMARY KEY,
    table_oid         regclass NOT NULL,
    id_column         name NOT NULL,
    embedding_column  name NOT NULL,
    display_columns   name[] NOT NULL,
    thumbnail         text,
    registered_by     name NOT NULL DEFAULT CURRENT_USER,
    registered_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE biomedclip.collections IS 'Searchable collections: a table, its id, embedding and display columns, and an optional thumbnail (a bytea column, or an expression that renders one). Searches run as the caller, so the table''s privileges and row-level security decide what anyone sees.';
GRANT SELECT ON biomedclip.collections TO PUBLIC;

-- One row per search while biomedclip.query_log is on. Never the query text, image or embedding:
-- a keyed hash (HMAC-SHA-256 with a key kept in a file of the server) of the normalized text or
-- the image bytes. Written only by biomedclip_search; readable by roles granted SELECT (monitoring).
CREATE TABLE biomedclip.query_log (
    query_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    collection      text NOT NULL,
    role            name NOT NULL,
    model_sha256    text,
    adapter         text,
    query_kind      text NOT NULL CHECK (query_kind IN ('text', 'image', 'dicom', 'embedding')),
    query_hmac      text NOT NULL,
    k               integer NOT NULL,
    filter_columns  text[] NOT NULL,
    result_ids      text[] NOT NULL,
    distances       double precision[] NOT NULL,
    latency_ms      double precision NOT NULL
);
CREATE INDEX query_log_at ON biomedclip.query_log (at);
COMMENT ON TABLE biomedclip.query_log IS 'De-identified search log (biomedclip.query_log = on): who, when, which collection and model, a keyed hash of the query (never the query), the result ids and distances, latency.';

-- Clicks, relevance marks, corrections and flags on a logged search's results.
CREATE TABLE biomedclip.query_feedback (
    feedback_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_id     bigint NOT NULL REFERENCES biomedclip.query_log (query_id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    role         name NOT NULL,
    result_id    text NOT NULL,
    result_rank  integer,
    action       text NOT NULL CHECK (action IN ('click', 'relevant', 'wrong', 'correction', 'flag')),
    note         text
);
CREATE INDEX query_feedback_query ON biomedclip.query_feedback (query_id);
COMMENT ON TABLE biomedclip.query_feedback IS 'Feedback on logged searches (biomedclip_feedback). The free-text note is kept only when biomedclip.query_log_notes = on: people type names and findings into notes, so a note may hold PHI.';

SELECT pg_catalog.pg_extension_config_dump('biomedclip.collections', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.query_log', '');
SELECT pg_catalog.pg_extension_config_dump('biomedclip.query_feedback', '');

-- Registers (or with replace => true re-registers) a collection. Checked as the caller: the
-- caller must own the table (or be a superuser), the columns must exist, the embedding column
-- must be an embedding, and a thumbnail that is not a bytea column is an SQL expression that every
-- searcher will run, so only a superuser may register one. The registry row is then written as
-- the extension's owner (callers get no table privilege on biomedclip.collections).
CREATE FUNCTION biomedclip_register_collection(name text, "table" regclass, id_column text, embedding_column text,
                                               display_columns text[], thumbnail text DEFAULT NULL,
                                               replace boolean DEFAULT false)
    RETURNS void AS 'MODULE_PATHNAME', 'biomedclip_register_collection_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Removes a collection (the caller must own its table or be a superuser); false when there was none.
CREATE FUNCTION biomedclip_drop_collection(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'biomedclip_drop_collection_wrapper' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION biomedclip_search(collection text, query jsonb, k integer DEFAULT 10, filters jsonb DEFAULT '{}')
    RETURNS TABLE (rank integer, id text, distance double precision, display jsonb, query_id bigint)
    AS 'MODULE_PATHNAME', 'biomedclip_search_wrapper' LANGUAGE C VOLATILE PARALLEL RESTRICTED COST 100000 ROWS 10;
COMMENT ON FUNCTION biomedclip_search(text, jsonb, integer, jsonb) IS
    'Top-k of a registered collection by cosine distance, as the caller (privileges and row-level security apply), through the collection''s index. query: {"text": ...}, {"image": base64}, {"dicom": base64, "window": ..., "frame": ...} or {"embedding": [...]}; filters: {"column": value} or {"column": {"gte": .., "lt": ..}} on display columns. query_id is the log row (NULL when biomedclip.query_log is off).';

CREATE FUNCTION biomedclip_thumbnail(collection text, id text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'biomedclip_thumbnail_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 10000;
COMMENT ON FUNCTION biomedclip_thumbnail(text, text) IS
    'The thumbnail of one row of a collection, as the caller (NULL when the row is not visible or has none).';

CREATE FUNCTION biomedclip_feedback(query_id bigint, result_id text, action text, note text DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'biomedclip_feedback_wrapper' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION biomedclip_feedback(bigint, text, text, text) IS
    'Records a click, relevant, wrong, correction or flag on a result of one of the caller''s own logged searches; the note is kept only when biomedclip.query_log_notes = on.';

CREATE FUNCTION biomedclip_drift_report("window" interval DEFAULT '7 days', baseline tstzrange DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_drift_report_wrapper' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION biomedclip_drift_report(interval, tstzrange) IS
    'Per collection and UTC day of the window: queries, quantiles of top-1 and top-k distances, click-through by rank, correction rate, and the PSI of top-1 distances against the baseline period (default: the window before this one), with flags. Reads the query log as the caller.';

REVOKE ALL ON FUNCTION biomedclip_register_collection(text, regclass, text, text, text[], text, boolean),
    biomedclip_drop_collection(text), biomedclip_search(text, jsonb, integer, jsonb), biomedclip_thumbnail(text, text),
    biomedclip_feedback(bigint, text, text, text), biomedclip_drift_report(interval, tstzrange) FROM PUBLIC;
