//! Image preprocessing against Pillow + numpy (tools/reference_preprocess.py), on the shared
//! example and MedPix images plus generated edge cases. The goal, and the assertion, is 0 difference.
mod common;
use biomedclip_core::preprocess::{preprocess, PreprocessConfig};

#[derive(serde::Deserialize)]
struct Case {
    image: String,
    reference: String,
    mode: String,
}

#[test]
fn matches_pillow_exactly() {
    let data = common::shared_data();
    let mut images = common::files_in(&data.join("biomedclip/example_images"), &["jpg", "jpeg", "png"]);
    images.extend(common::files_in(&data.join("medpix/images"), &["png", "jpg", "jpeg"]));
    assert!(images.len() >= 100, "expected the shared images, found {}", images.len());
    // A JPEG-in-TIFF whole-slide file given as an image: its first page, as Pillow (libtiff) reads it.
    images.push(data.join("wsi/CMU-1-Small-Region.svs"));

    let out = tempfile_dir("preprocess");
    let mut args = vec![out.to_str().unwrap().to_string()];
    args.extend(images.iter().map(|p| p.to_str().unwrap().to_string()));
    common::run_tool("reference_preprocess.py", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();

    let cfg = PreprocessConfig::default();
    let mut worst = (0f32, String::new());
    let mut sum_abs = 0f64;
    let mut count = 0usize;
    for case in &cases {
        let bytes = std::fs::read(&case.image).unwrap();
        let ours = preprocess(&bytes, &cfg, 200_000_000).unwrap_or_else(|e| panic!("{}: {e}", case.image));
        let reference: Vec<f32> = std::fs::read(&case.reference)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(ours.len(), reference.len(), "{}", case.image);
        for (a, b) in ours.iter().zip(&reference) {
            let d = (a - b).abs();
            sum_abs += d as f64;
            if d > worst.0 {
                worst = (d, format!("{} (mode {})", case.image, case.mode));
            }
        }
        count += ours.len();
        let diffs = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 0, "{} (mode {}): {diffs} values differ from Pillow", case.image, case.mode);
    }
    println!(
        "preprocess parity: {} images, max abs diff {} {}, mean abs diff {}",
        cases.len(),
        worst.0,
        worst.1,
        sum_abs / count as f64
    );
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = common::workspace().join("target/test-work").join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
