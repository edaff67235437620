//! A tower's projection head read from its own file in the model directory
//! (`image_projection.safetensors`, `text_projection.safetensors`; see tools/model_manifest.py):
//! float32, row-major d_in × d_out, "w" for a bias-free linear head, "w1" and "w2" for open_clip's
//! bias-free MLP (w1 → exact GELU → w2). The file is hashed and compared with the manifest before
//! it is parsed, and its shapes must agree with the manifest's features width and embed_dim.

use crate::finetune::projection::Head;
use crate::model::{no_features, sha256_hex, Manifest, ModelError, Tower};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Largest projection file read: 64 MiB (BiomedCLIP's text head is 3.3 MB).
const MAX_BYTES: u64 = 64 << 20;

/// Reads and verifies `tower`'s projection from the model directory `dir` described by `manifest`.
pub fn load_projection(dir: &Path, manifest: &Manifest, tower: Tower) -> Result<Head, ModelError> {
    let spec = manifest.features(tower).ok_or_else(|| ModelError::NoFeatures(no_features(&manifest.name, tower)))?;
    let path = dir.join(&spec.projection);
    let io = |e: std::io::Error| ModelError::Io { path: path.clone(), detail: e.to_string() };
    let len = std::fs::metadata(&path).map_err(io)?.len();
    if len > MAX_BYTES {
        return Err(ModelError::Unsupported(format!("{} is {len} bytes, over the {MAX_BYTES}-byte limit", spec.projection)));
    }
    let bytes = std::fs::read(&path).map_err(io)?;
    let expected = manifest.files.get(&spec.projection).cloned().unwrap_or_default();
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&expected) {
        return Err(ModelError::HashMismatch { file: spec.projection.clone(), expected, actual });
    }
    parse(&bytes, spec.dim, manifest.embed_dim).map_err(|d| ModelError::BadManifest(format!("{}: {d}", spec.projection)))
}

/// The head in `bytes` (a safetensors file), which must map `d_in` features to `d_out`.
pub fn parse(bytes: &[u8], d_in: usize, d_out: usize) -> Result<Head, String> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let matrix = |name: &str, rows: Option<usize>, cols: Option<usize>| -> Result<(usize, usize, Vec<f64>), String> {
        let t = file.tensor(name).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let shape = t.shape();
        if t.dtype() != Dtype::F32 || shape.len() != 2 {
            return Err(format!("tensor {name:?} must be a float32 matrix, found {:?} {shape:?}", t.dtype()));
        }
        if rows.is_some_and(|r| r != shape[0]) || cols.is_some_and(|c| c != shape[1]) {
            return Err(format!("tensor {name:?} has shape {shape:?}, expected [{}, {}]", fmt(rows), fmt(cols)));
        }
        let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect::<Vec<_>>();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format!("tensor {name:?} holds a value that is not finite"));
        }
        Ok((shape[0], shape[1], values))
    };
    let names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    match names.len() {
        1 if has("w") => {
            let (_, _, w) = matrix("w", Some(d_in), Some(d_out))?;
            Ok(Head::Linear { d_in, d_out, w })
        }
        2 if has("w1") && has("w2") => {
            let (_, hidden, w1) = matrix("w1", Some(d_in), None)?;
            let (_, _, w2) = matrix("w2", Some(hidden), Some(d_out))?;
            Ok(Head::Mlp { d_in, hidden, d_out, w1, w2 })
        }
        _ => Err(format!("expected tensor \"w\" (linear head) or \"w1\" and \"w2\" (MLP head), found {names:?}")),
    }
}

fn fmt(n: Option<usize>) -> String {
    n.map_or("any".into(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tensors: &[(&str, [usize; 2])]) -> Vec<u8> {
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, s)| (n.to_string(), (0..s[0] * s[1]).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect(), s.to_vec()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn reads_linear_and_mlp_heads_in_row_major_order() {
        match parse(&file(&[("w", [2, 3])]), 2, 3).unwrap() {
            Head::Linear { w, .. } => assert_eq!(w, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
            h => panic!("{h:?}"),
        }
        match parse(&file(&[("w1", [2, 4]), ("w2", [4, 3])]), 2, 3).unwrap() {
            Head::Mlp { hidden, w2, .. } => assert_eq!((hidden, w2.len()), (4, 12)),
            h => panic!("{h:?}"),
        }
    }

    #[test]
    fn refuses_wrong_shapes_names_and_bytes() {
        assert!(parse(&file(&[("w", [3, 3])]), 2, 3).unwrap_err().contains("expected [2, 3]"));
        assert!(parse(&file(&[("w1", [2, 4]), ("w2", [5, 3])]), 2, 3).unwrap_err().contains("expected [4, 3]"));
        assert!(parse(&file(&[("bias", [2, 3])]), 2, 3).unwrap_err().contains("expected tensor"));
        assert!(parse(b"\xff\xff\xff\xff\xff\xff\xff\x7f{}", 2, 3).unwrap_err().contains("not a safetensors file"));
    }
}
