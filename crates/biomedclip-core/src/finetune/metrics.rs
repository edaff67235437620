//! Classification metrics of a probe on a labelled set: accuracy, one-vs-rest AUROC (macro
//! average over the classes present with both outcomes, as scikit-learn's
//! `roc_auc_score(multi_class="ovr", average="macro")`), mean NLL, and ECE (15 bins, from
//! biomedclip_core::calibration).

use crate::calibration::{self, Sample};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub auroc_ovr: Option<f64>,
    pub nll: f64,
    pub ece: f64,
}

/// AUROC of scores for a binary outcome by the Mann–Whitney U statistic with average ranks for
/// ties; None when one outcome is absent.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = avg;
        }
        i = j + 1;
    }
    let rank_sum: f64 = (0..scores.len()).filter(|&k| positive[k]).map(|k| ranks[k]).sum();
    Some((rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

/// Metrics of class probabilities `probs` (one row per example) against `labels`.
pub fn classification(probs: &[Vec<f64>], labels: &[usize]) -> ClassMetrics {
    let n = labels.len();
    let classes = probs.first().map_or(0, |p| p.len());
    let samples: Vec<Sample> = probs.iter().zip(labels).map(|(p, &l)| Sample { logits: p.iter().map(|v| v.max(1e-300).ln()).collect(), true_index: l }).collect();
    let per_class: Vec<f64> = (0..classes)
        .filter_map(|c| auroc(&probs.iter().map(|p| p[c]).collect::<Vec<_>>(), &labels.iter().map(|&l| l == c).collect::<Vec<_>>()))
        .collect();
    ClassMetrics {
        n,
        accuracy: if n == 0 { f64::NAN } else { calibration::accuracy(&samples) },
        auroc_ovr: (!per_class.is_empty()).then(|| per_class.iter().sum::<f64>() / per_class.len() as f64),
        nll: if n == 0 { f64::NAN } else { calibration::mean_nll(&samples, 1.0) },
        ece: if n == 0 { f64::NAN } else { calibration::ece(&samples, 1.0, 15) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_hand_checked() {
        // Positives 0.8, 0.4; negatives 0.5, 0.1: pairs won 3 of 4.
        assert_eq!(auroc(&[0.8, 0.5, 0.4, 0.1], &[true, false, true, false]), Some(0.75));
        // A tie counts one half.
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.5, 0.4], &[true, true]), None);
    }
}
