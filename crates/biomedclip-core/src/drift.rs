//! Drift statistics for the search log: quantiles of the distances a collection returns and the
//! population stability index (PSI) of a day's top-1 distances against a baseline period.
//!
//! Quantiles are numpy's default (`method="linear"`, Hyndman & Fan type 7), and PSI is
//! Σ (aᵢ − bᵢ) · ln(aᵢ / bᵢ) over bins cut at the baseline's deciles, with every proportion
//! floored at `PSI_FLOOR` so that an empty bin gives a large but finite value. The tests in
//! tests/query_log_suite.py compare both against numpy.

/// Smallest proportion a bin is given in the PSI sum (an empty bin would be infinite).
pub const PSI_FLOOR: f64 = 1e-4;
/// Conventional PSI reading: below 0.1 stable, 0.1–0.25 a moderate shift, above 0.25 a major one.
pub const PSI_MODERATE: f64 = 0.1;
pub const PSI_MAJOR: f64 = 0.25;

/// The q-quantile (0 ≤ q ≤ 1) of `sorted` (ascending, finite) by linear interpolation between
/// closest ranks, as numpy.quantile's default; None for an empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Sorts a copy, dropping non-finite values.
pub fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Bin edges for PSI: the baseline's interior deciles (9 cut points; duplicates removed).
pub fn decile_edges(baseline_sorted: &[f64]) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..10).filter_map(|i| quantile_sorted(baseline_sorted, i as f64 / 10.0)).collect();
    edges.dedup();
    edges
}

/// Proportion of `values` in each bin: bin 0 is (−∞, e₀], bin i is (eᵢ₋₁, eᵢ], the last
/// (eₙ₋₁, ∞), as numpy.searchsorted(edges, v, side="left") assigns them.
pub fn bin_proportions(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    for &v in values {
        counts[edges.partition_point(|&e| e < v)] += 1;
    }
    let n = values.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// Population stability index of `current` against `baseline`; None when either is empty.
pub fn psi(baseline: &[f64], current: &[f64]) -> Option<f64> {
    let base = sorted_finite(baseline);
    let cur = sorted_finite(current);
    if base.is_empty() || cur.is_empty() {
        return None;
    }
    let edges = decile_edges(&base);
    let b = bin_proportions(&base, &edges);
    let a = bin_proportions(&cur, &edges);
    Some(
        a.iter()
            .zip(&b)
            .map(|(&a, &b)| {
                let (a, b) = (a.max(PSI_FLOOR), b.max(PSI_FLOOR));
                (a - b) * (a / b).ln()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        // numpy.quantile([1, 2, 3, 4], [0, .25, .5, .9, 1]) = [1, 1.75, 2.5, 3.7, 4]
        let v = [1.0, 2.0, 3.0, 4.0];
        let got: Vec<f64> = [0.0, 0.25, 0.5, 0.9, 1.0].iter().map(|&q| quantile_sorted(&v, q).unwrap()).collect();
        for (g, w) in got.iter().zip([1.0, 1.75, 2.5, 3.7, 4.0]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }

    #[test]
    fn psi_is_zero_for_the_same_sample_and_grows_with_a_shift() {
        let base: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        assert!(psi(&base, &base).unwrap().abs() < 1e-12);
        let shifted: Vec<f64> = base.iter().map(|x| x + 0.3).collect();
        let p = psi(&base, &shifted).unwrap();
        assert!(p > PSI_MAJOR, "{p}");
        assert_eq!(psi(&[], &base), None);
    }
}
