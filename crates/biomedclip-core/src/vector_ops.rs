//! Element-wise arithmetic, ordering, hashing and the running sums behind `avg`/`sum`.
//!
//! All functions work on f32 values; callers convert half vectors at the boundary.

use crate::vector_format::VectorError;
use std::cmp::Ordering;

fn same_dims(a: &[f32], b: &[f32]) -> Result<(), VectorError> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(VectorError::DimMismatch { left: a.len(), right: b.len() })
    }
}

fn elementwise(a: &[f32], b: &[f32], op: &'static str, f: impl Fn(f32, f32) -> f32) -> Result<Vec<f32>, VectorError> {
    same_dims(a, b)?;
    let out: Vec<f32> = a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    if out.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::Overflow(op));
    }
    Ok(out)
}

pub fn add(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    elementwise(a, b, "addition", |x, y| x + y)
}

pub fn sub(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    elementwise(a, b, "subtraction", |x, y| x - y)
}

/// Element-wise product; a product of two non-zero elements that rounds to zero is an underflow
/// error (as pgvector), not a silent 0.
pub fn mul(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    let out = elementwise(a, b, "multiplication", |x, y| x * y)?;
    if out.iter().zip(a.iter().zip(b)).any(|(&r, (&x, &y))| r == 0.0 && x != 0.0 && y != 0.0) {
        return Err(VectorError::Underflow("multiplication"));
    }
    Ok(out)
}

/// Every element times `s`; overflow and non-finite factors are errors.
pub fn scale(a: &[f32], s: f64) -> Result<Vec<f32>, VectorError> {
    if !s.is_finite() {
        return Err(VectorError::NotFinite(s.to_string()));
    }
    let out: Vec<f32> = a.iter().map(|&x| (x as f64 * s) as f32).collect();
    if out.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::Overflow("scaling"));
    }
    Ok(out)
}

/// `a` followed by `b`, within the dimension limit.
pub fn concat(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    crate::vector_format::check_dims(a.len() + b.len())?;
    Ok(a.iter().chain(b).copied().collect())
}

/// Scales to unit Euclidean length. A zero vector stays zero (as pgvector).
pub fn l2_normalize(a: &[f32]) -> Vec<f32> {
    let norm = crate::distance::norm_f32(a);
    if norm == 0.0 {
        return a.to_vec();
    }
    a.iter().map(|&x| (x as f64 / norm) as f32).collect()
}

/// Elements `start..start+count` with 1-based `start`, clipped to the vector like SQL `substring`.
pub fn subvector(a: &[f32], start: i32, count: i32) -> Result<Vec<f32>, VectorError> {
    let first = (start as i64).max(1);
    let end = (start as i64 + count as i64).min(a.len() as i64 + 1);
    if end <= first {
        return Err(VectorError::Empty);
    }
    Ok(a[(first - 1) as usize..(end - 1) as usize].to_vec())
}

/// Total order used by the btree opclass: element by element, then shorter first.
/// `-0.0` equals `0.0`; values are finite, so `partial_cmp` never fails.
pub fn compare(a: &[f32], b: &[f32]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y).unwrap_or(Ordering::Equal) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Hash consistent with `compare`: equal vectors hash equally (so `-0.0` hashes as `0.0`).
/// FNV-1a over the element bits; stable across platforms and releases, as hash indexes need.
pub fn hash(a: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &x in a {
        let bits = if x == 0.0 { 0u32 } else { x.to_bits() };
        for byte in bits.to_le_bytes() {
            h ^= byte as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Running state of `avg(embedding)` / `sum(embedding)`: the row count and f64 sums.
/// Serialized as a float8[] `[count, s1, s2, ...]` so PostgreSQL can combine it across workers.
#[derive(Debug, Clone, PartialEq)]
pub struct SumState {
    pub count: f64,
    pub sums: Vec<f64>,
}

impl SumState {
    pub fn from_array(arr: &[f64]) -> Self {
        match arr.split_first() {
            Some((&count, sums)) => SumState { count, sums: sums.to_vec() },
            None => SumState { count: 0.0, sums: Vec::new() },
        }
    }

    pub fn to_array(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.sums.len() + 1);
        out.push(self.count);
        out.extend_from_slice(&self.sums);
        out
    }

    pub fn accumulate(&mut self, v: &[f32]) -> Result<(), VectorError> {
        if self.count == 0.0 {
            self.sums = vec![0.0; v.len()];
        } else if self.sums.len() != v.len() {
            return Err(VectorError::DimMismatch { left: self.sums.len(), right: v.len() });
        }
        for (s, &x) in self.sums.iter_mut().zip(v) {
            *s += x as f64;
        }
        self.count += 1.0;
        Ok(())
    }

    pub fn combine(&mut self, other: &SumState) -> Result<(), VectorError> {
        if other.count == 0.0 {
            return Ok(());
        }
        if self.count == 0.0 {
            *self = other.clone();
            return Ok(());
        }
        if self.sums.len() != other.sums.len() {
            return Err(VectorError::DimMismatch { left: self.sums.len(), right: other.sums.len() });
        }
        for (s, o) in self.sums.iter_mut().zip(&other.sums) {
            *s += o;
        }
        self.count += other.count;
        Ok(())
    }

    /// `None` when no rows were aggregated (SQL NULL).
    pub fn sum(&self) -> Option<Result<Vec<f32>, VectorError>> {
        self.finish(1.0, "sum")
    }

    pub fn avg(&self) -> Option<Result<Vec<f32>, VectorError>> {
        self.finish(self.count, "average")
    }

    fn finish(&self, divisor: f64, op: &'static str) -> Option<Result<Vec<f32>, VectorError>> {
        if self.count == 0.0 {
            return None;
        }
        let out: Vec<f32> = self.sums.iter().map(|s| (s / divisor) as f32).collect();
        if out.iter().any(|x| !x.is_finite()) {
            return Some(Err(VectorError::Overflow(op)));
        }
        Some(Ok(out))
    }
}
