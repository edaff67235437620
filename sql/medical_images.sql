-- DICOM and whole-slide image functions (src/dicom_sql.rs, src/slide_sql.rs).
--
-- The renderers and the metadata function do not run the model and stay usable by everyone; the
-- embedding functions are revoked from PUBLIC at the end of sql/zero_shot.sql like the others.
-- STABLE rather than IMMUTABLE: biomedclip.max_image_pixels can change what is accepted.

CREATE FUNCTION biomedclip_embed_dicom(data bytea, "window" text DEFAULT 'auto', frame integer DEFAULT 0)
    RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_embed_dicom_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 100000;
COMMENT ON FUNCTION biomedclip_embed_dicom(bytea, text, integer) IS
    'Embeds one DICOM frame: modality LUT, VOI (''auto'', ''minmax'', a preset or ''C/W''), MONOCHROME1 inversion, colour to RGB.';

CREATE FUNCTION biomedclip_render_dicom(data bytea, "window" text DEFAULT 'auto', frame integer DEFAULT 0)
    RETURNS bytea
    AS 'MODULE_PATHNAME', 'biomedclip_render_dicom_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 10000;
COMMENT ON FUNCTION biomedclip_render_dicom(bytea, text, integer) IS
    'The 8-bit frame that biomedclip_embed_dicom feeds to the model, as PNG.';

CREATE FUNCTION biomedclip_dicom_info(data bytea) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'biomedclip_dicom_info_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION biomedclip_dicom_info(bytea) IS
    'Technical DICOM attributes from a fixed whitelist; never patient, physician, institution, date or UID attributes.';

CREATE FUNCTION biomedclip_window_presets()
    RETURNS TABLE (name text, center double precision, width double precision)
    AS 'MODULE_PATHNAME', 'biomedclip_window_presets_wrapper' LANGUAGE C IMMUTABLE PARALLEL SAFE ROWS 6;

-- Whole-slide images (Aperio SVS, tiled pyramidal TIFF). Coordinates are pixels of the chosen level.
CREATE FUNCTION biomedclip_slide_levels(data bytea)
    RETURNS TABLE (level integer, width integer, height integer, downsample double precision,
                   tile_width integer, tile_height integer)
    AS 'MODULE_PATHNAME', 'biomedclip_slide_levels_wrapper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 1000 ROWS 4;

CREATE FUNCTION biomedclip_render_slide_region(data bytea, x integer, y integer, width integer, height integer,
                                               level integer DEFAULT 0)
    RETURNS bytea
    AS 'MODULE_PATHNAME', 'biomedclip_render_slide_region_wrapper' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 10000;

CREATE FUNCTION biomedclip_slide_patches(data bytea, patch_size integer DEFAULT 224, level integer DEFAULT 0,
                                         tissue_threshold double precision DEFAULT 0.5, max_patches integer DEFAULT 1000)
    RETURNS TABLE (x integer, y integer, level integer, tissue_fraction double precision, embedding embedding)
    AS 'MODULE_PATHNAME', 'biomedclip_slide_patches_wrapper' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED COST 1000000 ROWS 100;
COMMENT ON FUNCTION biomedclip_slide_patches(bytea, integer, integer, double precision, integer) IS
    'Embeds the non-overlapping patches of a slide level that the tissue mask covers by at least tissue_threshold; at most max_patches, evenly spaced.';

-- Not STRICT: query (and temperature) may be NULL; a NULL slide gives NULL.
CREATE FUNCTION biomedclip_embed_slide(data bytea, pooling text DEFAULT 'mean', query embedding DEFAULT NULL,
                                       patch_size integer DEFAULT 224, level integer DEFAULT 0,
                                       tissue_threshold double precision DEFAULT 0.5, max_patches integer DEFAULT 1000,
                                       temperature double precision DEFAULT NULL)
    RETURNS embedding
    AS 'MODULE_PATHNAME', 'biomedclip_embed_slide_wrapper' LANGUAGE C STABLE PARALLEL RESTRICTED COST 1000000;
COMMENT ON FUNCTION biomedclip_embed_slide(bytea, text, embedding, integer, integer, double precision, integer, double precision) IS
    'One slide embedding: the mean of the patch embeddings (= avg() over biomedclip_slide_patches), or attention pooling with weights softmax(temperature * cos(patch, query)); temperature defaults to exp(logit_scale), the zero-shot logit scale (100 for BiomedCLIP).';
