//! Linear probes: multinomial logistic regression with an L2 penalty on stored embeddings,
//! optionally joined with standardized tabular features, for simple EHR-linked models. The
//! objective is scikit-learn's `LogisticRegression` (multinomial, lbfgs): C · Σᵢ wᵢ · CE(xᵢ, yᵢ) +
//! ½‖W‖² with the intercepts unpenalized, wᵢ the sample's class weight; solved by L-BFGS to a
//! tight tolerance. tests/finetune_reference.py compares coefficients and probabilities with
//! scikit-learn's.

use super::lbfgs;
use ndarray::{ArrayView2, Axis};

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub classes: usize,
    pub dim: usize,
    /// classes × dim
    pub coef: Vec<f64>,
    pub intercept: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub c: f64,
    /// scikit-learn's class_weight = "balanced": n / (classes · count(class)).
    pub balanced: bool,
    pub max_iter: usize,
    pub gtol: f64,
}

impl Default for ProbeOptions {
    fn default() -> ProbeOptions {
        ProbeOptions { c: 1.0, balanced: false, max_iter: 1000, gtol: 1e-8 }
    }
}

impl Probe {
    /// The linear scores (logits) of one row.
    pub fn scores(&self, x: &[f64]) -> Vec<f64> {
        (0..self.classes).map(|k| self.intercept[k] + self.coef[k * self.dim..(k + 1) * self.dim].iter().zip(x).map(|(w, v)| w * v).sum::<f64>()).collect()
    }

    /// Class probabilities of one row (softmax of the linear scores).
    pub fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        crate::calibration::softmax(&self.scores(x), 1.0)
    }
}

/// Per-sample weights for the labels (all 1 unless balanced).
pub fn sample_weights(labels: &[usize], classes: usize, balanced: bool) -> Vec<f64> {
    if !balanced {
        return vec![1.0; labels.len()];
    }
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    labels.iter().map(|&l| labels.len() as f64 / (classes as f64 * counts[l] as f64)).collect()
}

/// Fits a probe on `n` rows of `x` (n × dim) with labels in 0..classes.
pub fn fit(x: &[f64], labels: &[usize], dim: usize, classes: usize, opts: &ProbeOptions) -> Result<(Probe, bool), String> {
    fit_watched(x, labels, dim, classes, opts, |_, _| {})
}

/// `fit`, calling `on_evaluation(count, objective)` after every evaluation of the objective (for
/// progress reports and interrupt checks; it may unwind to abandon the fit).
///
/// The objective's two products (scores = X·Wᵀ and the gradient Gᵀ·X) are matrix products through
/// ndarray (matrixmultiply's blocked kernels, single-threaded, so the same inputs give the same
/// bits on the same machine); the per-row softmax is a plain loop.
pub fn fit_watched(
    x: &[f64],
    labels: &[usize],
    dim: usize,
    classes: usize,
    opts: &ProbeOptions,
    mut on_evaluation: impl FnMut(usize, f64),
) -> Result<(Probe, bool), String> {
    let n = labels.len();
    if n == 0 || x.len() != n * dim || classes < 2 || labels.iter().any(|&l| l >= classes) {
        return Err("a probe needs rows, labels in range and at least 2 classes".into());
    }
    if !(opts.c > 0.0 && opts.c.is_finite()) {
        return Err("C must be positive".into());
    }
    let w = sample_weights(labels, classes, opts.balanced);
    let k = classes;
    let xv = ArrayView2::from_shape((n, dim), x).map_err(|e| e.to_string())?;
    let mut evaluations = 0usize;
    let objective = |theta: &[f64]| -> (f64, Vec<f64>) {
        let (coef, intercept) = theta.split_at(k * dim);
        let wv = ArrayView2::from_shape((k, dim), coef).expect("k × dim coefficients");
        // scores, then in place the gradient of each row's loss with respect to its scores.
        let mut s = xv.dot(&wv.t());
        let mut value = 0.0;
        for (i, mut row) in s.axis_iter_mut(Axis(0)).enumerate() {
            for (v, b) in row.iter_mut().zip(intercept) {
                *v += b;
            }
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let scale = opts.c * w[i];
            value += scale * (lse - row[labels[i]]);
            for (c, v) in row.iter_mut().enumerate() {
                *v = scale * ((*v - lse).exp() - if c == labels[i] { 1.0 } else { 0.0 });
            }
        }
        let gcoef = s.t().dot(&xv);
        let mut grad = Vec::with_capacity(theta.len());
        grad.extend(gcoef.iter().zip(coef).map(|(g, c)| g + c));
        grad.extend(s.sum_axis(Axis(0)).iter());
        value += 0.5 * coef.iter().map(|c| c * c).sum::<f64>();
        evaluations += 1;
        on_evaluation(evaluations, value);
        (value, grad)
    };
    let out = lbfgs::minimize(objective, vec![0.0; k * dim + k], 20, opts.gtol, opts.max_iter);
    let (coef, intercept) = out.x.split_at(k * dim);
    Ok((Probe { classes: k, dim, coef: coef.to_vec(), intercept: intercept.to_vec() }, out.converged))
}

/// Column means and standard deviations (population, as scikit-learn's StandardScaler) of n × m
/// tabular features; a constant column gets a scale of 1.
pub fn standardizer(features: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let n = features.len() / m.max(1);
    let mut mean = vec![0.0; m];
    let mut sd = vec![0.0; m];
    for j in 0..m {
        mean[j] = (0..n).map(|i| features[i * m + j]).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (features[i * m + j] - mean[j]).powi(2)).sum::<f64>() / n as f64;
        sd[j] = if var > 0.0 { var.sqrt() } else { 1.0 };
    }
    (mean, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_are_learned() {
        // Three clusters in 2-d.
        let centers = [(3.0, 0.0), (-3.0, 0.0), (0.0, 3.0)];
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut r = super::super::SplitMix64::splitmix(1);
        for i in 0..300 {
            let (cx, cy) = centers[i % 3];
            x.push(cx + r.next_f64() - 0.5);
            x.push(cy + r.next_f64() - 0.5);
            y.push(i % 3);
        }
        let (p, converged) = fit(&x, &y, 2, 3, &ProbeOptions::default()).unwrap();
        assert!(converged);
        let correct = (0..300).filter(|&i| {
            let pr = p.probabilities(&x[i * 2..i * 2 + 2]);
            pr.iter().cloned().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0 == y[i]
        });
        assert_eq!(correct.count(), 300);
    }
}
