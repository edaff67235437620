-- The embedding functions on the generated tiny model (random weights, real contract).
\getenv shared BIOMEDCLIP_SHARED_DATA
\getenv tampered BIOMEDCLIP_TAMPERED_MODEL
\getenv wrong_names BIOMEDCLIP_WRONG_NAMES_MODEL
\set VERBOSITY terse

SELECT biomedclip_model_info() ->> 'name' AS name,
       biomedclip_model_info() ->> 'precision' AS precision,
       biomedclip_model_info() ->> 'embed_dim' AS embed_dim,
       biomedclip_model_info() ->> 'execution_provider' AS provider,
       length(biomedclip_model_info() ->> 'manifest_sha256') AS sha_len;
-- Every load is recorded with the manifest hash that identifies the model bytes, by the registry
-- background worker (never inside this statement): wait up to 10 s for its row.
DO $$ BEGIN
  FOR i IN 1..200 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM biomedclip.models);
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT name, precision, manifest_sha256 = biomedclip_model_info() ->> 'manifest_sha256' AS same_model,
       files ? 'image_encoder.onnx' AND files ? 'text_encoder.onnx' AND files ? 'tokenizer.json' AS all_files
FROM biomedclip.models;

-- Token ids: [CLS]=2 ... [SEP]=3. The expected ids are those of the HF tokenizers library on
-- open_clip's cleaned text ('"' is [UNK]=1 in this vocabulary).
SELECT biomedclip_tokenize('Chest X-ray');
SELECT biomedclip_tokenize('  &lt;b&gt; “quoted” ﬁbrosis  ');
SELECT cardinality(biomedclip_tokenize(repeat('effusion ', 400))) AS truncated_to;

-- Texts: 512-d, unit length, deterministic, distinct texts differ.
SELECT embedding_dims(e), round(embedding_norm(e)::numeric, 5) AS norm
FROM (SELECT biomedclip_embed_text('pleural effusion') e) s;
SELECT biomedclip_embed_text('pleural effusion') = biomedclip_embed_text('pleural effusion') AS deterministic,
       biomedclip_embed_text('pleural effusion') <=> biomedclip_embed_text('fractured femur') > 0 AS distinct_texts;
-- Cleaning: HTML entities and spacing do not change the embedding.
SELECT biomedclip_embed_text('pleural   effusion') = biomedclip_embed_text(' pleural effusion ') AS whitespace_invariant;
-- Batch form equals the single form, NULL stays NULL.
SELECT cardinality(a), a[2] IS NULL AS null_kept,
       round((a[1] <=> biomedclip_embed_text('brain MRI'))::numeric, 6) AS d1,
       round((a[3] <=> biomedclip_embed_text('chest CT'))::numeric, 6) AS d3
FROM (SELECT biomedclip_embed_texts(ARRAY['brain MRI', NULL, 'chest CT']) a) s;

-- Images: PNG (MedPix) and JPEG (example images).
SELECT embedding_dims(e), round(embedding_norm(e)::numeric, 5) AS norm
FROM (SELECT biomedclip_embed_image(pg_read_binary_file(:'shared' || '/medpix/images/MPX1031_synpic20041.png')) e) s;
SELECT round((biomedclip_embed_image(pg_read_binary_file(:'shared' || '/biomedclip/example_images/chest_X-ray.jpg'))
       <=> (biomedclip_embed_images(ARRAY[pg_read_binary_file(:'shared' || '/biomedclip/example_images/chest_X-ray.jpg')]))[1])::numeric, 6) AS batch_equals_single;
-- 3 x 224 x 224 values, within the normalized range [(0 - mean) / std, (1 - mean) / std].
SELECT count(*) AS values, min(x) >= (0 - 0.48145466) / 0.26862954 - 1e-6 AS min_ok,
       max(x) <= (1 - 0.40821073) / 0.27577711 + 1e-6 AS max_ok
FROM unnest(biomedclip_preprocess(pg_read_binary_file(:'shared' || '/biomedclip/example_images/bone_X-ray.jpg'))) x;

-- Bad input: a clear ERROR naming the problem.
SELECT biomedclip_embed_text('');
-- Text beyond the 256-token context is cut, as open_clip does, but not silently: one NOTICE per
-- statement (not per text), naming no text.
SELECT cardinality(biomedclip_embed_texts(ARRAY[repeat('effusion ', 300), repeat('nodule ', 400), 'short'])) AS embedded;
SELECT cardinality(biomedclip_tokenize(repeat('effusion ', 300))) AS tokens;
SELECT cardinality(biomedclip_tokenize('effusion')) AS tokens_no_notice;
-- Array errors name the element.
SELECT biomedclip_embed_texts(ARRAY['effusion', '  ']);
SELECT biomedclip_embed_images(ARRAY[pg_read_binary_file(:'shared' || '/biomedclip/example_images/pie_chart.png'), '\x00'::bytea]);
-- Bulk loads: with biomedclip.on_error = null a bad item embeds as NULL with a WARNING naming it,
-- and the good ones are exactly what they are without the setting.
SET biomedclip.on_error = 'null';
SELECT biomedclip_embed_image('\x00') IS NULL AS bad_image_is_null, biomedclip_embed_text(' ') IS NULL AS empty_text_is_null;
-- (OFFSET 0: unnest() of a call with constant arguments is also evaluated once by the planner
-- to estimate its rows, which would run the model, and warn, twice.)
SELECT array_agg(x IS NULL ORDER BY o) AS nulls
FROM (SELECT biomedclip_embed_texts(ARRAY['effusion', '', 'nodule']) AS a OFFSET 0) s, unnest(s.a) WITH ORDINALITY u(x, o);
SELECT array_agg(x IS NULL ORDER BY o) AS nulls,
       (array_agg(x ORDER BY o))[1] = biomedclip_embed_image(pg_read_binary_file(:'shared' || '/biomedclip/example_images/pie_chart.png')) AS same_embedding
FROM unnest(biomedclip_embed_images(ARRAY[pg_read_binary_file(:'shared' || '/biomedclip/example_images/pie_chart.png'), '\x00'::bytea, NULL])) WITH ORDINALITY u(x, o);
RESET biomedclip.on_error;
SELECT biomedclip_embed_text(E' \t\n ');
SELECT biomedclip_embed_image('');
SELECT biomedclip_embed_image('not an image at all');
SELECT biomedclip_embed_image(substring(pg_read_binary_file(:'shared' || '/medpix/images/MPX1031_synpic20041.png') from 1 for 2000));
SELECT biomedclip_embed_image(substring(pg_read_binary_file(:'shared' || '/biomedclip/example_images/bone_X-ray.jpg') from 1 for 20));
-- A PNG header declaring 100000 x 100000 pixels is refused before decoding.
SELECT biomedclip_embed_image('\x89504e470d0a1a0a0000000d49484452000186a0000186a00806000000'::bytea);
SET biomedclip.max_image_pixels = 1000;
SELECT biomedclip_embed_image(pg_read_binary_file(:'shared' || '/biomedclip/example_images/bone_X-ray.jpg'));
RESET biomedclip.max_image_pixels;

-- Model problems.
SET biomedclip.model_dir = '';
SELECT biomedclip_embed_text('x');
SET biomedclip.model_dir = :'tampered';
SELECT biomedclip_embed_text('x');
SET biomedclip.model_dir = :'wrong_names';
SELECT biomedclip_embed_text('x');
RESET biomedclip.model_dir;
SELECT embedding_dims(biomedclip_embed_text('works again'));

-- Execution providers: this machine's ONNX Runtime has no CUDA, so 'cuda' is an error and
-- 'auto' falls back to the CPU and says why.
SET biomedclip.execution_provider = 'cuda';
SELECT biomedclip_embed_text('x') IS NOT NULL;
SET biomedclip.execution_provider = 'auto';
SELECT embedding_dims(biomedclip_embed_text('x')),
       biomedclip_model_info() ->> 'requested_execution_provider' AS requested,
       biomedclip_model_info() ->> 'execution_provider' = 'cpu'
       AND biomedclip_model_info() ->> 'execution_provider_fallback' LIKE 'cuda unavailable:%' AS fell_back;
RESET biomedclip.execution_provider;

-- Settings that name files are superuser-only.
CREATE ROLE biomedclip_regress_user;
SET ROLE biomedclip_regress_user;
SET biomedclip.model_dir = '/tmp';
SET biomedclip.ort_library = '/tmp/libevil.so';
SET biomedclip.max_image_pixels = 1000000000;
RESET ROLE;
DROP ROLE biomedclip_regress_user;
