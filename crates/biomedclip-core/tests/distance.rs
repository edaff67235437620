//! Distance kernels against an f64 scalar reference, for every ISA this CPU has.
use biomedclip_core::distance::{self, forced, Isa};
use half::f16;
use proptest::prelude::*;

/// f64 reference: (squared L2, dot, L1, sum |a_i b_i|).
fn reference(a: &[f64], b: &[f64]) -> (f64, f64, f64, f64) {
    let mut l2 = 0.0;
    let mut dot = 0.0;
    let mut l1 = 0.0;
    let mut abs_dot = 0.0;
    for (x, y) in a.iter().zip(b) {
        l2 += (x - y) * (x - y);
        dot += x * y;
        l1 += (x - y).abs();
        abs_dot += (x * y).abs();
    }
    (l2, dot, l1, abs_dot)
}

/// Relative error bound for f32 accumulation over n terms (a few ulps per sqrt(n) step,
/// generous enough for any summation order, tight enough to catch a wrong lane or tail).
fn bound(n: usize) -> f64 {
    1e-6 * (n as f64).sqrt().max(1.0) * 4.0
}

fn check(isa: Isa, a: &[f64], b: &[f64], got: (f32, f32, f32)) -> Result<(), TestCaseError> {
    let (l2, dot, l1, abs_dot) = reference(a, b);
    let n = a.len();
    let tol = bound(n);
    prop_assert!((got.0 as f64 - l2).abs() <= tol * l2 + 1e-30, "{isa:?} n={n} l2 {} vs {l2}", got.0);
    // A dot product can cancel to ~0, so bound its error by the sum of term magnitudes.
    prop_assert!((got.1 as f64 - dot).abs() <= tol * abs_dot + 1e-30, "{isa:?} n={n} dot {} vs {dot}", got.1);
    prop_assert!((got.2 as f64 - l1).abs() <= tol * l1 + 1e-30, "{isa:?} n={n} l1 {} vs {l1}", got.2);
    Ok(())
}

fn vec_pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1usize..=2000).prop_flat_map(|n| {
        (
            prop::collection::vec(-100f32..100f32, n),
            prop::collection::vec(-100f32..100f32, n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn f32_kernels_match_f64_reference((a, b) in vec_pair()) {
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
        for isa in forced::available() {
            check(isa, &a64, &b64, forced::f32_all(isa, &a, &b))?;
        }
    }

    #[test]
    fn f16_kernels_match_f64_reference((a, b) in vec_pair()) {
        let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
        let bh: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        // The reference sees exactly the half values the kernel sees.
        let a64: Vec<f64> = ah.iter().map(|x| x.to_f64()).collect();
        let b64: Vec<f64> = bh.iter().map(|x| x.to_f64()).collect();
        for isa in forced::available() {
            check(isa, &a64, &b64, forced::f16_all(isa, &ah, &bh))?;
        }
    }

    #[test]
    fn cosine_matches_f64_reference((a, b) in vec_pair()) {
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
        let (_, dot, _, abs_dot) = reference(&a64, &b64);
        let na = a64.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = b64.iter().map(|x| x * x).sum::<f64>().sqrt();
        let expected = 1.0 - dot / (na * nb);
        let got = distance::cosine_distance_f32(&a, &b);
        let tol = bound(a.len()) * abs_dot / (na * nb) + 1e-6;
        prop_assert!((got - expected).abs() <= tol, "cosine {got} vs {expected}");
    }
}

#[test]
fn every_length_up_to_70_and_odd_tails() {
    // Deterministic sweep over the lane boundaries (8, 16, 32) and their tails.
    for n in 1..=70 {
        let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 97) as f32 * 0.37 - 11.0).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i * 104729) % 89) as f32 * -0.21 + 5.0).collect();
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
        for isa in forced::available() {
            check(isa, &a64, &b64, forced::f32_all(isa, &a, &b)).unwrap();
        }
    }
}

#[test]
fn hand_checked_values() {
    let a = [1.0f32, 2.0, 3.0];
    let b = [4.0f32, 5.0, 6.0];
    assert_eq!(distance::squared_l2_f32(&a, &b), 27.0);
    assert_eq!(distance::dot_f32(&a, &b), 32.0);
    assert_eq!(distance::l1_f32(&a, &b), 9.0);
    // cos = 32 / sqrt(14 * 77)
    let expected = 1.0 - 32.0 / (14.0f64 * 77.0).sqrt();
    assert!((distance::cosine_distance_f32(&a, &b) - expected).abs() < 1e-7);
    assert!(distance::cosine_distance_f32(&[0.0, 0.0], &[1.0, 0.0]).is_nan());
}

#[test]
fn reports_an_isa() {
    let isa = distance::active_isa();
    assert!(forced::available().contains(&isa));
}

#[test]
fn total_order_bits_sorts_as_total_cmp() {
    use biomedclip_core::distance::total_order_bits;
    let mut rng = biomedclip_core::kmeans::Rng::new(77);
    let mut values: Vec<f64> = vec![0.0, -0.0, 1.0, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -f64::NAN, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 5e-324, -5e-324, f64::MAX, f64::MIN];
    values.extend((0..20_000).map(|_| f64::from_bits(rng.next_u64())));
    values.extend((0..20_000).map(|_| rng.normal() * 3.0));
    for a in values.iter().step_by(7) {
        for b in values.iter().step_by(13) {
            assert_eq!(total_order_bits(*a).cmp(&total_order_bits(*b)), a.total_cmp(b), "{a:e} vs {b:e}");
        }
    }
}
