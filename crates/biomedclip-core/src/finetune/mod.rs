//! Light fine-tuning on stored embeddings, with the backbone frozen: residual adapters trained
//! with the symmetric contrastive loss and AdamW, and linear probes (multinomial logistic
//! regression by L-BFGS), and the model's own projection heads as trainable parameters
//! (`projection`, kind 'projection'). Everything is f64 and single-threaded, with
//! the matrix products through ndarray's deterministic kernels, so the same inputs, options and
//! seed give bit-identical weights on the same machine.

pub mod adapter;
pub mod contrastive;
pub mod lbfgs;
pub mod metrics;
pub mod probe;
pub mod probe_run;
pub mod projection;
pub mod train;
pub mod trainable;

/// The seeded generator of splits, shuffles and initial weights.
pub use crate::rng::Rng as SplitMix64;
