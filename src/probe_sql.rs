//! `biomedclip_train_probe` and `biomedclip_probe`: linear probes trained in SQL on the rows the
//! caller can see (the examples query runs as the caller, so row-level security applies), stored
//! with their SHA-256 and an audit row, and applied with the stored hash verified on every call.
//! The algorithm is biomedclip_core::finetune::probe_run.

use crate::extension_owner::{as_extension_owner, extension_info};
use crate::model_cache::raise;
use crate::stored_weights::{Cache, WeightsTable};
use crate::training_progress::Progress;
use crate::training_runs;
use crate::vector_datum::PgVector;
use biomedclip_core::finetune::probe::{Probe, ProbeOptions};
use biomedclip_core::finetune::probe_run::{train_probe_watched, Example, ProbeModel, ProbeRunOptions};
use pgrx::prelude::*;
use pgrx::JsonB;
use pgrx::PgSqlErrorCode::*;
use serde_json::{json, Value};

const OPTION_KEYS: [&str; 6] = ["C", "class_weight", "val_fraction", "seed", "calibrate", "replace"];

fn bad(message: String) -> ! {
    raise(ERRCODE_INVALID_PARAMETER_VALUE, message)
}

fn parse_options(options: &Value) -> (ProbeRunOptions, bool, Value) {
    let Some(o) = options.as_object() else { bad("options must be a JSON object".into()) };
    if let Some(k) = o.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
        bad(format!("unknown option \"{k}\" (options: {})", OPTION_KEYS.join(", ")));
    }
    let num = |k: &str, d: f64| o.get(k).map_or(d, |v| v.as_f64().unwrap_or_else(|| bad(format!("option \"{k}\" must be a number"))));
    let c = num("C", 1.0);
    let val_fraction = num("val_fraction", 0.2);
    let seed = o.get("seed").map_or(0, |v| v.as_u64().unwrap_or_else(|| bad("option \"seed\" must be a non-negative integer".into())));
    let balanced = match o.get("class_weight") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "balanced" => true,
        Some(_) => bad("option \"class_weight\" must be null or \"balanced\"".into()),
    };
    let flag = |k: &str, d: bool| o.get(k).map_or(d, |v| v.as_bool().unwrap_or_else(|| bad(format!("option \"{k}\" must be true or false"))));
    let (calibrate, replace) = (flag("calibrate", true), flag("replace", false));
    if !(c > 0.0 && c.is_finite()) || !(val_fraction > 0.0 && val_fraction < 1.0) {
        bad("C must be positive and val_fraction between 0 and 1".into());
    }
    let used = json!({"C": c, "class_weight": if balanced { json!("balanced") } else { Value::Null }, "val_fraction": val_fraction,
                      "seed": seed, "calibrate": calibrate, "replace": replace, "solver": "lbfgs", "gtol": ProbeOptions::default().gtol,
                      "max_iter": ProbeOptions::default().max_iter});
    let opts = ProbeRunOptions { probe: ProbeOptions { c, balanced, ..Default::default() }, val_fraction, seed, calibrate };
    (opts, replace, used)
}

/// The examples, read as the caller with the caller's own search_path (it is the caller's SQL).
fn read_examples(query: &str) -> Vec<Example> {
    // Whether the query has the optional features column, from its result description (LIMIT 0
    // plans the query and reads no row).
    let has_features = Spi::connect(|client| {
        let t = client.select(&format!("SELECT * FROM ({query}) AS q LIMIT 0"), None, &[])?;
        for i in 1..=t.columns()? {
            if t.column_name(i)? == "features" {
                return Ok(true);
            }
        }
        Ok::<_, pgrx::spi::Error>(false)
    })
    .unwrap_or_else(|e| error!("{e}"));
    let features = if has_features { "q.features::pg_catalog.float8[]" } else { "NULL::pg_catalog.float8[]" };
    let wrapped = format!("SELECT q.example_id::pg_catalog.text, q.embedding::pg_catalog.float8[], q.label::pg_catalog.text, {features} FROM ({query}) AS q");
    // Read through a cursor, 1,000 rows at a time, so the rows are held once (as f64), not also
    // as a whole SPI result.
    Spi::connect(|client| {
        let mut cursor = client.try_open_cursor(wrapped.as_str(), &[])?;
        let mut out = Vec::new();
        loop {
            let rows = cursor.fetch(1000)?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let (Some(id), Some(embedding), Some(label)) = (r.get::<String>(1)?, r.get::<Vec<f64>>(2)?, r.get::<String>(3)?) else {
                    bad("example_id, embedding and label must not be NULL".into());
                };
                let features = match r.get::<Array<f64>>(4)? {
                    None => Vec::new(),
                    Some(a) => a.iter().map(|v| v.unwrap_or_else(|| bad(format!("features of example {id} must not hold NULLs")))).collect(),
                };
                out.push(Example { id, embedding, label, features });
            }
            // The batch is copied out; free its SPI result now rather than at SPI_finish.
            unsafe { pgrx::pg_sys::SPI_freetuptable(pgrx::pg_sys::SPI_tuptable) };
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| error!("{e}"))
}

fn metrics_json(m: &biomedclip_core::finetune::metrics::ClassMetrics) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

#[pg_extern(sql = false)]
fn biomedclip_train_probe(name: Option<&str>, examples_query: Option<&str>, options: Option<JsonB>) -> JsonB {
    let (Some(name), Some(query)) = (name.filter(|n| !n.trim().is_empty()), examples_query) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "name and examples_query are required".into());
    };
    let given = options.map(|o| o.0).unwrap_or_else(|| json!({}));
    let (opts, replace, used) = parse_options(&given);
    let started = training_runs::now();
    let role = crate::extension_owner::current_role_name();
    let ext = extension_info();
    if training_runs::exists(&ext, "biomedclip.probes", name) && !replace {
        ereport!(ERROR, ERRCODE_DUPLICATE_OBJECT, format!("probe \"{name}\" already exists"), "pass {\"replace\": true} to retrain it");
    }
    let mut progress = Progress::start("probe", name, &role, opts.probe.max_iter);
    let examples = read_examples(query);
    let run = train_probe_watched(examples, &opts, |evaluations, objective| {
        progress.update("fitting", evaluations, Some(objective), None, false);
        pgrx::check_for_interrupts!();
    })
    .unwrap_or_else(|e| bad(e));
    let m = &run.model;
    crate::report_held::held(|| {
        notice!(
            "probe \"{name}\": {} training and {} validation rows, {} labels, accuracy {:.4} on validation, temperature {:.4}",
            run.train_rows,
            run.val_rows,
            m.labels.len(),
            run.val_calibrated.accuracy,
            m.temperature
        )
    });
    let weights_sha = m.weights_sha256();
    let metrics = json!({"train": metrics_json(&run.train), "validation_uncalibrated": metrics_json(&run.val_uncalibrated),
                         "validation": metrics_json(&run.val_calibrated), "converged": run.converged, "temperature": m.temperature});
    let rows = json!({"train": run.train_rows, "validation": run.val_rows});
    let run_id = as_extension_owner(ext.owner, || {
        let run_id = training_runs::record(training_runs::Run {
            kind: "probe",
            name,
            weights_sha256: &weights_sha,
            options_given: given.clone(),
            options_used: used.clone(),
            seed: opts.seed,
            fingerprint: &run.fingerprint,
            row_counts: rows.clone(),
            query,
            metrics: metrics.clone(),
            started_at: &started,
            trained_by: &role,
            base_model_sha256: None,
        });
        Spi::run_with_args(
            "INSERT INTO biomedclip.probes AS p (name, run_id, labels, dim, features, feature_mean, feature_scale, coef, intercept, temperature, weights_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (name) DO UPDATE SET run_id = EXCLUDED.run_id, labels = EXCLUDED.labels, dim = EXCLUDED.dim, features = EXCLUDED.features, \
               feature_mean = EXCLUDED.feature_mean, feature_scale = EXCLUDED.feature_scale, coef = EXCLUDED.coef, intercept = EXCLUDED.intercept, \
               temperature = EXCLUDED.temperature, weights_sha256 = EXCLUDED.weights_sha256, created_at = pg_catalog.now()",
            &[
                name.into(),
                run_id.into(),
                m.labels.clone().into(),
                (m.dim as i32).into(),
                (m.features as i32).into(),
                m.mean.clone().into(),
                m.scale.clone().into(),
                m.probe.coef.clone().into(),
                m.probe.intercept.clone().into(),
                m.temperature.into(),
                weights_sha.as_str().into(),
            ],
        )
        .unwrap_or_else(|e| error!("could not write biomedclip.probes: {e}"));
        run_id
    });
    JsonB(json!({"run_id": run_id, "name": name, "weights_sha256": weights_sha, "dataset_fingerprint": run.fingerprint, "rows": rows,
                 "labels": m.labels, "metrics": metrics, "options": used}))
}

const PROBES: WeightsTable = WeightsTable { table: "biomedclip.probes", kind: "probe" };

thread_local! {
    /// Verified probes by name.
    static CACHE: Cache<ProbeModel> = Default::default();
}

/// A stored probe, its weights checked against the stored SHA-256 whenever the row changed.
fn load_probe(name: &str) -> ProbeModel {
    PROBES.cached(&CACHE, name, || {
        let columns = "labels, dim, features, feature_mean, feature_scale, coef, intercept, temperature, weights_sha256";
        let (version, (labels, dim, features, mean, scale, coef, intercept, temperature, sha)) = PROBES.read_row(name, columns, |r| {
            Ok((
                r.get::<Vec<String>>(1)?.unwrap_or_default(),
                r.get::<i32>(2)?.unwrap_or(0) as usize,
                r.get::<i32>(3)?.unwrap_or(0) as usize,
                r.get::<Vec<f64>>(4)?.unwrap_or_default(),
                r.get::<Vec<f64>>(5)?.unwrap_or_default(),
                r.get::<Vec<f64>>(6)?.unwrap_or_default(),
                r.get::<Vec<f64>>(7)?.unwrap_or_default(),
                r.get::<f64>(8)?.unwrap_or(f64::NAN),
                r.get::<String>(9)?.unwrap_or_default(),
            ))
        });
        let classes = labels.len();
        let model = ProbeModel { labels, dim, features, mean, scale, probe: Probe { classes, dim: dim + features, coef, intercept }, temperature };
        let shapes_ok = model.probe.coef.len() == classes * model.probe.dim
            && model.probe.intercept.len() == classes
            && model.mean.len() == model.features
            && model.scale.len() == model.features;
        if !shapes_ok || model.weights_sha256() != sha {
            raise(ERRCODE_DATA_CORRUPTED, format!("the weights of probe \"{name}\" do not match their SHA-256"));
        }
        (version, model)
    })
}

#[pg_extern(sql = false)]
fn biomedclip_probe(
    name: &str,
    embedding: PgVector<f32>,
    features: Option<Vec<f64>>,
) -> TableIterator<'static, (name!(label, String), name!(probability, f64), name!(rank, i32))> {
    let model = load_probe(name);
    let x: Vec<f64> = embedding.as_slice().iter().map(|&v| v as f64).collect();
    let probs = model.predict(&x, &features.unwrap_or_default()).unwrap_or_else(|e| bad(e));
    let mut rows: Vec<(String, f64)> = model.labels.into_iter().zip(probs).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    TableIterator::new(rows.into_iter().enumerate().map(|(i, (l, p))| (l, p, i as i32 + 1)).collect::<Vec<_>>())
}
