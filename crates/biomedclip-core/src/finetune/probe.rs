//! Linear probes: multinomial logistic regression with an L2 penalty on stored embeddings,
//! optionally joined with standardized tabular features, for simple EHR-linked models. The
//! objective is scikit-learn's `LogisticRegression` (multinomial, lbfgs): C · Σᵢ wᵢ · CE(xᵢ, yᵢ) +
//! ½‖W‖² with the intercepts unpenalized, wᵢ the sample's class weight; solved by L-BFGS to a
//! tight tolerance. tests/finetune_reference.py compares coefficients and probabilities with
//! scikit-learn's.

use super::lbfgs;

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
    let n = labels.len();
    if n == 0 || x.len() != n * dim || classes < 2 || labels.iter().any(|&l| l >= classes) {
        return Err("a probe needs rows, labels in range and at least 2 classes".into());
    }
    if !(opts.c > 0.0 && opts.c.is_finite()) {
        return Err("C must be positive".into());
    }
    let w = sample_weights(labels, classes, opts.balanced);
    let k = classes;
    let objective = |theta: &[f64]| -> (f64, Vec<f64>) {
        let (coef, intercept) = theta.split_at(k * dim);
        let mut grad = vec![0.0; theta.len()];
        let mut value = 0.0;
        let mut scores = vec![0.0; k];
        for i in 0..n {
            let xi = &x[i * dim..(i + 1) * dim];
            for c in 0..k {
                scores[c] = intercept[c] + coef[c * dim..(c + 1) * dim].iter().zip(xi).map(|(a, b)| a * b).sum::<f64>();
            }
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
            value += opts.c * w[i] * (lse - scores[labels[i]]);
            for c in 0..k {
                let p = (scores[c] - lse).exp() - if c == labels[i] { 1.0 } else { 0.0 };
                let scale = opts.c * w[i] * p;
                for (g, v) in grad[c * dim..(c + 1) * dim].iter_mut().zip(xi) {
                    *g += scale * v;
                }
                grad[k * dim + c] += scale;
            }
        }
        for j in 0..k * dim {
            value += 0.5 * coef[j] * coef[j];
            grad[j] += coef[j];
        }
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
