//! Whole-slide functions: `biomedclip_slide_levels`, `biomedclip_slide_patches`,
//! `biomedclip_embed_slide` and `biomedclip_render_slide_region`. Declared in
//! `sql/medical_images.sql`; reading, tissue masking and pooling are in `biomedclip_core`.
//!
//! Memory: the slide's compressed bytes (a bytea, at most 1 GB) plus at most 64 decoded tiles, one
//! batch of patch tensors and the result rows (2 KiB per patch); never a decoded level.

use crate::embed_sql::{batch_size, embed_views, guarded, model_image_size, pixel_limit};
use crate::model_cache::{self, raise_image_error};
use crate::vector_datum::PgVector;
use biomedclip_core::image_decode::{Decoded, ImageError, Mode, Pixels};
use biomedclip_core::pooling;
use biomedclip_core::preprocess;
use biomedclip_core::slide::{Patch, PatchParams, Slide};
use pgrx::prelude::*;

fn open(data: &[u8]) -> Slide<'_> {
    guarded(|| Slide::open(data))
}

fn params(patch_size: i32, level: i32, tissue_threshold: f64, max_patches: i32) -> PatchParams {
    let non_negative = |v: i32, what: &str| {
        u32::try_from(v).unwrap_or_else(|_| raise_image_error(ImageError::Invalid(format!("{what} must not be negative ({v})"))))
    };
    PatchParams {
        patch_size: non_negative(patch_size, "patch_size"),
        level: non_negative(level, "level") as usize,
        tissue_threshold,
        max_patches: non_negative(max_patches, "max_patches") as usize,
    }
}

/// Cuts the planned patches and embeds them in batches of biomedclip.batch_size.
fn embed_patches(data: &[u8], p: &PatchParams) -> (Vec<Patch>, Vec<Vec<f32>>) {
    let slide = open(data);
    let plan = guarded(|| {
        let mask = slide.tissue_mask_with(&mut || {
            pgrx::check_for_interrupts!();
        })?;
        slide.plan(p, &mask)
    });
    let mut reader = guarded(|| slide.reader(p.level));
    let size = model_image_size();
    let mut rows = Vec::with_capacity(plan.patches.len());
    for chunk in plan.patches.chunks(batch_size()) {
        let mut views = Vec::with_capacity(chunk.len() * 3 * size * size);
        for patch in chunk {
            pgrx::check_for_interrupts!();
            let region = guarded(|| reader.read_region(patch.x, patch.y, p.patch_size, p.patch_size));
            let image = Decoded { mode: Mode::Rgb, pixels: Pixels::U8(region), palette: Vec::new() };
            views.extend_from_slice(&preprocess::model_view_rgb(image, size).1);
        }
        rows.extend(embed_views(&views, chunk.len()));
    }
    (plan.patches, rows)
}

#[pg_extern(sql = false)]
fn biomedclip_slide_patches(data: &[u8], patch_size: i32, level: i32, tissue_threshold: f64, max_patches: i32) -> TableIterator<'static, (name!(x, i32), name!(y, i32), name!(level, i32), name!(tissue_fraction, f64), name!(embedding, PgVector<f32>))> {
    let p = params(patch_size, level, tissue_threshold, max_patches);
    let (patches, rows) = embed_patches(data, &p);
    let out: Vec<_> = patches
        .into_iter()
        .zip(rows)
        .map(|(patch, row)| (patch.x as i32, patch.y as i32, p.level as i32, patch.tissue_fraction, PgVector::from_slice(&row)))
        .collect();
    TableIterator::new(out)
}

#[pg_extern(sql = false)]
fn biomedclip_slide_levels(data: &[u8]) -> TableIterator<'static, (name!(level, i32), name!(width, i32), name!(height, i32), name!(downsample, f64), name!(tile_width, i32), name!(tile_height, i32))> {
    let levels = open(data).levels();
    TableIterator::new(levels.into_iter().map(|l| {
        (l.level as i32, l.width as i32, l.height as i32, l.downsample, l.tile_width as i32, l.tile_height as i32)
    }))
}

/// Pixels of a level region as PNG: what the model sees for a patch (before resizing).
#[pg_extern(sql = false)]
fn biomedclip_render_slide_region(data: &[u8], x: i32, y: i32, width: i32, height: i32, level: i32) -> Vec<u8> {
    let slide = open(data);
    guarded(|| {
        let (x, y, w, h) = (u32::try_from(x), u32::try_from(y), u32::try_from(width), u32::try_from(height));
        let (Ok(x), Ok(y), Ok(w), Ok(h), Ok(level)) = (x, y, w, h, usize::try_from(level)) else {
            return Err(ImageError::Invalid("region coordinates and level must not be negative".into()));
        };
        if w == 0 || h == 0 || w as u64 * h as u64 > pixel_limit() {
            return Err(ImageError::TooManyPixels { width: w as u64, height: h as u64, limit: pixel_limit() });
        }
        // A region past the level's edge would come back padded: refuse it, naming the size.
        if let Some(l) = slide.levels().get(level) {
            if x as u64 + w as u64 > l.width as u64 || y as u64 + h as u64 > l.height as u64 {
                return Err(ImageError::Invalid(format!(
                    "region x {x}..{}, y {y}..{} runs past level {level}, which is {} x {} pixels",
                    x as u64 + w as u64,
                    y as u64 + h as u64,
                    l.width,
                    l.height
                )));
            }
        }
        let region = slide.reader(level)?.read_region(x, y, w, h)?;
        biomedclip_core::image_decode::encode_png(&Decoded { mode: Mode::Rgb, pixels: Pixels::U8(region), palette: Vec::new() })
    })
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn biomedclip_embed_slide(
    data: Option<&[u8]>,
    pooling: Option<&str>,
    query: Option<PgVector<f32>>,
    patch_size: Option<i32>,
    level: Option<i32>,
    tissue_threshold: Option<f64>,
    max_patches: Option<i32>,
    temperature: Option<f64>,
) -> Option<PgVector<f32>> {
    let data = data?;
    let p = params(patch_size?, level?, tissue_threshold?, max_patches?);
    let method = pooling?.trim().to_ascii_lowercase();
    if method != "mean" && method != "attention" {
        ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("pooling must be 'mean' or 'attention', not \"{}\"", method.chars().take(40).collect::<String>()));
    }
    if method == "mean" && query.is_some() {
        ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "a query embedding is only used by pooling => 'attention'; 'mean' pooling would ignore it");
    }
    if method == "attention" && query.is_none() {
        ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "attention pooling needs a query embedding (e.g. biomedclip_embed_text('...'))");
    }
    let (_, rows) = embed_patches(data, &p);
    let pooled = match &query {
        Some(q) if method == "attention" => {
            // The same scale as zero-shot logits: exp(logit_scale) (100 for BiomedCLIP), so the
            // weights are a softmax over the logits the model itself would give each patch. The
            // raw logit_scale (about 4.6) would make the weights nearly uniform, i.e. the mean.
            let t = temperature.unwrap_or_else(|| model_cache::with_model(|m| m.manifest().logit_scale.exp()));
            pooling::attention(&rows, q.as_slice(), t)
        }
        _ => pooling::mean(&rows),
    };
    match pooled {
        Ok(v) => Some(PgVector::from_slice(&v)),
        Err(e) => {
            ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
    }
}
