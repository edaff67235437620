//! The per-backend model: loaded lazily on first use (never in the postmaster), kept until the
//! settings that select it change, and recorded in `biomedclip.models`.
//!
//! Each backend, and each parallel worker, holds its own copy of the model (about 10 MB for the
//! test model, about 520 MB for ViT-B/16 + BERT-base in fp32). That is why the embedding functions
//! are PARALLEL SAFE but their cost is set high: the planner parallelizes them only where the
//! work justifies a model load per worker.

use crate::settings::{self, ExecutionProvider};
use biomedclip_core::image_decode::ImageError;
use biomedclip_core::model::ModelError;
use biomedclip_core::runtime::{self, EmbeddingBackend, Interrupt, LocalModel, Provider, RuntimeConfig};
use biomedclip_core::tokenize::TextError;
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};
use std::cell::RefCell;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    dir: String,
    provider: Provider,
    threads: usize,
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
        ModelError::BadManifest(_) | ModelError::Unsupported(_) | ModelError::InputNames { .. } => ERRCODE_CONFIG_FILE_ERROR,
        ModelError::Runtime(_) => ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
    };
    ereport!(ERROR, code, e.to_string());
}

pub fn raise_image_error(e: ImageError) -> ! {
    let code = match &e {
        ImageError::TooManyPixels { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    };
    ereport!(ERROR, code, e.to_string());
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
    CacheKey { dir, provider, threads: settings::INTRA_OP_THREADS.get() as usize }
}

fn ensure_ort() {
    let lib = settings::path_setting(&settings::ORT_LIBRARY, "biomedclip.ort_library").unwrap_or_else(|| {
        raise_model_error(ModelError::Runtime("biomedclip.ort_library is not set (path of libonnxruntime.so)".into()))
    });
    runtime::init_ort(&PathBuf::from(lib)).unwrap_or_else(|e| raise_model_error(e));
}

fn load(key: &CacheKey) -> Cached {
    ensure_ort();
    let cfg = RuntimeConfig { intra_op_threads: key.threads, provider: key.provider };
    let model = LocalModel::load(&PathBuf::from(&key.dir), &cfg).unwrap_or_else(|e| raise_model_error(e));
    let loaded_at = Spi::get_one::<String>("SELECT now()::text").ok().flatten().unwrap_or_default();
    let cached = Cached { key: key.clone(), model, loaded_at };
    record_load(&cached);
    cached
}

/// Records a load in biomedclip.models, as the bootstrap superuser so that analysts need no
/// write privilege on the registry. Skipped where writes are impossible (parallel workers,
/// read-only transactions, standbys); the primary's loads are recorded.
fn record_load(c: &Cached) {
    unsafe {
        if pg_sys::ParallelWorkerNumber >= 0 || pg_sys::XactReadOnly || pg_sys::RecoveryInProgress() {
            return;
        }
        let m = &c.model.verified.manifest;
        let files = JsonB(serde_json::to_value(&m.files).unwrap_or_default());
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_ctx = 0i32;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let result = Spi::run_with_args(
            "INSERT INTO biomedclip.models (manifest_sha256, name, version, precision, files, loaded_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (manifest_sha256) DO UPDATE SET loaded_at = now(), load_count = biomedclip.models.load_count + 1",
            &[
                c.model.verified.manifest_sha256.clone().into(),
                m.name.clone().into(),
                m.version.clone().into(),
                m.precision.clone().into(),
                files.into(),
            ],
        );
        pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
        if let Err(e) = result {
            pgrx::warning!("biomedclip: could not record the model load in biomedclip.models: {e}");
        }
    }
}

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
            "requested_execution_provider": match key.provider { Provider::Cpu => "cpu", Provider::Cuda => "cuda", Provider::Auto => "auto" },
            "intra_op_threads": key.threads,
            "ort_library": runtime::loaded_ort_library().map(|p| p.display().to_string()),
            "loaded_at": c.loaded_at,
            "kernels_isa": biomedclip_core::distance::active_isa().name(),
        })
    })
}
