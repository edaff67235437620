//! RaBitQ: 1-bit quantization of vectors with an unbiased distance estimator and an error bound
//! (Gao & Long, "RaBitQ: Quantizing High-Dimensional Vectors with a Theoretical Error Bound for
//! Approximate Nearest Neighbor Search", SIGMOD 2024). Written from the paper.
//!
//! A vector `o` of a list with centroid `c` is stored as its residual's norm `‖o − c‖`, the sign
//! bits of the rotated unit residual `u = P (o − c)/‖o − c‖`, and `f = ⟨x̄, u⟩` where
//! `x̄ = (2b − 1)/√D` is the quantized unit vector. For a query `q`, with `v = P (q − c)`,
//! `⟨x̄, v⟩ / f` estimates `⟨u, v⟩` without bias, and with probability close to one
//! (Theorem 3.2 of the paper) the error is below `ε₀ · ‖v‖ · √((1 − f²)/f²) / √(D − 1)`.
//! From it: an estimate and a lower bound of the distance, which the ivf scan uses to decide
//! which rows to re-rank with exact distances.
//!
//! The rotation `P` is a random orthogonal transform: four rounds of random sign flips, each
//! followed by a normalized Walsh-Hadamard transform on a power-of-two block (alternately the
//! first and the last block when `D` is not a power of two). Each round is orthogonal, so `P`
//! is; it costs `O(D log D)` and is regenerated from a seed, so nothing of size `D²` is stored.
//!
//! `⟨x̄, v⟩` is computed from `v` quantized to 8 bits (`v ≈ lo + Δ k`): the sum of the selected
//! `k` is `Σ_j 2^j popcount(code ∧ plane_j)` over the 8 bit planes of `k`, so scoring a code costs
//! `8 D / 64` AND + POPCNT. The quantization's effect is bounded exactly, per list and query:
//! `2 Σ |v − v_q| / √D` is added to the bound, so the bound stays valid.
//!
//! **Extended code** (after Gao et al., "Practical and Asymptotically Optimal Quantization of
//! High-Dimensional Vectors in Euclidean Space for Approximate Nearest Neighbor Search", SIGMOD
//! 2025): each vector also keeps a 4-bit code of `u` on a centered grid (`x̃ = x − 7.5`, the scale
//! chosen per vector to maximize `⟨x̃, u⟩ / ‖x̃‖`), for which `⟨x̃, v⟩ / ⟨x̃, u⟩` is the same
//! estimator with a bound about 7x tighter. A scan ranks by the 1-bit bound, refines the
//! candidates that reach the front with the 4-bit bound, and computes exact distances only for
//! those that still do.

use crate::kmeans::Rng;

pub mod kernels;
use kernels::KernelIsa;

/// Confidence multiplier of the error bound. The estimator's error is close to Gaussian with the
/// bound's scale as its deviation (measured: 0.16% of rows beyond 3); the paper's 1.9 suits a
/// re-rank of a fixed candidate count, but here a row whose bound is violated comes out late
/// and is dropped by strict order, so the bound is taken at 5 (one row in millions).
pub const EPSILON0: f32 = 5.0;

/// Dimensions padded to a multiple of 64 (whole u64 words of bits).
pub fn padded_dims(dims: usize) -> usize {
    dims.div_ceil(64).max(1) * 64
}

/// Bytes of one code.
pub fn code_bytes(dims: usize) -> usize {
    padded_dims(dims) / 8
}

/// Bytes of one extended (4-bit) code.
pub fn ex_code_bytes(dims: usize) -> usize {
    padded_dims(dims) / 2
}

/// Grid levels of the extended code, and its centre.
const EX_LEVELS: f32 = 16.0;
const EX_CENTRE: f32 = 7.5;

/// The random orthogonal rotation (sign flips + blocked Walsh-Hadamard, 4 rounds).
#[derive(Clone, Debug)]
pub struct Rotation {
    dims: usize,
    padded: usize,
    block: usize,
    /// The sign flips of each round, as ±1 multipliers (branch-free, so the loop vectorizes).
    flips: Vec<Vec<f32>>,
}

impl Rotation {
    pub fn new(dims: usize, seed: u64) -> Rotation {
        let padded = padded_dims(dims);
        let block = 1usize << (usize::BITS - 1 - padded.leading_zeros());
        let mut rng = Rng::new(seed);
        let flips = (0..4).map(|_| (0..padded).map(|_| if rng.next_u64() & 1 == 1 { -1.0 } else { 1.0 }).collect()).collect();
        Rotation { dims, padded, block, flips }
    }

    pub fn padded(&self) -> usize {
        self.padded
    }

    /// `P x` for `x` of `dims` elements (zero-padded to `padded`).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.dims);
        let mut y = vec![0f32; self.padded];
        y[..x.len()].copy_from_slice(x);
        for (round, flips) in self.flips.iter().enumerate() {
            for (v, &f) in y.iter_mut().zip(flips) {
                *v *= f;
            }
            let start = if round % 2 == 0 { 0 } else { self.padded - self.block };
            kernels::fwht(kernels::active(), &mut y[start..start + self.block]);
        }
        y
    }
}

/// The scale of a vector's entries (for float-rounding allowances).
fn residual_scale(v: &[f32]) -> f64 {
    v.iter().map(|&x| x.abs() as f64).sum()
}

/// What is stored per vector besides its code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Factors {
    /// ‖o − c‖.
    pub norm: f32,
    /// ⟨x̄, u⟩ (in (0, 1]; 1 when the residual is zero).
    pub quality: f32,
    /// ⟨o − c, c⟩, for inner-product distances.
    pub residual_dot_centroid: f32,
    /// ⟨x̃, u⟩ of the extended code.
    pub ex_dot: f32,
    /// ⟨x̃, u⟩ / ‖x̃‖ (the extended code's quality).
    pub ex_quality: f32,
}

/// Quantizes `o` against `centroid`: its 1-bit code (`code_bytes(dims)` bytes, bit i of byte i/8
/// is the sign of rotated dimension i), its extended code (`ex_code_bytes(dims)` bytes, dimension
/// i in the low nibble of byte i/2 when i is even, the high one when odd) and factors.
pub fn encode(rotation: &Rotation, o: &[f32], centroid: &[f32]) -> (Vec<u8>, Vec<u8>, Factors) {
    match kernels::active() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has these features (checked at run time).
        KernelIsa::Avx512 => unsafe { encode_avx512(rotation, o, centroid) },
        _ => encode_portable(rotation, o, centroid),
    }
}

/// `encode` compiled for AVX-512 (rounding in one instruction, not a libm call; vector loops):
/// the same operations in the same order, so the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,sse4.1")]
unsafe fn encode_avx512(rotation: &Rotation, o: &[f32], centroid: &[f32]) -> (Vec<u8>, Vec<u8>, Factors) {
    encode_portable(rotation, o, centroid)
}

#[inline(always)]
fn encode_portable(rotation: &Rotation, o: &[f32], centroid: &[f32]) -> (Vec<u8>, Vec<u8>, Factors) {
    let residual: Vec<f32> = o.iter().zip(centroid).map(|(a, b)| a - b).collect();
    let norm = (residual.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sqrt();
    let rdc = residual.iter().zip(centroid).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
    let mut code = vec![0u8; rotation.padded / 8];
    let mut ex = vec![0u8; rotation.padded / 2];
    if norm == 0.0 {
        return (code, ex, Factors { norm: 0.0, quality: 1.0, residual_dot_centroid: rdc, ex_dot: 1.0, ex_quality: 1.0 });
    }
    let unit: Vec<f32> = residual.iter().map(|&x| (x as f64 / norm) as f32).collect();
    let u = rotation.apply(&unit);
    let mut abs_sum = 0f64;
    for (i, &x) in u.iter().enumerate() {
        if x > 0.0 {
            code[i / 8] |= 1 << (i % 8);
        }
        abs_sum += x.abs() as f64;
    }
    let quality = (abs_sum / (rotation.padded as f64).sqrt()).clamp(1e-6, 1.0) as f32;
    let (levels, ex_dot, ex_quality) = extended_levels(&u);
    for (i, &l) in levels.iter().enumerate() {
        ex[i / 2] |= l << (4 * (i % 2));
    }
    (code, ex, Factors { norm: norm as f32, quality, residual_dot_centroid: rdc, ex_dot, ex_quality })
}

/// The 4-bit grid levels of `u` at the scale that maximizes ⟨x̃, u⟩ / ‖x̃‖ among a few: the
/// coordinates of a randomly rotated unit vector are close to N(0, 1/D), for which a 16-level
/// uniform grid is best clipped near ±2.7 standard deviations; the candidates bracket that, plus
/// "the largest coordinate at the grid's edge". Returns ⟨x̃, u⟩ and that quality too.
#[inline(always)]
fn extended_levels(u: &[f32]) -> (Vec<u8>, f32, f32) {
    let max = u.iter().fold(0f32, |m, &x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let sigma = (1.0 / u.len() as f32).sqrt();
    let mut best = (f32::MIN, 0f32);
    for t in [2.0f32, 2.3, 2.6, 2.9, 3.3].map(|c| EX_CENTRE / (c * sigma)).into_iter().chain([EX_CENTRE / max]) {
        let (q, _) = grid_score(u, t);
        if q > best.0 {
            best = (q, t);
        }
    }
    let (q, dot) = grid_score(u, best.1);
    (u.iter().map(|&x| grid_level(x, best.1) as u8).collect(), dot, q.clamp(1e-6, 1.0))
}

/// The grid level of `x` at scale `t`. (Plain functions rather than closures, so that they are
/// compiled inside `encode_avx512`, where rounding is one instruction.)
#[inline(always)]
fn grid_level(x: f32, t: f32) -> f32 {
    ((x * t + EX_CENTRE + 0.5).floor()).clamp(0.0, EX_LEVELS - 1.0)
}

/// ⟨x̃, u⟩ / ‖x̃‖ and ⟨x̃, u⟩ of the grid at scale `t`, in 16 partial sums (u has a multiple of
/// 64 entries) so that the loop vectorizes.
#[inline(always)]
fn grid_score(u: &[f32], t: f32) -> (f32, f32) {
    let (mut dot, mut sq) = ([0f32; 16], [0f32; 16]);
    for chunk in u.chunks_exact(16) {
        for l in 0..16 {
            let c = grid_level(chunk[l], t) - EX_CENTRE;
            dot[l] += c * chunk[l];
            sq[l] += c * c;
        }
    }
    let (dot, sq) = (dot.iter().sum::<f32>(), sq.iter().sum::<f32>());
    (dot / sq.sqrt().max(f32::MIN_POSITIVE), dot)
}

/// A query prepared for one list: `v = P (q − c)` as a lookup table over nibbles of codes.
pub struct QueryLut {
    /// Bit planes of the 8-bit quantized v, word by word: plane j of word w at `planes[w * 8 + j]`.
    planes: Vec<u64>,
    lo: f32,
    delta: f32,
    /// Largest effect of the quantization on ⟨x̄, v⟩.
    quant_err: f32,
    isa: KernelIsa,
    /// v = P (q − c), for extended codes.
    v: Vec<f32>,
    sum: f32,
    /// ‖q − c‖.
    pub norm: f32,
    /// ⟨c, q⟩, for inner-product distances.
    pub centroid_dot_query: f32,
    inv_sqrt_d: f32,
    bound_scale: f32,
}

impl QueryLut {
    pub fn new(rotation: &Rotation, q: &[f32], centroid: &[f32]) -> QueryLut {
        let residual: Vec<f32> = q.iter().zip(centroid).map(|(a, b)| a - b).collect();
        let norm = (residual.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sqrt() as f32;
        let cq = q.iter().zip(centroid).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
        let v = rotation.apply(&residual);
        let d = rotation.padded as f32;
        let (lo, hi) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let delta = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE);
        let mut err = 0f64;
        let k: Vec<u8> = v
            .iter()
            .map(|&x| {
                let k = ((x - lo) / delta).round().clamp(0.0, 255.0);
                err += (x as f64 - (lo + delta * k) as f64).abs();
                k as u8
            })
            .collect();
        let isa = kernels::active();
        let mut planes = vec![0u64; v.len() / 8];
        kernels::bit_planes(isa, &k, &mut planes);
        QueryLut {
            planes,
            lo,
            delta,
            // Floats: allow for the rounding of the sums themselves too.
            quant_err: ((2.0 * err / (d as f64).sqrt()) * 1.001 + 1e-6 * residual_scale(&v)) as f32,
            isa,
            sum: v.iter().sum(),
            v,
            norm,
            centroid_dot_query: cq,
            inv_sqrt_d: 1.0 / d.sqrt(),
            bound_scale: EPSILON0 / (d - 1.0).max(1.0).sqrt(),
        }
    }

    /// The most the 8-bit quantization of v can move `code_dot`.
    pub fn quantization_error(&self) -> f32 {
        self.quant_err
    }

    /// ⟨x̄, v⟩ for a code (with the 8-bit quantized v; off by at most `quantization_error`):
    /// `Σ_j 2^j popcount(code ∧ plane_j)` selects the quantized entries whose bit is set.
    #[inline]
    pub fn code_dot(&self, code: &[u8]) -> f32 {
        self.code_dot_with(self.isa, code)
    }

    /// `code_dot` with the given kernels (tests compare them).
    #[doc(hidden)]
    #[inline]
    pub fn code_dot_with(&self, isa: KernelIsa, code: &[u8]) -> f32 {
        let (ones, k_sum) = kernels::plane_sums(isa, &self.planes, code);
        let selected = self.lo * ones as f32 + self.delta * k_sum as f32;
        (2.0 * selected - self.sum) * self.inv_sqrt_d
    }

    /// Estimate of ⟨o − c, q − c⟩ and its error bound, from the 1-bit code.
    #[inline]
    pub fn residual_dot(&self, code: &[u8], f: &Factors) -> (f32, f32) {
        if f.norm == 0.0 {
            return (0.0, 0.0);
        }
        let est = self.code_dot(code) / f.quality;
        let bound = (self.norm * self.bound_scale * ((1.0 - f.quality * f.quality).max(0.0)).sqrt() + self.quant_err) / f.quality;
        (f.norm * est, f.norm * bound)
    }

    /// Estimate of ⟨o − c, q − c⟩ and its (tighter) error bound, from the extended code.
    pub fn ex_residual_dot(&self, ex: &[u8], f: &Factors) -> (f32, f32) {
        if f.norm == 0.0 {
            return (0.0, 0.0);
        }
        let total = kernels::nibble_dot(self.isa, ex, &self.v);
        let xv = total - EX_CENTRE * self.sum;
        let est = xv / f.ex_dot;
        let q = f.ex_quality;
        let bound = self.norm * self.bound_scale * ((1.0 - q * q).max(0.0)).sqrt() / q;
        (f.norm * est, f.norm * bound)
    }

    /// Lower bound of the squared L2 distance ‖o − q‖² (never below zero), given an estimate of
    /// ⟨o − c, q − c⟩ and its bound.
    #[inline]
    pub fn squared_l2_lower_bound(&self, (est, bound): (f32, f32), f: &Factors) -> f32 {
        (f.norm * f.norm + self.norm * self.norm - 2.0 * (est + bound)).max(0.0)
    }

    /// Upper bound of the inner product ⟨o, q⟩, given an estimate of ⟨o − c, q − c⟩ and its bound.
    #[inline]
    pub fn inner_product_upper_bound(&self, (est, bound): (f32, f32), f: &Factors) -> f32 {
        est + bound + f.residual_dot_centroid + self.centroid_dot_query
    }
}
