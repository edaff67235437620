//! Zero-shot probabilities and their calibration by temperature scaling (Guo et al., 2017).
//!
//! * `softmax(logits / T)` computed stably in f64 (max subtracted).
//! * The temperature minimizes the negative log-likelihood of the true labels over T > 0. NLL is
//!   convex in 1/T, hence unimodal in log T; a golden-section search on log T over
//!   [1e-3, 1e3], refined to a relative 1e-10, finds it. T > 0 never changes the argmax.
//! * Expected calibration error with equal-width confidence bins over (0, 1]: each sample falls
//!   in bin `ceil(conf * B) - 1`; ECE = sum over bins of |accuracy - mean confidence| * n_b / n.

use serde::Serialize;

/// Softmax of `logits / temperature`.
pub fn softmax(logits: &[f64], temperature: f64) -> Vec<f64> {
    let t = temperature;
    let max = logits.iter().map(|&l| l / t).fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (l / t - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// -log softmax(logits / T)[true_index]
fn nll_one(logits: &[f64], true_index: usize, t: f64) -> f64 {
    let max = logits.iter().map(|&l| l / t).fold(f64::NEG_INFINITY, f64::max);
    let lse = max + logits.iter().map(|&l| (l / t - max).exp()).sum::<f64>().ln();
    lse - logits[true_index] / t
}

/// One labelled example: the logits over the labels and the index of the true label.
#[derive(Clone, Debug)]
pub struct Sample {
    pub logits: Vec<f64>,
    pub true_index: usize,
}

/// Mean NLL at temperature `t`.
pub fn mean_nll(samples: &[Sample], t: f64) -> f64 {
    samples.iter().map(|s| nll_one(&s.logits, s.true_index, t)).sum::<f64>() / samples.len() as f64
}

/// Validates samples: non-empty, consistent label count, finite logits, index in range.
pub fn validate(samples: &[Sample]) -> Result<usize, String> {
    let k = samples.first().ok_or("no samples to fit")?.logits.len();
    if k < 2 {
        return Err("at least 2 labels are needed".into());
    }
    for (i, s) in samples.iter().enumerate() {
        if s.logits.len() != k {
            return Err(format!("row {} has {} logits, expected {k}", i + 1, s.logits.len()));
        }
        if s.true_index >= k {
            return Err(format!("row {}: true_index {} is outside 0..{}", i + 1, s.true_index, k - 1));
        }
        if s.logits.iter().any(|l| !l.is_finite()) {
            return Err(format!("row {} has a non-finite logit", i + 1));
        }
    }
    Ok(k)
}

/// The NLL-minimizing temperature (golden-section search on log T).
pub fn fit_temperature(samples: &[Sample]) -> f64 {
    let f = |log_t: f64| mean_nll(samples, log_t.exp());
    let (mut a, mut b) = (SEARCH_BOUNDS.0.ln(), SEARCH_BOUNDS.1.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..200 {
        if (b - a).abs() < 1e-10 {
            break;
        }
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - phi * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + phi * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// One bin of a reliability diagram.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bin {
    pub bin: usize,
    pub lower: f64,
    pub upper: f64,
    pub confidence: Option<f64>,
    pub accuracy: Option<f64>,
    pub count: usize,
}

/// Confidence (max probability) and correctness of each sample at temperature `t`.
fn confidences(samples: &[Sample], t: f64) -> Vec<(f64, bool)> {
    samples
        .iter()
        .map(|s| {
            let p = softmax(&s.logits, t);
            let (arg, conf) = p.iter().enumerate().fold((0, f64::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
            (conf, arg == s.true_index)
        })
        .collect()
}

/// Equal-width reliability bins over (0, 1].
pub fn reliability(samples: &[Sample], t: f64, bins: usize) -> Vec<Bin> {
    let mut sums = vec![(0f64, 0usize, 0usize); bins];
    for (conf, correct) in confidences(samples, t) {
        let b = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sums[b].0 += conf;
        sums[b].1 += correct as usize;
        sums[b].2 += 1;
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, (conf, correct, count))| Bin {
            bin: i + 1,
            lower: i as f64 / bins as f64,
            upper: (i + 1) as f64 / bins as f64,
            confidence: (count > 0).then(|| conf / count as f64),
            accuracy: (count > 0).then(|| correct as f64 / count as f64),
            count,
        })
        .collect()
}

/// Expected calibration error.
pub fn ece(samples: &[Sample], t: f64, bins: usize) -> f64 {
    let n = samples.len() as f64;
    reliability(samples, t, bins)
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.accuracy.unwrap() - b.confidence.unwrap()).abs() * b.count as f64 / n)
        .sum()
}

/// Top-1 accuracy (independent of T > 0).
pub fn accuracy(samples: &[Sample]) -> f64 {
    confidences(samples, 1.0).iter().filter(|(_, c)| *c).count() as f64 / samples.len() as f64
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fit {
    pub temperature: f64,
    pub nll_before: f64,
    pub nll_after: f64,
    pub ece_before: f64,
    pub ece_after: f64,
    pub accuracy: f64,
    pub n: usize,
    /// The search ended at a bound (T = 0.001 or 1000): the NLL keeps falling beyond it, as for
    /// constant logits (no information) or perfectly separated ones. Such a T is not a fit.
    pub at_search_bound: bool,
}

/// The temperatures the search covers.
pub const SEARCH_BOUNDS: (f64, f64) = (1e-3, 1e3);

/// Fits T and reports NLL and ECE (15 bins) before and after.
pub fn fit(samples: &[Sample]) -> Result<Fit, String> {
    validate(samples)?;
    let t = fit_temperature(samples);
    Ok(Fit {
        temperature: t,
        nll_before: mean_nll(samples, 1.0),
        nll_after: mean_nll(samples, t),
        ece_before: ece(samples, 1.0, 15),
        ece_after: ece(samples, t, 15),
        accuracy: accuracy(samples),
        n: samples.len(),
        at_search_bound: (t.ln() - SEARCH_BOUNDS.0.ln()).abs() < 1e-3 || (t.ln() - SEARCH_BOUNDS.1.ln()).abs() < 1e-3,
    })
}
