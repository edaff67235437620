//! `biomedclip_train_adapter` and `biomedclip_adapt_image` / `biomedclip_adapt_text`: adapters
//! trained in SQL on pairs the caller can see (the pairs query runs as the caller), stored with
//! their SHA-256 and an audit row. Kind 'residual': a residual adapter per tower on embeddings
//! of any model; kind 'projection': the active model's own projection heads fine-tuned on its
//! pooled features (src/features_sql.rs). The algorithm is
//! biomedclip_core::finetune::train. A use call reads the adapter's row version (xmin) and
//! verifies the weights' SHA-256 whenever that row is new to the backend.

use crate::extension_owner::{as_extension_owner, extension_info};
use crate::model_cache::raise;
use crate::report_held;
use crate::stored_weights::{Cache, WeightsTable};
use crate::training_progress::Progress;
use crate::training_runs;
use crate::vector_datum::PgVector;
use crate::features_sql::{model_heads, project_row};
use biomedclip_core::finetune::adapter::ResidualAdapter;
use biomedclip_core::finetune::projection::Head;
use biomedclip_core::finetune::train::{pairs_fingerprint, retrieval, train_projection, train_residual, EpochReport, Retrieval, TrainOptions, TrainResult};
use biomedclip_core::finetune::trainable::towers_sha256;
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

struct Parsed {
    opts: TrainOptions,
    projection: bool,
    replace: bool,
    stress: Option<String>,
    used: Value,
}

fn parse_options(given: &Value) -> Parsed {
    let Some(o) = given.as_object() else { bad("options must be a JSON object".into()) };
    if let Some(k) = o.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
        bad(format!("unknown option \"{k}\" (options: {})", OPTION_KEYS.join(", ")));
    }
    let projection = match o.get("kind").map(|v| v.as_str()) {
        None | Some(Some("residual")) => false,
        Some(Some("projection")) => true,
        _ => bad("option \"kind\" must be \"residual\" or \"projection\"".into()),
    };
    if let Some(k) = ["alpha", "hidden"].iter().find(|k| projection && o.contains_key(**k)) {
        bad(format!("option \"{k}\" is for kind \"residual\" (a projection adapter keeps the model's own head shapes)"));
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
    let used = json!({"kind": if projection { "projection" } else { "residual" }, "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "pull": opts.pull,
        "alpha": opts.alpha, "hidden": opts.hidden, "val_fraction": opts.val_fraction, "seed": opts.seed, "patience": opts.patience,
        "min_delta": opts.min_delta, "logit_scale": opts.logit_scale, "learn_logit_scale": opts.learn_logit_scale,
        "replace": flag("replace", false), "stress_query": stress, "optimizer": "adamw", "loss": "symmetric InfoNCE"});
    let mut used = used;
    if projection {
        let o = used.as_object_mut().expect("an object");
        o.remove("alpha");
        o.remove("hidden");
    }
    Parsed { opts, projection, replace: flag("replace", false), stress, used }
}

/// Pairs sorted by pair_id: (ids, images, texts, image width, text width), read as the caller.
fn read_pairs(query: &str) -> (Vec<String>, Vec<f64>, Vec<f64>, usize, usize) {
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
    let (di, dt) = rows.first().map_or((0, 0), |r| (r.1.len(), r.2.len()));
    if rows.iter().any(|r| r.1.len() != di || r.2.len() != dt || r.1.iter().chain(&r.2).any(|v| !v.is_finite())) {
        bad(format!("every image must be a finite {di}-d vector and every text a finite {dt}-d vector"));
    }
    let ids = rows.iter().map(|r| r.0.clone()).collect();
    let images = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
    let texts = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
    (ids, images, texts, di, dt)
}

/// The trained towers of either kind, as stored and used.
#[derive(Clone)]
enum Towers {
    Residual(ResidualAdapter, ResidualAdapter),
    Projection(Head, Head),
}

impl Towers {
    fn apply(&self, image: bool, x: &[f64]) -> Vec<f64> {
        match (self, image) {
            (Towers::Residual(a, _), true) => a.apply(x),
            (Towers::Residual(_, a), false) => a.apply(x),
            (Towers::Projection(h, _), true) => h.apply(x),
            (Towers::Projection(_, h), false) => h.apply(x),
        }
    }
}

fn retrieval_json(r: &Retrieval) -> Value {
    json!({"image_to_text": {"r1": r.i2t_r1, "r5": r.i2t_r5, "r10": r.i2t_r10, "mrr": r.i2t_mrr},
           "text_to_image": {"r1": r.t2i_r1, "r5": r.t2i_r5, "r10": r.t2i_r10, "mrr": r.t2i_mrr}})
}

/// What a run trained, in the form the table stores: (dim, hidden, alpha, image w1, image w2,
/// text w1, text w2). A projection adapter keeps its image head in image_w1 (d_in × d_out),
/// image_w2 empty, its text MLP in text_w1 / text_w2; dim is the features' width, hidden the MLP's.
type Columns = (usize, usize, Option<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

fn columns(t: &Towers) -> Columns {
    match t {
        Towers::Residual(i, x) => (i.dim, i.hidden, Some(i.alpha), i.w1.clone(), i.w2.clone(), x.w1.clone(), x.w2.clone()),
        Towers::Projection(Head::Linear { d_in, w, .. }, Head::Mlp { hidden, w1, w2, .. }) => (*d_in, *hidden, None, w.clone(), Vec::new(), w1.clone(), w2.clone()),
        Towers::Projection(..) => unreachable!("checked before training: a linear image head and an MLP text head"),
    }
}

#[pg_extern(sql = false)]
fn biomedclip_train_adapter(name: Option<&str>, pairs_query: Option<&str>, options: Option<JsonB>) -> JsonB {
    let (Some(name), Some(query)) = (name.filter(|n| !n.trim().is_empty()), pairs_query) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "name and pairs_query are required".into());
    };
    let given = options.map(|o| o.0).unwrap_or_else(|| json!({}));
    let Parsed { opts, projection, replace, stress, used } = parse_options(&given);
    let kind = if projection { "projection" } else { "residual" };
    let ext = extension_info();
    if training_runs::exists(&ext, "biomedclip.adapters", name) && !replace {
        ereport!(ERROR, ERRCODE_DUPLICATE_OBJECT, format!("adapter \"{name}\" already exists"), "pass {\"replace\": true} to retrain it");
    }
    // A projection adapter starts from the active model's own heads (0A000 for a model directory
    // without them), read before the run so a missing head fails at once.
    let heads = projection.then(model_heads);
    let base_model = heads.as_ref().map(|(sha, _, _)| sha.clone());
    let heads = heads.map(|(_, image, text)| (image, text));
    if let Some((image, text)) = &heads {
        if !matches!((&**image, &**text), (Head::Linear { .. }, Head::Mlp { .. })) {
            raise(
                ERRCODE_FEATURE_NOT_SUPPORTED,
                "kind \"projection\" needs BiomedCLIP's head shapes (a linear image head and an MLP text head); this model's differ".into(),
            );
        }
    }
    let started = training_runs::now();
    let role = crate::extension_owner::current_role_name();
    let mut progress = Progress::start(kind, name, &role, opts.epochs);
    let (ids, images, texts, di, dt) = read_pairs(query);
    if let Some((hi, ht)) = &heads {
        if !ids.is_empty() && (di != hi.d_in() || dt != ht.d_in()) {
            bad(format!("kind \"projection\" takes the model's features ({}-d images, {}-d texts), the pairs are {di}-d and {dt}-d", hi.d_in(), ht.d_in()));
        }
    } else if di != dt {
        bad(format!("kind \"residual\" takes embeddings of one width, the pairs are {di}-d and {dt}-d"));
    }
    let fingerprint = pairs_fingerprint(&ids, &images, &texts, di, dt);
    progress.update("training", 0, None, None, true);
    let on_epoch = |e: &EpochReport| {
        progress.update("training", e.epoch, Some(e.train_loss), Some(e.val_loss), true);
        // Holds interrupts while the NOTICE is sent, then checks them (a cancel unwinds, so the
        // progress file goes).
        report_held::held(|| notice!("adapter \"{name}\" epoch {}: training loss {:.6}, validation loss {:.6}", e.epoch, e.train_loss, e.val_loss));
    };
    let (towers, report) = match &heads {
        None => {
            let r = train_residual(&images, &texts, di, &opts, on_epoch).unwrap_or_else(|e| bad(e));
            (Towers::Residual(r.image.clone(), r.text.clone()), Report::of(&r))
        }
        Some((hi, ht)) => {
            let r = train_projection(&images, &texts, (**hi).clone(), (**ht).clone(), &opts, on_epoch).unwrap_or_else(|e| bad(e));
            (Towers::Projection(r.image.clone(), r.text.clone()), Report::of(&r))
        }
    };
    progress.update("evaluating", report.epochs.len(), None, None, true);
    let d_out = if projection { heads.as_ref().map_or(0, |h| h.0.d_out()) } else { di };
    let stress_metrics = stress.as_deref().map(|q| {
        let (_, si, st, sdi, sdt) = read_pairs(q);
        if (sdi, sdt) != (di, dt) {
            bad(format!("the stress pairs are {sdi}-d and {sdt}-d, the training pairs {di}-d and {dt}-d"));
        }
        let before = match &heads {
            None => retrieval(&si, &st, di),
            Some((hi, ht)) => retrieval(&hi.apply(&si), &ht.apply(&st), d_out),
        };
        json!({"before": retrieval_json(&before), "after": retrieval_json(&retrieval(&towers.apply(true, &si), &towers.apply(false, &st), d_out))})
    });
    let sha = towers.sha256(report.logit_scale);
    let rows = json!({"train": report.train_rows, "validation": report.val_rows, "stress": stress_metrics.is_some()});
    let metrics = json!({"validation": {"before": retrieval_json(&report.val_before), "after": retrieval_json(&report.val_after)},
        "stress": stress_metrics, "epochs": report.epochs.iter().map(|e| json!({"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss})).collect::<Vec<_>>(),
        "best_epoch": report.best_epoch, "stopped_early": report.stopped_early, "logit_scale": report.logit_scale});
    let (dim, hidden, alpha, iw1, iw2, tw1, tw2) = columns(&towers);
    let run_id = as_extension_owner(ext.owner, || {
        let run_id = training_runs::record(training_runs::Run {
            kind,
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
            base_model_sha256: base_model.as_deref(),
        });
        Spi::run_with_args(
            "INSERT INTO biomedclip.adapters AS a (name, run_id, kind, dim, hidden, alpha, image_w1, image_w2, text_w1, text_w2, logit_scale, weights_sha256) \
             VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (name) DO UPDATE SET run_id = EXCLUDED.run_id, kind = EXCLUDED.kind, dim = EXCLUDED.dim, hidden = EXCLUDED.hidden, alpha = EXCLUDED.alpha, \
               image_w1 = EXCLUDED.image_w1, image_w2 = EXCLUDED.image_w2, text_w1 = EXCLUDED.text_w1, text_w2 = EXCLUDED.text_w2, \
               logit_scale = EXCLUDED.logit_scale, weights_sha256 = EXCLUDED.weights_sha256, created_at = pg_catalog.now()",
            &[
                name.into(),
                run_id.into(),
                (dim as i32).into(),
                (hidden as i32).into(),
                alpha.into(),
                iw1.into(),
                iw2.into(),
                tw1.into(),
                tw2.into(),
                report.logit_scale.into(),
                sha.as_str().into(),
                kind.into(),
            ],
        )
        .unwrap_or_else(|e| error!("could not write biomedclip.adapters: {e}"));
        run_id
    });
    JsonB(json!({"run_id": run_id, "name": name, "kind": kind, "weights_sha256": sha, "dataset_fingerprint": fingerprint,
                 "rows": rows, "metrics": metrics, "options": used}))
}

/// A run's figures, whatever it trained.
struct Report {
    logit_scale: f64,
    epochs: Vec<EpochReport>,
    best_epoch: usize,
    stopped_early: bool,
    train_rows: usize,
    val_rows: usize,
    val_before: Retrieval,
    val_after: Retrieval,
}

impl Report {
    fn of<T>(r: &TrainResult<T>) -> Report {
        Report {
            logit_scale: r.logit_scale,
            epochs: r.epochs.clone(),
            best_epoch: r.best_epoch,
            stopped_early: r.stopped_early,
            train_rows: r.train_rows,
            val_rows: r.val_rows,
            val_before: r.val_before.clone(),
            val_after: r.val_after.clone(),
        }
    }
}

impl Towers {
    fn sha256(&self, logit_scale: f64) -> String {
        match self {
            Towers::Residual(i, t) => towers_sha256(i, t, logit_scale),
            Towers::Projection(i, t) => towers_sha256(i, t, logit_scale),
        }
    }
}

const ADAPTERS: WeightsTable = WeightsTable { table: "biomedclip.adapters", kind: "adapter" };

thread_local! {
    /// Verified adapters by name.
    static CACHE: Cache<Towers> = Default::default();
}

fn adapter(name: &str) -> Towers {
    ADAPTERS.cached(&CACHE, name, || {
        let (version, (kind, dim, hidden, alpha, iw1, iw2, tw1, tw2, scale, sha)) =
            ADAPTERS.read_row(name, "kind, dim, hidden, alpha, image_w1, image_w2, text_w1, text_w2, logit_scale, weights_sha256", |r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<i32>(2)?.unwrap_or(0) as usize,
                    r.get::<i32>(3)?.unwrap_or(0) as usize,
                    r.get::<f64>(4)?,
                    r.get::<Vec<f64>>(5)?.unwrap_or_default(),
                    r.get::<Vec<f64>>(6)?.unwrap_or_default(),
                    r.get::<Vec<f64>>(7)?.unwrap_or_default(),
                    r.get::<Vec<f64>>(8)?.unwrap_or_default(),
                    r.get::<f64>(9)?.unwrap_or(f64::NAN),
                    r.get::<String>(10)?.unwrap_or_default(),
                ))
            });
        let corrupt = || -> ! { raise(ERRCODE_DATA_CORRUPTED, format!("the weights of adapter \"{name}\" do not match their SHA-256")) };
        let towers = if kind == "projection" {
            // Shapes from the arrays themselves: image d_in × d_out; text d_in × hidden, hidden × d_out.
            let d_out = if dim == 0 { 0 } else { iw1.len() / dim };
            let ok = dim > 0 && hidden > 0 && d_out > 0 && iw1.len() == dim * d_out && iw2.is_empty() && tw1.len() == dim * hidden && tw2.len() == hidden * d_out;
            if !ok {
                corrupt();
            }
            Towers::Projection(Head::Linear { d_in: dim, d_out, w: iw1 }, Head::Mlp { d_in: dim, hidden, d_out, w1: tw1, w2: tw2 })
        } else {
            let alpha = alpha.unwrap_or(f64::NAN);
            if ![&iw1, &iw2, &tw1, &tw2].iter().all(|w| w.len() == dim * hidden) {
                corrupt();
            }
            Towers::Residual(
                ResidualAdapter { dim, hidden, alpha, w1: iw1, w2: iw2 },
                ResidualAdapter { dim, hidden, alpha, w1: tw1, w2: tw2 },
            )
        };
        if towers.sha256(scale) != sha {
            corrupt();
        }
        (version, towers)
    })
}

/// A residual adapter maps an embedding to an embedding; a projection adapter maps the model's
/// features to an L2-normalized embedding (its fine-tuned projection).
fn adapt(name: &str, embedding: PgVector<f32>, image: bool) -> PgVector<f32> {
    let towers = adapter(name);
    if let Towers::Projection(hi, ht) = &towers {
        let head = if image { hi } else { ht };
        return project_row(head, embedding.as_slice(), &format!("adapter \"{name}\""));
    }
    let Towers::Residual(ai, at) = &towers else { unreachable!() };
    let a = if image { ai } else { at };
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
