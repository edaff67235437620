//! The residual adapter of one tower, y = x + α · W₂ · relu(W₁ · x) (CLIP-Adapter's bottleneck
//! MLP with a residual path). W₂ starts at zero, so a new adapter is the identity. Row-major
//! weights, f64; the products go through ndarray (matrixmultiply's blocked kernels, single-threaded,
//! so the same inputs give the same bits on the same machine).

use ndarray::{Array2, ArrayView2};

#[derive(Clone, Debug, PartialEq)]
pub struct ResidualAdapter {
    pub dim: usize,
    pub hidden: usize,
    pub alpha: f64,
    /// hidden × dim
    pub w1: Vec<f64>,
    /// dim × hidden
    pub w2: Vec<f64>,
}

/// What the backward pass needs from the forward pass.
pub struct Activations {
    pre: Vec<f64>,
    post: Vec<f64>,
}

impl ResidualAdapter {
    /// W₁ from `rng` (uniform ±1/√dim, as PyTorch's Linear default), W₂ = 0.
    pub fn identity(dim: usize, hidden: usize, alpha: f64, rng: &mut super::SplitMix64) -> ResidualAdapter {
        let bound = 1.0 / (dim as f64).sqrt();
        let w1 = (0..hidden * dim).map(|_| (rng.next_f64() * 2.0 - 1.0) * bound).collect();
        ResidualAdapter { dim, hidden, alpha, w1, w2: vec![0.0; dim * hidden] }
    }

    /// Applies the adapter to `n` rows of `x` (n × dim).
    pub fn forward(&self, x: &[f64]) -> (Vec<f64>, Activations) {
        let (d, h) = (self.dim, self.hidden);
        let n = x.len() / d;
        let xv = ArrayView2::from_shape((n, d), x).expect("n × dim rows");
        let w1 = ArrayView2::from_shape((h, d), &self.w1).expect("hidden × dim");
        let w2 = ArrayView2::from_shape((d, h), &self.w2).expect("dim × hidden");
        let pre = xv.dot(&w1.t());
        let post = pre.mapv(|v| v.max(0.0));
        let mut y = post.dot(&w2.t()) * self.alpha;
        y += &xv;
        let flat = |a: Array2<f64>| a.iter().copied().collect::<Vec<f64>>();
        (flat(y), Activations { pre: flat(pre), post: flat(post) })
    }

    /// Gradients of the weights (w1, w2) given the gradient `dy` of the output rows:
    /// dW₂ = α·dYᵀ·post, dW₁ = (α·dY·W₂ ∘ [pre > 0])ᵀ·X.
    pub fn backward(&self, x: &[f64], act: &Activations, dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (d, h) = (self.dim, self.hidden);
        let n = x.len() / d;
        let xv = ArrayView2::from_shape((n, d), x).expect("n × dim rows");
        let dyv = ArrayView2::from_shape((n, d), dy).expect("n × dim gradient");
        let w2 = ArrayView2::from_shape((d, h), &self.w2).expect("dim × hidden");
        let post = ArrayView2::from_shape((n, h), &act.post).expect("n × hidden");
        let pre = ArrayView2::from_shape((n, h), &act.pre).expect("n × hidden");
        let dw2 = dyv.t().dot(&post) * self.alpha;
        let mut dpre = dyv.dot(&w2) * self.alpha;
        dpre.zip_mut_with(&pre, |g, &p| {
            if p <= 0.0 {
                *g = 0.0
            }
        });
        let dw1 = dpre.t().dot(&xv);
        (dw1.iter().copied().collect(), dw2.iter().copied().collect())
    }

    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.forward(x).0
    }
}

/// AdamW (Loshchilov & Hutter): Adam moments with bias correction and decoupled weight decay,
/// here toward the starting weights (an L2 pull against forgetting) rather than toward zero.
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub decay: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl AdamW {
    pub fn new(len: usize, lr: f64, decay: f64) -> AdamW {
        AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, decay, m: vec![0.0; len], v: vec![0.0; len], t: 0 }
    }

    /// One step on `params` (with `anchor` the weights the pull is toward).
    pub fn step(&mut self, params: &mut [f64], grads: &[f64], anchor: &[f64]) {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for i in 0..params.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grads[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * grads[i] * grads[i];
            let update = (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + self.eps);
            params[i] -= self.lr * (update + self.decay * (params[i] - anchor[i]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_as_the_identity() {
        let mut rng = super::super::SplitMix64::splitmix(7);
        let a = ResidualAdapter::identity(8, 2, 0.5, &mut rng);
        let x: Vec<f64> = (0..16).map(|i| i as f64 * 0.1 - 0.7).collect();
        assert_eq!(a.apply(&x), x);
    }

    #[test]
    fn backward_matches_central_differences() {
        let mut rng = super::super::SplitMix64::splitmix(3);
        let mut a = ResidualAdapter::identity(4, 3, 0.7, &mut rng);
        a.w2 = (0..12).map(|_| rng.next_f64() - 0.5).collect();
        let x: Vec<f64> = (0..8).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
        let c: Vec<f64> = (0..8).map(|_| rng.next_f64()).collect();
        // loss = Σ c ⊙ y
        let loss = |a: &ResidualAdapter| a.apply(&x).iter().zip(&c).map(|(y, c)| y * c).sum::<f64>();
        let (_, act) = a.forward(&x);
        let (dw1, dw2) = a.backward(&x, &act, &c);
        let h = 1e-6;
        for k in 0..a.w1.len() {
            let (mut p, mut m) = (a.clone(), a.clone());
            p.w1[k] += h;
            m.w1[k] -= h;
            assert!(((loss(&p) - loss(&m)) / (2.0 * h) - dw1[k]).abs() < 1e-6, "w1[{k}]");
        }
        for k in 0..a.w2.len() {
            let (mut p, mut m) = (a.clone(), a.clone());
            p.w2[k] += h;
            m.w2[k] -= h;
            assert!(((loss(&p) - loss(&m)) / (2.0 * h) - dw2[k]).abs() < 1e-6, "w2[{k}]");
        }
    }
}
