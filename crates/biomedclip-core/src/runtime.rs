//! ONNX Runtime behind one narrow interface: [`EmbeddingBackend`] embeds a batch of preprocessed
//! images or of token sequences, in the calling process ([`LocalModel`]: a PostgreSQL backend
//! in backend mode, or the inference service) or through the service's client.
//!
//! Process hygiene, as measured inside PostgreSQL backends (FIELD_NOTES):
//! * the library is loaded lazily with `ort::init_from`, once per process, after setting
//!   `ORT_DISABLE_TELEMETRY=1` (ONNX Runtime 1.32 otherwise starts a telemetry thread);
//! * all signals are blocked while ONNX Runtime creates its threads, so that the host's signal
//!   handlers (query cancel, timeouts) never run on them;
//! * every run can be cancelled: the call runs on its own thread while the caller polls its
//!   interrupt flag; on an interrupt the caller returns at once and the run is terminated
//!   through ORT's run options (see `run_watched`). Model loads run on a thread too, so a load
//!   can be cancelled; `inflight::shutdown` joins such threads before the process exits;
//! * memory: the ONNX bytes are dropped once the sessions exist (and returned to the OS), and a
//!   run larger than [`SHRINK_ABOVE_VALUES`] input values asks ONNX Runtime to shrink its arena
//!   afterwards.

use crate::model::{ModelError, Output, Tower, VerifiedModel};
use crate::preprocess::PreprocessConfig;
use crate::tokenize::TextTokenizer;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Which execution provider to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
    /// CUDA when it registers, else CPU (and say so).
    Auto,
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub intra_op_threads: usize,
    pub provider: Provider,
    /// Refuse any model whose manifest SHA-256 is not this one.
    pub pinned_sha256: Option<String>,
}

/// Runs with more input values than this (8 images of 3×224×224) shrink ONNX Runtime's CPU arena
/// when they finish, so that one oversized call does not keep its memory for the session's life.
pub const SHRINK_ABOVE_VALUES: usize = 8 * 3 * 224 * 224;

/// Runs `f` with every signal blocked in the calling thread; threads created inside inherit the
/// mask, so they never receive the host's signals.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

struct OrtState {
    library: PathBuf,
    library_sha256: String,
    environment: Environment,
}

static ORT: Mutex<Option<&'static OrtState>> = Mutex::new(None);

/// Loads ONNX Runtime from `library` once per process. A failed load may be retried with another
/// path; after a success the first library stays (a process can load only one).
pub fn init_ort(library: &Path) -> Result<&'static Path, ModelError> {
    let mut guard = ORT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(state) = *guard {
        return Ok(&state.library);
    }
    if !library.is_file() {
        return Err(ModelError::Runtime(format!(
            "ONNX Runtime library {} does not exist (biomedclip.ort_library)",
            library.display()
        )));
    }
    // Hashed before loading, so that biomedclip_model_info can name the exact library bytes.
    let library_sha256 = std::fs::read(library)
        .map(|b| crate::model::sha256_hex(&b))
        .map_err(|e| ModelError::Io { path: library.to_path_buf(), detail: e.to_string() })?;
    // Must be set before the library is loaded: it stops ONNX Runtime's telemetry thread.
    // (Already set by `init_ort_watched` on the calling thread, before its helper thread runs.)
    if std::env::var_os("ORT_DISABLE_TELEMETRY").as_deref() != Some(std::ffi::OsStr::new("1")) {
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
    let environment = with_signals_blocked(|| {
        let builder = ort::init_from(library).map_err(|e| ModelError::Runtime(format!("{}: {e}", library.display())))?;
        builder
            .with_name("biomedclip")
            .with_telemetry(false)
            .build()
            .map_err(|e| ModelError::Runtime(e.to_string()))
    })?;
    let state: &'static OrtState = Box::leak(Box::new(OrtState { library: library.to_path_buf(), library_sha256, environment }));
    *guard = Some(state);
    Ok(&state.library)
}

/// [`init_ort`] on a helper thread, polling `interrupt`: hashing and loading the 20 MB library
/// takes tens of milliseconds, and a cancel or statement timeout must not wait for it. An
/// interrupted caller returns at once; the thread finishes the load (joined at exit).
pub fn init_ort_watched(library: &Path, interrupt: &Interrupt) -> Result<&'static Path, ModelError> {
    if let Some(state) = *ORT.lock().unwrap_or_else(|p| p.into_inner()) {
        return Ok(&state.library);
    }
    if interrupt.is_pending() {
        return Err(ModelError::Interrupted);
    }
    // Set here, before any thread exists, so that the helper never writes the environment.
    unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    let library = library.to_path_buf();
    watched("runtime-loading", move || init_ort(&library), None, interrupt)
}

/// The library loaded in this process, if any, with the SHA-256 of its file.
pub fn loaded_ort_library() -> Option<(PathBuf, String)> {
    ORT.lock().unwrap_or_else(|p| p.into_inner()).map(|s| (s.library.clone(), s.library_sha256.clone()))
}

/// Something that embeds batches: the model in this process ([`LocalModel`]) or the shared
/// inference service (the extension's client). Inputs are already preprocessed: images as the
/// model's 8-bit RGB view (`size`×`size`, interleaved, back to back; normalization is the
/// model's job), texts as token ids (unpadded). Embeddings are L2-normalized; features (the
/// pooled output before the projection) are returned as the model computed them.
pub trait EmbeddingBackend {
    fn manifest(&self) -> &crate::model::Manifest;
    /// SHA-256 of manifest.json: the model's identity.
    fn manifest_sha256(&self) -> &str;
    /// The model directory the manifest was read from (its projection files live there).
    fn model_dir(&self) -> &Path;
    fn tokenizer(&self) -> Result<&TextTokenizer, ModelError>;
    fn preprocess(&self) -> &PreprocessConfig;
    fn embed_rgb(&mut self, rgb: &[u8], count: usize, output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError>;
    fn embed_token_ids(&mut self, sequences: &[Vec<u32>], output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// How a run learns that it should stop: a function polled from a watchdog thread.
pub struct Interrupt<'a> {
    pending: &'a (dyn Fn() -> bool + Sync),
}

impl<'a> Interrupt<'a> {
    pub fn new(pending: &'a (dyn Fn() -> bool + Sync)) -> Self {
        Interrupt { pending }
    }

    pub fn never() -> Interrupt<'static> {
        Interrupt { pending: &|| false }
    }

    pub fn is_pending(&self) -> bool {
        (self.pending)()
    }
}

/// A verified model with its ONNX Runtime sessions, in this process. `verified` keeps the
/// manifest and hashes; its file contents have been dropped.
pub struct LocalModel {
    pub verified: VerifiedModel,
    pub tokenizer: TextTokenizer,
    pub preprocess: PreprocessConfig,
    /// What actually runs the model: "cpu" or "cuda".
    pub provider_in_use: String,
    /// Why `auto` fell back to the CPU ("cuda unavailable: ..."), if it did.
    pub provider_fallback: Option<String>,
    // Shared with the thread that runs each call (see `run_watched`).
    image: Arc<Mutex<Session>>,
    text: Arc<Mutex<Session>>,
}

fn session_for(bytes: &[u8], cfg: &RuntimeConfig, cuda: bool, prepacked: Option<&PrepackedWeights>) -> Result<Session, ModelError> {
    let env = ORT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map(|s| &s.environment)
        .ok_or_else(|| ModelError::Runtime("ONNX Runtime is not loaded".into()))?;
    let err = |e: ort::Error| ModelError::Runtime(e.to_string());
    with_signals_blocked(|| {
        let mut builder = Session::builder(env)
            .map_err(err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| err(e.into()))?
            .with_intra_threads(cfg.intra_op_threads.max(1))
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?;
        if let Some(prepacked) = prepacked {
            builder = builder.with_prepacked_weights(prepacked).map_err(|e| err(e.into()))?;
        }
        if cuda {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| err(e.into()))?;
        }
        builder.commit_from_memory(bytes).map_err(err)
    })
}

fn check_names(model: &'static str, session: &Session, inputs: &[&str], outputs: &[&str]) -> Result<(), ModelError> {
    let actual_in: Vec<String> = session.inputs().iter().map(|o| o.name().to_string()).collect();
    let actual_out: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    let ok = inputs.iter().all(|n| actual_in.iter().any(|a| a == n)) && outputs.iter().all(|o| actual_out.iter().any(|a| a == o));
    if ok {
        Ok(())
    } else {
        let mut expected: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        expected.extend(outputs.iter().map(|o| format!("-> {o}")));
        let mut actual = actual_in;
        actual.extend(actual_out.into_iter().map(|o| format!("-> {o}")));
        Err(ModelError::InputNames { model, expected, actual })
    }
}

/// Gives freed heap memory back to the operating system (glibc keeps it otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A model's two sessions, before they are joined with the verified manifest.
struct Sessions {
    image: Session,
    text: Session,
    provider_in_use: String,
    provider_fallback: Option<String>,
}

impl Sessions {
    fn with(self, verified: VerifiedModel) -> Result<LocalModel, ModelError> {
        let m = &verified.manifest;
        let tokenizer = TextTokenizer::from_bytes(&verified.tokenizer_json, m.text.context_length)
            .map_err(|e| ModelError::BadManifest(format!("tokenizer.json: {e}")))?;
        let preprocess = PreprocessConfig { image_size: m.image.size, mean: m.image.mean, std: m.image.std };
        let (image, text) = (Arc::new(Mutex::new(self.image)), Arc::new(Mutex::new(self.text)));
        Ok(LocalModel { verified, tokenizer, preprocess, provider_in_use: self.provider_in_use, provider_fallback: self.provider_fallback, image, text })
    }
}

impl LocalModel {
    /// Verifies the directory and creates both sessions. ONNX Runtime must be initialised.
    pub fn load(dir: &Path, cfg: &RuntimeConfig) -> Result<LocalModel, ModelError> {
        let model = Self::load_keeping_bytes(dir, cfg);
        release_free_memory();
        model
    }

    /// [`LocalModel::load`] on a thread of its own, polling `interrupt` every millisecond: an
    /// interrupted load returns [`ModelError::Interrupted`] at once, and the thread finishes (and
    /// drops what it built) on its own; `inflight::shutdown` waits for it at exit.
    pub fn load_watched(dir: &Path, cfg: &RuntimeConfig, interrupt: &Interrupt) -> Result<LocalModel, ModelError> {
        if interrupt.is_pending() {
            return Err(ModelError::Interrupted);
        }
        let (dir, cfg) = (dir.to_path_buf(), cfg.clone());
        watched("model-loading", move || LocalModel::load(&dir, &cfg), None, interrupt)
    }

    /// `lanes` copies of the model that can run at the same time (the inference service runs one
    /// batch per lane), from one verification of the directory. The copies share ONNX Runtime's
    /// prepacked-weights container, but each session keeps its own initializers: measured, every
    /// lane adds about the model's size to the process.
    pub fn load_lanes(dir: &Path, cfg: &RuntimeConfig, lanes: usize) -> Result<Vec<LocalModel>, ModelError> {
        let mut verified = VerifiedModel::load(dir, cfg.pinned_sha256.as_deref())?;
        let prepacked = PrepackedWeights::new();
        let models = (0..lanes.max(1)).map(|_| Self::sessions(&verified, cfg, Some(&prepacked))).collect::<Result<Vec<_>, _>>();
        // The sessions hold the weights: keep the hashes, drop the bytes (the tokenizer's are
        // kept: the inference service sends them to backends).
        for bytes in [&mut verified.image_encoder, &mut verified.text_encoder] {
            *bytes = Vec::new();
        }
        drop(prepacked);
        let models = models?.into_iter().map(|parts| parts.with(verified.clone())).collect::<Result<Vec<_>, _>>();
        release_free_memory();
        models
    }

    fn load_keeping_bytes(dir: &Path, cfg: &RuntimeConfig) -> Result<LocalModel, ModelError> {
        let mut verified = VerifiedModel::load(dir, cfg.pinned_sha256.as_deref())?;
        let parts = Self::sessions(&verified, cfg, None)?;
        for bytes in [&mut verified.image_encoder, &mut verified.text_encoder] {
            *bytes = Vec::new();
        }
        parts.with(verified)
    }

    fn sessions(verified: &VerifiedModel, cfg: &RuntimeConfig, prepacked: Option<&PrepackedWeights>) -> Result<Sessions, ModelError> {
        let m = &verified.manifest;
        let for_cuda = |cuda| -> Result<(Session, Session), ModelError> {
            Ok((session_for(&verified.image_encoder, cfg, cuda, prepacked)?, session_for(&verified.text_encoder, cfg, cuda, prepacked)?))
        };
        let ((image, text), provider_in_use, provider_fallback) = match cfg.provider {
            Provider::Cpu => (for_cuda(false)?, "cpu", None),
            Provider::Cuda => (for_cuda(true)?, "cuda", None),
            Provider::Auto => match for_cuda(true) {
                Ok(pair) => (pair, "cuda", None),
                Err(e) => (for_cuda(false)?, "cpu", Some(format!("cuda unavailable: {e}"))),
            },
        };
        let outputs = |tower: Tower| -> Vec<&str> {
            let mut names = vec![m.output(tower, Output::Embeddings).map(|o| o.0).unwrap_or_default()];
            names.extend(m.features(tower).map(|f| f.output.as_str()));
            names
        };
        check_names("image_encoder.onnx", &image, &[&m.image.input], &outputs(Tower::Image))?;
        check_names("text_encoder.onnx", &text, &[&m.text.input_ids, &m.text.attention_mask], &outputs(Tower::Text))?;
        Ok(Sessions { image, text, provider_in_use: provider_in_use.to_string(), provider_fallback })
    }

}

/// Runs a call on its own thread and waits for it, polling `interrupt` every millisecond.
///
/// ONNX Runtime checks its terminate flag only between operators, and one operator of a large
/// batch can run for hundreds of milliseconds. So on an interrupt the caller returns at once
/// (and PostgreSQL raises its cancel or timeout error), while the run is told to terminate and
/// finishes on its own thread (tracked, so that the process joins it before exiting); the
/// session's mutex makes the next call on this model wait for it. The thread owns everything it
/// touches (inputs, session handle, output copies) and never calls into the host process.
///
/// The output must have exactly `rows` finite rows of `width` values; embeddings are
/// L2-normalized, features returned as computed.
#[allow(clippy::too_many_arguments)]
fn run_watched(
    session: &Arc<Mutex<Session>>,
    inputs: Vec<(String, ort::value::DynValue)>,
    input_values: usize,
    output: &str,
    kind: Output,
    rows: usize,
    width: usize,
    interrupt: &Interrupt,
) -> Result<Vec<Vec<f32>>, ModelError> {
    if interrupt.is_pending() {
        return Err(ModelError::Interrupted);
    }
    let mut options = RunOptions::new().map_err(|e| ModelError::Runtime(e.to_string()))?;
    if input_values > SHRINK_ABOVE_VALUES {
        options
            .set("memory.enable_memory_arena_shrinkage", "cpu:0")
            .map_err(|e| ModelError::Runtime(e.to_string()))?;
    }
    let options = Arc::new(options);
    let (session, run_options, output) = (Arc::clone(session), Arc::clone(&options), output.to_string());
    let run = move || {
        let err = |e: ort::Error| ModelError::Runtime(e.to_string());
        let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
        session.run_with_options(inputs, &*run_options).map_err(err).and_then(|outputs| {
            let value = outputs
                .get(&output)
                .ok_or_else(|| ModelError::Runtime(format!("model produced no output named {output}")))?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(err)?;
            check_output(&output, shape, data, rows, width)?;
            Ok(match kind {
                Output::Embeddings => data.chunks_exact(width).map(crate::vector_ops::l2_normalize).collect::<Vec<_>>(),
                Output::Features => data.chunks_exact(width).map(<[f32]>::to_vec).collect(),
            })
        })
    };
    watched("inference", run, Some(options), interrupt)
}

/// Runs `work` on a thread of its own (signals blocked, so the host's handlers never run there)
/// and waits for it, polling `interrupt` every millisecond. On an interrupt the caller gets
/// [`ModelError::Interrupted`] at once; a run is told to terminate through `options`, and the
/// thread is tracked so that `inflight::shutdown` joins it before the process exits.
fn watched<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, ModelError> + Send + 'static,
    options: Option<Arc<RunOptions>>,
    interrupt: &Interrupt,
) -> Result<T, ModelError> {
    let (tx, rx) = mpsc::channel();
    let spawned = with_signals_blocked(|| {
        std::thread::Builder::new().name(format!("biomedclip-{what}")).spawn(move || {
            let _ = tx.send(work());
        })
    });
    let handle = spawned.map_err(|e| ModelError::Runtime(format!("cannot start the {what} thread: {e}")))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(result) => {
                let _ = handle.join();
                return result;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if interrupt.is_pending() {
                    if let Some(options) = &options {
                        let _ = options.terminate();
                    }
                    crate::inflight::track(handle, options);
                    return Err(ModelError::Interrupted);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = handle.join();
                return Err(ModelError::Runtime(format!("the {what} thread failed")));
            }
        }
    }
}

/// An output is `rows` × `embed_dim` finite values, nothing else.
fn check_output(name: &str, shape: &ort::value::Shape, data: &[f32], rows: usize, embed_dim: usize) -> Result<(), ModelError> {
    if shape.len() != 2 || shape[1] as usize != embed_dim {
        return Err(ModelError::BadOutput(format!("output {name} has shape {shape:?}, expected [batch, {embed_dim}]")));
    }
    if shape[0] as usize != rows || data.len() != rows * embed_dim {
        return Err(ModelError::BadOutput(format!("output {name} has {} rows for {rows} inputs", shape[0])));
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::BadOutput(format!("row {} of {name} holds {}", i / embed_dim + 1, data[i])));
    }
    Ok(())
}

impl EmbeddingBackend for LocalModel {
    fn manifest(&self) -> &crate::model::Manifest {
        &self.verified.manifest
    }

    fn manifest_sha256(&self) -> &str {
        &self.verified.manifest_sha256
    }

    fn model_dir(&self) -> &Path {
        &self.verified.dir
    }

    fn tokenizer(&self) -> Result<&TextTokenizer, ModelError> {
        Ok(&self.tokenizer)
    }

    fn preprocess(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    fn embed_rgb(&mut self, rgb: &[u8], count: usize, output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        let s = self.preprocess.image_size;
        if rgb.len() != count * 3 * s * s {
            return Err(ModelError::Runtime(format!("expected {count} images of {s}x{s} RGB, got {} bytes", rgb.len())));
        }
        let mut pixels = Vec::with_capacity(rgb.len());
        for image in rgb.chunks_exact(3 * s * s) {
            crate::preprocess::normalize_chw(image, s, &self.preprocess, &mut pixels);
        }
        self.embed_images(&pixels, count, output, interrupt)
    }

    fn embed_token_ids(&mut self, sequences: &[Vec<u32>], output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        // Pad to the longest member only; the attention mask hides the padding.
        self.embed_token_ids_padded(sequences, 0, output, interrupt)
    }
}

impl LocalModel {
    /// Embeds normalized CHW f32 tensors, back to back.
    pub fn embed_images(&mut self, pixels: &[f32], count: usize, output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        let s = self.preprocess.image_size;
        if pixels.len() != count * 3 * s * s {
            return Err(ModelError::Runtime(format!("expected {count} images of 3x{s}x{s}, got {} values", pixels.len())));
        }
        let tensor = Tensor::from_array(([count, 3, s, s], pixels.to_vec())).map_err(|e| ModelError::Runtime(e.to_string()))?;
        let name = self.verified.manifest.image.input.clone();
        let (output_name, width) = self.verified.manifest.output(Tower::Image, output)?;
        let output_name = output_name.to_string();
        run_watched(&self.image, vec![(name, tensor.into_dyn())], pixels.len(), &output_name, output, count, width, interrupt)
    }

    /// Token batches padded to at least `min_len` (open_clip pads every text to the context
    /// length; the benchmark compares that with length-aware batching).
    pub fn embed_token_ids_padded(&mut self, sequences: &[Vec<u32>], min_len: usize, output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        let longest = sequences.iter().map(Vec::len).max().unwrap_or(0).max(min_len);
        let mut ids = Vec::with_capacity(sequences.len() * longest);
        let mut mask = Vec::with_capacity(sequences.len() * longest);
        for seq in sequences {
            ids.extend(seq.iter().map(|&t| t as i64));
            mask.extend(std::iter::repeat_n(1i64, seq.len()));
            ids.extend(std::iter::repeat_n(0i64, longest - seq.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - seq.len()));
        }
        let shape = [sequences.len(), longest];
        let e = |e: ort::Error| ModelError::Runtime(e.to_string());
        let t = &self.verified.manifest.text;
        let inputs = vec![
            (t.input_ids.clone(), Tensor::from_array((shape, ids)).map_err(e)?.into_dyn()),
            (t.attention_mask.clone(), Tensor::from_array((shape, mask)).map_err(e)?.into_dyn()),
        ];
        let (output_name, width) = self.verified.manifest.output(Tower::Text, output)?;
        let output_name = output_name.to_string();
        // A token costs about as much activation memory as 1,000 pixel values (BERT-base).
        run_watched(&self.text, inputs, shape[0] * shape[1] * 1000, &output_name, output, sequences.len(), width, interrupt)
    }
}
