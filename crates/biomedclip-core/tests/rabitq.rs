//! RaBitQ against direct computation: the rotation is orthogonal, the popcount kernel equals
//! the signed sum it stands for within its stated quantization bound, the estimator is unbiased and its bound holds at the rate the
//! paper's analysis gives.

use biomedclip_core::kmeans::Rng;
use biomedclip_core::rabitq::{code_bytes, encode, ex_code_bytes, padded_dims, QueryLut, Rotation, EPSILON0};

fn gaussian(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[test]
fn rotation_is_orthogonal() {
    for dims in [3, 64, 100, 384, 512, 768, 2000] {
        let r = Rotation::new(dims, 7);
        let mut rng = Rng::new(dims as u64);
        let (a, b) = (gaussian(&mut rng, dims), gaussian(&mut rng, dims));
        let (ra, rb) = (r.apply(&a), r.apply(&b));
        assert_eq!(ra.len(), padded_dims(dims));
        let (before, after) = (dot(&a, &b), dot(&ra, &rb));
        assert!((before - after).abs() < 1e-3 * dims as f64, "{dims}: {before} vs {after}");
        assert!((dot(&a, &a) - dot(&ra, &ra)).abs() < 1e-4 * dot(&a, &a), "{dims}: norm");
    }
}

#[test]
fn popcount_kernel_equals_the_signed_sum_within_its_bound() {
    let dims = 200;
    let r = Rotation::new(dims, 3);
    let mut rng = Rng::new(11);
    let centroid = gaussian(&mut rng, dims);
    let o = gaussian(&mut rng, dims);
    let q = gaussian(&mut rng, dims);
    let (code, ex, _) = encode(&r, &o, &centroid);
    assert_eq!(code.len(), code_bytes(dims));
    assert_eq!(ex.len(), ex_code_bytes(dims));
    let lut = QueryLut::new(&r, &q, &centroid);
    let v = r.apply(&q.iter().zip(&centroid).map(|(a, b)| a - b).collect::<Vec<_>>());
    let d = v.len() as f64;
    let direct: f64 = v.iter().enumerate().map(|(i, &x)| if code[i / 8] >> (i % 8) & 1 == 1 { x as f64 } else { -(x as f64) }).sum::<f64>() / d.sqrt();
    // The kernel scores with v quantized to 8 bits; its error stays within the bound it adds,
    // which is small against ‖v‖.
    let err = (lut.code_dot(&code) as f64 - direct).abs();
    let v_norm = dot(&v, &v).sqrt();
    assert!(err <= lut.quantization_error() as f64, "{err} > {}", lut.quantization_error());
    assert!((lut.quantization_error() as f64) < 0.02 * v_norm, "{} vs |v| {v_norm}", lut.quantization_error());
}

#[test]
fn estimator_is_unbiased_and_the_bound_holds() {
    // Anisotropic data (as real embeddings): residuals of 20,000 vectors against one centroid,
    // for the 1-bit code and the extended 4-bit code.
    let dims = 384;
    let r = Rotation::new(dims, 9);
    let mut rng = Rng::new(5);
    let scale: Vec<f32> = (0..dims).map(|i| 1.0 / (1.0 + i as f32 / 16.0)).collect();
    let centroid: Vec<f32> = gaussian(&mut rng, dims).iter().zip(&scale).map(|(x, s)| x * s).collect();
    let q: Vec<f32> = gaussian(&mut rng, dims).iter().zip(&scale).map(|(x, s)| x * s).collect();
    let lut = QueryLut::new(&r, &q, &centroid);
    let n = 20_000;
    let (mut errors, mut ex_errors, mut violations) = (Vec::new(), Vec::new(), 0);
    let (mut bound_sum, mut ex_bound_sum) = (0f64, 0f64);
    for _ in 0..n {
        let o: Vec<f32> = gaussian(&mut rng, dims).iter().zip(&scale).map(|(x, s)| x * s).collect();
        let (code, ex, f) = encode(&r, &o, &centroid);
        let exact_l2 = o.iter().zip(&q).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
        let exact_ip = dot(&o, &q);
        let exact_residual = dot(&o.iter().zip(&centroid).map(|(a, b)| a - b).collect::<Vec<_>>(), &q.iter().zip(&centroid).map(|(a, b)| a - b).collect::<Vec<_>>());
        for (estimate, errs, sum) in [(lut.residual_dot(&code, &f), &mut errors, &mut bound_sum), (lut.ex_residual_dot(&ex, &f), &mut ex_errors, &mut ex_bound_sum)] {
            errs.push((estimate.0 as f64 - exact_residual) / estimate.1 as f64 * EPSILON0 as f64);
            *sum += estimate.1 as f64;
            let lb = lut.squared_l2_lower_bound(estimate, &f) as f64;
            let ub = lut.inner_product_upper_bound(estimate, &f) as f64;
            violations += (lb > exact_l2 * (1.0 + 1e-5) + 1e-4) as usize + (ub < exact_ip - 1e-4 * exact_ip.abs() - 1e-4) as usize;
        }
    }
    for (label, errs) in [("1-bit", &errors), ("4-bit", &ex_errors)] {
        let mean = errs.iter().sum::<f64>() / n as f64;
        let sd = (errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        // In units of the bound's scale: mean ~0 (unbiased), deviation ~1 or below (the analysis).
        assert!(mean.abs() < 0.05, "{label}: bias {mean}");
        assert!(sd < 1.2, "{label}: deviation {sd}");
    }
    assert_eq!(violations, 0, "bounds violated at epsilon0 = {EPSILON0}");
    assert!(ex_bound_sum < bound_sum / 4.0, "the extended code's bound is much tighter: {ex_bound_sum} vs {bound_sum}");
}

#[test]
fn scan_kernels_equal_their_definitions_on_every_isa() {
    use biomedclip_core::rabitq::kernels::{available, bit_planes, fwht, nibble_dot, plane_sums};
    let isas = available();
    let mut rng = Rng::new(42);
    for dims in [64, 192, 384, 512, 768, 2048] {
        let words = dims / 64;
        for _ in 0..50 {
            let planes: Vec<u64> = (0..8 * words).map(|_| rng.next_u64()).collect();
            let code: Vec<u8> = (0..words).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
            // Definition: k_i = Σ_j 2^j bit i of plane j; the kernel sums k_i over the set bits of
            // the code, and counts those bits.
            let bit = |word: u64, i: usize| (word >> (i % 64)) & 1;
            let (mut ones, mut k_sum) = (0u32, 0u32);
            for i in 0..dims {
                if code[i / 8] >> (i % 8) & 1 == 1 {
                    ones += 1;
                    k_sum += (0..8).map(|j| (bit(planes[i / 64 * 8 + j], i) as u32) << j).sum::<u32>();
                }
            }
            let ex: Vec<u8> = (0..dims / 2).map(|_| rng.next_u64() as u8).collect();
            let v = gaussian(&mut rng, dims);
            let direct: f64 = (0..dims).map(|i| ((ex[i / 2] >> (4 * (i % 2))) & 15) as f64 * v[i] as f64).sum();
            let mut x = gaussian(&mut rng, 1usize << dims.ilog2());
            let levels: Vec<u8> = (0..dims).map(|_| rng.next_u64() as u8).collect();
            let mut reference = None;
            for &isa in &isas {
                let mut got = vec![0u64; dims / 8];
                bit_planes(isa, &levels, &mut got);
                for i in 0..dims {
                    for j in 0..8 {
                        assert_eq!(bit(got[i / 64 * 8 + j], i), (levels[i] >> j & 1) as u64, "{isa:?} {dims}: plane {j} of {i}");
                    }
                }
                assert_eq!(plane_sums(isa, &planes, &code), (ones, k_sum), "{isa:?} {dims}");
                let got = nibble_dot(isa, &ex, &v) as f64;
                assert!((got - direct).abs() < 1e-4 * (1.0 + direct.abs()), "{isa:?} {dims}: {got} vs {direct}");
                // The same butterflies in the same order: bit-identical on every ISA.
                let mut y = x.clone();
                fwht(isa, &mut y);
                assert_eq!(*reference.get_or_insert_with(|| y.clone()), y, "{isa:?} {dims}");
            }
            // The transform is its own inverse (normalized): a check against its definition.
            let before = x.clone();
            fwht(isas[0], &mut x);
            fwht(isas[0], &mut x);
            assert!(x.iter().zip(&before).all(|(a, b)| (a - b).abs() < 1e-4 * (1.0 + b.abs())), "{dims}: H H x != x");
        }
    }
    eprintln!("scan kernels checked on {isas:?}");
}
