//! k-means for the ivf index: k-means++ seeding, then Lloyd iterations.
//!
//! * `Metric::L2`: ordinary k-means on the vectors.
//! * `Metric::Spherical`: for cosine (and inner product) indexes; the inputs are expected to be
//!   unit-normalized by the caller and every centroid is re-normalized after each update, so
//!   assignment by smallest L2 equals assignment by largest cosine.
//!
//! Data is a flat row-major `[n * dim]` slice. Distances use the SIMD kernels through
//! `|x - c|^2 = |x|^2 + |c|^2 - 2 x.c` with precomputed norms. Deterministic for a given seed.

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
        r.map(|i| {
            let v = &rows[i * dim..(i + 1) * dim];
            nearest(centroids, centroid_norms, dim, v, dot_f32(v, v)).0
        })
        .collect::<Vec<_>>()
    })
    .concat()
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
    let mut best = (0usize, f32::INFINITY);
    for (j, c) in centroids.chunks_exact(dim).enumerate() {
        let d = v_norm + centroid_norms[j] - 2.0 * dot_f32(v, c);
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
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            let pick = if total > 0.0 {
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
            };
            let c = &data[pick * dim..(pick + 1) * dim];
            let cn = data_norms[pick];
            let updated: Vec<f32> = par_ranges(control.threads, n, 2048, |r| {
                r.map(|i| closest[i].min((data_norms[i] + cn - 2.0 * dot_f32(&data[i * dim..(i + 1) * dim], c)).max(0.0)))
                    .collect::<Vec<f32>>()
            })
            .concat();
            let potential: f64 = updated.iter().map(|&d| d as f64).sum();
            if best.as_ref().is_none_or(|b| potential < b.0) {
                best = Some((potential, pick, updated));
            }
        }
        let (_, pick, updated) = best.expect("at least one trial");
        closest = updated;
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
            r.map(|i| nearest(centroids, &c_norms, dim, &data[i * dim..(i + 1) * dim], data_norms[i])).collect::<Vec<_>>()
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
