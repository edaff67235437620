//! The per-backend model: loaded lazily on first use (never in the postmaster), on a helper
//! thread so that a cancel during the load works, kept until the settings that select it change,
//! and recorded in `biomedclip.models` by the registry worker (src/model_registry.rs), never by a
//! write inside the caller's statement.
//!
//! Each backend holds its own copy of the model (about 10 MB for the test model, about 0.9 GB
//! RSS for ViT-B/16 + BERT-base in fp32). The model functions are PARALLEL RESTRICTED, so parallel
//! workers never load another copy: the calls run in the leader.
//!
//! At process exit (`on_proc_exit`), inference runs still in flight are terminated and their
//! threads joined before the sessions are dropped, so no ONNX Runtime thread outlives the backend.

use crate::settings::{self, ExecutionProvider};
use biomedclip_core::image_decode::ImageError;
use biomedclip_core::model::ModelError;
use biomedclip_core::runtime::{self, EmbeddingBackend, Interrupt, LocalModel, Provider, RuntimeConfig};
use biomedclip_core::tokenize::TextError;
use pgrx::prelude::*;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    dir: String,
    provider: Provider,
    threads: usize,
    pinned_sha256: Option<String>,
}

struct Cached {
    key: CacheKey,
    model: LocalModel,
    loaded_at: String,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

pub fn raise_model_error(e: ModelError) -> ! {
    use PgSqlErrorCode::*;
    let code = match &e {
        ModelError::NoModelDir => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ModelError::Io { .. } => ERRCODE_UNDEFINED_FILE,
        ModelError::HashMismatch { .. } => ERRCODE_DATA_CORRUPTED,
        ModelError::BadManifest(_) | ModelError::Unsupported(_) | ModelError::InputNames { .. } | ModelError::NotPinned { .. } => {
            ERRCODE_CONFIG_FILE_ERROR
        }
        ModelError::Interrupted => {
            // PostgreSQL's own cancel, timeout or termination error, when it is ready to raise it;
            // otherwise (interrupts held off) still the query-canceled SQLSTATE, never a generic one.
            pgrx::check_for_interrupts!();
            ERRCODE_QUERY_CANCELED
        }
        ModelError::BadOutput(_) => ERRCODE_DATA_EXCEPTION,
        ModelError::Runtime(_) => ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
    };
    let message = match &e {
        ModelError::Io { .. } | ModelError::HashMismatch { .. } => format!("{e} (the model directory is the setting biomedclip.model_dir)"),
        _ => e.to_string(),
    };
    ereport!(ERROR, code, message);
}

pub fn image_error_code(e: &ImageError) -> PgSqlErrorCode {
    match e {
        ImageError::TooManyPixels { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    }
}

pub fn raise_image_error(e: ImageError) -> ! {
    ereport!(ERROR, image_error_code(&e), e.to_string());
}

/// Raises an ERROR with `code` and `message` (usable where an expression is needed).
pub fn raise(code: PgSqlErrorCode, message: String) -> ! {
    ereport!(ERROR, code, message);
}

pub fn raise_text_error(e: TextError) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
}

fn current_key() -> CacheKey {
    let dir = settings::path_setting(&settings::MODEL_DIR, "biomedclip.model_dir").unwrap_or_else(|| raise_model_error(ModelError::NoModelDir));
    let provider = match settings::EXECUTION_PROVIDER.get() {
        ExecutionProvider::Cpu => Provider::Cpu,
        ExecutionProvider::Cuda => Provider::Cuda,
        ExecutionProvider::Auto => Provider::Auto,
    };
    let pinned_sha256 = settings::path_setting(&settings::MODEL_SHA256, "biomedclip.model_sha256");
    CacheKey { dir, provider, threads: settings::INTRA_OP_THREADS.get() as usize, pinned_sha256 }
}

fn ensure_ort() {
    let lib = settings::path_setting(&settings::ORT_LIBRARY, "biomedclip.ort_library").unwrap_or_else(|| {
        raise_model_error(ModelError::Runtime("biomedclip.ort_library is not set (path of libonnxruntime.so)".into()))
    });
    runtime::init_ort(&PathBuf::from(lib)).unwrap_or_else(|e| raise_model_error(e));
}

fn load(key: &CacheKey) -> Cached {
    ensure_ort();
    register_exit_hook();
    let cfg = RuntimeConfig { intra_op_threads: key.threads, provider: key.provider, pinned_sha256: key.pinned_sha256.clone() };
    let interrupt = Interrupt::new(&pg_interrupt_pending);
    let model = LocalModel::load_watched(&PathBuf::from(&key.dir), &cfg, &interrupt).unwrap_or_else(|e| raise_model_error(e));
    let loaded_at = crate::model_registry::now_utc();
    crate::model_registry::record_load(&model, &loaded_at);
    Cached { key: key.clone(), model, loaded_at: loaded_at.text }
}

/// Registers (once per process) the exit callback that stops in-flight runs before exit.
fn register_exit_hook() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| unsafe { pg_sys::on_proc_exit(Some(on_exit), pg_sys::Datum::from(0usize)) });
}

/// Terminates and joins inference threads (bounded), then drops the sessions. Runs in proc_exit,
/// possibly in the middle of a call (FATAL), hence `try_borrow_mut`.
#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    let left = biomedclip_core::inflight::shutdown(EXIT_WAIT);
    if left > 0 {
        // Nothing of PostgreSQL may be called here beyond logging; the count helps diagnosis.
        pgrx::log!("biomedclip: {left} inference thread(s) still running at exit after the wait");
    }
    let _ = CACHE.try_with(|cell| {
        if let Ok(mut guard) = cell.try_borrow_mut() {
            guard.take();
        }
    });
}

/// How long the exit hook waits for terminated runs: ORT stops at its next operator boundary.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs `f` with this backend's model, loading (or reloading) it when the settings changed.
pub fn with_model<T>(f: impl FnOnce(&mut LocalModel) -> T) -> T {
    let key = current_key();
    CACHE.with(|cell| {
        let stale = cell.borrow().as_ref().is_none_or(|c| c.key != key);
        if stale {
            // Drop the old sessions before loading the new ones.
            *cell.borrow_mut() = None;
            let loaded = load(&key);
            *cell.borrow_mut() = Some(loaded);
        }
        let mut guard = cell.borrow_mut();
        f(&mut guard.as_mut().expect("model loaded above").model)
    })
}

/// Forgets the cached model so that the next call reloads and re-verifies it.
pub fn forget() {
    CACHE.with(|cell| *cell.borrow_mut() = None);
}

/// Whether a query cancel, statement timeout or termination is pending. Polled by the watchdog
/// thread: it only reads the flags that PostgreSQL's signal handlers set.
fn pg_interrupt_pending() -> bool {
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
    }
}

/// Runs inference; an interrupted call becomes PostgreSQL's own cancel/timeout error.
pub fn infer<T>(f: impl FnOnce(&mut dyn EmbeddingBackend, &Interrupt) -> Result<T, ModelError>) -> T {
    pgrx::check_for_interrupts!();
    let interrupt = Interrupt::new(&pg_interrupt_pending);
    let result = with_model(|m| f(m, &interrupt));
    match result {
        Ok(v) => v,
        Err(e) => {
            // A terminated run: let PostgreSQL raise the cancel or timeout error it is holding.
            pgrx::check_for_interrupts!();
            raise_model_error(e)
        }
    }
}

/// What is active in this backend, as jsonb (loads the model if needed).
pub fn info() -> serde_json::Value {
    let key = current_key();
    with_model(|_| ());
    CACHE.with(|cell| {
        let guard = cell.borrow();
        let c = guard.as_ref().expect("model loaded");
        let m = &c.model.verified.manifest;
        serde_json::json!({
            "name": m.name,
            "version": m.version,
            "precision": m.precision,
            "manifest_sha256": c.model.verified.manifest_sha256,
            "files": m.files,
            "model_dir": key.dir,
            "embed_dim": m.embed_dim,
            "logit_scale": m.logit_scale,
            "image": m.image,
            "text": m.text,
            "execution_provider": c.model.provider_in_use,
            "execution_provider_fallback": c.model.provider_fallback,
            "requested_execution_provider": match key.provider { Provider::Cpu => "cpu", Provider::Cuda => "cuda", Provider::Auto => "auto" },
            "intra_op_threads": key.threads,
            "ort_library": runtime::loaded_ort_library().map(|(p, _)| p.display().to_string()),
            "ort_library_sha256": runtime::loaded_ort_library().map(|(_, sha)| sha),
            "model_sha256_pin": key.pinned_sha256,
            "inference": "backend",
            "backend_pid": std::process::id(),
            "loaded_at": c.loaded_at,
            "kernels_isa": biomedclip_core::distance::active_isa().name(),
        })
    })
}
