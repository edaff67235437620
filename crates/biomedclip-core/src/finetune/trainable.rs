//! What the contrastive trainer (`train`) needs from a tower's trainable part: a forward pass
//! that keeps what its backward pass needs, the gradient of all parameters in one flat vector,
//! and a hash of the weights as stored. Implemented by the residual adapter (kind 'residual') and
//! by the model's own projection heads (kind 'projection').

use super::adapter::{Activations, ResidualAdapter};
use super::projection::{Head, HeadActivations};
use sha2::{Digest, Sha256};

pub trait Trainable: Clone {
    type Activations;
    fn d_in(&self) -> usize;
    fn d_out(&self) -> usize;
    fn forward(&self, x: &[f64]) -> (Vec<f64>, Self::Activations);
    /// d loss / d params, in the layout of [`Trainable::params`], given d loss / d output.
    fn backward(&self, x: &[f64], act: &Self::Activations, dy: &[f64]) -> Vec<f64>;
    fn params(&self) -> Vec<f64>;
    fn set_params(&mut self, p: &[f64]);
    /// Feeds the weights as stored (shapes, scalars, values as little-endian f64) to `h`.
    fn hash_into(&self, h: &mut Sha256);
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.forward(x).0
    }
}

impl Trainable for ResidualAdapter {
    type Activations = Activations;
    fn d_in(&self) -> usize {
        self.dim
    }
    fn d_out(&self) -> usize {
        self.dim
    }
    fn forward(&self, x: &[f64]) -> (Vec<f64>, Activations) {
        ResidualAdapter::forward(self, x)
    }
    fn backward(&self, x: &[f64], act: &Activations, dy: &[f64]) -> Vec<f64> {
        let (dw1, dw2) = ResidualAdapter::backward(self, x, act, dy);
        dw1.into_iter().chain(dw2).collect()
    }
    fn params(&self) -> Vec<f64> {
        self.w1.iter().chain(&self.w2).copied().collect()
    }
    fn set_params(&mut self, p: &[f64]) {
        let n1 = self.w1.len();
        self.w1.copy_from_slice(&p[..n1]);
        self.w2.copy_from_slice(&p[n1..]);
    }
    fn hash_into(&self, h: &mut Sha256) {
        h.update((self.dim as u64).to_le_bytes());
        h.update((self.hidden as u64).to_le_bytes());
        h.update(self.alpha.to_le_bytes());
        for v in self.w1.iter().chain(&self.w2) {
            h.update(v.to_le_bytes());
        }
    }
}

impl Trainable for Head {
    type Activations = HeadActivations;
    fn d_in(&self) -> usize {
        Head::d_in(self)
    }
    fn d_out(&self) -> usize {
        Head::d_out(self)
    }
    fn forward(&self, x: &[f64]) -> (Vec<f64>, HeadActivations) {
        Head::forward(self, x)
    }
    fn backward(&self, x: &[f64], act: &HeadActivations, dy: &[f64]) -> Vec<f64> {
        Head::backward(self, x, act, dy)
    }
    fn params(&self) -> Vec<f64> {
        Head::params(self)
    }
    fn set_params(&mut self, p: &[f64]) {
        Head::set_params(self, p)
    }
    fn hash_into(&self, h: &mut Sha256) {
        match self {
            Head::Linear { d_in, d_out, .. } => {
                h.update(b"linear");
                h.update((*d_in as u64).to_le_bytes());
                h.update((*d_out as u64).to_le_bytes());
            }
            Head::Mlp { d_in, hidden, d_out, .. } => {
                h.update(b"mlp");
                for n in [d_in, hidden, d_out] {
                    h.update((*n as u64).to_le_bytes());
                }
            }
        }
        for v in self.params() {
            h.update(v.to_le_bytes());
        }
    }
}

/// SHA-256 of a trained pair of towers as stored, with the logit scale.
pub fn towers_sha256<T: Trainable>(image: &T, text: &T, logit_scale: f64) -> String {
    let mut h = Sha256::new();
    image.hash_into(&mut h);
    text.hash_into(&mut h);
    h.update(logit_scale.to_le_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
