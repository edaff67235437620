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
//! `⟨x̄, v⟩` is computed with a lookup table per 4 dimensions (16 sums each), so scoring a code
//! costs `D/4` table reads and adds.

use crate::kmeans::Rng;

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

/// The random orthogonal rotation (sign flips + blocked Walsh-Hadamard, 4 rounds).
#[derive(Clone, Debug)]
pub struct Rotation {
    dims: usize,
    padded: usize,
    block: usize,
    flips: Vec<Vec<bool>>,
}

impl Rotation {
    pub fn new(dims: usize, seed: u64) -> Rotation {
        let padded = padded_dims(dims);
        let block = 1usize << (usize::BITS - 1 - padded.leading_zeros());
        let mut rng = Rng::new(seed);
        let flips = (0..4).map(|_| (0..padded).map(|_| rng.next_u64() & 1 == 1).collect()).collect();
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
                if f {
                    *v = -*v;
                }
            }
            let start = if round % 2 == 0 { 0 } else { self.padded - self.block };
            fwht(&mut y[start..start + self.block]);
        }
        y
    }
}

/// In-place normalized fast Walsh-Hadamard transform (length a power of two).
fn fwht(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(h * 2) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    for v in x.iter_mut() {
        *v *= scale;
    }
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
}

/// Quantizes `o` against `centroid`: its code (`code_bytes(dims)` bytes, bit i of byte i/8 is the
/// sign of rotated dimension i) and factors.
pub fn encode(rotation: &Rotation, o: &[f32], centroid: &[f32]) -> (Vec<u8>, Factors) {
    let residual: Vec<f32> = o.iter().zip(centroid).map(|(a, b)| a - b).collect();
    let norm = (residual.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sqrt();
    let rdc = residual.iter().zip(centroid).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
    let mut code = vec![0u8; rotation.padded / 8];
    if norm == 0.0 {
        return (code, Factors { norm: 0.0, quality: 1.0, residual_dot_centroid: rdc });
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
    (code, Factors { norm: norm as f32, quality, residual_dot_centroid: rdc })
}

/// A query prepared for one list: `v = P (q − c)` as a lookup table over nibbles of codes.
pub struct QueryLut {
    lut: Vec<[f32; 16]>,
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
        let lut = v
            .chunks_exact(4)
            .map(|g| {
                let mut t = [0f32; 16];
                for m in 1..16usize {
                    t[m] = t[m & (m - 1)] + g[m.trailing_zeros() as usize];
                }
                t
            })
            .collect();
        let d = rotation.padded as f32;
        QueryLut {
            lut,
            sum: v.iter().sum(),
            norm,
            centroid_dot_query: cq,
            inv_sqrt_d: 1.0 / d.sqrt(),
            bound_scale: EPSILON0 / (d - 1.0).max(1.0).sqrt(),
        }
    }

    /// ⟨x̄, v⟩ for a code.
    #[inline]
    pub fn code_dot(&self, code: &[u8]) -> f32 {
        // Four accumulators: independent add chains the CPU can overlap.
        let mut acc = [0f32; 4];
        let lut = &self.lut;
        let mut i = 0;
        let n = code.len();
        while i + 2 <= n {
            let (a, b) = (code[i] as usize, code[i + 1] as usize);
            acc[0] += lut[2 * i][a & 15];
            acc[1] += lut[2 * i + 1][a >> 4];
            acc[2] += lut[2 * i + 2][b & 15];
            acc[3] += lut[2 * i + 3][b >> 4];
            i += 2;
        }
        if i < n {
            let a = code[i] as usize;
            acc[0] += lut[2 * i][a & 15];
            acc[1] += lut[2 * i + 1][a >> 4];
        }
        let selected = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        (2.0 * selected - self.sum) * self.inv_sqrt_d
    }

    /// Estimate of ⟨o − c, q − c⟩ and its error bound.
    #[inline]
    pub fn residual_dot(&self, code: &[u8], f: &Factors) -> (f32, f32) {
        if f.norm == 0.0 {
            return (0.0, 0.0);
        }
        let est = self.code_dot(code) / f.quality;
        let bound = self.norm * self.bound_scale * ((1.0 - f.quality * f.quality).max(0.0)).sqrt() / f.quality;
        (f.norm * est, f.norm * bound)
    }

    /// Lower bound of the squared L2 distance ‖o − q‖² (never below zero).
    #[inline]
    pub fn squared_l2_lower_bound(&self, code: &[u8], f: &Factors) -> f32 {
        let (est, bound) = self.residual_dot(code, f);
        (f.norm * f.norm + self.norm * self.norm - 2.0 * (est + bound)).max(0.0)
    }

    /// Upper bound of the inner product ⟨o, q⟩.
    #[inline]
    pub fn inner_product_upper_bound(&self, code: &[u8], f: &Factors) -> f32 {
        let (est, bound) = self.residual_dot(code, f);
        est + bound + f.residual_dot_centroid + self.centroid_dot_query
    }
}
