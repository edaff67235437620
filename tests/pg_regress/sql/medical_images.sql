-- DICOM and whole-slide functions on the shared real files (tiny random-weight model).
\getenv shared BIOMEDCLIP_SHARED_DATA
\set VERBOSITY terse
CREATE TEMP TABLE files AS
SELECT 'ct' AS name, pg_read_binary_file(:'shared' || '/dicom/CT1_UNC.dcm') AS data
UNION ALL SELECT 'ct_small', pg_read_binary_file(:'shared' || '/dicom/CT_small_pydicom.dcm')
UNION ALL SELECT 'mono1', pg_read_binary_file(:'shared' || '/dicom/RG3_J2KI_mono1.dcm')
UNION ALL SELECT 'us_rgb', pg_read_binary_file(:'shared' || '/dicom/US1_UNC.dcm')
UNION ALL SELECT 'rle', pg_read_binary_file(:'shared' || '/dicom/CT1_RLE.dcm')
UNION ALL SELECT 'svs', pg_read_binary_file(:'shared' || '/wsi/CMU-1-Small-Region.svs');

SELECT * FROM biomedclip_window_presets() ORDER BY name;

-- Technical metadata only.
SELECT jsonb_pretty(biomedclip_dicom_info(data)) FROM files WHERE name = 'ct_small';
SELECT name, biomedclip_dicom_info(data) ->> 'transfer_syntax' AS syntax,
       biomedclip_dicom_info(data) ->> 'photometric_interpretation' AS photometric
FROM files WHERE name <> 'svs' ORDER BY name;

-- The render is a PNG of the frame's size; lossless syntaxes of the same image render the same.
SELECT name, substring(biomedclip_render_dicom(data) FROM 2 FOR 3) = 'PNG' AS png,
       length(biomedclip_render_dicom(data)) > 1000 AS non_trivial
FROM files WHERE name <> 'svs' ORDER BY name;
SELECT (SELECT biomedclip_render_dicom(data) FROM files WHERE name = 'ct')
     = (SELECT biomedclip_render_dicom(data) FROM files WHERE name = 'rle') AS rle_equals_uncompressed;
-- Windows: presets, explicit C/W and min-max give different images; 'lung' equals '-600/1500'.
SELECT biomedclip_render_dicom(data, 'lung') = biomedclip_render_dicom(data, '-600/1500') AS preset_is_cw,
       biomedclip_render_dicom(data, 'lung') <> biomedclip_render_dicom(data, 'mediastinum') AS presets_differ,
       biomedclip_render_dicom(data, 'auto') = biomedclip_render_dicom(data, 'minmax') AS auto_is_minmax_without_window
FROM files WHERE name = 'ct';

-- Embedding: biomedclip_embed_image recognises DICOM and equals biomedclip_embed_dicom with the
-- defaults, and embedding the rendered PNG gives the same vector (the render is what the model saw).
SELECT biomedclip_embed_image(data) = biomedclip_embed_dicom(data) AS image_equals_dicom,
       biomedclip_embed_dicom(data) = biomedclip_embed_image(biomedclip_render_dicom(data)) AS render_is_model_input,
       biomedclip_embed_dicom(data, 'lung') <> biomedclip_embed_dicom(data) AS window_matters,
       embedding_dims(biomedclip_embed_dicom(data)) AS dims
FROM files WHERE name = 'ct';
SELECT name, biomedclip_embed_dicom(data) = biomedclip_embed_image(biomedclip_render_dicom(data)) AS render_is_model_input
FROM files WHERE name IN ('mono1', 'us_rgb') ORDER BY name;

-- Bad input: clear errors, and the backend stays up.
SELECT biomedclip_render_dicom(data, 'auto', 1) FROM files WHERE name = 'ct';
SELECT biomedclip_render_dicom(data, 'auto', -1) FROM files WHERE name = 'ct';
SELECT biomedclip_render_dicom(data, 'wide') FROM files WHERE name = 'ct';
SELECT biomedclip_render_dicom(data, '40/0') FROM files WHERE name = 'ct';
SELECT biomedclip_render_dicom(data, 'lung') FROM files WHERE name = 'us_rgb';
SELECT biomedclip_render_dicom(substring(data FROM 1 FOR 300000)) FROM files WHERE name = 'ct';
SELECT biomedclip_render_dicom(substring(data FROM 1 FOR 200)) FROM files WHERE name = 'ct';
SELECT biomedclip_dicom_info('\x00'::bytea);
SET biomedclip.max_image_pixels = 100000;
SELECT biomedclip_render_dicom(data) FROM files WHERE name = 'ct';
RESET biomedclip.max_image_pixels;
SELECT 1 AS still_up;

-- Slides: one level of 2220x2967 in 240x240 JPEG tiles.
SELECT * FROM biomedclip_slide_levels((SELECT data FROM files WHERE name = 'svs'));
-- The patch grid is 9 x 13 = 117; tissue selection drops the white background.
SELECT count(*) AS patches, min(tissue_fraction) >= 0.5 AS all_tissue, count(DISTINCT (x, y)) AS distinct_positions,
       bool_and(x % 224 = 0 AND y % 224 = 0 AND x + 224 <= 2220 AND y + 224 <= 2967) AS on_grid,
       bool_and(embedding_dims(embedding) = 512) AS dims
FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'));
SELECT count(*) AS whole_grid FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'), tissue_threshold => 0);
SELECT count(*) AS capped FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'), max_patches => 5);
-- A patch embedding equals embedding its rendered region as an image.
SELECT p.embedding = biomedclip_embed_image(biomedclip_render_slide_region(f.data, p.x, p.y, 224, 224)) AS patch_is_region
FROM files f, LATERAL biomedclip_slide_patches(f.data, max_patches => 2) p WHERE f.name = 'svs';
-- Mean pooling is avg() over the patch rows.
SELECT (SELECT biomedclip_embed_slide(data) FROM files WHERE name = 'svs')
     = (SELECT avg(embedding) FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'))) AS mean_is_avg;
SELECT embedding_dims(biomedclip_embed_slide(data, 'attention', biomedclip_embed_text('tumor'))) AS attention_dims
FROM files WHERE name = 'svs';
SELECT biomedclip_embed_slide(NULL) IS NULL AS null_in_null_out;
-- Errors.
SELECT biomedclip_embed_slide(data, 'attention') FROM files WHERE name = 'svs';
SELECT biomedclip_embed_slide(data, 'max') FROM files WHERE name = 'svs';
-- A colour object cannot be windowed: an error, or NULL with a WARNING under on_error = null
-- (a series load finishes; the grayscale slices embed as always).
SELECT name, biomedclip_embed_dicom(data, 'lung') IS NULL AS skipped FROM files WHERE name = 'us_rgb';
SET biomedclip.on_error = 'null';
SELECT name, biomedclip_embed_dicom(data, 'lung') IS NULL AS skipped FROM files WHERE name IN ('us_rgb', 'ct') ORDER BY name;
RESET biomedclip.on_error;
-- Asked for with ',auto', colour objects fall back to 'auto' (their stored colours) while grayscale
-- ones get the window: the same vectors as asking for each explicitly.
SELECT name, biomedclip_embed_dicom(data, 'lung,auto') = biomedclip_embed_dicom(data, CASE name WHEN 'us_rgb' THEN 'auto' ELSE 'lung' END) AS as_asked
FROM files WHERE name IN ('us_rgb', 'ct') ORDER BY name;
SELECT biomedclip_render_dicom(data, 'lung,minmax') FROM files WHERE name = 'ct';
-- A region past the level's edge is refused, naming the level's size (it used to come back padded).
SELECT biomedclip_render_slide_region(data, 2100, 0, 224, 224) FROM files WHERE name = 'svs';
-- Slide embeddings are not L2-normalized (the mean of unit vectors), by decision: 'mean' stays
-- exactly avg() of the patch rows.
SELECT round(embedding_norm(biomedclip_embed_slide(data))::numeric, 2) < 1 AS norm_below_one FROM files WHERE name = 'svs';
-- A whole-slide image given to biomedclip_embed_image embeds as one picture, with a NOTICE that
-- points to the slide functions.
SELECT embedding_dims(biomedclip_embed_image(data)) AS dims FROM files WHERE name = 'svs';
-- A query vector with mean pooling would be ignored: an error says so.
SELECT biomedclip_embed_slide(data, 'mean', biomedclip_embed_text('tumor')) FROM files WHERE name = 'svs';
SELECT count(*) FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'), level => 2);
SELECT count(*) FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'), patch_size => 8);
SELECT count(*) FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'svs'), tissue_threshold => 1.5);
SELECT count(*) FROM biomedclip_slide_patches((SELECT substring(data FROM 1 FOR 100000) FROM files WHERE name = 'svs'));
SELECT count(*) FROM biomedclip_slide_patches((SELECT data FROM files WHERE name = 'ct'));
SELECT 1 AS still_up;
