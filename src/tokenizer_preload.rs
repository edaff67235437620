//! The tokenizer, parsed once in the postmaster when the library is preloaded.
//!
//! Parsing tokenizer.json takes about 20 ms (a 30,000-word vocabulary through serde), most of a
//! new connection's first caption in service mode. With shared_preload_libraries the postmaster
//! reads `model_dir/tokenizer.json` and `manifest.json` once at start; every backend inherits
//! the parsed tokenizer through fork. It is only used when its SHA-256 and context length equal
//! what the service's manifest names (which the client checks against the bytes the service
//! sent); otherwise (the files changed since start, another model_dir) the backend parses the
//! service's copy as before. Nothing here can fail the postmaster: any problem skips the preload.

use crate::settings;
use biomedclip_core::model::{sha256_hex, Manifest, MANIFEST, TOKENIZER};
use biomedclip_core::tokenize::TextTokenizer;
use std::sync::OnceLock;

struct Preloaded {
    sha256: String,
    context_length: usize,
    tokenizer: TextTokenizer,
}

static PRELOADED: OnceLock<Preloaded> = OnceLock::new();

/// Called from `_PG_init` in the postmaster (shared_preload_libraries), after the settings exist.
pub fn preload() {
    let _ = std::panic::catch_unwind(|| {
        let Some(dir) = settings::MODEL_DIR.get() else { return };
        let Ok(dir) = dir.to_str() else { return };
        let dir = std::path::Path::new(dir);
        let (Ok(manifest), Ok(json)) = (std::fs::read(dir.join(MANIFEST)), std::fs::read(dir.join(TOKENIZER))) else { return };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&manifest) else { return };
        let context_length = manifest.text.context_length;
        if let Ok(tokenizer) = TextTokenizer::from_bytes(&json, context_length) {
            let _ = PRELOADED.set(Preloaded { sha256: sha256_hex(&json), context_length, tokenizer });
        }
    });
}

/// The preloaded tokenizer, when it is exactly the one with this SHA-256 and context length.
pub fn matching(sha256: &str, context_length: usize) -> Option<&'static TextTokenizer> {
    PRELOADED.get().filter(|p| p.sha256.eq_ignore_ascii_case(sha256) && p.context_length == context_length).map(|p| &p.tokenizer)
}
