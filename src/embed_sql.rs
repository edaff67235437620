//! The embedding functions: `biomedclip_embed_image(bytea)`, `biomedclip_embed_text(text)`,
//! their batch forms, and the inspection functions `biomedclip_tokenize`, `biomedclip_preprocess`,
//! `biomedclip_model_info`. Declared in `sql/model_functions.sql`.

use crate::model_cache::{self, image_error_code, raise_image_error, raise_text_error};
use crate::settings;
use crate::vector_datum::PgVector;
use biomedclip_core::batching;
use biomedclip_core::model::Output;
use biomedclip_core::image_decode::ImageError;
use biomedclip_core::preprocess::{self, PreprocessConfig};
use biomedclip_core::tokenize::TextError;
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

/// Runs a decoding step, raising its error; a panic in a decoder becomes an ERROR, not a crash.
/// A PostgreSQL error raised inside the step (a query cancel seen by `check_for_interrupts!`)
/// travels on unchanged.
pub(crate) fn guarded<T>(step: impl FnOnce() -> Result<T, ImageError>) -> T {
    caught(step).unwrap_or_else(|e| raise_image_error(e))
}

/// Under `biomedclip.on_error = null`, says which input was skipped (WARNING) and returns;
/// otherwise raises. `element` is the 1-based array position, when there is one.
pub(crate) fn skip_or_raise(code: PgSqlErrorCode, message: String, element: Option<usize>) {
    let message = match element {
        Some(i) => format!("element {i}: {message}"),
        None => message,
    };
    if settings::ON_ERROR.get() == settings::OnError::Null {
        crate::report_held::held(|| pgrx::warning!("biomedclip: input skipped, embedded as NULL (biomedclip.on_error = null): {message}"));
    } else {
        model_cache::raise(code, message);
    }
}

/// A decoding step's result, with a decoder panic turned into an error (a PostgreSQL error
/// raised inside, such as a query cancel, travels on unchanged).
pub(crate) fn caught<T>(step: impl FnOnce() -> Result<T, ImageError>) -> Result<T, ImageError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(r) => r,
        Err(payload) if payload.is::<pg_sys::panic::CaughtError>() => std::panic::resume_unwind(payload),
        Err(_) => Err(ImageError::Corrupt { format: "image", detail: "the decoder failed on malformed data".into() }),
    }
}

/// biomedclip.max_image_pixels.
pub(crate) fn pixel_limit() -> u64 {
    settings::MAX_IMAGE_PIXELS.get().max(1) as u64
}

/// Appends the model's 8-bit view of the image to `out`, or (under on_error = null) leaves `out`
/// as it was and returns false.
fn view_or_skip(data: &[u8], size: usize, out: &mut Vec<u8>, element: Option<usize>) -> bool {
    let before = out.len();
    match caught(|| preprocess::model_view_into(data, size, pixel_limit(), out)) {
        Ok(()) => true,
        Err(e) => {
            out.truncate(before);
            skip_or_raise(image_error_code(&e), e.to_string(), element);
            false
        }
    }
}

pub(crate) fn model_preprocess_config() -> PreprocessConfig {
    model_cache::with_model(|m| m.preprocess().clone())
}

/// The side of the square RGB view the image tower takes.
pub(crate) fn model_image_size() -> usize {
    model_cache::with_model(|m| m.preprocess().image_size)
}

/// Embeds `count` images given as the model's 8-bit RGB views (back to back) in one model call.
pub(crate) fn embed_views(rgb: &[u8], count: usize) -> Vec<Vec<f32>> {
    views_output(rgb, count, Output::Embeddings)
}

fn views_output(rgb: &[u8], count: usize, output: Output) -> Vec<Vec<f32>> {
    model_cache::infer(|m, i| m.embed_rgb(rgb, count, output, i))
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
    token_batches_output(ids, Output::Embeddings)
}

fn token_batches_output(ids: &[Vec<u32>], output: Output) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(ids.len());
    for range in text_batches(ids) {
        pgrx::check_for_interrupts!();
        out.extend(model_cache::infer(|m, i| m.embed_token_ids(&ids[range.clone()], output, i)));
        crate::text_cache::count_model_texts(range.len());
    }
    out
}

/// `elements` gives the 1-based array position of each image, for error messages. An image
/// that cannot be decoded is an error, or None under on_error = null.
pub(crate) fn image_batch_output(images: &[&[u8]], elements: Option<&[usize]>, output: Output) -> Vec<Option<Vec<f32>>> {
    let size = model_image_size();
    let mut out = Vec::with_capacity(images.len());
    for range in batching::item_batches(images.len(), batch_size()) {
        let mut views = Vec::with_capacity(range.len() * 3 * size * size);
        let mut decoded = Vec::with_capacity(range.len());
        for i in range.clone() {
            pgrx::check_for_interrupts!();
            decoded.push(view_or_skip(images[i], size, &mut views, elements.map(|e| e[i])));
        }
        let count = decoded.iter().filter(|&&d| d).count();
        let mut rows = if count == 0 { Vec::new() } else { views_output(&views, count, output) }.into_iter();
        out.extend(decoded.into_iter().map(|d| if d { rows.next() } else { None }));
    }
    out
}

/// Token ids of `text` and whether the context cut it. A long text is tokenized in pieces, and a
/// query cancel or statement timeout is seen between them (and before each text).
fn encode_text(text: &str) -> Result<(Vec<u32>, bool), TextError> {
    model_cache::with_model(|m| m.tokenizer().map(|t| t.encode_watched(text, &model_cache::pg_interrupt_pending)))
        .unwrap_or_else(|e| model_cache::raise_model_error(e))
}

pub(crate) fn tokenize(text: &str) -> Vec<u32> {
    let (ids, cut) = encode_text(text).unwrap_or_else(|e| raise_text_error(e));
    if cut {
        notice_truncation_once(ids.len());
    }
    ids
}

/// Says once per statement that a text was longer than the model's context and was cut (the
/// end of a long report is not embedded). No text in the message: it may hold PHI.
fn notice_truncation_once(context: usize) {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(i64, i64)> = const { Cell::new((0, 0)) };
    }
    let statement = unsafe { (pg_sys::GetCurrentTransactionStartTimestamp(), pg_sys::GetCurrentStatementStartTimestamp()) };
    if LAST.with(|l| l.replace(statement)) != statement {
        crate::report_held::held(|| {
            pgrx::notice!(
                "biomedclip: text longer than the model's context of {context} tokens was cut to {context} tokens; the rest is not embedded (one notice per statement)"
            )
        });
    }
}

/// Token ids of an array element, or None (with a WARNING) under on_error = null.
fn tokenize_element(text: &str, element: Option<usize>) -> Option<Vec<u32>> {
    match encode_text(text) {
        Ok((ids, cut)) => {
            if cut {
                notice_truncation_once(ids.len());
            }
            Some(ids)
        }
        Err(TextError::Interrupted) => raise_text_error(TextError::Interrupted),
        Err(err) => {
            skip_or_raise(model_cache::text_error_code(&err), err.to_string(), element);
            None
        }
    }
}

fn embed_image_batch(images: &[&[u8]], elements: Option<&[usize]>) -> Vec<Option<Vec<f32>>> {
    image_batch_output(images, elements, Output::Embeddings)
}

fn embed_text_batch(texts: &[&str], elements: &[usize]) -> Vec<Option<Vec<f32>>> {
    text_batch_output(texts, Some(elements), Output::Embeddings)
}

/// The rows of `output` for texts (`elements`: their 1-based array positions, when in an array);
/// a text that cannot be tokenized is an error, or None under on_error = null.
pub(crate) fn text_batch_output(texts: &[&str], elements: Option<&[usize]>, output: Output) -> Vec<Option<Vec<f32>>> {
    let ids: Vec<Option<Vec<u32>>> = texts.iter().enumerate().map(|(k, t)| tokenize_element(t, elements.map(|e| e[k]))).collect();
    let present: Vec<Vec<u32>> = ids.iter().flatten().cloned().collect();
    let mut rows = token_batches_output(&present, output).into_iter();
    ids.iter().map(|x| x.as_ref().and_then(|_| rows.next())).collect()
}

/// A NOTICE when the image is a whole-slide image (a pyramidal or large tiled TIFF, an SVS): embedding it whole
/// downscales gigapixels to 224 x 224, which is rarely what is meant.
fn hint_if_slide(data: &[u8]) {
    if !(data.starts_with(b"II*\0") || data.starts_with(b"MM\0*")) {
        return;
    }
    if let Ok(Ok(levels)) = std::panic::catch_unwind(|| biomedclip_core::slide::Slide::open(data).map(|s| s.levels())) {
        let large_tiled = levels[0].tile_width > 0 && levels[0].width as u64 * levels[0].height as u64 >= 2048 * 2048;
        if levels.len() > 1 || large_tiled {
            crate::report_held::held(|| {
                pgrx::notice!(
                    "biomedclip: this is a whole-slide image ({} x {} pixels, {} level{}) embedded as one picture; for pathology use biomedclip_embed_slide or biomedclip_slide_patches",
                    levels[0].width,
                    levels[0].height,
                    levels.len(),
                    if levels.len() == 1 { "" } else { "s" }
                )
            });
        }
    }
}

#[pg_extern(sql = false)]
fn biomedclip_embed_image(data: &[u8]) -> Option<PgVector<f32>> {
    hint_if_slide(data);
    let row = embed_image_batch(&[data], None).pop().expect("one row per image")?;
    Some(PgVector::from_slice(&row))
}

/// One text, from the backend's text cache when this model has embedded it before (a call
/// inline in a WHERE clause runs once per row).
#[pg_extern(sql = false)]
fn biomedclip_embed_text(text: &str) -> Option<PgVector<f32>> {
    if settings::ON_ERROR.get() == settings::OnError::Null {
        tokenize_element(text, None)?;
    }
    let row = crate::text_cache::embeddings(&[text.to_string()]).pop().expect("one row per text");
    Some(PgVector::from_slice(&row))
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
/// and their 1-based array positions, and gives a row (or None, skipped) per item.
pub(crate) fn embed_with_nulls<T: Copy>(items: Vec<Option<T>>, embed: impl FnOnce(&[T], &[usize]) -> Vec<Option<Vec<f32>>>) -> Vec<Option<Vec<f32>>> {
    let present: Vec<T> = items.iter().flatten().copied().collect();
    let positions: Vec<usize> = items.iter().enumerate().filter(|(_, x)| x.is_some()).map(|(i, _)| i + 1).collect();
    let mut rows = embed(&present, &positions).into_iter();
    items.iter().map(|x| x.and_then(|_| rows.next().expect("one row per item"))).collect()
}

#[pg_extern(sql = false)]
fn biomedclip_embed_images(images: Array<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingArray {
    let items: Vec<Option<&[u8]>> = images.iter().collect();
    embedding_array(fcinfo, embed_with_nulls(items, |x, pos| embed_image_batch(x, Some(pos))))
}

#[pg_extern(sql = false)]
fn biomedclip_embed_texts(texts: Array<&str>, fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingArray {
    let items: Vec<Option<&str>> = texts.iter().collect();
    embedding_array(fcinfo, embed_with_nulls(items, embed_text_batch))
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
    guarded(|| preprocess::preprocess_into(data, &cfg, pixel_limit(), &mut out));
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
