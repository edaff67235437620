//! Training both towers on stored pairs (residual adapters on embeddings, or the model's own
//! projection heads on pooled features): a seeded train/validation split,
//! minibatches of the symmetric contrastive loss, AdamW with a pull toward the starting weights,
//! early stopping on the validation loss (the best epoch's weights are kept), and retrieval
//! metrics before and after.

use ndarray::{Array2, ArrayView2};
use super::adapter::{AdamW, ResidualAdapter};
use super::contrastive;
use super::projection::Head;
use super::trainable::Trainable;
use super::SplitMix64;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Decoupled pull toward the starting weights (AdamW's weight decay, anchored).
    pub pull: f64,
    pub alpha: f64,
    /// Bottleneck width; 0 means dim / 4.
    pub hidden: usize,
    pub val_fraction: f64,
    pub seed: u64,
    /// Epochs without a better validation loss before stopping; "better" means lower than the
    /// best so far by more than `min_delta` of it (Keras's min_delta, relative).
    pub patience: usize,
    pub min_delta: f64,
    /// ln of the logit scale (BiomedCLIP: ln 100); learned only when `learn_logit_scale`.
    pub logit_scale: f64,
    pub learn_logit_scale: bool,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            epochs: 20,
            batch_size: 128,
            lr: 1e-3,
            pull: 1e-2,
            alpha: 1.0,
            hidden: 0,
            val_fraction: 0.2,
            seed: 0,
            patience: 3,
            min_delta: 1e-3,
            logit_scale: 100f64.ln(),
            learn_logit_scale: false,
        }
    }
}

/// Retrieval quality of a set of pairs: image→text and text→image recall at 1/5/10 and MRR.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Retrieval {
    pub i2t_r1: f64,
    pub i2t_r5: f64,
    pub i2t_r10: f64,
    pub i2t_mrr: f64,
    pub t2i_r1: f64,
    pub t2i_r5: f64,
    pub t2i_r10: f64,
    pub t2i_mrr: f64,
}

/// Ranks (1-based) of each row's own pair among all columns, by cosine similarity (ties count
/// against the true pair).
fn ranks(a: &[f64], b: &[f64], dim: usize) -> Vec<usize> {
    let n = a.len() / dim;
    let unit = |v: &[f64]| -> Array2<f64> {
        let mut m = ArrayView2::from_shape((n, dim), v).expect("n × dim rows").to_owned();
        for mut row in m.rows_mut() {
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            row.mapv_inplace(|x| x / norm);
        }
        m
    };
    let sims = unit(a).dot(&unit(b).t());
    sims.rows()
        .into_iter()
        .enumerate()
        .map(|(i, row)| 1 + row.iter().enumerate().filter(|&(j, &s)| j != i && s >= row[i]).count())
        .collect()
}


pub fn retrieval(images: &[f64], texts: &[f64], dim: usize) -> Retrieval {
    let stats = |r: &[usize]| {
        let n = r.len().max(1) as f64;
        let at = |k: usize| r.iter().filter(|&&x| x <= k).count() as f64 / n;
        (at(1), at(5), at(10), r.iter().map(|&x| 1.0 / x as f64).sum::<f64>() / n)
    };
    let (a, b, c, d) = stats(&ranks(images, texts, dim));
    let (e, f, g, h) = stats(&ranks(texts, images, dim));
    Retrieval { i2t_r1: a, i2t_r5: b, i2t_r10: c, i2t_mrr: d, t2i_r1: e, t2i_r5: f, t2i_r10: g, t2i_mrr: h }
}

#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
}

pub struct TrainResult<T> {
    pub image: T,
    pub text: T,
    pub logit_scale: f64,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub train_rows: usize,
    pub val_rows: usize,
    pub val_before: Retrieval,
    pub val_after: Retrieval,
}

fn gather(rows: &[f64], idx: &[usize], dim: usize) -> Vec<f64> {
    idx.iter().flat_map(|&i| rows[i * dim..(i + 1) * dim].iter().copied()).collect()
}

/// Trains one residual adapter per tower on `n` pairs (row-major, n × dim each), starting at
/// the identity.
pub fn train_residual(images: &[f64], texts: &[f64], dim: usize, opts: &TrainOptions, on_epoch: impl FnMut(&EpochReport)) -> Result<TrainResult<ResidualAdapter>, String> {
    let hidden = if opts.hidden == 0 { (dim / 4).max(1) } else { opts.hidden };
    let init = |rng: &mut SplitMix64| (ResidualAdapter::identity(dim, hidden, opts.alpha, rng), ResidualAdapter::identity(dim, hidden, opts.alpha, rng));
    train_towers((images, dim), (texts, dim), opts, init, on_epoch)
}

/// Fine-tunes the model's own projection heads (kind 'projection') on `n` pairs of pooled
/// features (n × the image head's d_in, n × the text head's d_in), starting from `image` and
/// `text` and pulled toward them.
pub fn train_projection(images: &[f64], texts: &[f64], image: Head, text: Head, opts: &TrainOptions, on_epoch: impl FnMut(&EpochReport)) -> Result<TrainResult<Head>, String> {
    if image.d_out() != text.d_out() {
        return Err(format!("the heads map to {} and {} dimensions", image.d_out(), text.d_out()));
    }
    let (di, dt) = (image.d_in(), text.d_in());
    train_towers((images, di), (texts, dt), opts, |_| (image, text), on_epoch)
}

/// The contrastive training of a pair of towers on `n` pairs given as (rows, width). `init`
/// makes the starting towers (after the seeded split is drawn, from the same generator); the
/// pull is toward them, and the best epoch's towers are kept.
pub fn train_towers<T: Trainable>(
    (images, di): (&[f64], usize),
    (texts, dt): (&[f64], usize),
    opts: &TrainOptions,
    init: impl FnOnce(&mut SplitMix64) -> (T, T),
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<TrainResult<T>, String> {
    let n = images.len() / di.max(1);
    if n < 4 || di == 0 || dt == 0 || images.len() != n * di || texts.len() != n * dt {
        return Err(format!("need at least 4 pairs of {di}-d image and {dt}-d text rows, got {n}"));
    }
    if !(opts.lr > 0.0 && opts.batch_size >= 2 && opts.val_fraction > 0.0 && opts.val_fraction < 1.0) {
        return Err("lr must be positive, batch_size at least 2 and val_fraction in (0, 1)".into());
    }
    let mut rng = SplitMix64::splitmix(opts.seed);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let n_val = ((n as f64 * opts.val_fraction).round() as usize).clamp(2, n - 2);
    let (val_idx, train_idx) = order.split_at(n_val);
    let (val_i, val_t) = (gather(images, val_idx, di), gather(texts, val_idx, dt));
    let (mut image, mut text) = init(&mut rng);
    if image.d_in() != di || text.d_in() != dt || image.d_out() != text.d_out() {
        return Err(format!("the towers take {}-d and {}-d rows, the pairs are {di}-d and {dt}-d", image.d_in(), text.d_in()));
    }
    let d_out = image.d_out();
    let anchors = [image.params(), text.params()];
    let mut opt: Vec<AdamW> = anchors.iter().map(|a| AdamW::new(a.len(), opts.lr, opts.pull)).collect();
    let mut scale = opts.logit_scale;
    let mut scale_opt = AdamW::new(1, opts.lr, 0.0);
    let val_loss = |im: &T, tx: &T, s: f64| contrastive::loss(&im.apply(&val_i), &tx.apply(&val_t), d_out, s);
    let val_before = retrieval(&image.apply(&val_i), &text.apply(&val_t), d_out);
    let mut best = (val_loss(&image, &text, scale), image.clone(), text.clone(), scale, 0usize);
    let mut epochs = Vec::new();
    let mut stale = 0;
    let mut stopped_early = false;
    let mut train_order = train_idx.to_vec();
    let step = |tower: &mut T, grad: &[f64], opt: &mut AdamW, anchor: &[f64]| {
        let mut p = tower.params();
        opt.step(&mut p, grad, anchor);
        tower.set_params(&p);
    };
    for epoch in 1..=opts.epochs {
        rng.shuffle(&mut train_order);
        let (mut total, mut batches) = (0.0, 0usize);
        for batch in train_order.chunks(opts.batch_size) {
            if batch.len() < 2 {
                continue;
            }
            let (bi, bt) = (gather(images, batch, di), gather(texts, batch, dt));
            let (yi, ai) = image.forward(&bi);
            let (yt, at) = text.forward(&bt);
            let g = contrastive::loss_and_grad(&yi, &yt, d_out, scale);
            total += g.loss;
            batches += 1;
            let (gi, gt) = (image.backward(&bi, &ai, &g.d_images), text.backward(&bt, &at, &g.d_texts));
            step(&mut image, &gi, &mut opt[0], &anchors[0]);
            step(&mut text, &gt, &mut opt[1], &anchors[1]);
            if opts.learn_logit_scale {
                let mut s = [scale];
                scale_opt.step(&mut s, &[g.d_logit_scale], &[opts.logit_scale]);
                scale = s[0].min(100f64.ln());
            }
        }
        let report = EpochReport { epoch, train_loss: total / batches.max(1) as f64, val_loss: val_loss(&image, &text, scale) };
        on_epoch(&report);
        if report.val_loss < best.0 * (1.0 - opts.min_delta) {
            best = (report.val_loss, image.clone(), text.clone(), scale, epoch);
            stale = 0;
        } else {
            stale += 1;
        }
        epochs.push(report);
        if stale >= opts.patience {
            stopped_early = epoch < opts.epochs;
            break;
        }
    }
    let (_, image, text, logit_scale, best_epoch) = best;
    let val_after = retrieval(&image.apply(&val_i), &text.apply(&val_t), d_out);
    Ok(TrainResult { image, text, logit_scale, epochs, best_epoch, stopped_early, train_rows: n - n_val, val_rows: n_val, val_before, val_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs whose texts are a fixed rotation-like mix of the images plus noise: the adapters
    /// must raise held-out recall well above the starting point.
    fn synthetic(n: usize, dim: usize, noise: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut r = SplitMix64::splitmix(seed);
        let mut gauss = || {
            let (u1, u2) = (r.next_f64().max(1e-300), r.next_f64());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let m: Vec<f64> = (0..dim * dim).map(|_| gauss() / (dim as f64).sqrt()).collect();
        let images: Vec<f64> = (0..n * dim).map(|_| gauss()).collect();
        let mut texts = vec![0.0; n * dim];
        for i in 0..n {
            for a in 0..dim {
                texts[i * dim + a] = (0..dim).map(|b| m[a * dim + b] * images[i * dim + b]).sum::<f64>() + noise * gauss();
            }
        }
        (images, texts)
    }

    #[test]
    fn learns_a_hidden_relation_and_is_deterministic() {
        let (dim, n) = (16, 400);
        let (im, tx) = synthetic(n, dim, 0.1, 9);
        let opts = TrainOptions { epochs: 30, batch_size: 64, lr: 3e-3, hidden: 16, patience: 5, ..Default::default() };
        let a = train_residual(&im, &tx, dim, &opts, |_| {}).unwrap();
        assert!(a.val_after.i2t_r1 > a.val_before.i2t_r1 + 0.3, "{:?} -> {:?}", a.val_before, a.val_after);
        let b = train_residual(&im, &tx, dim, &opts, |_| {}).unwrap();
        assert_eq!(a.image, b.image);
        assert_eq!(a.text, b.text);
    }

    #[test]
    fn no_signal_no_improvement() {
        let (dim, n) = (16, 300);
        let mut r = SplitMix64::splitmix(5);
        let im: Vec<f64> = (0..n * dim).map(|_| r.next_f64() - 0.5).collect();
        let tx: Vec<f64> = (0..n * dim).map(|_| r.next_f64() - 0.5).collect();
        let res = train_residual(&im, &tx, dim, &TrainOptions { epochs: 30, hidden: 16, ..Default::default() }, |_| {}).unwrap();
        assert!(res.stopped_early, "{:?}", res.epochs);
        assert!(res.val_after.i2t_r1 < 0.2, "{:?}", res.val_after);
    }
}

/// SHA-256 of a pair of trained towers as stored (for residual adapters: shapes, α, the four
/// weight matrices, the logit scale; little-endian f64).
pub use super::trainable::towers_sha256 as adapters_sha256;

/// SHA-256 over pairs in `pair_id` order (ids, then both embeddings, little-endian f64).
/// Images are `di` wide and texts `dt` (equal for embeddings; the two towers' features may differ).
pub fn pairs_fingerprint(ids: &[String], images: &[f64], texts: &[f64], di: usize, dt: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (i, id) in ids.iter().enumerate() {
        h.update(id.as_bytes());
        h.update([0]);
        for v in images[i * di..(i + 1) * di].iter().chain(&texts[i * dt..(i + 1) * dt]) {
            h.update(v.to_le_bytes());
        }
        h.update([0xff]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod projection_tests {
    use super::*;

    /// Features whose text side is a hidden linear map of the image side plus noise, and random
    /// starting heads (a linear image head, an MLP text head): held-out recall rises from near
    /// chance, and the run is deterministic.
    #[test]
    fn projection_heads_learn_a_hidden_relation() {
        let (d, hidden, out, n) = (24, 20, 16, 500);
        let mut r = SplitMix64::splitmix(21);
        let mut gauss = || {
            let (u1, u2) = (r.next_f64().max(1e-300), r.next_f64());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let m: Vec<f64> = (0..d * d).map(|_| gauss() / (d as f64).sqrt()).collect();
        let images: Vec<f64> = (0..n * d).map(|_| gauss()).collect();
        let mut texts = vec![0.0; n * d];
        for i in 0..n {
            for a in 0..d {
                texts[i * d + a] = (0..d).map(|b| m[a * d + b] * images[i * d + b]).sum::<f64>() + 0.1 * gauss();
            }
        }
        let image = Head::Linear { d_in: d, d_out: out, w: (0..d * out).map(|_| gauss() * 0.2).collect() };
        let text = Head::Mlp { d_in: d, hidden, d_out: out, w1: (0..d * hidden).map(|_| gauss() * 0.2).collect(), w2: (0..hidden * out).map(|_| gauss() * 0.2).collect() };
        let opts = TrainOptions { epochs: 40, batch_size: 64, lr: 1e-2, pull: 0.0, patience: 5, ..Default::default() };
        let a = train_projection(&images, &texts, image.clone(), text.clone(), &opts, |_| {}).unwrap();
        assert!(a.val_before.i2t_r1 < 0.1 && a.val_after.i2t_r1 > 0.5, "{:?} -> {:?}", a.val_before, a.val_after);
        let b = train_projection(&images, &texts, image.clone(), text.clone(), &opts, |_| {}).unwrap();
        assert_eq!((a.image, a.text), (b.image, b.text));
        assert!(train_projection(&images, &texts[..n * (d - 1)], image, text, &opts, |_| {}).is_err());
    }
}
