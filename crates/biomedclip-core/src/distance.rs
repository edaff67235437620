//! Distance kernels for f32 and f16 vectors.
//!
//! Every public function picks its implementation once per process through runtime CPU feature
//! detection: AVX-512F, then AVX2+FMA (+F16C for half precision), then a portable scalar loop.
//! Accumulation is in f32 with several independent accumulators, which keeps the relative error
//! against an f64 reference around 1e-6 for the lengths used here (tested in `tests/distance.rs`).
//!
//! Callers must pass slices of equal length; the SQL layer checks dimensions and reports both.

use half::f16;
use std::sync::OnceLock;

/// Which instruction set the kernels use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }
}

/// `x`'s bits mapped so that unsigned integer order is `f64::total_cmp`'s order (negative NaN,
/// -inf, ..., -0, +0, ..., +inf, NaN): one integer comparison where sorting needs many.
#[inline]
pub fn total_order_bits(x: f64) -> u64 {
    let bits = x.to_bits();
    // Negatives: every bit flipped (larger magnitude sorts first); positives: the sign bit set.
    if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
}

/// The instruction set chosen for this process.
pub fn active_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(detect_isa)
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// The four basic reductions every metric is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduction {
    /// sum (a-b)^2
    SquaredL2,
    /// sum a*b
    Dot,
    /// sum |a-b|
    L1,
}

macro_rules! dispatch {
    ($isa:expr, $red:expr, $a:expr, $b:expr, $scalar:path, $avx2:path, $avx512:path) => {{
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the ISA was detected at run time before this branch can be taken.
            Isa::Avx512 => unsafe { $avx512($red, $a, $b) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { $avx2($red, $a, $b) },
            _ => $scalar($red, $a, $b),
        }
    }};
}

fn reduce_f32(red: Reduction, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    dispatch!(active_isa(), red, a, b, scalar::reduce_f32, x86::reduce_f32_avx2, x86::reduce_f32_avx512)
}

fn reduce_f16(red: Reduction, a: &[f16], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    dispatch!(active_isa(), red, a, b, scalar::reduce_f16, x86::reduce_f16_avx2, x86::reduce_f16_avx512)
}

/// Squared Euclidean distance.
pub fn squared_l2_f32(a: &[f32], b: &[f32]) -> f32 {
    reduce_f32(Reduction::SquaredL2, a, b)
}
/// Euclidean distance.
pub fn l2_f32(a: &[f32], b: &[f32]) -> f32 {
    squared_l2_f32(a, b).sqrt()
}
/// Inner product.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    reduce_f32(Reduction::Dot, a, b)
}
/// Manhattan distance.
pub fn l1_f32(a: &[f32], b: &[f32]) -> f32 {
    reduce_f32(Reduction::L1, a, b)
}
/// Cosine distance, 1 - cos(a, b). NaN when either vector is zero (as pgvector).
pub fn cosine_distance_f32(a: &[f32], b: &[f32]) -> f64 {
    cosine_from_parts(dot_f32(a, b), dot_f32(a, a), dot_f32(b, b))
}

/// Squared Euclidean distance of half vectors.
pub fn squared_l2_f16(a: &[f16], b: &[f16]) -> f32 {
    reduce_f16(Reduction::SquaredL2, a, b)
}
/// Euclidean distance of half vectors.
pub fn l2_f16(a: &[f16], b: &[f16]) -> f32 {
    squared_l2_f16(a, b).sqrt()
}
/// Inner product of half vectors.
pub fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    reduce_f16(Reduction::Dot, a, b)
}
/// Manhattan distance of half vectors.
pub fn l1_f16(a: &[f16], b: &[f16]) -> f32 {
    reduce_f16(Reduction::L1, a, b)
}
/// Cosine distance of half vectors.
pub fn cosine_distance_f16(a: &[f16], b: &[f16]) -> f64 {
    cosine_from_parts(dot_f16(a, b), dot_f16(a, a), dot_f16(b, b))
}

/// Cosine distance from a dot product and the two squared norms (each as the f32 kernels return
/// them), so that callers holding precomputed norms get exactly `cosine_distance_*`'s value.
pub fn cosine_from_parts(dot: f32, aa: f32, bb: f32) -> f64 {
    let denom = (aa as f64 * bb as f64).sqrt();
    if denom == 0.0 {
        return f64::NAN;
    }
    // Rounding can push the ratio slightly outside [-1, 1].
    let similarity = (dot as f64 / denom).clamp(-1.0, 1.0);
    1.0 - similarity
}

/// Euclidean norm, accumulated in f64 (used for normalization, not in hot loops).
pub fn norm_f32(a: &[f32]) -> f64 {
    a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

mod scalar {
    use super::Reduction;
    use half::f16;

    #[inline(always)]
    fn term(red: Reduction, x: f32, y: f32) -> f32 {
        match red {
            Reduction::SquaredL2 => (x - y) * (x - y),
            Reduction::Dot => x * y,
            Reduction::L1 => (x - y).abs(),
        }
    }

    pub fn reduce_f32(red: Reduction, a: &[f32], b: &[f32]) -> f32 {
        // Four accumulators break the dependency chain and bound the error growth.
        let mut acc = [0f32; 4];
        let chunks = a.len() / 4;
        for i in 0..chunks {
            for (l, slot) in acc.iter_mut().enumerate() {
                *slot += term(red, a[4 * i + l], b[4 * i + l]);
            }
        }
        let mut total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for i in 4 * chunks..a.len() {
            total += term(red, a[i], b[i]);
        }
        total
    }

    pub fn reduce_f16(red: Reduction, a: &[f16], b: &[f16]) -> f32 {
        let mut total = 0f32;
        for (x, y) in a.iter().zip(b) {
            total += term(red, x.to_f32(), y.to_f32());
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Reduction;
    use half::f16;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn step256(red: Reduction, acc: __m256, x: __m256, y: __m256) -> __m256 {
        match red {
            Reduction::SquaredL2 => {
                let d = _mm256_sub_ps(x, y);
                _mm256_fmadd_ps(d, d, acc)
            }
            Reduction::Dot => _mm256_fmadd_ps(x, y, acc),
            Reduction::L1 => {
                let d = _mm256_sub_ps(x, y);
                let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), d);
                _mm256_add_ps(acc, abs)
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn reduce_f32_avx2(red: Reduction, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = step256(red, acc0, _mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc1 = step256(red, acc1, _mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)));
            i += 16;
        }
        if i + 8 <= n {
            acc0 = step256(red, acc0, _mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            i += 8;
        }
        let mut total = hsum256(_mm256_add_ps(acc0, acc1));
        total += super::scalar::reduce_f32(red, &a[i..], &b[i..]);
        total
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn reduce_f16_avx2(red: Reduction, a: &[f16], b: &[f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr() as *const __m128i, b.as_ptr() as *const __m128i);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(pa.byte_add(i * 2)));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(pb.byte_add(i * 2)));
            acc = step256(red, acc, x, y);
            i += 8;
        }
        hsum256(acc) + super::scalar::reduce_f16(red, &a[i..], &b[i..])
    }

    #[inline(always)]
    unsafe fn step512(red: Reduction, acc: __m512, x: __m512, y: __m512) -> __m512 {
        match red {
            Reduction::SquaredL2 => {
                let d = _mm512_sub_ps(x, y);
                _mm512_fmadd_ps(d, d, acc)
            }
            Reduction::Dot => _mm512_fmadd_ps(x, y, acc),
            Reduction::L1 => _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(x, y))),
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn reduce_f32_avx512(red: Reduction, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = step512(red, acc0, _mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            acc1 = step512(red, acc1, _mm512_loadu_ps(pa.add(i + 16)), _mm512_loadu_ps(pb.add(i + 16)));
            i += 32;
        }
        if i + 16 <= n {
            acc0 = step512(red, acc0, _mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            i += 16;
        }
        if i < n {
            // Masked loads read only the remaining lanes; the others are zero in both inputs,
            // which contributes nothing to any of the reductions.
            let mask: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
            let x = _mm512_maskz_loadu_ps(mask, pa.add(i));
            let y = _mm512_maskz_loadu_ps(mask, pb.add(i));
            acc1 = step512(red, acc1, x, y);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn reduce_f16_avx512(red: Reduction, a: &[f16], b: &[f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr() as *const __m256i, b.as_ptr() as *const __m256i);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let x = _mm512_cvtph_ps(_mm256_loadu_si256(pa.byte_add(i * 2)));
            let y = _mm512_cvtph_ps(_mm256_loadu_si256(pb.byte_add(i * 2)));
            acc = step512(red, acc, x, y);
            i += 16;
        }
        _mm512_reduce_add_ps(acc) + super::scalar::reduce_f16(red, &a[i..], &b[i..])
    }
}

/// Forces one implementation, for tests and benchmarks that compare them.
#[doc(hidden)]
pub mod forced {
    use super::*;

    /// Implementations available on this CPU.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                v.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn check(isa: Isa) {
        assert!(available().contains(&isa), "{} is not available on this CPU", isa.name());
    }

    /// (squared L2, dot, L1) with the given ISA.
    pub fn f32_all(isa: Isa, a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        check(isa);
        let r = |red| dispatch!(isa, red, a, b, scalar::reduce_f32, x86::reduce_f32_avx2, x86::reduce_f32_avx512);
        (r(Reduction::SquaredL2), r(Reduction::Dot), r(Reduction::L1))
    }

    /// (squared L2, dot, L1) of half vectors with the given ISA.
    pub fn f16_all(isa: Isa, a: &[f16], b: &[f16]) -> (f32, f32, f32) {
        check(isa);
        let r = |red| dispatch!(isa, red, a, b, scalar::reduce_f16, x86::reduce_f16_avx2, x86::reduce_f16_avx512);
        (r(Reduction::SquaredL2), r(Reduction::Dot), r(Reduction::L1))
    }
}

/// Element types with distance kernels, so generic code (SQL glue, the index) can use either.
pub trait DistanceElement: Copy {
    fn squared_l2(a: &[Self], b: &[Self]) -> f32;
    fn dot(a: &[Self], b: &[Self]) -> f32;
    fn l1(a: &[Self], b: &[Self]) -> f32;
    fn cosine_distance(a: &[Self], b: &[Self]) -> f64;
}

impl DistanceElement for f32 {
    fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
        squared_l2_f32(a, b)
    }
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot_f32(a, b)
    }
    fn l1(a: &[f32], b: &[f32]) -> f32 {
        l1_f32(a, b)
    }
    fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
        cosine_distance_f32(a, b)
    }
}

impl DistanceElement for f16 {
    fn squared_l2(a: &[f16], b: &[f16]) -> f32 {
        squared_l2_f16(a, b)
    }
    fn dot(a: &[f16], b: &[f16]) -> f32 {
        dot_f16(a, b)
    }
    fn l1(a: &[f16], b: &[f16]) -> f32 {
        l1_f16(a, b)
    }
    fn cosine_distance(a: &[f16], b: &[f16]) -> f64 {
        cosine_distance_f16(a, b)
    }
}
