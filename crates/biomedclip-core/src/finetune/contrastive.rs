//! The symmetric contrastive (InfoNCE / CLIP) loss over a batch of N image–text pairs, with its
//! gradients. Rows of `images` and `texts` are L2-normalized inside; logits = exp(logit_scale) ·
//! cos; the loss is the mean of the image→text and text→image cross-entropies with the matching
//! pair as the target (open_clip's ClipLoss). The products go through ndarray's single-threaded
//! matrix kernels (bit-reproducible on one machine).
//! Checked against numpy finite differences by tests/finetune_reference.py.

use ndarray::ArrayView2;

/// Loss and gradients with respect to the (unnormalized) inputs and to logit_scale.
pub struct ContrastiveGrad {
    pub loss: f64,
    pub d_images: Vec<f64>,
    pub d_texts: Vec<f64>,
    pub d_logit_scale: f64,
}

fn normalize(rows: &[f64], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() / dim;
    let mut out = vec![0.0; rows.len()];
    let mut norms = vec![0.0; n];
    for i in 0..n {
        let r = &rows[i * dim..(i + 1) * dim];
        let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        norms[i] = norm;
        for (o, x) in out[i * dim..(i + 1) * dim].iter_mut().zip(r) {
            *o = x / norm;
        }
    }
    (out, norms)
}

/// Back-propagates d(û) to d(u) for û = u / ‖u‖.
fn normalize_backward(unit: &[f64], norms: &[f64], d_unit: &[f64], dim: usize) -> Vec<f64> {
    let mut out = vec![0.0; unit.len()];
    for (i, &norm) in norms.iter().enumerate() {
        let (u, du) = (&unit[i * dim..(i + 1) * dim], &d_unit[i * dim..(i + 1) * dim]);
        let dot: f64 = u.iter().zip(du).map(|(a, b)| a * b).sum();
        for k in 0..dim {
            out[i * dim + k] = (du[k] - u[k] * dot) / norm;
        }
    }
    out
}

/// Loss only (for validation), without gradients.
pub fn loss(images: &[f64], texts: &[f64], dim: usize, logit_scale: f64) -> f64 {
    forward_backward(images, texts, dim, logit_scale, false).loss
}

pub fn loss_and_grad(images: &[f64], texts: &[f64], dim: usize, logit_scale: f64) -> ContrastiveGrad {
    forward_backward(images, texts, dim, logit_scale, true)
}

fn log_softmax_row(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    row.iter().map(|x| x - lse).collect()
}

fn forward_backward(images: &[f64], texts: &[f64], dim: usize, logit_scale: f64, grads: bool) -> ContrastiveGrad {
    assert_eq!(images.len(), texts.len());
    let n = images.len() / dim;
    let (ui, ni) = normalize(images, dim);
    let (ut, nt) = normalize(texts, dim);
    let s = logit_scale.exp();
    // cos[i][j] = ûi · v̂j
    let uiv = ArrayView2::from_shape((n, dim), &ui).expect("n × dim");
    let utv = ArrayView2::from_shape((n, dim), &ut).expect("n × dim");
    let cos_m = uiv.dot(&utv.t());
    let cos: Vec<f64> = cos_m.iter().copied().collect();
    let logits: Vec<f64> = cos.iter().map(|c| s * c).collect();
    let mut loss = 0.0;
    // G = dloss/dlogits = ½ (P_rows − I + P_cols − I) / n
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        let lr = log_softmax_row(&logits[i * n..(i + 1) * n]);
        loss -= lr[i];
        for j in 0..n {
            g[i * n + j] += 0.5 * (lr[j].exp() - if i == j { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    for j in 0..n {
        let col: Vec<f64> = (0..n).map(|i| logits[i * n + j]).collect();
        let lc = log_softmax_row(&col);
        loss -= lc[j];
        for i in 0..n {
            g[i * n + j] += 0.5 * (lc[i].exp() - if i == j { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    loss /= 2.0 * n as f64;
    if !grads {
        return ContrastiveGrad { loss, d_images: Vec::new(), d_texts: Vec::new(), d_logit_scale: 0.0 };
    }
    // d_ui = s·G·UT, d_ut = s·Gᵀ·UI, d(logit_scale) = s·Σ G∘cos.
    let gv = ArrayView2::from_shape((n, n), &g).expect("n × n");
    let d_ui: Vec<f64> = (gv.dot(&utv) * s).iter().copied().collect();
    let d_ut: Vec<f64> = (gv.t().dot(&uiv) * s).iter().copied().collect();
    let d_logit_scale = s * g.iter().zip(&cos).map(|(a, b)| a * b).sum::<f64>();
    ContrastiveGrad { loss, d_images: normalize_backward(&ui, &ni, &d_ui, dim), d_texts: normalize_backward(&ut, &nt, &d_ut, dim), d_logit_scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_pairs_have_low_loss_and_swapped_pairs_high() {
        let dim = 4;
        let imgs = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let good = loss(&imgs, &imgs, dim, 100f64.ln());
        // Texts of pairs 1 and 2 exchanged.
        let swapped = vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let bad = loss(&imgs, &swapped, dim, 100f64.ln());
        assert!(good < 1e-6 && bad > 10.0, "{good} {bad}");
    }

    #[test]
    fn gradient_matches_central_differences() {
        let dim = 3;
        let imgs = vec![0.3, -1.2, 0.5, 1.1, 0.4, -0.2, -0.7, 0.9, 0.8];
        let txts = vec![0.2, -1.0, 0.9, 0.9, 0.1, -0.5, -0.3, 1.2, 0.1];
        let ls = 1.3;
        let g = loss_and_grad(&imgs, &txts, dim, ls);
        let h = 1e-6;
        for k in 0..imgs.len() {
            let (mut p, mut m) = (imgs.clone(), imgs.clone());
            p[k] += h;
            m[k] -= h;
            let fd = (loss(&p, &txts, dim, ls) - loss(&m, &txts, dim, ls)) / (2.0 * h);
            assert!((fd - g.d_images[k]).abs() < 1e-7, "{k}: {fd} vs {}", g.d_images[k]);
        }
        let fd = (loss(&imgs, &txts, dim, ls + h) - loss(&imgs, &txts, dim, ls - h)) / (2.0 * h);
        assert!((fd - g.d_logit_scale).abs() < 1e-7);
    }
}
