//! `biomedclip.*` settings. Settings that name files are superuser-only (PGC_SUSET): a
//! non-superuser can neither point the server at another library nor make it read other files.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;
use std::ffi::CString;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExecutionProvider {
    #[name = c"cpu"]
    Cpu,
    #[name = c"cuda"]
    Cuda,
    #[name = c"auto"]
    Auto,
}

/// `biomedclip.on_error`: what a bad input (undecodable image, empty text, DICOM that cannot be
/// windowed as asked) does to an embedding call.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnError {
    #[name = c"error"]
    Error,
    #[name = c"null"]
    Null,
}

/// `biomedclip.inference`: where the model runs.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Inference {
    /// In the shared inference service (needs shared_preload_libraries = 'biomedclip').
    #[name = c"service"]
    Service,
    /// In each backend's own copy of the model.
    #[name = c"backend"]
    Backend,
}

pub static INFERENCE: GucSetting<Inference> = GucSetting::<Inference>::new(Inference::Service);
pub static ON_ERROR: GucSetting<OnError> = GucSetting::<OnError>::new(OnError::Error);
pub static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ORT_LIBRARY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static INTRA_OP_THREADS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static EXECUTION_PROVIDER: GucSetting<ExecutionProvider> = GucSetting::<ExecutionProvider>::new(ExecutionProvider::Cpu);
pub static MAX_IMAGE_PIXELS: GucSetting<i32> = GucSetting::<i32>::new(100_000_000);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static MODEL_SHA256: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static MAX_BATCH_IMAGES: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static MAX_BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(8192);
pub static SERVICE_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static SERVICE_LANES: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static QUERY_LOG: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static QUERY_LOG_NOTES: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static QUERY_LOG_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register() {
    GucRegistry::define_bool_guc(
        c"biomedclip.query_log",
        c"Log every biomedclip_search, de-identified, to biomedclip.query_log (default off).",
        c"The log keeps a keyed hash of the query, never its text, image or embedding, plus the result ids and distances. Superuser only.",
        &QUERY_LOG,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"biomedclip.query_log_notes",
        c"Keep the free-text note of biomedclip_feedback (default off: notes may hold PHI).",
        c"People type names, dates and findings into notes; off stores the feedback without its note. Superuser only.",
        &QUERY_LOG_NOTES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"biomedclip.query_log_key_file",
        c"File holding the secret key of the query log's HMAC (default: biomedclip_query_log.key in the data directory, created on first use).",
        c"At least 16 bytes; never stored in a table. Whoever holds it can test whether a given query was made. Set in postgresql.conf.",
        &QUERY_LOG_KEY_FILE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.service_threads",
        c"ONNX Runtime threads of the inference service; 0 (default) means one per CPU core.",
        c"They are shared among the service's lanes (biomedclip.service_lanes); biomedclip.intra_op_threads is for backend mode. Set in postgresql.conf; a change restarts the service.",
        &SERVICE_THREADS,
        0,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.service_lanes",
        c"Batches the inference service runs at the same time, each on its own copy of the model (default 1; at most service_threads).",
        c"Each lane gets service_threads / service_lanes threads and holds one more copy of the weights in the service (about 770 MiB for the fp32 model). Set in postgresql.conf; a change restarts the service.",
        &SERVICE_LANES,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"biomedclip.inference",
        c"service: the model runs once for the whole server, in the inference service (default); backend: in every backend that embeds.",
        c"The service needs shared_preload_libraries = 'biomedclip'; without it every backend runs its own copy. A session that sets its own biomedclip.model_dir, ort_library or execution_provider runs its own copy too. Superuser only.",
        &INFERENCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"biomedclip.model_dir",
        c"Directory of the BiomedCLIP model (manifest.json, image_encoder.onnx, text_encoder.onnx, tokenizer.json).",
        c"Every file is verified against the SHA-256 in manifest.json before use. Superuser only.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"biomedclip.ort_library",
        c"Path of libonnxruntime.so (ONNX Runtime 1.32 or newer).",
        c"Loaded once per backend on first use; a change takes effect in new sessions. Superuser only.",
        &ORT_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.intra_op_threads",
        c"ONNX Runtime threads per inference call in each backend.",
        c"Applies when the model is (re)loaded in a backend.",
        &INTRA_OP_THREADS,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"biomedclip.execution_provider",
        c"Execution provider: cpu, cuda, or auto (cuda if it can be registered, else cpu).",
        c"With cuda and no usable GPU, loading fails with an error; auto falls back and says so in biomedclip_model_info().",
        &EXECUTION_PROVIDER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.max_image_pixels",
        c"Largest image (width x height) that will be decoded.",
        c"Checked from the header before any pixel buffer is allocated (decompression-bomb guard).",
        &MAX_IMAGE_PIXELS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.batch_size",
        c"Images or texts per inference call in the batch functions.",
        c"Capped by biomedclip.max_batch_images and biomedclip.max_batch_tokens. Cancellation is checked between calls; a running call is terminated.",
        &BATCH_SIZE,
        1,
        256,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"biomedclip.on_error",
        c"error: a bad input aborts the statement (default); null: it embeds as NULL with a WARNING naming it.",
        c"For bulk loads: a million-image INSERT ... SELECT finishes and the failures are the NULL rows. Model and runtime errors always abort.",
        &ON_ERROR,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"biomedclip.model_sha256",
        c"When set, only the model whose manifest.json has this SHA-256 is loaded.",
        c"Pins the exact model bytes (the manifest lists the SHA-256 of every file). Superuser only.",
        &MODEL_SHA256,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.max_batch_images",
        c"Most images in one inference call, whatever biomedclip.batch_size asks for.",
        c"Bounds the memory one call can take (about 25 MB of activations per ViT-B/16 image). Superuser only.",
        &MAX_BATCH_IMAGES,
        1,
        256,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"biomedclip.max_batch_tokens",
        c"Most padded tokens (texts x longest text) in one inference call.",
        c"Bounds the memory one call can take; zero-shot prompts and text arrays are split to fit. Superuser only.",
        &MAX_BATCH_TOKENS,
        256,
        65536,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// Whether this session changed `name` from the server's value (postgresql.conf, ALTER SYSTEM,
/// or the database and role defaults): then it wants its own model, not the service's.
pub fn overridden_in_session(name: &std::ffi::CStr) -> bool {
    unsafe {
        let current = pgrx::pg_sys::GetConfigOption(name.as_ptr(), true, false);
        let reset = pgrx::pg_sys::GetConfigOptionResetString(name.as_ptr());
        let text = |p: *const std::ffi::c_char| (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_bytes().to_vec());
        text(current) != text(reset)
    }
}

/// A string setting as UTF-8, or an ERROR that names the setting.
pub fn path_setting(setting: &GucSetting<Option<CString>>, name: &str) -> Option<String> {
    let value = setting.get()?;
    match value.to_str() {
        Ok(s) if !s.is_empty() => Some(s.to_string()),
        Ok(_) => None,
        Err(_) => {
            pgrx::ereport!(ERROR, pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("{name} is not valid UTF-8"));
        }
    }
}

