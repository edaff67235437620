-- Zero-shot scoring and temperature-scaling calibration.
\getenv shared BIOMEDCLIP_SHARED_DATA
\set VERBOSITY terse

-- The softmax reproduces the real BiomedCLIP reference probabilities from their logarithms
-- (log-probabilities are the logits up to a constant).
WITH ref AS (SELECT pg_read_file(:'shared' || '/biomedclip/reference_zero_shot.json')::jsonb -> 'softmax_probs' AS j),
img AS (SELECT key AS image, value AS probs FROM ref, jsonb_each(ref.j)),
per AS (SELECT image, array_agg(value::text::float8 ORDER BY key) AS p FROM img, jsonb_each(probs) GROUP BY image)
SELECT count(*) AS images,
       max((SELECT max(abs(s - pi / (SELECT sum(x) FROM unnest(p) x))) FROM unnest(biomedclip_softmax((SELECT array_agg(ln(x)) FROM unnest(p) x)), p) AS t(s, pi))) < 1e-12 AS reproduced
FROM per;
SELECT biomedclip_softmax(ARRAY[1, 2, 3]::float8[]) = ARRAY[exp(-2) / (1 + exp(-1) + exp(-2)), exp(-1) / (1 + exp(-1) + exp(-2)), 1 / (1 + exp(-1) + exp(-2))] AS hand_checked;
SELECT biomedclip_softmax(ARRAY[0, ln(3)]::float8[], 1) AS t1, biomedclip_softmax(ARRAY[0, 2 * ln(3)]::float8[], 2) AS t2_same;
SELECT biomedclip_softmax(ARRAY[1, 2]::float8[], 0);

-- Zero-shot on an image: one row per label, ranked by probability, probabilities sum to 1,
-- logits are exp(logit_scale) * cosine (logit_scale = ln 100 in the test model).
CREATE TEMP TABLE imgs AS
SELECT f AS name, biomedclip_embed_image(pg_read_binary_file(:'shared' || '/biomedclip/example_images/' || f)) AS emb
FROM unnest(ARRAY['brain_MRI.jpg', 'chest_X-ray.jpg', 'bone_X-ray.jpg', 'pie_chart.png']) f;
SELECT count(*) AS labels, round(sum(probability)::numeric, 12) AS total, array_agg(rank ORDER BY rank) AS ranks,
       bool_and(logit BETWEEN -100 AND 100) AS logits_in_range
FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY['brain MRI', 'chest X-ray', 'pie chart']);
-- Ranks follow probability: rank 1 has the highest, and each rank's probability is at least the
-- next one's (checked on every image, with rank computed independently by row_number).
SELECT count(*) AS rows_checked,
       count(*) FILTER (WHERE z.rank <> z.expected_rank) AS misranked
FROM imgs, LATERAL (SELECT rank, row_number() OVER (ORDER BY probability DESC) AS expected_rank
                    FROM biomedclip_zero_shot(imgs.emb, ARRAY['brain MRI', 'chest X-ray', 'pie chart', 'bone X-ray'])) z;
SELECT bool_and(p1 >= p_rest) AS rank1_highest
FROM imgs, LATERAL (SELECT max(probability) FILTER (WHERE rank = 1) AS p1, max(probability) FILTER (WHERE rank > 1) AS p_rest
                    FROM biomedclip_zero_shot(imgs.emb, ARRAY['brain MRI', 'chest X-ray', 'pie chart', 'bone X-ray'])) t;
-- The table form and the logits form agree.
SELECT (SELECT array_agg(round(logit::numeric, 9) ORDER BY label) FROM biomedclip_zero_shot(emb, ARRAY['brain MRI', 'pie chart'], ARRAY['this is a photo of {}', 'a photo of {}']))
     = (SELECT array_agg(round(x::numeric, 9) ORDER BY ord) FROM unnest(biomedclip_zero_shot_logits(emb, ARRAY['brain MRI', 'pie chart'], ARRAY['this is a photo of {}', 'a photo of {}'])) WITH ORDINALITY u(x, ord)) AS same
FROM imgs LIMIT 1;
-- Labels are embedded once per backend: scoring 4 images against 3 new labels x 2 templates
-- embeds 6 prompts, not 24.
SELECT biomedclip_prompt_cache_misses() AS before \gset
SELECT count(*) FROM imgs, biomedclip_zero_shot(emb, ARRAY['fracture', 'effusion', 'tumour'], ARRAY['this is a photo of {}', '{} presented in image']);
SELECT biomedclip_prompt_cache_misses() - :before AS prompts_embedded;
-- A model call inline in a WHERE clause is evaluated per row; repeated texts come from the
-- backend's text cache, so 500 rows comparing two alternating texts with a third run the text
-- tower 3 times, not 1,000.
SELECT biomedclip_prompt_cache_misses() AS before \gset
SELECT count(*) FROM generate_series(1, 500) g
WHERE biomedclip_embed_text('cache check pneumonia ' || (g % 2)) <=> biomedclip_embed_text('cache check effusion') < 3;
SELECT biomedclip_prompt_cache_misses() - :before AS texts_through_the_model;
-- Switching to another model (same ONNX files, another manifest, so another SHA-256 and logit
-- scale) embeds the same prompts again: the cache is keyed by the model, and the logits follow
-- the new scale exactly (exp(3) instead of exp(ln 100)).
\getenv rescaled BIOMEDCLIP_RESCALED_MODEL
SELECT biomedclip_zero_shot_logits(emb, ARRAY['fracture'], ARRAY['this is a photo of {}'])::float8[] AS old_logits
FROM imgs LIMIT 1 \gset
SELECT biomedclip_prompt_cache_misses() AS before \gset
SET biomedclip.model_dir = :'rescaled';
SELECT round((biomedclip_zero_shot_logits(emb, ARRAY['fracture'], ARRAY['this is a photo of {}']))[1]::numeric, 6)
     = round(((:'old_logits'::float8[])[1] / 100 * exp(3.0))::numeric, 6) AS logits_follow_the_new_scale
FROM imgs LIMIT 1;
SELECT biomedclip_prompt_cache_misses() - :before AS prompts_embedded_again;
RESET biomedclip.model_dir;
-- Bad input.
SELECT * FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY[]::text[]);
SELECT * FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY['a', NULL]);
SELECT * FROM biomedclip_zero_shot('[1,2,3]'::embedding, ARRAY['a', 'b']);
SELECT count(*) FROM biomedclip_zero_shot(NULL, ARRAY['a', 'b']);

-- Calibration: fit a temperature on labelled logits (true_index is 1-based).
CREATE TEMP TABLE labelled AS
SELECT ARRAY[(i % 7) * 1.5, ((i * 3) % 5) * 1.2, ((i * 5) % 11) * 0.8]::float8[] AS logits,
       1 + (i % 3) AS truth
FROM generate_series(1, 300) i;
SELECT (fit ->> 'n')::int AS n, (fit ->> 'temperature')::float8 > 0 AS positive,
       (fit ->> 'nll_after')::float8 <= (fit ->> 'nll_before')::float8 AS nll_not_worse,
       (fit ->> 'accuracy')::float8 = (SELECT avg((truth = (SELECT ord FROM unnest(logits) WITH ORDINALITY u(x, ord) ORDER BY x DESC LIMIT 1))::int) FROM labelled) AS accuracy_matches
FROM (SELECT biomedclip_fit_temperature(logits, truth) AS fit FROM labelled) f;
SELECT jsonb_array_length(biomedclip_reliability(logits, truth)) AS bins15,
       jsonb_array_length(biomedclip_reliability(logits, truth, 5)) AS bins5,
       (SELECT sum((b ->> 'count')::int) FROM jsonb_array_elements(biomedclip_reliability(logits, truth, 5)) b) AS counted
FROM labelled;
SELECT biomedclip_fit_temperature(logits, 4) FROM labelled;
SELECT biomedclip_fit_temperature(logits, truth) IS NULL AS no_rows FROM labelled WHERE false;

-- Save it for the active model and the exact labels/templates; zero-shot applies it.
SELECT biomedclip_save_calibration('triage-v1', (SELECT biomedclip_fit_temperature(logits, truth) FROM labelled),
                                   ARRAY['brain MRI', 'chest X-ray', 'pie chart']);
SELECT name, labels, templates, temperature > 0 AS ok, n,
       model_sha256 = biomedclip_model_info() ->> 'manifest_sha256' AS same_model FROM biomedclip.calibrations;
SELECT round((SELECT temperature FROM biomedclip.calibrations)::numeric, 6) =
       round((SELECT (biomedclip_fit_temperature(logits, truth) ->> 'temperature')::numeric FROM labelled), 6) AS stored_t;
-- Calibrated probabilities are softmax(logits / T).
SELECT bool_and(abs(c.probability - s.p) < 1e-12) AS calibrated
FROM imgs i,
     LATERAL (SELECT label, probability FROM biomedclip_zero_shot(i.emb, ARRAY['brain MRI', 'chest X-ray', 'pie chart'], calibration => 'triage-v1')) c,
     LATERAL (SELECT l, p FROM unnest(ARRAY['brain MRI', 'chest X-ray', 'pie chart'],
                                      biomedclip_softmax(biomedclip_zero_shot_logits(i.emb, ARRAY['brain MRI', 'chest X-ray', 'pie chart']),
                                                         (SELECT temperature FROM biomedclip.calibrations))) AS u(l, p)) s
WHERE c.label = s.l;
SELECT * FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY['brain MRI', 'chest X-ray'], calibration => 'triage-v1');
SELECT * FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY['brain MRI', 'chest X-ray', 'pie chart'], ARRAY['a photo of {}'], 'triage-v1');
SELECT * FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY['brain MRI'], calibration => 'nope');
UPDATE biomedclip.calibrations SET model_sha256 = 'another-model';
SELECT * FROM biomedclip_zero_shot((SELECT emb FROM imgs LIMIT 1), ARRAY['brain MRI', 'chest X-ray', 'pie chart'], calibration => 'triage-v1');
-- A name is not silently overwritten; replace => true overwrites it.
SELECT biomedclip_save_calibration('triage-v1', '{"temperature": 2.0}', ARRAY['a', 'b']);
SELECT biomedclip_save_calibration('triage-v1', '{"temperature": 2.0}', ARRAY['a', 'b'], replace => true);
SELECT name, labels, temperature FROM biomedclip.calibrations;
-- A fit without a temperature, or a degenerate one, is refused with a clear error.
SELECT biomedclip_save_calibration('bad', '{"ece_before": 0.1}', ARRAY['a', 'b']);
SELECT biomedclip_save_calibration('bad', '{"temperature": -1}', ARRAY['a', 'b']);
-- Constant logits carry no temperature: the fit stops at the search bound, warns, and is refused.
SELECT (fit ->> 'at_search_bound')::boolean AS at_search_bound, round((fit ->> 'temperature')::numeric, 1) AS t
FROM (SELECT biomedclip_fit_temperature(ARRAY[1.0, 1.0]::float8[], 1 + (i % 2)) AS fit FROM generate_series(1, 20) i) f;
SELECT biomedclip_save_calibration('flat', (SELECT biomedclip_fit_temperature(ARRAY[1.0, 1.0]::float8[], 1 + (i % 2)) FROM generate_series(1, 20) i), ARRAY['a', 'b']);
-- Dropping: true when it existed.
SELECT biomedclip_drop_calibration('triage-v1') AS dropped, biomedclip_drop_calibration('triage-v1') AS dropped_again;
SELECT count(*) AS calibrations_left FROM biomedclip.calibrations;
