//! Paths shared by the integration tests: the workspace, ../shared/data and the Python venv.
#![allow(dead_code)]
use std::path::PathBuf;
use std::process::Command;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// ../shared/data beside the project (override with BIOMEDCLIP_SHARED_DATA).
pub fn shared_data() -> PathBuf {
    std::env::var_os("BIOMEDCLIP_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/data"))
}

/// The Python with the pinned reference packages (scripts/setup.sh creates it).
pub fn python() -> PathBuf {
    std::env::var_os("BIOMEDCLIP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyenv/bin/python"))
}

/// Runs a script from tools/ with the reference Python; panics with its stderr on failure.
pub fn run_tool(script: &str, args: &[&str]) {
    let out = Command::new(python())
        .arg(workspace().join("tools").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup.sh first): {e}", python().display()));
    assert!(out.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

pub fn files_in(dir: &std::path::Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str())))
        .collect();
    v.sort();
    v
}

/// The ONNX Runtime library scripts/setup.sh extracts from the PyPI wheel (or ORT_DYLIB_PATH).
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/onnxruntime/libonnxruntime.so.1.32.0"))
}

/// A generated tiny model directory (tools/make_test_model.py), created once per target dir.
pub fn tiny_model() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let dir = workspace().join("target/models/tiny");
    if !dir.join("manifest.json").exists() {
        run_tool("make_test_model.py", &[dir.to_str().unwrap(), "--size", "tiny", "--shared", shared_data().to_str().unwrap()]);
    }
    dir
}
