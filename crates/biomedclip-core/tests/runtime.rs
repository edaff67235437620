//! The ONNX Runtime backend on the generated tiny model: outputs against onnxruntime's Python
//! API fed by Pillow preprocessing and the reference token ids, padding invariance, refusal of
//! tampered models, and interruption.
mod common;
use biomedclip_core::model::{ModelError, Output, Tower};
use biomedclip_core::preprocess::preprocess;
use biomedclip_core::runtime::{init_ort, EmbeddingBackend, Interrupt, LocalModel, Provider, RuntimeConfig};
use std::path::Path;

fn cfg() -> RuntimeConfig {
    RuntimeConfig { intra_op_threads: 1, provider: Provider::Cpu, pinned_sha256: None }
}

fn load(dir: &Path) -> Result<LocalModel, ModelError> {
    init_ort(&common::ort_library()).unwrap();
    LocalModel::load(dir, &cfg())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn embeddings_match_onnxruntime_python_on_reference_inputs() {
    let model_dir = common::tiny_model();
    let mut model = load(&model_dir).unwrap();
    let data = common::shared_data();
    let images = common::files_in(&data.join("biomedclip/example_images"), &["jpg", "jpeg", "png"]);
    let captions = ["chest x-ray showing pneumonia", "H&amp;E stained ‘histopathology’ slide", "brain MRI"];
    let out = common::workspace().join("target/test-work/runtime_ref");
    std::fs::create_dir_all(&out).unwrap();
    let mut args = vec![model_dir.to_str().unwrap().to_string(), out.to_str().unwrap().to_string()];
    args.push(serde_json::to_string(&captions).unwrap());
    args.extend(images.iter().map(|p| p.to_str().unwrap().to_string()));
    common::run_tool("reference_embed.py", &args.iter().map(String::as_str).collect::<Vec<_>>());

    // Images: our decode + preprocess + ORT against Pillow + onnxruntime (Python).
    let mut pixels = Vec::new();
    for img in &images {
        pixels.extend(preprocess(&std::fs::read(img).unwrap(), &model.preprocess, 1 << 28).unwrap());
    }
    let ours = model.embed_images(&pixels, images.len(), Output::Embeddings, &Interrupt::never()).unwrap();
    let reference = read_f32(&out.join("images.f32"));
    for (i, row) in ours.iter().enumerate() {
        assert_eq!(row.len(), 512);
        let norm: f64 = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let c = cosine(row, &reference[i * 512..(i + 1) * 512]);
        assert!(c >= 0.99999, "image {} cosine {c}", images[i].display());
    }

    // Texts: our cleaning + tokenizer + length-aware batch against the Python pipeline padded to 256.
    let ids: Vec<Vec<u32>> = captions.iter().map(|c| model.tokenizer.encode(c).unwrap()).collect();
    let ours = model.embed_token_ids(&ids, Output::Embeddings, &Interrupt::never()).unwrap();
    let reference = read_f32(&out.join("texts.f32"));
    for (i, row) in ours.iter().enumerate() {
        let c = cosine(row, &reference[i * 512..(i + 1) * 512]);
        assert!(c >= 0.99999, "caption {i} cosine {c}");
    }
}

#[test]
fn padding_does_not_change_a_text_embedding() {
    let mut model = load(&common::tiny_model()).unwrap();
    let short = model.tokenizer.encode("ground glass opacities in both lungs").unwrap();
    let alone = model.embed_token_ids(&[short.clone()], Output::Embeddings, &Interrupt::never()).unwrap();
    // In a batch with a 256-token member, the short text is padded to 256.
    let long = model.tokenizer.encode(&"consolidation ".repeat(300)).unwrap();
    assert_eq!(long.len(), 256);
    let batched = model.embed_token_ids(&[short, long], Output::Embeddings, &Interrupt::never()).unwrap();
    let c = cosine(&alone[0], &batched[0]);
    assert!(c >= 0.99999, "cosine {c}");
}

fn copy_model(tag: &str) -> std::path::PathBuf {
    let src = common::tiny_model();
    let dst = common::workspace().join("target/test-work").join(tag);
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["manifest.json", "image_encoder.onnx", "text_encoder.onnx", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

#[test]
fn a_tampered_file_is_refused_by_name() {
    let dir = copy_model("tampered");
    let mut bytes = std::fs::read(dir.join("tokenizer.json")).unwrap();
    bytes.push(b' ');
    std::fs::write(dir.join("tokenizer.json"), bytes).unwrap();
    let err = load(&dir).err().expect("tampered model must be refused").to_string();
    assert!(err.contains("sha256 of tokenizer.json does not match"), "{err}");
}

#[test]
fn wrong_onnx_input_names_are_refused() {
    let dir = copy_model("wrong_names");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"input\": \"pixel_values\"", "\"input\": \"pixels\"")).unwrap();
    let err = load(&dir).err().expect("name mismatch must be refused").to_string();
    assert!(err.contains("do not match the manifest") && err.contains("pixels") && err.contains("pixel_values"), "{err}");
}

#[test]
fn a_pending_interrupt_stops_inference() {
    let mut model = load(&common::tiny_model()).unwrap();
    let ids = vec![model.tokenizer.encode("pleural effusion").unwrap()];
    let err = model.embed_token_ids(&ids, Output::Embeddings, &Interrupt::new(&|| true)).unwrap_err().to_string();
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(biomedclip_core::inflight::shutdown(std::time::Duration::from_secs(10)), 0);
    // The session stays usable afterwards.
    assert_eq!(model.embed_token_ids(&ids, Output::Embeddings, &Interrupt::never()).unwrap().len(), 1);
}

#[test]
fn telemetry_is_disabled_before_loading() {
    init_ort(&common::ort_library()).unwrap();
    assert_eq!(std::env::var("ORT_DISABLE_TELEMETRY").as_deref(), Ok("1"));
}

#[test]
fn a_model_with_external_data_is_refused() {
    let dir = copy_model("external_data");
    common::run_tool("externalize_model.py", &[dir.to_str().unwrap()]);
    assert!(dir.join("text_encoder.onnx.data").exists(), "the onnx package wrote external data");
    let err = load(&dir).err().expect("external data must be refused").to_string();
    assert!(err.contains("text_encoder.onnx keeps tensors in external data"), "{err}");
    // The unchanged image encoder passes the same check.
    let bytes = std::fs::read(common::tiny_model().join("image_encoder.onnx")).unwrap();
    assert_eq!(biomedclip_core::onnx_check::uses_external_data(&bytes), Ok(false));
}

#[test]
fn the_manifest_pin_refuses_other_models() {
    init_ort(&common::ort_library()).unwrap();
    let dir = common::tiny_model();
    let actual = biomedclip_core::model::sha256_hex(&std::fs::read(dir.join("manifest.json")).unwrap());
    let pinned = |pin: &str| RuntimeConfig { pinned_sha256: Some(pin.to_string()), ..cfg() };
    let err = LocalModel::load(&dir, &pinned(&"0".repeat(64))).err().expect("a different pin refuses").to_string();
    assert!(err.contains("biomedclip.model_sha256 pins") && err.contains(&actual), "{err}");
    let model = LocalModel::load(&dir, &pinned(&actual.to_uppercase())).expect("the right pin loads");
    assert_eq!(model.verified.manifest_sha256, actual);
}

#[test]
fn a_loaded_model_keeps_hashes_not_bytes() {
    let model = load(&common::tiny_model()).unwrap();
    assert!(model.verified.image_encoder.is_empty() && model.verified.text_encoder.is_empty());
    // The tokenizer's bytes (under 1 MB) stay: the inference service sends them to backends,
    // which check them against the manifest's hash.
    let tokenizer = std::fs::read(common::tiny_model().join("tokenizer.json")).unwrap();
    assert_eq!(model.verified.tokenizer_json, tokenizer);
    // Three model files and the two projection files (read on use, not at load).
    assert_eq!(model.verified.manifest.files.len(), 5);
}

#[test]
fn features_projected_by_the_projection_files_are_the_embeddings() {
    let mut model = load(&common::tiny_model()).unwrap();
    let ids = vec![model.tokenizer.encode("chest x-ray showing pneumonia").unwrap()];
    let never = Interrupt::never();
    let features = model.embed_token_ids(&ids, Output::Features, &never).unwrap();
    let embedding = model.embed_token_ids(&ids, Output::Embeddings, &never).unwrap();
    let head = biomedclip_core::projection_file::load_projection(&model.verified.dir, &model.verified.manifest, Tower::Text).unwrap();
    let x: Vec<f64> = features[0].iter().map(|&v| v as f64).collect();
    let y = head.apply(&x);
    let norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
    let worst = y.iter().zip(&embedding[0]).map(|(a, &b)| (a / norm - b as f64).abs()).fold(0.0, f64::max);
    assert_eq!(features[0].len(), model.verified.manifest.text.features.as_ref().unwrap().dim);
    assert!(worst < 1e-5, "projected features differ from the embedding by {worst}");
    // Features are the model's raw output, not normalized.
    assert!((features[0].iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs() > 1e-3);
}

#[test]
fn an_interrupted_load_returns_at_once_and_is_joined_at_shutdown() {
    init_ort(&common::ort_library()).unwrap();
    let start = std::time::Instant::now();
    let err = LocalModel::load_watched(&common::tiny_model(), &cfg(), &Interrupt::new(&|| start.elapsed().as_micros() > 200))
        .err()
        .expect("interrupted");
    assert_eq!(err, ModelError::Interrupted);
    assert!(start.elapsed() < std::time::Duration::from_millis(100), "{:?}", start.elapsed());
    assert_eq!(biomedclip_core::inflight::shutdown(std::time::Duration::from_secs(30)), 0);
    assert_eq!(biomedclip_core::inflight::pending(), 0);
    // A watched load that is not interrupted gives the model.
    assert!(LocalModel::load_watched(&common::tiny_model(), &cfg(), &Interrupt::never()).is_ok());
}

#[test]
fn a_modified_onnx_file_a_modified_manifest_and_a_missing_file_are_refused() {
    // One flipped byte in the middle of the image encoder.
    let dir = copy_model("tampered_onnx");
    let mut bytes = std::fs::read(dir.join("image_encoder.onnx")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(dir.join("image_encoder.onnx"), bytes).unwrap();
    let err = load(&dir).err().expect("modified ONNX must be refused").to_string();
    assert!(err.contains("sha256 of image_encoder.onnx does not match"), "{err}");
    // A manifest that lists another hash for the text encoder.
    let dir = copy_model("tampered_manifest");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let hash = listed["files"]["text_encoder.onnx"].as_str().unwrap().to_string();
    let flipped: String = hash.chars().rev().collect();
    std::fs::write(dir.join("manifest.json"), manifest.replace(&hash, &flipped)).unwrap();
    let err = load(&dir).err().expect("a manifest with a wrong hash must be refused").to_string();
    assert!(err.contains("sha256 of text_encoder.onnx does not match"), "{err}");
    // A missing file.
    let dir = copy_model("missing_file");
    std::fs::remove_file(dir.join("text_encoder.onnx")).unwrap();
    let err = load(&dir).err().expect("a missing file must be refused").to_string();
    assert!(err.contains("cannot read") && err.contains("text_encoder.onnx"), "{err}");
}
