//! Features before the projection and the model's own projections, for fine-tuning on stored
//! features: `biomedclip_image_features` / `biomedclip_text_features` (one input or an array)
//! return each tower's pooled output before its projection (768-d for BiomedCLIP), as the model
//! computed it; `biomedclip_project_image` / `biomedclip_project_text` apply the model's own
//! projection (read from its directory, hashed against the manifest) and L2-normalize, so that
//! `biomedclip_project_image(biomedclip_image_features(x))` is `biomedclip_embed_image(x)` up to
//! float rounding, without running the ViT again. Model directories written before features
//! existed have no `features` entry: these functions then raise 0A000.

use crate::embed_sql::{embed_with_nulls, embedding_array, image_batch_output, text_batch_output, EmbeddingArray};
use crate::model_cache::{self, raise};
use crate::vector_datum::PgVector;
use biomedclip_core::finetune::projection::Head;
use biomedclip_core::model::{Output, Tower};
use biomedclip_core::projection_file::load_projection;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;
use std::cell::RefCell;
use std::rc::Rc;

thread_local! {
    /// The active model's heads: (manifest SHA-256, tower) → head.
    static HEADS: RefCell<Vec<(String, Tower, Rc<Head>)>> = const { RefCell::new(Vec::new()) };
}

/// The configured model's projection head for `tower`, with that model's manifest SHA-256 (the
/// towers themselves are not loaded for this).
pub(crate) fn model_head(tower: Tower) -> (String, Rc<Head>) {
    let (sha, dir, manifest) = model_cache::configured_manifest();
    if let Some(h) = HEADS.with(|c| c.borrow().iter().find(|(s, t, _)| *s == sha && *t == tower).map(|e| Rc::clone(&e.2))) {
        return (sha, h);
    }
    let head = Rc::new(load_projection(&dir, &manifest, tower).unwrap_or_else(|e| model_cache::raise_model_error(e)));
    HEADS.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|(s, _, _)| *s == sha);
        c.push((sha.clone(), tower, Rc::clone(&head)));
    });
    (sha, head)
}

/// Both heads of the configured model, read under one manifest: (its SHA-256, image, text).
pub(crate) fn model_heads() -> (String, Rc<Head>, Rc<Head>) {
    let (sha, image) = model_head(Tower::Image);
    let (again, text) = model_head(Tower::Text);
    if again != sha {
        raise(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "the model directory changed while its projections were read; retry".into());
    }
    (sha, image, text)
}

fn single(row: Option<Vec<f32>>) -> Option<PgVector<f32>> {
    row.map(|r| PgVector::from_slice(&r))
}

#[pg_extern(sql = false)]
fn biomedclip_image_features(data: &[u8]) -> Option<PgVector<f32>> {
    single(image_batch_output(&[data], None, Output::Features).pop().expect("one row per image"))
}

#[pg_extern(sql = false)]
fn biomedclip_text_features(text: &str) -> Option<PgVector<f32>> {
    single(text_batch_output(&[text], None, Output::Features).pop().expect("one row per text"))
}

#[pg_extern(sql = false, name = "biomedclip_image_features")]
fn biomedclip_image_features_array(images: Array<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingArray {
    let items: Vec<Option<&[u8]>> = images.iter().collect();
    embedding_array(fcinfo, embed_with_nulls(items, |x, pos| image_batch_output(x, Some(pos), Output::Features)))
}

#[pg_extern(sql = false, name = "biomedclip_text_features")]
fn biomedclip_text_features_array(texts: Array<&str>, fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingArray {
    let items: Vec<Option<&str>> = texts.iter().collect();
    embedding_array(fcinfo, embed_with_nulls(items, |x, pos| text_batch_output(x, Some(pos), Output::Features)))
}

/// `head` applied to one row of features, L2-normalized, as float4.
pub(crate) fn project_row(head: &Head, features: &[f32], what: &str) -> PgVector<f32> {
    if features.len() != head.d_in() {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("{what} takes {}-d features, not {}", head.d_in(), features.len()));
    }
    let x: Vec<f64> = features.iter().map(|&v| v as f64).collect();
    let y = head.apply(&x);
    let norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
    let out: Vec<f32> = y.iter().map(|v| (v / norm) as f32).collect();
    if !(norm > 0.0) || out.iter().any(|v| !v.is_finite()) {
        raise(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, format!("{what} gives no finite direction for these features"));
    }
    PgVector::from_slice(&out)
}

fn project(features: PgVector<f32>, tower: Tower) -> PgVector<f32> {
    let (_, head) = model_head(tower);
    project_row(&head, features.as_slice(), &format!("the model's {} projection", tower.name()))
}

#[pg_extern(sql = false)]
fn biomedclip_project_image(features: PgVector<f32>) -> PgVector<f32> {
    project(features, Tower::Image)
}

#[pg_extern(sql = false)]
fn biomedclip_project_text(features: PgVector<f32>) -> PgVector<f32> {
    project(features, Tower::Text)
}
