//! k-means for the ivf index: k-means++ seeding, then Lloyd iterations.
//!
//! * `Metric::L2`: ordinary k-means on the vectors.
//! * `Metric::Spherical`: for cosine (and inner product) indexes; the inputs are expected to be
//!   unit-normalized by the caller and every centroid is re-normalized after each update, so
//!   assignment by smallest L2 equals assignment by largest cosine.
//!
//! Data is a flat row-major `[n * dim]` slice. Distances use `|x - c|^2 = |x|^2 + |c|^2 - 2 x.c`
//! with precomputed norms; the assignment steps score blocks of rows against all centroids with
//! one matrix product each ([`nearest_rows`]). Deterministic for a given seed.

use crate::distance::dot_f32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    L2,
    Spherical,
}

pub use crate::rng::Rng;

/// How a k-means run may use the machine: worker threads (PostgreSQL's
/// `max_parallel_maintenance_workers` + 1 in the index build) and a check the main thread calls
/// between steps so that a cancelled CREATE INDEX stops within a fraction of a second.
pub struct Control<'a> {
    pub threads: usize,
    pub interrupted: &'a dyn Fn() -> bool,
}

impl Control<'_> {
    /// All cores (up to 4), never interrupted: for tools and tests.
    pub fn unbounded() -> Control<'static> {
        Control { threads: std::thread::available_parallelism().map_or(1, |t| t.get()).min(4), interrupted: &|| false }
    }
}

/// The run was interrupted (the caller then raises its own cancel error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// Runs `f` over `0..n` split into one contiguous range per thread (at most `threads`), in order.
/// The worker threads are started with all signals blocked, so that a host process (a PostgreSQL
/// backend) keeps receiving its signals on its own thread; they call nothing of the host.
/// Each thread gets at least `min_per_thread` items (thread start-up is not free).
pub fn par_ranges<T: Send>(threads: usize, n: usize, min_per_thread: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let threads = threads.max(1).min(n / min_per_thread.max(1) + 1);
    if threads <= 1 {
        return vec![f(0..n)];
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = crate::runtime::with_signals_blocked(|| {
            (0..threads).map(|t| scope.spawn(move || f(t * per..((t + 1) * per).min(n)))).collect()
        });
        handles.into_iter().map(|h| h.join().expect("k-means worker panicked")).collect()
    })
}

/// The nearest centroid of each row of `rows` (flat, `dim` wide), computed on `threads` threads.
pub fn assign(centroids: &[f32], centroid_norms: &[f32], dim: usize, rows: &[f32], threads: usize) -> Vec<usize> {
    let n = rows.len() / dim;
    par_ranges(threads, n, (1 << 20) / (centroid_norms.len() * dim).max(1), |r| {
        let part = &rows[r.start * dim..r.end * dim];
        nearest_rows(centroids, centroid_norms, dim, part, &norms(part, dim)).into_iter().map(|(j, _)| j).collect::<Vec<_>>()
    })
    .concat()
}

/// How many scores (rows × centroids) one block of [`nearest_rows`] computes at a time: 1 MiB.
const SCORE_BLOCK: usize = 1 << 18;

/// The nearest centroid of every row and the squared distance to it, as [`nearest`] computes them
/// (`|x|² + |c|² − 2 x·c`, the first of equal distances), but with the `x·c` of a block of rows
/// against all centroids from one matrix product (matrixmultiply's sgemm, register-blocked, with
/// AVX2/FMA where the CPU has them) instead of one dot product per pair, which streams every
/// centroid through the cache again for each row. The sums run in another order than
/// [`nearest`]'s, so a row almost equidistant from two centroids may go to the other one.
pub fn nearest_rows(centroids: &[f32], centroid_norms: &[f32], dim: usize, rows: &[f32], row_norms: &[f32]) -> Vec<(usize, f32)> {
    let k = centroid_norms.len();
    let n = row_norms.len();
    assert!(centroids.len() == k * dim && rows.len() == n * dim, "nearest_rows: shapes");
    if k == 0 {
        return vec![(0, f32::INFINITY); n]; // as `nearest` over no centroids
    }
    let mut out = Vec::with_capacity(n);
    for_each_score_row(centroids, k, dim, rows, |i, scores| out.push(closest_of(row_norms[i], centroid_norms, scores.iter().copied())));
    out
}

/// Calls `f(i, scores)` for each row `i` of `rows` (flat, `dim` wide) in order, with `scores[j]`
/// the dot product of that row and row `j` of `targets` (`k` rows of `dim`): a block of rows at
/// a time, each block's scores from one matrix product (matrixmultiply's sgemm). `k`, `dim` > 0.
fn for_each_score_row(targets: &[f32], k: usize, dim: usize, rows: &[f32], mut f: impl FnMut(usize, &[f32])) {
    assert!(k > 0 && dim > 0 && targets.len() == k * dim && rows.len() % dim == 0, "for_each_score_row: shapes");
    let n = rows.len() / dim;
    let block = (SCORE_BLOCK / k).clamp(1, 256);
    let mut scores = vec![0f32; block * k];
    for start in (0..n).step_by(block) {
        let b = block.min(n - start);
        // SAFETY: A is rows[start..start + b] (b × dim, row-major), B reads the targets as a
        // dim × k matrix (element (p, j) at j * dim + p), C is scores (b × k, row-major); every
        // index the three shapes and strides describe lies inside its slice.
        unsafe {
            matrixmultiply::sgemm(
                b,
                dim,
                k,
                1.0,
                rows[start * dim..].as_ptr(),
                dim as isize,
                1,
                targets.as_ptr(),
                1,
                dim as isize,
                0.0,
                scores.as_mut_ptr(),
                k as isize,
                1,
            );
        }
        for (i, row_scores) in scores[..b * k].chunks_exact(k).enumerate() {
            f(start + i, row_scores);
        }
    }
}

fn norms(data: &[f32], dim: usize) -> Vec<f32> {
    data.chunks_exact(dim).map(|r| dot_f32(r, r)).collect()
}

fn normalize_rows(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let n = crate::distance::norm_f32(row);
        if n > 0.0 {
            for x in row.iter_mut() {
                *x = (*x as f64 / n) as f32;
            }
        }
    }
}

/// Index of the nearest centroid and the squared distance to it.
pub fn nearest(centroids: &[f32], centroid_norms: &[f32], dim: usize, v: &[f32], v_norm: f32) -> (usize, f32) {
    closest_of(v_norm, centroid_norms, centroids.chunks_exact(dim).map(|c| dot_f32(v, c)))
}

/// The first index of the smallest `|x|² + |c_j|² − 2 x·c_j` over the centroids, given `|x|²`,
/// the `|c_j|²` and the dot products `x·c_j`, and that squared distance (at least 0).
fn closest_of(row_norm: f32, centroid_norms: &[f32], dots: impl Iterator<Item = f32>) -> (usize, f32) {
    let mut best = (0usize, f32::INFINITY);
    for (j, (s, &cn)) in dots.zip(centroid_norms).enumerate() {
        let d = row_norm + cn - 2.0 * s;
        if d < best.1 {
            best = (j, d);
        }
    }
    (best.0, best.1.max(0.0))
}

/// k-means++ seeding: each next centroid is drawn with probability proportional to the squared
/// distance to the nearest centroid chosen so far (greedy variant, see below).
pub fn kmeans_pp(data: &[f32], dim: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    kmeans_pp_with(data, dim, k, rng, &Control::unbounded()).expect("never interrupted")
}

/// [`kmeans_pp`] under a [`Control`].
pub fn kmeans_pp_with(data: &[f32], dim: usize, k: usize, rng: &mut Rng, control: &Control) -> Result<Vec<f32>, Interrupted> {
    let n = data.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    if n == 0 {
        return Ok(centroids);
    }
    let first = rng.below(n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let data_norms = norms(data, dim);
    let mut closest: Vec<f32> = data
        .chunks_exact(dim)
        .zip(&data_norms)
        .map(|(r, &rn)| (rn + data_norms[first] - 2.0 * dot_f32(r, &centroids[..dim])).max(0.0))
        .collect();
    // Greedy k-means++ (as scikit-learn): draw a few candidates per step and keep the one that
    // lowers the total potential most; plain k-means++ merges clusters noticeably more often.
    let trials = 2 + (k.max(2) as f64).ln() as usize;
    while centroids.len() < k.min(n) * dim {
        if (control.interrupted)() {
            return Err(Interrupted);
        }
        let total: f64 = closest.iter().map(|&d| d as f64).sum();
        let picks: Vec<usize> = (0..trials)
            .map(|_| {
                if total > 0.0 {
                    let mut target = rng.next_f64() * total;
                    let mut idx = n - 1;
                    for (i, &d) in closest.iter().enumerate() {
                        target -= d as f64;
                        if target < 0.0 {
                            idx = i;
                            break;
                        }
                    }
                    idx
                } else {
                    // Every point coincides with a centroid (e.g. all-identical vectors).
                    rng.below(n)
                }
            })
            .collect();
        // The potential each candidate would leave, all candidates in one pass over the data
        // (one matrix product per block of rows), then `closest` updated for the one kept.
        let candidates: Vec<f32> = picks.iter().flat_map(|&p| data[p * dim..(p + 1) * dim].iter().copied()).collect();
        let candidate_norms: Vec<f32> = picks.iter().map(|&p| data_norms[p]).collect();
        let parts = par_ranges(control.threads, n, 2048, |r| {
            let mut potentials = vec![0f64; trials];
            for_each_score_row(&candidates, trials, dim, &data[r.start * dim..r.end * dim], |i, scores| {
                let (rn, old) = (data_norms[r.start + i], closest[r.start + i]);
                for ((p, &s), &cn) in potentials.iter_mut().zip(scores).zip(&candidate_norms) {
                    *p += old.min((rn + cn - 2.0 * s).max(0.0)) as f64;
                }
            });
            potentials
        });
        let potentials: Vec<f64> = (0..trials).map(|t| parts.iter().map(|p| p[t]).sum()).collect();
        let kept = (0..trials).fold(0, |b, t| if potentials[t] < potentials[b] { t } else { b });
        let pick = picks[kept];
        let (c, cn) = (&data[pick * dim..(pick + 1) * dim], data_norms[pick]);
        closest = par_ranges(control.threads, n, 2048, |r| {
            r.map(|i| closest[i].min((data_norms[i] + cn - 2.0 * dot_f32(&data[i * dim..(i + 1) * dim], c)).max(0.0)))
                .collect::<Vec<f32>>()
        })
        .concat();
        centroids.extend_from_slice(&data[pick * dim..(pick + 1) * dim]);
    }
    Ok(centroids)
}

/// Lloyd iterations from the given centroids. Returns the final assignment and the inertia
/// (sum of squared distances) of each iteration. A cluster that loses all its points keeps its
/// previous centroid.
pub fn lloyd(data: &[f32], dim: usize, centroids: &mut [f32], metric: Metric, iterations: usize) -> (Vec<usize>, Vec<f64>) {
    lloyd_with(data, dim, centroids, metric, iterations, &Control::unbounded()).expect("never interrupted")
}

/// [`lloyd`] under a [`Control`].
pub fn lloyd_with(data: &[f32], dim: usize, centroids: &mut [f32], metric: Metric, iterations: usize, control: &Control) -> Result<(Vec<usize>, Vec<f64>), Interrupted> {
    let n = data.len() / dim;
    let k = centroids.len() / dim;
    let data_norms = norms(data, dim);
    let mut assign = vec![0usize; n];
    let mut history = Vec::new();
    for iter in 0..=iterations {
        if (control.interrupted)() {
            return Err(Interrupted);
        }
        let c_norms = norms(centroids, dim);
        let parts = par_ranges(control.threads, n, 2048, |r| {
            nearest_rows(centroids, &c_norms, dim, &data[r.start * dim..r.end * dim], &data_norms[r.start..r.end])
        });
        let mut inertia = 0f64;
        let mut changed = false;
        for (i, (j, d)) in parts.into_iter().flatten().enumerate() {
            changed |= assign[i] != j;
            assign[i] = j;
            inertia += d as f64;
        }
        history.push(inertia);
        if iter == iterations || (iter > 0 && !changed) {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (row, &j) in data.chunks_exact(dim).zip(&assign) {
            counts[j] += 1;
            for (s, &x) in sums[j * dim..(j + 1) * dim].iter_mut().zip(row) {
                *s += x as f64;
            }
        }
        for j in 0..k {
            if counts[j] == 0 {
                continue;
            }
            for (c, s) in centroids[j * dim..(j + 1) * dim].iter_mut().zip(&sums[j * dim..(j + 1) * dim]) {
                *c = (s / counts[j] as f64) as f32;
            }
        }
        if metric == Metric::Spherical {
            normalize_rows(centroids, dim);
        }
    }
    Ok((assign, history))
}

/// k centroids for `data` (flat, `dim` wide). With fewer distinct points than k, the remaining
/// centroids are random directions, so the index still has k (possibly empty) lists.
pub fn kmeans(data: &[f32], dim: usize, k: usize, metric: Metric, iterations: usize, seed: u64) -> Vec<f32> {
    kmeans_with(data, dim, k, metric, iterations, seed, &Control::unbounded()).expect("never interrupted")
}

/// k-means++ seeding costs k passes over its input; seeding from this many points per centroid
/// (a uniform subsample) keeps it a small part of the build, and Lloyd's iterations on the whole
/// sample then refine the centroids.
pub const SEED_POINTS_PER_CENTROID: usize = 32;

/// [`kmeans`] under a [`Control`]: interruptible between steps, on `control.threads` threads.
pub fn kmeans_with(data: &[f32], dim: usize, k: usize, metric: Metric, iterations: usize, seed: u64, control: &Control) -> Result<Vec<f32>, Interrupted> {
    let mut rng = Rng::new(seed);
    let mut owned;
    let data = if metric == Metric::Spherical {
        owned = data.to_vec();
        normalize_rows(&mut owned, dim);
        &owned[..]
    } else {
        data
    };
    let n = data.len() / dim;
    let seed_n = k.saturating_mul(SEED_POINTS_PER_CENTROID);
    let mut centroids = if n > seed_n {
        // A uniform subsample without replacement (partial Fisher-Yates over the row indexes).
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..seed_n {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        let sub: Vec<f32> = idx[..seed_n].iter().flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied()).collect();
        kmeans_pp_with(&sub, dim, k, &mut rng, control)?
    } else {
        kmeans_pp_with(data, dim, k, &mut rng, control)?
    };
    if !centroids.is_empty() {
        lloyd_with(data, dim, &mut centroids, metric, iterations, control)?;
    }
    while centroids.len() < k * dim {
        let scale = if metric == Metric::Spherical { 1.0 } else { 0.01 };
        let start = centroids.len();
        centroids.extend((0..dim).map(|_| (rng.normal() * scale) as f32));
        if metric == Metric::Spherical {
            normalize_rows(&mut centroids[start..], dim);
        }
    }
    Ok(centroids)
}
