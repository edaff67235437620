//! The embedding functions: `biomedclip_embed_image(bytea)`, `biomedclip_embed_text(text)`,
//! their batch forms, and the inspection functions `biomedclip_tokenize`, `biomedclip_preprocess`,
//! `biomedclip_model_info`. Declared in `sql/model_functions.sql`.

use crate::model_cache::{self, image_error_code, raise_image_error, raise_text_error};
use crate::settings;
use crate::vector_datum::PgVector;
use biomedclip_core::batching;
use biomedclip_core::image_decode::ImageError;
use biomedclip_core::preprocess::{self, PreprocessConfig};
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

/// Runs a decoding step, raising its error; a panic in a decoder becomes an ERROR, not a crash.
/// A PostgreSQL error raised inside the step (a query cancel seen by `check_for_interrupts!`)
/// travels on unchanged.
pub(crate) fn guarded<T>(step: impl FnOnce() -> Result<T, ImageError>) -> T {
    guarded_element(None, step)
}

/// [`guarded`], naming the 1-based array `element` in the error when there is one.
fn guarded_element<T>(element: Option<usize>, step: impl FnOnce() -> Result<T, ImageError>) -> T {
    let error = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(payload) if payload.is::<pg_sys::panic::CaughtError>() => std::panic::resume_unwind(payload),
        Err(_) => ImageError::Corrupt { format: "image", detail: "the decoder failed on malformed data".into() },
    };
    match element {
        None => raise_image_error(error),
        Some(i) => model_cache::raise(image_error_code(&error), format!("element {i}: {error}")),
    }
}

/// biomedclip.max_image_pixels.
pub(crate) fn pixel_limit() -> u64 {
    settings::MAX_IMAGE_PIXELS.get().max(1) as u64
}

/// Decodes and preprocesses, turning a decoder panic into an error instead of a crash. In an
/// array, `element` (1-based, as SQL arrays) is named in the error.
fn preprocess_image(data: &[u8], cfg: &PreprocessConfig, out: &mut Vec<f32>, element: Option<usize>) {
    guarded_element(element, || preprocess::preprocess_into(data, cfg, pixel_limit(), out))
}

pub(crate) fn model_preprocess_config() -> PreprocessConfig {
    model_cache::with_model(|m| m.preprocess.clone())
}

/// Embeds `count` preprocessed images (CHW tensors, back to back) in one model call.
pub(crate) fn embed_tensors(pixels: &[f32], count: usize) -> Vec<Vec<f32>> {
    model_cache::infer(|m, i| m.embed_images(pixels, count, i))
}

/// Images per inference call: biomedclip.batch_size, capped by the superuser's
/// biomedclip.max_batch_images.
pub(crate) fn batch_size() -> usize {
    settings::BATCH_SIZE.get().clamp(1, settings::MAX_BATCH_IMAGES.get().max(1)) as usize
}

/// Texts per inference call: biomedclip.batch_size, and at most biomedclip.max_batch_tokens
/// padded tokens.
fn text_batches(ids: &[Vec<u32>]) -> Vec<std::ops::Range<usize>> {
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let items = settings::BATCH_SIZE.get().max(1) as usize;
    batching::token_batches(&lens, items, settings::MAX_BATCH_TOKENS.get().max(1) as usize)
}

/// Embeds token sequences in budgeted calls.
pub(crate) fn embed_token_batches(ids: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(ids.len());
    for range in text_batches(ids) {
        pgrx::check_for_interrupts!();
        out.extend(model_cache::infer(|m, i| m.embed_token_ids(&ids[range.clone()], i)));
    }
    out
}

/// `elements` gives the 1-based array position of each image, for error messages.
fn embed_image_batch(images: &[&[u8]], elements: Option<&[usize]>) -> Vec<Vec<f32>> {
    let cfg = model_preprocess_config();
    let mut out = Vec::with_capacity(images.len());
    for range in batching::item_batches(images.len(), batch_size()) {
        let mut pixels = Vec::with_capacity(range.len() * 3 * cfg.image_size * cfg.image_size);
        for i in range.clone() {
            pgrx::check_for_interrupts!();
            preprocess_image(images[i], &cfg, &mut pixels, elements.map(|e| e[i]));
        }
        out.extend(embed_tensors(&pixels, range.len()));
    }
    out
}

pub(crate) fn tokenize(text: &str) -> Vec<u32> {
    model_cache::with_model(|m| m.tokenizer.encode(text)).unwrap_or_else(|e| raise_text_error(e))
}

fn embed_text_batch(texts: &[&str], elements: Option<&[usize]>) -> Vec<Vec<f32>> {
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| match elements {
            None => tokenize(t),
            Some(e) => model_cache::with_model(|m| m.tokenizer.encode(t))
                .unwrap_or_else(|err| model_cache::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("element {}: {err}", e[i]))),
        })
        .collect();
    embed_token_batches(&ids)
}

#[pg_extern(sql = false)]
fn biomedclip_embed_image(data: &[u8]) -> PgVector<f32> {
    let row = embed_image_batch(&[data], None).pop().expect("one row per image");
    PgVector::from_slice(&row)
}

#[pg_extern(sql = false)]
fn biomedclip_embed_text(text: &str) -> PgVector<f32> {
    let row = embed_text_batch(&[text], None).pop().expect("one row per text");
    PgVector::from_slice(&row)
}

/// `embedding[]` built with the element type of the calling function's declared result.
pub struct EmbeddingArray(pg_sys::Datum);

unsafe impl pgrx::callconv::BoxRet for EmbeddingArray {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}
impl_sql_translatable!(EmbeddingArray, "embedding[]");

/// Builds a 1-D array of embeddings; `None` entries become NULL elements.
pub fn embedding_array(fcinfo: pg_sys::FunctionCallInfo, rows: Vec<Option<Vec<f32>>>) -> EmbeddingArray {
    unsafe {
        let rettype = pg_sys::get_fn_expr_rettype((*fcinfo).flinfo);
        let elem = pg_sys::get_element_type(rettype);
        if elem == pg_sys::InvalidOid {
            error!("biomedclip: cannot determine the embedding element type");
        }
        let mut datums: Vec<pg_sys::Datum> = Vec::with_capacity(rows.len());
        let mut nulls: Vec<bool> = Vec::with_capacity(rows.len());
        for row in &rows {
            match row {
                Some(v) => {
                    datums.push(PgVector::from_slice(v).into_datum().expect("vector datum"));
                    nulls.push(false);
                }
                None => {
                    datums.push(pg_sys::Datum::from(0usize));
                    nulls.push(true);
                }
            }
        }
        let mut dims = [rows.len() as i32];
        let mut lbs = [1i32];
        let arr = pg_sys::construct_md_array(
            datums.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            elem,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        );
        EmbeddingArray(pg_sys::Datum::from(arr))
    }
}

/// Embeds the non-NULL elements as batches and puts NULLs back in place. `embed` gets the items
/// and their 1-based array positions.
fn embed_with_nulls<T: Copy>(items: Vec<Option<T>>, embed: impl FnOnce(&[T], &[usize]) -> Vec<Vec<f32>>) -> Vec<Option<Vec<f32>>> {
    let present: Vec<T> = items.iter().flatten().copied().collect();
    let positions: Vec<usize> = items.iter().enumerate().filter(|(_, x)| x.is_some()).map(|(i, _)| i + 1).collect();
    let mut rows = embed(&present, &positions).into_iter();
    items.iter().map(|x| x.map(|_| rows.next().expect("one row per item"))).collect()
}

#[pg_extern(sql = false)]
fn biomedclip_embed_images(images: Array<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingArray {
    let items: Vec<Option<&[u8]>> = images.iter().collect();
    embedding_array(fcinfo, embed_with_nulls(items, |x, pos| embed_image_batch(x, Some(pos))))
}

#[pg_extern(sql = false)]
fn biomedclip_embed_texts(texts: Array<&str>, fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingArray {
    let items: Vec<Option<&str>> = texts.iter().collect();
    embedding_array(fcinfo, embed_with_nulls(items, |x, pos| embed_text_batch(x, Some(pos))))
}

/// The token ids fed to the text tower (after open_clip's cleaning, unpadded).
#[pg_extern(sql = false)]
fn biomedclip_tokenize(text: &str) -> Vec<i32> {
    tokenize(text).into_iter().map(|t| t as i32).collect()
}

/// The normalized 3×224×224 tensor the image tower sees, flattened channel-first.
#[pg_extern(sql = false)]
fn biomedclip_preprocess(data: &[u8]) -> Vec<f32> {
    let cfg = model_preprocess_config();
    let mut out = Vec::with_capacity(3 * cfg.image_size * cfg.image_size);
    preprocess_image(data, &cfg, &mut out, None);
    out
}

#[pg_extern(sql = false)]
fn biomedclip_model_info() -> JsonB {
    JsonB(model_cache::info())
}

/// Drops this backend's model and loads it again, re-verifying every file.
#[pg_extern(sql = false)]
fn biomedclip_load_model() -> JsonB {
    model_cache::forget();
    JsonB(model_cache::info())
}
