//! Zero-shot classification and calibration in SQL (declared in `sql/zero_shot.sql`).
//!
//! Label embeddings come from the backend's text cache (src/text_cache.rs), keyed by (model
//! SHA-256, prompt text), so scoring the same label set over many images embeds each prompt once
//! per backend.

use crate::model_cache::{self, raise};
use pgrx::PgSqlErrorCode::*;
use crate::vector_datum::PgVector;
use biomedclip_core::calibration::{self, Sample};
use biomedclip_core::zero_shot;
use pgrx::prelude::*;
use pgrx::{pg_sys, Internal, JsonB, PgMemoryContexts};

/// Embeddings of `prompts` for the active model, from the backend's text cache.
fn prompt_embeddings(prompts: &[String]) -> Vec<Vec<f32>> {
    crate::text_cache::embeddings(prompts)
}

fn strings(arr: &Array<&str>, what: &str) -> Vec<String> {
    arr.iter()
        .map(|x| x.map(str::to_string).unwrap_or_else(|| raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{what} must not contain NULL"))))
        .collect()
}

/// Logits of `image` against each label (prompt-ensembled over `templates`).
fn label_logits(image: &PgVector<f32>, labels: &[String], templates: &[String]) -> (String, Vec<f64>) {
    if labels.is_empty() {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, "labels must not be empty".into());
    }
    if templates.is_empty() {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, "templates must not be empty".into());
    }
    let (sha, logit_scale, dim) = model_cache::with_model(|m| (m.manifest_sha256().to_string(), m.manifest().logit_scale, m.manifest().embed_dim));
    crate::vector_datum::check_same_dims(image.dims(), dim);
    let prompts: Vec<String> = labels.iter().flat_map(|l| templates.iter().map(move |t| zero_shot::fill_template(t, l))).collect();
    let embs = prompt_embeddings(&prompts);
    let label_embs: Vec<Vec<f32>> = embs.chunks(templates.len()).map(zero_shot::ensemble).collect();
    (sha, zero_shot::logits(image.as_slice(), &label_embs, logit_scale))
}

struct Calibration {
    temperature: f64,
}

fn load_calibration(name: &str, model_sha: &str, labels: &[String], templates: &[String]) -> Calibration {
    let row = crate::pinned_search_path::with_pinned_search_path(|| Spi::connect(|client| {
        let rows = client.select(
            "SELECT model_sha256, labels, templates, temperature FROM biomedclip.calibrations WHERE name OPERATOR(pg_catalog.=) $1",
            None,
            &[name.into()],
        )?;
        let mut out = None;
        for r in rows {
            out = Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?.unwrap_or_default(),
                r.get::<Vec<String>>(3)?.unwrap_or_default(),
                r.get::<f64>(4)?.unwrap_or(f64::NAN),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    }))
    .unwrap_or_else(|e| error!("cannot read biomedclip.calibrations: {e}"));
    let Some((sha, cal_labels, cal_templates, temperature)) = row else {
        raise(ERRCODE_UNDEFINED_OBJECT, format!("calibration \"{name}\" does not exist in biomedclip.calibrations"));
    };
    if sha != model_sha {
        raise(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, format!("calibration \"{name}\" was fitted for model {sha}, but the active model is {model_sha}"));
    }
    if cal_labels != labels {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("calibration \"{name}\" was fitted for labels {cal_labels:?}, not {labels:?}"));
    }
    if cal_templates != templates {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("calibration \"{name}\" was fitted for templates {cal_templates:?}, not {templates:?}"));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        raise(ERRCODE_DATA_CORRUPTED, format!("calibration \"{name}\" has an invalid temperature {temperature}"));
    }
    Calibration { temperature }
}

#[pg_extern(sql = false)]
fn biomedclip_zero_shot(
    image: Option<PgVector<f32>>,
    labels: Option<Array<&str>>,
    templates: Option<Array<&str>>,
    calibration: Option<&str>,
) -> TableIterator<'static, (name!(label, String), name!(probability, f64), name!(logit, f64), name!(rank, i32))> {
    let (Some(image), Some(labels)) = (image, labels) else { return TableIterator::new(Vec::new()) };
    let labels = strings(&labels, "labels");
    let templates = templates.map(|t| strings(&t, "templates")).unwrap_or_else(|| vec!["this is a photo of {}".to_string()]);
    let (sha, logits) = label_logits(&image, &labels, &templates);
    let temperature = calibration.map_or(1.0, |name| load_calibration(name, &sha, &labels, &templates).temperature);
    let probs = calibration::softmax(&logits, temperature);
    let mut rows: Vec<(String, f64, f64)> = labels.into_iter().zip(probs).zip(logits).map(|((l, p), z)| (l, p, z)).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let out: Vec<(String, f64, f64, i32)> = rows.into_iter().enumerate().map(|(i, (l, p, z))| (l, p, z, i as i32 + 1)).collect();
    TableIterator::new(out)
}

#[pg_extern(sql = false)]
fn biomedclip_zero_shot_logits(image: PgVector<f32>, labels: Array<&str>, templates: Array<&str>) -> Vec<f64> {
    label_logits(&image, &strings(&labels, "labels"), &strings(&templates, "templates")).1
}

#[pg_extern(sql = false)]
fn biomedclip_softmax(logits: Array<f64>, temperature: f64) -> Vec<f64> {
    if !(temperature.is_finite() && temperature > 0.0) {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("temperature must be positive and finite, got {temperature}"));
    }
    let v: Vec<f64> = logits.iter().map(|x| x.unwrap_or_else(|| raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "logits must not contain NULL".into()))).collect();
    calibration::softmax(&v, temperature)
}

/// Number of texts the text tower embedded in this backend (text-cache misses and uncached
/// batches), for tests and for seeing whether a query embeds once or once per row.
#[pg_extern(sql = false)]
fn biomedclip_prompt_cache_misses() -> i64 {
    crate::text_cache::model_texts() as i64
}

// ---- Aggregates over (logits, true_index) rows -------------------------------------------

#[derive(Default)]
pub struct CalibrationState {
    samples: Vec<Sample>,
    bins: Option<i32>,
}

unsafe fn agg_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut ctx: pg_sys::MemoryContext = std::ptr::null_mut();
    if pg_sys::AggCheckCallContext(fcinfo, &mut ctx) == 0 {
        raise(ERRCODE_FEATURE_NOT_SUPPORTED, "biomedclip calibration functions can only be called as aggregates".into());
    }
    ctx
}

/// Transition (logits, true_index): collect one row.
#[pg_extern(sql = false)]
fn biomedclip_calibration_accum(state: Internal, logits: Option<Array<f64>>, true_index: Option<i32>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    accumulate(state, logits, true_index, None, fcinfo)
}

/// Transition (logits, true_index, bins) of biomedclip_reliability.
#[pg_extern(sql = false)]
fn biomedclip_calibration_accum_bins(
    state: Internal,
    logits: Option<Array<f64>>,
    true_index: Option<i32>,
    bins: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    accumulate(state, logits, true_index, bins, fcinfo)
}

/// Collects one row. NULL logits or index are skipped; `true_index` is 1-based.
fn accumulate(mut state: Internal, logits: Option<Array<f64>>, true_index: Option<i32>, bins: Option<i32>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    unsafe {
        let ctx = agg_context(fcinfo);
        let st: &mut CalibrationState = PgMemoryContexts::For(ctx).switch_to(|_| state.get_or_insert_default::<CalibrationState>());
        if let Some(b) = bins {
            st.bins = Some(b);
        }
        if let (Some(logits), Some(idx)) = (logits, true_index) {
            let v: Vec<f64> = logits.iter().map(|x| x.unwrap_or_else(|| raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "logits must not contain NULL".into()))).collect();
            if idx < 1 || idx as usize > v.len() {
                raise(ERRCODE_ARRAY_ELEMENT_ERROR, format!("true_index {idx} is outside 1..{} (it is 1-based, like SQL arrays)", v.len()));
            }
            st.samples.push(Sample { logits: v, true_index: idx as usize - 1 });
        }
    }
    state
}

#[pg_extern(sql = false)]
fn biomedclip_fit_temperature_final(state: Internal) -> Option<JsonB> {
    let st = unsafe { state.get::<CalibrationState>() }?;
    if st.samples.is_empty() {
        return None;
    }
    let fit = calibration::fit(&st.samples).unwrap_or_else(|e| raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("cannot fit a temperature: {e}")));
    if fit.at_search_bound {
        crate::report_held::held(|| {
            pgrx::warning!(
                "the temperature fit is degenerate: it stopped at the search bound T = {:.4} (constant or perfectly separated logits); biomedclip_save_calibration refuses it",
                fit.temperature
            )
        });
    }
    Some(JsonB(serde_json::to_value(fit).expect("fit serializes")))
}

#[pg_extern(sql = false)]
fn biomedclip_reliability_final(state: Internal) -> Option<JsonB> {
    let st = unsafe { state.get::<CalibrationState>() }?;
    if st.samples.is_empty() {
        return None;
    }
    calibration::validate(&st.samples).unwrap_or_else(|e| raise(ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()));
    let bins = st.bins.unwrap_or(15);
    if !(1..=1000).contains(&bins) {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("bins must be between 1 and 1000, got {bins}"));
    }
    let table = calibration::reliability(&st.samples, 1.0, bins as usize);
    Some(JsonB(serde_json::to_value(table).expect("bins serialize")))
}
