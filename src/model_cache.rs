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

use crate::inference_client::ServiceClient;
use crate::settings::{self, ExecutionProvider};
use biomedclip_core::image_decode::ImageError;
use biomedclip_core::model::{Manifest, ModelError};
use biomedclip_core::runtime::{self, EmbeddingBackend, Interrupt, LocalModel, Provider, RuntimeConfig};
use biomedclip_core::service_protocol::model_error_code;
use biomedclip_core::tokenize::TextError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    dir: String,
    provider: Provider,
    threads: usize,
    pinned_sha256: Option<String>,
    /// Why the model runs in this backend, or None: it runs in the inference service.
    backend_reason: Option<&'static str>,
}

/// The model this backend uses: its own copy, or its connection to the inference service.
enum Active {
    Local(LocalModel),
    Service(ServiceClient),
}

impl Active {
    fn backend(&mut self) -> &mut dyn EmbeddingBackend {
        match self {
            Active::Local(m) => m,
            Active::Service(c) => c,
        }
    }
}

struct Cached {
    key: CacheKey,
    model: Active,
    loaded_at: String,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// Set in `_PG_init` when the library is loaded by shared_preload_libraries (the supervisor
/// worker is registered then); backends inherit it from the postmaster.
static PRELOADED: AtomicBool = AtomicBool::new(false);

pub fn mark_preloaded() {
    PRELOADED.store(true, Ordering::Relaxed);
}

/// Why this session runs the model itself, or None when the inference service runs it.
fn backend_reason() -> Option<&'static str> {
    if settings::INFERENCE.get() == settings::Inference::Backend {
        return Some("biomedclip.inference = backend");
    }
    if !PRELOADED.load(Ordering::Relaxed) {
        return Some("biomedclip is not in shared_preload_libraries, so no inference service runs");
    }
    // intra_op_threads is backend mode's own (the service has biomedclip.service_threads).
    for name in [c"biomedclip.model_dir", c"biomedclip.ort_library", c"biomedclip.execution_provider"] {
        if settings::overridden_in_session(name) {
            return Some("this session set its own biomedclip.model_dir, ort_library or execution_provider");
        }
    }
    None
}

/// The SQLSTATE of a model error, by its [`model_error_code`] (the same in both modes: the
/// service sends the code of the error it saw).
fn sqlstate(code: u8) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match code {
        1 => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        2 => ERRCODE_UNDEFINED_FILE,
        4 => ERRCODE_DATA_CORRUPTED,
        3 | 5 | 6 | 7 => ERRCODE_CONFIG_FILE_ERROR,
        8 => ERRCODE_QUERY_CANCELED,
        9 => ERRCODE_DATA_EXCEPTION,
        11 => ERRCODE_CANNOT_CONNECT_NOW,
        12 => ERRCODE_INSUFFICIENT_RESOURCES,
        13 => ERRCODE_FEATURE_NOT_SUPPORTED,
        _ => ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
    }
}

pub fn raise_model_error(e: ModelError) -> ! {
    let code = model_error_code(&e);
    if code == 8 {
        // PostgreSQL's own cancel, timeout or termination error, when it is ready to raise it;
        // otherwise (interrupts held off) still the query-canceled SQLSTATE, never a generic one.
        pgrx::check_for_interrupts!();
    }
    let message = match code {
        2 | 4 => format!("{e} (the model directory is the setting biomedclip.model_dir)"),
        _ => e.to_string(),
    };
    let code = sqlstate(code);
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

pub fn text_error_code(e: &TextError) -> PgSqlErrorCode {
    match e {
        TextError::TooLong { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        TextError::Interrupted => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
        _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    }
}

pub fn raise_text_error(e: TextError) -> ! {
    if e == TextError::Interrupted {
        // PostgreSQL's own cancel, timeout or termination error.
        pgrx::check_for_interrupts!();
    }
    ereport!(ERROR, text_error_code(&e), e.to_string());
}

fn current_key() -> CacheKey {
    let dir = settings::path_setting(&settings::MODEL_DIR, "biomedclip.model_dir").unwrap_or_else(|| raise_model_error(ModelError::NoModelDir));
    let provider = match settings::EXECUTION_PROVIDER.get() {
        ExecutionProvider::Cpu => Provider::Cpu,
        ExecutionProvider::Cuda => Provider::Cuda,
        ExecutionProvider::Auto => Provider::Auto,
    };
    let pinned_sha256 = settings::path_setting(&settings::MODEL_SHA256, "biomedclip.model_sha256");
    CacheKey { dir, provider, threads: settings::INTRA_OP_THREADS.get() as usize, pinned_sha256, backend_reason: backend_reason() }
}

fn ensure_ort() {
    // Before the first helper thread exists: an interrupted caller leaves that thread running
    // (hashing and loading the library), and the process must wait for it before it exits.
    register_exit_hook();
    let lib = settings::path_setting(&settings::ORT_LIBRARY, "biomedclip.ort_library")
        .unwrap_or_else(|| raise_model_error(ModelError::Runtime("biomedclip.ort_library is not set (path of libonnxruntime.so)".into())));
    let interrupt = Interrupt::new(&pg_interrupt_pending);
    runtime::init_ort_watched(&PathBuf::from(lib), &interrupt).unwrap_or_else(|e| raise_model_error(e));
}

fn load(key: &CacheKey) -> Cached {
    if key.backend_reason.is_none() {
        return connect(key);
    }
    ensure_ort();
    let cfg = RuntimeConfig { intra_op_threads: key.threads, provider: key.provider, pinned_sha256: key.pinned_sha256.clone() };
    let interrupt = Interrupt::new(&pg_interrupt_pending);
    let model = LocalModel::load_watched(&PathBuf::from(&key.dir), &cfg, &interrupt).unwrap_or_else(|e| raise_model_error(e));
    let loaded_at = crate::model_registry::now_utc();
    crate::model_registry::record_load(&model.verified.manifest, &model.verified.manifest_bytes, &model.verified.manifest_sha256, &loaded_at);
    Cached { key: key.clone(), model: Active::Local(model), loaded_at: loaded_at.text }
}

/// Connects to the inference service. A service that runs another directory than the server's
/// setting names is being restarted for a reload: wait for it (bounded), never mix the two.
fn connect(key: &CacheKey) -> Cached {
    let interrupt = Interrupt::new(&pg_interrupt_pending);
    let start = std::time::Instant::now();
    loop {
        let client = ServiceClient::connect(&interrupt).unwrap_or_else(|e| raise_model_error(e));
        if client.description.model_dir == key.dir {
            if let Some(pin) = &key.pinned_sha256 {
                if !pin.eq_ignore_ascii_case(&client.description.manifest_sha256) {
                    raise_model_error(ModelError::NotPinned { pinned: pin.clone(), actual: client.description.manifest_sha256.clone() });
                }
            }
            let loaded_at = crate::model_registry::now_utc();
            let manifest_json = client.description.manifest_json.clone();
            let sha = client.description.manifest_sha256.clone();
            crate::model_registry::record_load(EmbeddingBackend::manifest(&client), &manifest_json, &sha, &loaded_at);
            return Cached { key: key.clone(), model: Active::Service(client), loaded_at: loaded_at.text };
        }
        if start.elapsed() > std::time::Duration::from_secs(15) {
            raise_model_error(ModelError::ServiceUnavailable {
                busy: false,
                message: format!(
                    "the inference service runs the model in {}, but biomedclip.model_dir is {}; it is restarted when the server reloads its configuration",
                    client.description.model_dir, key.dir
                ),
            });
        }
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(50));
        pgrx::check_for_interrupts!();
    }
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
pub fn with_model<T>(f: impl FnOnce(&mut dyn EmbeddingBackend) -> T) -> T {
    let key = current_key();
    CACHE.with(|cell| {
        let closed = cell.borrow().as_ref().is_some_and(|c| c.key == key && matches!(&c.model, Active::Service(client) if !client.is_alive()));
        let stale = closed || cell.borrow().as_ref().is_none_or(|c| c.key != key);
        if closed {
            // Said in the server log, so that a second connection of one session is explained
            // (the service was restarted, or exited; the supervisor logs which).
            crate::report_held::held(|| pgrx::log!("biomedclip: the inference service closed this session's connection; connecting again"));
        }
        if stale {
            // Drop the old sessions before loading the new ones.
            *cell.borrow_mut() = None;
            let loaded = load(&key);
            *cell.borrow_mut() = Some(loaded);
        }
        let mut guard = cell.borrow_mut();
        f(guard.as_mut().expect("model loaded above").model.backend())
    })
}

/// Forgets the cached model so that the next call reloads and re-verifies it.
pub fn forget() {
    CACHE.with(|cell| *cell.borrow_mut() = None);
}

/// Reports a wait event for as long as it lives (pgstat_report_wait_start/end).
struct WaitEvent;

impl WaitEvent {
    fn extension() -> WaitEvent {
        unsafe {
            if !pg_sys::my_wait_event_info.is_null() {
                std::ptr::write_volatile(pg_sys::my_wait_event_info, pg_sys::PG_WAIT_EXTENSION);
            }
        }
        WaitEvent
    }
}

impl Drop for WaitEvent {
    fn drop(&mut self) {
        unsafe {
            if !pg_sys::my_wait_event_info.is_null() {
                std::ptr::write_volatile(pg_sys::my_wait_event_info, 0);
            }
        }
    }
}

/// Whether a query cancel, statement timeout or termination is pending. Polled by the watchdog
/// thread: it only reads the flags that PostgreSQL's signal handlers set.
pub fn pg_interrupt_pending() -> bool {
    unsafe { std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0 || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0 }
}

/// Runs inference; an interrupted call becomes PostgreSQL's own cancel/timeout error.
pub fn infer<T>(f: impl FnOnce(&mut dyn EmbeddingBackend, &Interrupt) -> Result<T, ModelError>) -> T {
    pgrx::check_for_interrupts!();
    let interrupt = Interrupt::new(&pg_interrupt_pending);
    // pg_stat_activity shows the session waiting on the model (wait_event_type 'Extension').
    let result = {
        let _waiting = WaitEvent::extension();
        with_model(|m| f(m, &interrupt))
    };
    match result {
        Ok(v) => v,
        Err(e) => {
            if matches!(e, ModelError::ServiceUnavailable { busy: false, .. }) {
                // The connection is gone: the next call connects to the restarted service.
                forget();
            }
            // A terminated run: let PostgreSQL raise the cancel or timeout error it is holding.
            pgrx::check_for_interrupts!();
            raise_model_error(e)
        }
    }
}

/// What is active in this backend, as jsonb (loads the model, or connects, if needed).
pub fn info() -> serde_json::Value {
    let key = current_key();
    with_model(|_| ());
    CACHE.with(|cell| {
        let mut guard = cell.borrow_mut();
        let c = guard.as_mut().expect("model loaded");
        let loaded_at = c.loaded_at.clone();
        let backend = c.model.backend();
        let m = backend.manifest().clone();
        let mut info = serde_json::json!({
            "name": m.name,
            "version": m.version,
            "precision": m.precision,
            "manifest_sha256": backend.manifest_sha256(),
            "files": m.files,
            "model_dir": key.dir,
            "embed_dim": m.embed_dim,
            "logit_scale": m.logit_scale,
            "image": m.image,
            "text": m.text,
            "model_sha256_pin": key.pinned_sha256,
            "backend_pid": std::process::id(),
            "kernels_isa": biomedclip_core::distance::active_isa().name(),
        });
        let extra = match &mut c.model {
            Active::Local(model) => serde_json::json!({
                "inference": "backend",
                "inference_reason": key.backend_reason,
                "execution_provider": model.provider_in_use,
                "execution_provider_fallback": model.provider_fallback,
                "requested_execution_provider": match key.provider { Provider::Cpu => "cpu", Provider::Cuda => "cuda", Provider::Auto => "auto" },
                "intra_op_threads": key.threads,
                "ort_library": runtime::loaded_ort_library().map(|(p, _)| p.display().to_string()),
                "ort_library_sha256": runtime::loaded_ort_library().map(|(_, sha)| sha),
                "loaded_at": loaded_at,
            }),
            Active::Service(client) => {
                let interrupt = Interrupt::new(&pg_interrupt_pending);
                let status = client.status(&interrupt).unwrap_or_else(|e| raise_model_error(e));
                let d = &client.description;
                serde_json::json!({
                    "inference": "service",
                    "service_pid": client.pid,
                    "service": status,
                    "execution_provider": d.provider_in_use,
                    "execution_provider_fallback": (!d.provider_fallback.is_empty()).then(|| d.provider_fallback.clone()),
                    "requested_execution_provider": match key.provider { Provider::Cpu => "cpu", Provider::Cuda => "cuda", Provider::Auto => "auto" },
                    "ort_library": d.ort_library,
                    "ort_library_sha256": d.ort_library_sha256,
                    "loaded_at": d.loaded_at,
                    "connected_at": loaded_at,
                })
            }
        };
        if let (Some(obj), serde_json::Value::Object(more)) = (info.as_object_mut(), extra) {
            obj.extend(more);
        }
        info
    })
}

/// The configured model's manifest: (SHA-256, directory, manifest). From the model this backend
/// has loaded or is connected to when the settings still name it; otherwise read from
/// biomedclip.model_dir and checked against biomedclip.model_sha256, without loading the model
/// (training on stored features needs the manifest and the projection files, not the towers).
pub fn configured_manifest() -> (String, PathBuf, Manifest) {
    let key = current_key();
    let cached = CACHE.with(|cell| {
        let mut guard = cell.borrow_mut();
        guard.as_mut().filter(|c| c.key == key).map(|c| {
            let b = c.model.backend();
            (b.manifest_sha256().to_string(), b.model_dir().to_path_buf(), b.manifest().clone())
        })
    });
    cached.unwrap_or_else(|| {
        let dir = PathBuf::from(&key.dir);
        let (manifest, _, sha) = biomedclip_core::model::read_manifest(&dir, key.pinned_sha256.as_deref()).unwrap_or_else(|e| raise_model_error(e));
        (sha, dir, manifest)
    })
}

/// The manifest SHA-256 of the model this backend has loaded (or is connected to), without
/// loading one; None before the first model call.
pub fn active_manifest_sha256() -> Option<String> {
    CACHE.with(|cell| cell.borrow_mut().as_mut().map(|c| c.model.backend().manifest_sha256().to_string()))
}
