//! A whole probe training run on labelled rows: canonical order and a dataset fingerprint, a
//! seeded train/validation split, tabular features standardized on the training rows, the fit,
//! a temperature fitted on the validation rows (biomedclip_core::calibration), and metrics.

use super::metrics::{classification, ClassMetrics};
use super::probe::{self, Probe, ProbeOptions};
use super::SplitMix64;
use sha2::{Digest, Sha256};

/// One labelled row: an embedding, optionally tabular features, and a label.
#[derive(Clone, Debug)]
pub struct Example {
    pub id: String,
    pub embedding: Vec<f64>,
    pub label: String,
    pub features: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct ProbeRunOptions {
    pub probe: ProbeOptions,
    pub val_fraction: f64,
    pub seed: u64,
    pub calibrate: bool,
}

impl Default for ProbeRunOptions {
    fn default() -> ProbeRunOptions {
        ProbeRunOptions { probe: ProbeOptions::default(), val_fraction: 0.2, seed: 0, calibrate: true }
    }
}

/// A trained probe with everything needed to apply it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeModel {
    pub labels: Vec<String>,
    pub dim: usize,
    pub features: usize,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub probe: Probe,
    pub temperature: f64,
}

impl ProbeModel {
    fn row(&self, embedding: &[f64], features: &[f64]) -> Vec<f64> {
        let mut x = embedding.to_vec();
        x.extend(features.iter().zip(self.mean.iter().zip(&self.scale)).map(|(v, (m, s))| (v - m) / s));
        x
    }

    /// Calibrated class probabilities, in the order of `labels`.
    pub fn predict(&self, embedding: &[f64], features: &[f64]) -> Result<Vec<f64>, String> {
        if embedding.len() != self.dim || features.len() != self.features {
            return Err(format!(
                "the probe takes a {}-d embedding and {} features, not {} and {}",
                self.dim,
                self.features,
                embedding.len(),
                features.len()
            ));
        }
        Ok(crate::calibration::softmax(&self.probe.scores(&self.row(embedding, features)), self.temperature))
    }

    /// SHA-256 of the weights as they are stored (labels, shapes, standardization, coefficients,
    /// intercepts, temperature, little-endian f64).
    pub fn weights_sha256(&self) -> String {
        let mut h = Sha256::new();
        for l in &self.labels {
            h.update(l.as_bytes());
            h.update([0]);
        }
        h.update((self.dim as u64).to_le_bytes());
        h.update((self.features as u64).to_le_bytes());
        for v in self.mean.iter().chain(&self.scale).chain(&self.probe.coef).chain(&self.probe.intercept).chain(std::iter::once(&self.temperature)) {
            h.update(v.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub struct ProbeRun {
    pub model: ProbeModel,
    pub fingerprint: String,
    pub train_rows: usize,
    pub val_rows: usize,
    pub converged: bool,
    pub train: ClassMetrics,
    pub val_uncalibrated: ClassMetrics,
    pub val_calibrated: ClassMetrics,
}

/// SHA-256 over the rows in id order: id, label, embedding and features (little-endian f64).
pub fn fingerprint(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    for e in examples {
        h.update(e.id.as_bytes());
        h.update([0]);
        h.update(e.label.as_bytes());
        h.update([0]);
        for v in e.embedding.iter().chain(&e.features) {
            h.update(v.to_le_bytes());
        }
        h.update([0xff]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn train_probe(examples: Vec<Example>, opts: &ProbeRunOptions) -> Result<ProbeRun, String> {
    train_probe_watched(examples, opts, |_, _| {})
}

/// `train_probe`, calling `on_evaluation(count, objective)` during the fit (see probe::fit_watched).
pub fn train_probe_watched(mut examples: Vec<Example>, opts: &ProbeRunOptions, on_evaluation: impl FnMut(usize, f64)) -> Result<ProbeRun, String> {
    if examples.len() < 4 {
        return Err(format!("a probe needs at least 4 examples, got {}", examples.len()));
    }
    examples.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = examples.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(format!("example_id {} appears twice", w[0].id));
    }
    let dim = examples[0].embedding.len();
    let m = examples[0].features.len();
    if let Some(e) = examples.iter().find(|e| e.embedding.len() != dim || e.features.len() != m) {
        return Err(format!("example {} has a {}-d embedding and {} features; the first has {dim} and {m}", e.id, e.embedding.len(), e.features.len()));
    }
    if examples.iter().any(|e| e.embedding.iter().chain(&e.features).any(|v| !v.is_finite())) {
        return Err("embeddings and features must be finite".into());
    }
    let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        return Err("a probe needs at least 2 labels".into());
    }
    let y: Vec<usize> = examples.iter().map(|e| labels.binary_search(&e.label).expect("label listed")).collect();
    let fingerprint = fingerprint(&examples);
    let n = examples.len();
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::splitmix(opts.seed).shuffle(&mut order);
    let n_val = ((n as f64 * opts.val_fraction).round() as usize).clamp(1, n - 2);
    let (val, train) = order.split_at(n_val);
    // Standardize the tabular features on the training rows (population sd, as StandardScaler).
    let train_features: Vec<f64> = train.iter().flat_map(|&i| examples[i].features.iter().copied()).collect();
    let (mean, scale) = if m > 0 { probe::standardizer(&train_features, m) } else { (Vec::new(), Vec::new()) };
    let mut model = ProbeModel {
        labels,
        dim,
        features: m,
        mean,
        scale,
        probe: Probe { classes: 0, dim: 0, coef: Vec::new(), intercept: Vec::new() },
        temperature: 1.0,
    };
    let rows = |idx: &[usize], model: &ProbeModel| -> Vec<f64> { idx.iter().flat_map(|&i| model.row(&examples[i].embedding, &examples[i].features)).collect() };
    let x_train = rows(train, &model);
    let y_train: Vec<usize> = train.iter().map(|&i| y[i]).collect();
    let (fitted, converged) = probe::fit_watched(&x_train, &y_train, dim + m, model.labels.len(), &opts.probe, on_evaluation)?;
    model.probe = fitted;
    let probs = |idx: &[usize], model: &ProbeModel| -> Vec<Vec<f64>> { idx.iter().map(|&i| model.predict(&examples[i].embedding, &examples[i].features).expect("shapes checked")).collect() };
    let y_val: Vec<usize> = val.iter().map(|&i| y[i]).collect();
    let val_uncalibrated = classification(&probs(val, &model), &y_val);
    if opts.calibrate {
        let samples: Vec<crate::calibration::Sample> =
            val.iter().map(|&i| crate::calibration::Sample { logits: model.probe.scores(&model.row(&examples[i].embedding, &examples[i].features)), true_index: y[i] }).collect();
        if let Ok(fit) = crate::calibration::fit(&samples) {
            if !fit.at_search_bound {
                model.temperature = fit.temperature;
            }
        }
    }
    let val_calibrated = classification(&probs(val, &model), &y_val);
    let train_metrics = classification(&probs(train, &model), &y_train);
    Ok(ProbeRun { model, fingerprint, train_rows: train.len(), val_rows: val.len(), converged, train: train_metrics, val_uncalibrated, val_calibrated })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(n: usize, seed: u64) -> Vec<Example> {
        let mut r = SplitMix64::splitmix(seed);
        (0..n)
            .map(|i| {
                let c = i % 3;
                Example {
                    id: format!("{i:05}"),
                    embedding: (0..4).map(|d| if d == c { 2.0 } else { 0.0 } + r.normal() * 0.3).collect(),
                    label: ["a", "b", "c"][c].to_string(),
                    features: vec![c as f64 * 10.0 + r.normal(), r.normal()],
                }
            })
            .collect()
    }

    #[test]
    fn separable_classes_and_a_reproducible_hash() {
        let run = train_probe(examples(300, 1), &ProbeRunOptions::default()).unwrap();
        assert!(run.converged);
        assert!(run.val_calibrated.accuracy >= 0.95, "{:?}", run.val_calibrated);
        assert_eq!((run.train_rows, run.val_rows), (240, 60));
        // Row order does not matter; the same rows and seed give the same weights.
        let mut shuffled = examples(300, 1);
        shuffled.reverse();
        let again = train_probe(shuffled, &ProbeRunOptions::default()).unwrap();
        assert_eq!(again.model.weights_sha256(), run.model.weights_sha256());
        assert_eq!(again.fingerprint, run.fingerprint);
        let other_seed = train_probe(examples(300, 1), &ProbeRunOptions { seed: 9, ..Default::default() }).unwrap();
        assert_ne!(other_seed.model.weights_sha256(), run.model.weights_sha256());
    }
}
