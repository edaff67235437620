//! The residual adapter of one tower, y = x + α · W₂ · relu(W₁ · x) (CLIP-Adapter's bottleneck
//! MLP with a residual path). W₂ starts at zero, so a new adapter is the identity. Row-major
//! weights, f64, fixed summation order.

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
        let mut pre = vec![0.0; n * h];
        for i in 0..n {
            for j in 0..h {
                pre[i * h + j] = (0..d).map(|k| self.w1[j * d + k] * x[i * d + k]).sum();
            }
        }
        let post: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
        let mut y = x.to_vec();
        for i in 0..n {
            for k in 0..d {
                let add: f64 = (0..h).map(|j| self.w2[k * h + j] * post[i * h + j]).sum();
                y[i * d + k] += self.alpha * add;
            }
        }
        (y, Activations { pre, post })
    }

    /// Gradients of W₁ and W₂ (same layout as the weights) for dloss/dy of the rows of `x`.
    pub fn backward(&self, x: &[f64], act: &Activations, dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (d, h) = (self.dim, self.hidden);
        let n = x.len() / d;
        let mut dw1 = vec![0.0; h * d];
        let mut dw2 = vec![0.0; d * h];
        for i in 0..n {
            let dyi = &dy[i * d..(i + 1) * d];
            for k in 0..d {
                for j in 0..h {
                    dw2[k * h + j] += self.alpha * dyi[k] * act.post[i * h + j];
                }
            }
            for j in 0..h {
                if act.pre[i * h + j] <= 0.0 {
                    continue;
                }
                let dpost: f64 = self.alpha * (0..d).map(|k| self.w2[k * h + j] * dyi[k]).sum::<f64>();
                for k in 0..d {
                    dw1[j * d + k] += dpost * x[i * d + k];
                }
            }
        }
        (dw1, dw2)
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
