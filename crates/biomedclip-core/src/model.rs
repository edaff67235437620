//! Model directories: `manifest.json`, `image_encoder.onnx`, `text_encoder.onnx`, `tokenizer.json`.
//!
//! Every file is read once, hashed with SHA-256 and compared with the manifest before it is used;
//! the verified bytes themselves are what the runtime loads, so an embedding is traceable to the
//! exact bytes that produced it. A model's identity is the SHA-256 of its manifest, which lists
//! the hashes of all the other files.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const IMAGE_ENCODER: &str = "image_encoder.onnx";
pub const TEXT_ENCODER: &str = "text_encoder.onnx";
pub const TOKENIZER: &str = "tokenizer.json";
pub const MANIFEST: &str = "manifest.json";
pub const MODEL_FILES: [&str; 3] = [IMAGE_ENCODER, TEXT_ENCODER, TOKENIZER];

/// A tower's pooled features before its projection: the graph's second output, its width, and
/// the file holding the projection's weights (listed in `files`, so hashed like the rest).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeaturesSpec {
    pub output: String,
    pub dim: usize,
    pub projection: String,
}

/// Which of a tower's outputs a call wants: the L2-normalized embedding, or the raw pooled
/// features before the projection (only for manifests with a `features` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Embeddings,
    Features,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tower {
    Image,
    Text,
}

impl Tower {
    pub fn name(self) -> &'static str {
        match self {
            Tower::Image => "image",
            Tower::Text => "text",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageSpec {
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub interpolation: String,
    pub resize_mode: String,
    pub input: String,
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TextSpec {
    pub context_length: usize,
    pub input_ids: String,
    pub attention_mask: String,
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// "fp32" or "int8".
    pub precision: String,
    pub embed_dim: usize,
    /// log of the zero-shot temperature: logits = exp(logit_scale) * cosine.
    pub logit_scale: f64,
    pub image: ImageSpec,
    pub text: TextSpec,
    /// File name -> lowercase hex SHA-256.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    pub fn features(&self, tower: Tower) -> Option<&FeaturesSpec> {
        match tower {
            Tower::Image => self.image.features.as_ref(),
            Tower::Text => self.text.features.as_ref(),
        }
    }

    /// The ONNX output name and row width of `output` for `tower`; features need a manifest
    /// that names them.
    pub fn output(&self, tower: Tower, output: Output) -> Result<(&str, usize), ModelError> {
        match output {
            Output::Embeddings => Ok((if tower == Tower::Image { &self.image.output } else { &self.text.output }, self.embed_dim)),
            Output::Features => self
                .features(tower)
                .map(|f| (f.output.as_str(), f.dim))
                .ok_or_else(|| ModelError::NoFeatures(no_features(&self.name, tower))),
        }
    }
}

/// Why a model cannot give features: its directory predates them.
pub fn no_features(model: &str, tower: Tower) -> String {
    format!(
        "model {model:?} has no {} features: its manifest.json names no \"features\" output (model directories written \
         before features existed); re-export it with tools/export_biomedclip.py",
        tower.name()
    )
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    NoModelDir,
    Io { path: PathBuf, detail: String },
    BadManifest(String),
    HashMismatch { file: String, expected: String, actual: String },
    Unsupported(String),
    InputNames { model: &'static str, expected: Vec<String>, actual: Vec<String> },
    /// The manifest's SHA-256 differs from the pinned one (biomedclip.model_sha256).
    NotPinned { pinned: String, actual: String },
    /// The caller was interrupted (query cancel, statement timeout, termination).
    Interrupted,
    /// The model produced output that cannot be an embedding (wrong row count, NaN, infinity).
    BadOutput(String),
    Runtime(String),
    /// An error the inference service reported: `code` is [`crate::service_protocol::model_error_code`]
    /// of the error it saw (so that it maps to the same SQLSTATE), `message` its text.
    Remote { code: u8, message: String },
    /// The inference service is not running, restarted during the request, or is overloaded.
    ServiceUnavailable { busy: bool, message: String },
    /// The model directory has no features output or projection files (written before they existed).
    NoFeatures(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NoModelDir => write!(f, "no model configured: set biomedclip.model_dir to a model directory"),
            ModelError::Io { path, detail } => write!(f, "cannot read {}: {detail}", path.display()),
            ModelError::BadManifest(d) => write!(f, "invalid manifest.json: {d}"),
            ModelError::HashMismatch { file, expected, actual } => {
                write!(f, "sha256 of {file} does not match the manifest (expected {expected}, found {actual}); refusing to load")
            }
            ModelError::Unsupported(d) => write!(f, "unsupported model: {d}"),
            ModelError::InputNames { model, expected, actual } => write!(
                f,
                "ONNX input/output names of {model} do not match the manifest: expected {expected:?}, the model has {actual:?}"
            ),
            ModelError::NotPinned { pinned, actual } => write!(
                f,
                "the model's manifest SHA-256 is {actual}, but biomedclip.model_sha256 pins {pinned}; refusing to load"
            ),
            ModelError::Interrupted => write!(f, "inference was interrupted"),
            ModelError::BadOutput(d) => write!(f, "the model produced an invalid embedding: {d}"),
            ModelError::Runtime(d) => write!(f, "ONNX Runtime error: {d}"),
            ModelError::Remote { message, .. } => write!(f, "{message}"),
            ModelError::ServiceUnavailable { message, .. } => write!(f, "{message}"),
            ModelError::NoFeatures(d) => write!(f, "{d}"),
        }
    }
}

impl std::error::Error for ModelError {}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), detail: e.to_string() })
}

/// A model directory whose files have all been read and verified.
///
/// The file contents are only needed until the runtime has built its sessions: the loader takes
/// them out (leaving empty vectors) so that a loaded model keeps its hashes, not its bytes.
#[derive(Clone)]
pub struct VerifiedModel {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// manifest.json exactly as read (its SHA-256 is the model's identity).
    pub manifest_bytes: Vec<u8>,
    /// SHA-256 of manifest.json: the model's identity.
    pub manifest_sha256: String,
    pub image_encoder: Vec<u8>,
    pub text_encoder: Vec<u8>,
    pub tokenizer_json: Vec<u8>,
}

impl VerifiedModel {
    /// Reads the manifest and every file, refusing the model on any hash mismatch, when the
    /// manifest is not the `pinned` one (a lowercase or uppercase hex SHA-256), or when an ONNX
    /// file refers to external data (bytes the manifest does not cover).
    pub fn load(dir: &Path, pinned: Option<&str>) -> Result<VerifiedModel, ModelError> {
        let (manifest, manifest_bytes, manifest_sha256) = read_manifest(dir, pinned)?;
        let mut contents = BTreeMap::new();
        for file in MODEL_FILES {
            let expected = manifest
                .files
                .get(file)
                .ok_or_else(|| ModelError::BadManifest(format!("no sha256 listed for {file}")))?;
            let bytes = read(&dir.join(file))?;
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(ModelError::HashMismatch { file: file.to_string(), expected: expected.clone(), actual });
            }
            if file.ends_with(".onnx") {
                let external = crate::onnx_check::uses_external_data(&bytes)
                    .map_err(|e| ModelError::Unsupported(format!("{file} is not a readable ONNX model: {e}")))?;
                if external {
                    return Err(ModelError::Unsupported(format!(
                        "{file} keeps tensors in external data files, which the manifest does not cover; export it as one file"
                    )));
                }
            }
            contents.insert(file, bytes);
        }
        Ok(VerifiedModel {
            dir: dir.to_path_buf(),
            manifest_sha256,
            manifest_bytes,
            manifest,
            image_encoder: contents.remove(IMAGE_ENCODER).unwrap_or_default(),
            text_encoder: contents.remove(TEXT_ENCODER).unwrap_or_default(),
            tokenizer_json: contents.remove(TOKENIZER).unwrap_or_default(),
        })
    }
}

/// A directory's manifest.json, parsed and validated, with its bytes and SHA-256, refused when it
/// is not the `pinned` one; the files it lists are not read.
pub fn read_manifest(dir: &Path, pinned: Option<&str>) -> Result<(Manifest, Vec<u8>, String), ModelError> {
    let manifest_bytes = read(&dir.join(MANIFEST))?;
    let manifest_sha256 = sha256_hex(&manifest_bytes);
    if let Some(pin) = pinned.map(str::trim).filter(|p| !p.is_empty()) {
        if !pin.eq_ignore_ascii_case(&manifest_sha256) {
            return Err(ModelError::NotPinned { pinned: pin.to_string(), actual: manifest_sha256 });
        }
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| ModelError::BadManifest(e.to_string()))?;
    validate(&manifest)?;
    Ok((manifest, manifest_bytes, manifest_sha256))
}

fn validate(m: &Manifest) -> Result<(), ModelError> {
    if m.image.interpolation != "bicubic" {
        return Err(ModelError::Unsupported(format!("image interpolation {:?} (only \"bicubic\")", m.image.interpolation)));
    }
    if m.image.resize_mode != "shortest" {
        return Err(ModelError::Unsupported(format!("resize mode {:?} (only \"shortest\")", m.image.resize_mode)));
    }
    if !(16..=1024).contains(&m.image.size) {
        return Err(ModelError::Unsupported(format!("image size {}", m.image.size)));
    }
    if m.image.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) || m.image.mean.iter().any(|x| !x.is_finite()) {
        return Err(ModelError::BadManifest("image mean/std must be finite, std positive".into()));
    }
    if !(1..=crate::vector_format::MAX_DIM).contains(&m.embed_dim) {
        return Err(ModelError::BadManifest(format!("embed_dim {} out of range", m.embed_dim)));
    }
    if !(2..=8192).contains(&m.text.context_length) {
        return Err(ModelError::BadManifest(format!("context_length {} out of range", m.text.context_length)));
    }
    if !m.logit_scale.is_finite() {
        return Err(ModelError::BadManifest("logit_scale must be finite".into()));
    }
    for tower in [Tower::Image, Tower::Text] {
        if let Some(f) = m.features(tower) {
            if !(1..=crate::vector_format::MAX_DIM).contains(&f.dim) {
                return Err(ModelError::BadManifest(format!("{} features dim {} out of range", tower.name(), f.dim)));
            }
            let plain = !f.projection.is_empty() && !f.projection.contains(['/', '\\']) && !f.projection.starts_with('.');
            if !plain || !m.files.contains_key(&f.projection) {
                return Err(ModelError::BadManifest(format!(
                    "{} projection {:?} must be a file name listed in \"files\"",
                    tower.name(),
                    f.projection
                )));
            }
        }
    }
    if !matches!(m.precision.as_str(), "fp32" | "fp16" | "int8") {
        return Err(ModelError::BadManifest(format!("precision {:?} (expected fp32, fp16 or int8)", m.precision)));
    }
    Ok(())
}
