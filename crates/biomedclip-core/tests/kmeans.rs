//! k-means against a numpy reference (tools/reference_kmeans.py), plus the edge cases the index
//! build meets: fewer points than clusters, all-identical vectors, empty input.
mod common;
use biomedclip_core::kmeans::{kmeans, kmeans_pp, lloyd, Metric, Rng};

/// `clusters` Gaussian blobs in `dim` dimensions.
fn blobs(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let centers: Vec<f64> = (0..clusters * dim).map(|_| rng.normal() * 3.0).collect();
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = i % clusters;
        out.extend((0..dim).map(|d| (centers[c * dim + d] + rng.normal() * 0.5) as f32));
    }
    out
}

fn normalized(mut v: Vec<f32>, dim: usize) -> Vec<f32> {
    for row in v.chunks_exact_mut(dim) {
        let n = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
    v
}

fn write_f32(path: &std::path::Path, v: &[f32]) {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn lloyd_matches_numpy(metric: Metric, tag: &str) {
    let (n, dim, k, iters) = (3000, 24, 12, 8);
    let mut data = blobs(n, dim, 10, 42);
    if metric == Metric::Spherical {
        data = normalized(data, dim);
    }
    let mut rng = Rng::new(7);
    let init = kmeans_pp(&data, dim, k, &mut rng);
    let mut ours = init.clone();
    let (assign, history) = lloyd(&data, dim, &mut ours, metric, iters);
    assert!(history.windows(2).all(|w| w[1] <= w[0] * (1.0 + 1e-6)), "inertia must not increase: {history:?}");

    let dir = common::workspace().join("target/test-work/kmeans");
    std::fs::create_dir_all(&dir).unwrap();
    let (dp, ip, out) = (dir.join(format!("{tag}.data")), dir.join(format!("{tag}.init")), dir.join(tag));
    write_f32(&dp, &data);
    write_f32(&ip, &init);
    let m = if metric == Metric::Spherical { "spherical" } else { "l2" };
    common::run_tool("reference_kmeans.py", &[dp.to_str().unwrap(), ip.to_str().unwrap(), &dim.to_string(), &iters.to_string(), m, out.to_str().unwrap()]);
    let ref_assign: Vec<usize> = std::fs::read(out.with_extension("assign")).unwrap().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    let ref_centroids: Vec<f64> = std::fs::read(out.with_extension("centroids")).unwrap().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    let differing = assign.iter().zip(&ref_assign).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} of {n} assignments differ from numpy");
    let max_diff = ours.iter().zip(&ref_centroids).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-4, "centroids differ from numpy by {max_diff}");
}

#[test]
fn lloyd_l2_matches_numpy() {
    lloyd_matches_numpy(Metric::L2, "l2");
}

#[test]
fn lloyd_spherical_matches_numpy() {
    lloyd_matches_numpy(Metric::Spherical, "spherical");
}

#[test]
fn kmeans_pp_finds_well_separated_blobs() {
    // 10 well-separated blobs, k = 10: every blob should get its own centroid.
    let (dim, k) = (16, 10);
    let data = blobs(2000, dim, k, 5);
    let centroids = kmeans(&data, dim, k, Metric::L2, 20, 1);
    let mut centroid_norms = vec![0f32; k];
    for (j, c) in centroids.chunks_exact(dim).enumerate() {
        centroid_norms[j] = c.iter().map(|x| x * x).sum();
    }
    let mut seen = std::collections::HashSet::new();
    for i in 0..k {
        let row = &data[i * dim..(i + 1) * dim];
        let rn = row.iter().map(|x| x * x).sum();
        seen.insert(biomedclip_core::kmeans::nearest(&centroids, &centroid_norms, dim, row, rn).0);
    }
    assert_eq!(seen.len(), k, "each blob should map to a distinct centroid: {seen:?}");
}

#[test]
fn degenerate_inputs_give_k_finite_centroids() {
    let dim = 8;
    for (data, label) in [
        (vec![], "empty"),
        (vec![1.0f32; dim * 50], "identical"),
        (blobs(3, dim, 3, 9), "fewer points than k"),
    ] {
        for metric in [Metric::L2, Metric::Spherical] {
            let c = kmeans(&data, dim, 16, metric, 10, 3);
            assert_eq!(c.len(), 16 * dim, "{label}");
            assert!(c.iter().all(|x| x.is_finite()), "{label} {metric:?}");
        }
    }
}

#[test]
fn an_interrupt_stops_kmeans_between_steps() {
    // The check is called between seeding steps and Lloyd iterations; once it reports an
    // interrupt the run returns at the next step instead of finishing.
    let (dim, k) = (16, 50);
    let data = blobs(5000, dim, k, 2);
    let calls = std::cell::Cell::new(0usize);
    let interrupted = || {
        calls.set(calls.get() + 1);
        calls.get() > 3
    };
    let control = biomedclip_core::kmeans::Control { threads: 2, interrupted: &interrupted };
    let r = biomedclip_core::kmeans::kmeans_with(&data, dim, k, Metric::L2, 10, 1, &control);
    assert_eq!(r, Err(biomedclip_core::kmeans::Interrupted));
    assert_eq!(calls.get(), 4, "stopped at the first step after the interrupt");
}

/// The blocked assignment (one matrix product per block of rows) picks the nearest centroid by
/// exact f64 distances, up to rows almost equidistant from two centroids; with blocks that do
/// not divide the rows, 1,500 centroids (blocks of 174 rows), and on several threads.
#[test]
fn blocked_assignment_is_the_nearest_centroid() {
    for (n, dim, k, clusters) in [(5000, 32, 20, 20), (1999, 48, 1500, 30), (700, 7, 3, 3)] {
        let data = blobs(n, dim, clusters, 4);
        let mut rng = Rng::new(9);
        let centroids: Vec<f32> = (0..k * dim).map(|_| (rng.normal() * 3.0) as f32).collect();
        let norms: Vec<f32> = centroids.chunks_exact(dim).map(|c| c.iter().map(|x| x * x).sum()).collect();
        let got = biomedclip_core::kmeans::assign(&centroids, &norms, dim, &data, 3);
        let mut near_ties = 0;
        for (i, row) in data.chunks_exact(dim).enumerate() {
            let d = |j: usize| row.iter().zip(&centroids[j * dim..(j + 1) * dim]).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>();
            let best = (0..k).map(d).fold(f64::INFINITY, f64::min);
            let scale = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() + norms[got[i]] as f64;
            assert!(d(got[i]) - best <= 1e-5 * scale, "n {n} k {k} row {i}: {} against the nearest {best}", d(got[i]));
            near_ties += (d(got[i]) > best) as usize;
        }
        assert!(near_ties * 1000 <= n, "{near_ties} of {n} rows not at their exact nearest centroid");
    }
}
