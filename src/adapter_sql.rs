//! `biomedclip_train_adapter` (kind 'residual') and `biomedclip_adapt_image` /
//! `biomedclip_adapt_text`: residual adapters trained in SQL on pairs the caller can see (the
//! pairs query runs as the caller), stored with their SHA-256 and an audit row. The algorithm is
//! biomedclip_core::finetune::train. A use call reads the adapter's row version (xmin) and
//! verifies the weights' SHA-256 whenever that row is new to the backend.

use crate::extension_owner::{as_extension_owner, extension_info};
use crate::model_cache::raise;
use crate::report_held;
use crate::stored_weights::{Cache, WeightsTable};
use crate::training_progress::Progress;
use crate::training_runs;
use crate::vector_datum::PgVector;
use biomedclip_core::finetune::adapter::ResidualAdapter;
use biomedclip_core::finetune::train::{adapters_sha256, pairs_fingerprint, retrieval, train_residual, Retrieval, TrainOptions};
use pgrx::prelude::*;
use pgrx::JsonB;
use pgrx::PgSqlErrorCode::*;
use serde_json::{json, Value};

const OPTION_KEYS: [&str; 15] = [
    "kind", "epochs", "batch_size", "lr", "pull", "alpha", "hidden", "val_fraction", "seed", "patience", "min_delta", "logit_scale",
    "learn_logit_scale", "replace", "stress_query",
];

fn bad(message: String) -> ! {
    raise(ERRCODE_INVALID_PARAMETER_VALUE, message)
}

fn parse_options(given: &Value) -> (TrainOptions, bool, Option<String>, Value) {
    let Some(o) = given.as_object() else { bad("options must be a JSON object".into()) };
    if let Some(k) = o.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
        bad(format!("unknown option \"{k}\" (options: {})", OPTION_KEYS.join(", ")));
    }
    match o.get("kind").map(|v| v.as_str()) {
        None | Some(Some("residual")) => {}
        Some(Some("projection")) => raise(
            ERRCODE_FEATURE_NOT_SUPPORTED,
            "kind \"projection\" needs a model directory with separate projection files and 768-d features; not available yet".into(),
        ),
        _ => bad("option \"kind\" must be \"residual\"".into()),
    }
    let d = TrainOptions::default();
    let num = |k: &str, dv: f64| o.get(k).map_or(dv, |v| v.as_f64().unwrap_or_else(|| bad(format!("option \"{k}\" must be a number"))));
    let int = |k: &str, dv: usize| o.get(k).map_or(dv, |v| v.as_u64().unwrap_or_else(|| bad(format!("option \"{k}\" must be a non-negative integer"))) as usize);
    let flag = |k: &str, dv: bool| o.get(k).map_or(dv, |v| v.as_bool().unwrap_or_else(|| bad(format!("option \"{k}\" must be true or false"))));
    let opts = TrainOptions {
        epochs: int("epochs", d.epochs),
        batch_size: int("batch_size", d.batch_size),
        lr: num("lr", d.lr),
        pull: num("pull", d.pull),
        alpha: num("alpha", d.alpha),
        hidden: int("hidden", d.hidden),
        val_fraction: num("val_fraction", d.val_fraction),
        seed: int("seed", d.seed as usize) as u64,
        patience: int("patience", d.patience).max(1),
        min_delta: num("min_delta", d.min_delta),
        logit_scale: num("logit_scale", d.logit_scale),
        learn_logit_scale: flag("learn_logit_scale", d.learn_logit_scale),
    };
    if opts.epochs == 0 || opts.epochs > 1000 || !(opts.lr > 0.0) || !(opts.pull >= 0.0) || opts.batch_size < 2 || !(opts.val_fraction > 0.0 && opts.val_fraction < 1.0) {
        bad("epochs 1 to 1000, lr > 0, pull ≥ 0, batch_size ≥ 2 and val_fraction in (0, 1)".into());
    }
    let stress = match o.get("stress_query") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => bad("option \"stress_query\" must be a query text".into()),
    };
    let used = json!({"kind": "residual", "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "pull": opts.pull,
        "alpha": opts.alpha, "hidden": opts.hidden, "val_fraction": opts.val_fraction, "seed": opts.seed, "patience": opts.patience,
        "min_delta": opts.min_delta, "logit_scale": opts.logit_scale, "learn_logit_scale": opts.learn_logit_scale,
        "replace": flag("replace", false), "stress_query": stress, "optimizer": "adamw", "loss": "symmetric InfoNCE"});
    (opts, flag("replace", false), stress, used)
}

/// Pairs sorted by pair_id: (ids, images, texts, dim), read as the caller.
fn read_pairs(query: &str) -> (Vec<String>, Vec<f64>, Vec<f64>, usize) {
    let wrapped = format!("SELECT q.pair_id::pg_catalog.text, q.image::pg_catalog.float8[], q.text::pg_catalog.float8[] FROM ({query}) AS q");
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = Spi::connect(|client| {
        let t = client.select(wrapped.as_str(), None, &[])?;
        let mut out = Vec::with_capacity(t.len());
        for r in t {
            let (Some(id), Some(i), Some(x)) = (r.get::<String>(1)?, r.get::<Vec<f64>>(2)?, r.get::<Vec<f64>>(3)?) else {
                bad("pair_id, image and text must not be NULL".into());
            };
            out.push((id, i, x));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| error!("{e}"));
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        bad(format!("pair_id {} appears twice", w[0].0));
    }
    let dim = rows.first().map_or(0, |r| r.1.len());
    if rows.iter().any(|r| r.1.len() != dim || r.2.len() != dim || r.1.iter().chain(&r.2).any(|v| !v.is_finite())) {
        bad(format!("every image and text must be a finite {dim}-d embedding"));
    }
    let ids = rows.iter().map(|r| r.0.clone()).collect();
    let images = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
    let texts = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
    (ids, images, texts, dim)
}

fn retrieval_json(r: &Retrieval) -> Value {
    json!({"image_to_text": {"r1": r.i2t_r1, "r5": r.i2t_r5, "r10": r.i2t_r10, "mrr": r.i2t_mrr},
           "text_to_image": {"r1": r.t2i_r1, "r5": r.t2i_r5, "r10": r.t2i_r10, "mrr": r.t2i_mrr}})
}

#[pg_extern(sql = false)]
fn biomedclip_train_adapter(name: Option<&str>, pairs_query: Option<&str>, options: Option<JsonB>) -> JsonB {
    let (Some(name), Some(query)) = (name.filter(|n| !n.trim().is_empty()), pairs_query) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "name and pairs_query are required".into());
    };
    let given = options.map(|o| o.0).unwrap_or_else(|| json!({}));
    let (opts, replace, stress, used) = parse_options(&given);
    let ext = extension_info();
    if training_runs::exists(&ext, "biomedclip.adapters", name) && !replace {
        ereport!(ERROR, ERRCODE_DUPLICATE_OBJECT, format!("adapter \"{name}\" already exists"), "pass {\"replace\": true} to retrain it");
    }
    let started = training_runs::now();
    let role = crate::extension_owner::current_role_name();
    let mut progress = Progress::start("residual", name, &role, opts.epochs);
    let (ids, images, texts, dim) = read_pairs(query);
    let fingerprint = pairs_fingerprint(&ids, &images, &texts, dim);
    progress.update("training", 0, None, None, true);
    let run = train_residual(&images, &texts, dim, &opts, |e| {
        progress.update("training", e.epoch, Some(e.train_loss), Some(e.val_loss), true);
        // Holds interrupts while the NOTICE is sent, then checks them (a cancel unwinds, so the
        // progress file goes).
        report_held::held(|| notice!("adapter \"{name}\" epoch {}: training loss {:.6}, validation loss {:.6}", e.epoch, e.train_loss, e.val_loss));
    })
    .unwrap_or_else(|e| bad(e));
    progress.update("evaluating", run.epochs.len(), None, None, true);
    let stress_metrics = stress.as_deref().map(|q| {
        let (_, si, st, sdim) = read_pairs(q);
        if sdim != dim {
            bad(format!("the stress pairs are {sdim}-d, the training pairs {dim}-d"));
        }
        json!({"before": retrieval_json(&retrieval(&si, &st, dim)), "after": retrieval_json(&retrieval(&run.image.apply(&si), &run.text.apply(&st), dim))})
    });
    let sha = adapters_sha256(&run.image, &run.text, run.logit_scale);
    let rows = json!({"train": run.train_rows, "validation": run.val_rows, "stress": stress_metrics.is_some()});
    let metrics = json!({"validation": {"before": retrieval_json(&run.val_before), "after": retrieval_json(&run.val_after)},
        "stress": stress_metrics, "epochs": run.epochs.iter().map(|e| json!({"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss})).collect::<Vec<_>>(),
        "best_epoch": run.best_epoch, "stopped_early": run.stopped_early, "logit_scale": run.logit_scale});
    let run_id = as_extension_owner(ext.owner, || {
        let run_id = training_runs::record(training_runs::Run {
            kind: "residual",
            name,
            weights_sha256: &sha,
            options_given: given.clone(),
            options_used: used.clone(),
            seed: opts.seed,
            fingerprint: &fingerprint,
            row_counts: rows.clone(),
            query,
            metrics: metrics.clone(),
            started_at: &started,
            trained_by: &role,
        });
        Spi::run_with_args(
            "INSERT INTO biomedclip.adapters AS a (name, run_id, kind, dim, hidden, alpha, image_w1, image_w2, text_w1, text_w2, logit_scale, weights_sha256) \
             VALUES ($1, $2, 'residual', $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (name) DO UPDATE SET run_id = EXCLUDED.run_id, dim = EXCLUDED.dim, hidden = EXCLUDED.hidden, alpha = EXCLUDED.alpha, \
               image_w1 = EXCLUDED.image_w1, image_w2 = EXCLUDED.image_w2, text_w1 = EXCLUDED.text_w1, text_w2 = EXCLUDED.text_w2, \
               logit_scale = EXCLUDED.logit_scale, weights_sha256 = EXCLUDED.weights_sha256, created_at = pg_catalog.now()",
            &[
                name.into(),
                run_id.into(),
                (dim as i32).into(),
                (run.image.hidden as i32).into(),
                run.image.alpha.into(),
                run.image.w1.clone().into(),
                run.image.w2.clone().into(),
                run.text.w1.clone().into(),
                run.text.w2.clone().into(),
                run.logit_scale.into(),
                sha.as_str().into(),
            ],
        )
        .unwrap_or_else(|e| error!("could not write biomedclip.adapters: {e}"));
        run_id
    });
    JsonB(json!({"run_id": run_id, "name": name, "kind": "residual", "weights_sha256": sha, "dataset_fingerprint": fingerprint,
                 "rows": rows, "metrics": metrics, "options": used}))
}

const ADAPTERS: WeightsTable = WeightsTable { table: "biomedclip.adapters", kind: "adapter" };

thread_local! {
    /// Verified (image, text) adapters by name.
    static CACHE: Cache<(ResidualAdapter, ResidualAdapter)> = Default::default();
}

fn adapter(name: &str, image: bool) -> ResidualAdapter {
    let (im, tx) = ADAPTERS.cached(&CACHE, name, || {
        let (version, (dim, hidden, alpha, iw1, iw2, tw1, tw2, scale, sha)) =
            ADAPTERS.read_row(name, "dim, hidden, alpha, image_w1, image_w2, text_w1, text_w2, logit_scale, weights_sha256", |r| {
                Ok((
                    r.get::<i32>(1)?.unwrap_or(0) as usize,
                    r.get::<i32>(2)?.unwrap_or(0) as usize,
                    r.get::<f64>(3)?.unwrap_or(f64::NAN),
                    r.get::<Vec<f64>>(4)?.unwrap_or_default(),
                    r.get::<Vec<f64>>(5)?.unwrap_or_default(),
                    r.get::<Vec<f64>>(6)?.unwrap_or_default(),
                    r.get::<Vec<f64>>(7)?.unwrap_or_default(),
                    r.get::<f64>(8)?.unwrap_or(f64::NAN),
                    r.get::<String>(9)?.unwrap_or_default(),
                ))
            });
        let ok = [&iw1, &iw2, &tw1, &tw2].iter().all(|w| w.len() == dim * hidden);
        let im = ResidualAdapter { dim, hidden, alpha, w1: iw1, w2: iw2 };
        let tx = ResidualAdapter { dim, hidden, alpha, w1: tw1, w2: tw2 };
        if !ok || adapters_sha256(&im, &tx, scale) != sha {
            raise(ERRCODE_DATA_CORRUPTED, format!("the weights of adapter \"{name}\" do not match their SHA-256"));
        }
        (version, (im, tx))
    });
    if image {
        im
    } else {
        tx
    }
}

fn adapt(name: &str, embedding: PgVector<f32>, image: bool) -> PgVector<f32> {
    let a = adapter(name, image);
    let x: Vec<f64> = embedding.as_slice().iter().map(|&v| v as f64).collect();
    if x.len() != a.dim {
        bad(format!("adapter \"{name}\" takes {}-d embeddings, not {}", a.dim, x.len()));
    }
    let y: Vec<f32> = a.apply(&x).iter().map(|&v| v as f32).collect();
    if y.iter().any(|v| !v.is_finite()) {
        raise(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, format!("adapter \"{name}\" gives a value out of the float4 range"));
    }
    PgVector::from_slice(&y)
}

#[pg_extern(sql = false)]
fn biomedclip_adapt_image(name: &str, embedding: PgVector<f32>) -> PgVector<f32> {
    adapt(name, embedding, true)
}

#[pg_extern(sql = false)]
fn biomedclip_adapt_text(name: &str, embedding: PgVector<f32>) -> PgVector<f32> {
    adapt(name, embedding, false)
}
