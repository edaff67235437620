//! Light fine-tuning on stored embeddings, with the backbone frozen: residual adapters trained
//! with the symmetric contrastive loss and AdamW, and linear probes (multinomial logistic
//! regression by L-BFGS). Everything is f64, single-threaded and summed
//! in a fixed order, so the same inputs, options and seed give bit-identical weights.

pub mod adapter;
pub mod contrastive;
pub mod lbfgs;
pub mod metrics;
pub mod probe;
pub mod probe_run;
pub mod train;

/// The seeded generator of splits, shuffles and initial weights.
pub use crate::rng::Rng as SplitMix64;
