//! pgrx-free algorithms behind the `biomedclip` PostgreSQL extension.
//!
//! Everything here is plain Rust, tested with `cargo test`, and reusable from a CLI, a server or a
//! benchmark: distance kernels, the vector text/binary formats and element-wise vector operations.

pub mod batching;
pub mod calibration;
pub mod dicom;
pub mod distance;
pub mod drift;
pub mod finetune;
pub mod image_decode;
pub mod inflight;
pub mod input_format;
pub mod kmeans;
pub mod model;
pub mod onnx_check;
pub mod pooling;
pub mod preprocess;
pub mod projection_file;
pub mod query_log;
pub mod rabitq;
pub mod resample;
pub mod rng;
pub mod runtime;
pub mod service_protocol;
pub mod slide;
pub mod text_clean;
mod text_tables;
pub mod tokenize;
pub mod vector_format;
pub mod vector_ops;
pub mod zero_shot;
