//! The model's own projection heads as trainable parameters, for fine-tuning on stored 768-d
//! features (kind 'projection'; read from the model directory by `projection_file`). The shapes
//! are open_clip's BiomedCLIP heads:
//! - image: a bias-free linear map, y = x·W (768 → 512, timm's head);
//! - text: open_clip's MLP projection, y = GELU(x·W₁)·W₂ (768 → 640 → 512, bias-free), with the
//!   exact (erf) GELU of torch.nn.GELU.
//!
//! Weights are row-major `d_in × d_out`, the layout of the ONNX MatMul initializers, so a head
//! reads and writes the model's own arrays. Forward and backward run on rows of features;
//! tests/finetune_reference.py checks the backward pass against numpy finite differences.
//! erf is libm's (a port of musl's, within 1 ulp); std has no stable erf.

use ndarray::{Array2, ArrayView2};

#[derive(Clone, Debug, PartialEq)]
pub enum Head {
    /// y = x·W; `w` is d_in × d_out.
    Linear { d_in: usize, d_out: usize, w: Vec<f64> },
    /// y = GELU(x·W₁)·W₂; `w1` is d_in × hidden, `w2` hidden × d_out.
    Mlp { d_in: usize, hidden: usize, d_out: usize, w1: Vec<f64>, w2: Vec<f64> },
}

/// What the backward pass needs from the forward pass (the MLP's pre-activations and
/// activations; nothing for the linear head).
pub struct HeadActivations {
    pre: Vec<f64>,
    post: Vec<f64>,
}

fn gelu(a: f64) -> f64 {
    0.5 * a * (1.0 + libm::erf(a / std::f64::consts::SQRT_2))
}

fn gelu_derivative(a: f64) -> f64 {
    let pdf = (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt();
    0.5 * (1.0 + libm::erf(a / std::f64::consts::SQRT_2)) + a * pdf
}

fn flat(a: Array2<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn view(v: &[f64], rows: usize, cols: usize) -> ArrayView2<'_, f64> {
    ArrayView2::from_shape((rows, cols), v).expect("row-major matrix of the stated shape")
}

impl Head {
    pub fn d_in(&self) -> usize {
        match self {
            Head::Linear { d_in, .. } | Head::Mlp { d_in, .. } => *d_in,
        }
    }

    pub fn d_out(&self) -> usize {
        match self {
            Head::Linear { d_out, .. } | Head::Mlp { d_out, .. } => *d_out,
        }
    }

    /// All weights in one vector (w, or w1 then w2), the layout the optimizer steps.
    pub fn params(&self) -> Vec<f64> {
        match self {
            Head::Linear { w, .. } => w.clone(),
            Head::Mlp { w1, w2, .. } => w1.iter().chain(w2).copied().collect(),
        }
    }

    /// Replaces the weights from the layout of `params`.
    pub fn set_params(&mut self, p: &[f64]) {
        match self {
            Head::Linear { w, .. } => w.copy_from_slice(p),
            Head::Mlp { w1, w2, .. } => {
                let n1 = w1.len();
                w1.copy_from_slice(&p[..n1]);
                w2.copy_from_slice(&p[n1..]);
            }
        }
    }

    /// Projects `n` rows of `x` (n × d_in) to n × d_out.
    pub fn forward(&self, x: &[f64]) -> (Vec<f64>, HeadActivations) {
        let n = x.len() / self.d_in();
        let xv = view(x, n, self.d_in());
        match self {
            Head::Linear { d_in, d_out, w } => (flat(xv.dot(&view(w, *d_in, *d_out))), HeadActivations { pre: Vec::new(), post: Vec::new() }),
            Head::Mlp { d_in, hidden, d_out, w1, w2 } => {
                let pre = xv.dot(&view(w1, *d_in, *hidden));
                let post = pre.mapv(gelu);
                let y = post.dot(&view(w2, *hidden, *d_out));
                (flat(y), HeadActivations { pre: flat(pre), post: flat(post) })
            }
        }
    }

    /// The gradient of the weights (in the layout of `params`) given dloss/dy of the rows of `x`:
    /// linear dW = Xᵀ·dY; MLP dW₂ = GELU(A)ᵀ·dY, dW₁ = Xᵀ·((dY·W₂ᵀ) ∘ GELU′(A)).
    pub fn backward(&self, x: &[f64], act: &HeadActivations, dy: &[f64]) -> Vec<f64> {
        let n = x.len() / self.d_in();
        let xv = view(x, n, self.d_in());
        let dyv = view(dy, n, self.d_out());
        match self {
            Head::Linear { .. } => flat(xv.t().dot(&dyv)),
            Head::Mlp { hidden, d_out, w2, .. } => {
                let post = view(&act.post, n, *hidden);
                let pre = view(&act.pre, n, *hidden);
                let dw2 = post.t().dot(&dyv);
                let mut dpre = dyv.dot(&view(w2, *hidden, *d_out).t());
                dpre.zip_mut_with(&pre, |g, &a| *g *= gelu_derivative(a));
                let dw1 = xv.t().dot(&dpre);
                dw1.iter().chain(dw2.iter()).copied().collect()
            }
        }
    }

    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.forward(x).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_known_values() {
        // 0.5·a·(1 + erf(a/√2)) with CPython's math.erf (torch.nn.GELU's definition).
        let want = [-0.15865525393145707, 0.0, 0.34573123063700656, 1.9544997361036416];
        for (a, w) in [-1.0, 0.0, 0.5, 2.0].iter().zip(want) {
            assert!((gelu(*a) - w).abs() < 1e-15, "gelu({a}) = {} vs {w}", gelu(*a));
        }
    }

    #[test]
    fn mlp_backward_matches_central_differences() {
        let mut rng = super::super::SplitMix64::splitmix(11);
        let (d_in, hidden, d_out, n) = (5, 4, 3, 6);
        let mut r = |k: usize| (0..k).map(|_| rng.next_f64() * 2.0 - 1.0).collect::<Vec<f64>>();
        let head = Head::Mlp { d_in, hidden, d_out, w1: r(d_in * hidden), w2: r(hidden * d_out) };
        let (x, dy) = (r(n * d_in), r(n * d_out));
        let (_, act) = head.forward(&x);
        let grad = head.backward(&x, &act, &dy);
        let loss = |h: &Head| h.apply(&x).iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        let p = head.params();
        for i in 0..p.len() {
            let (mut up, mut down) = (head.clone(), head.clone());
            let (mut pu, mut pd) = (p.clone(), p.clone());
            pu[i] += 1e-6;
            pd[i] -= 1e-6;
            up.set_params(&pu);
            down.set_params(&pd);
            let fd = (loss(&up) - loss(&down)) / 2e-6;
            assert!((fd - grad[i]).abs() < 1e-7, "param {i}: {fd} vs {}", grad[i]);
        }
    }
}
