//! `biomedclip-inference`: runs the BiomedCLIP model once for a whole PostgreSQL server.
//!
//! Started (and restarted when it dies or the settings change) by the extension's supervisor
//! background worker, with the data directory as its working directory. It is not a child of
//! the postmaster and never touches PostgreSQL's shared memory, so a crash here (ONNX Runtime, a
//! GPU driver) costs the requests in flight an ERROR, not every session of the cluster.
//!
//! It loads and verifies the model exactly as backend mode does (every file's SHA-256 against
//! the manifest, the optional pin), then listens on `biomedclip_inference/service.sock`; the
//! directory is 0700, and a peer whose uid is not this process's is refused. No other socket is
//! ever opened.
//!
//! Usage: biomedclip-inference --model-dir DIR --ort-library FILE [--threads N] [--lanes N]
//!        [--provider cpu|cuda|auto] [--pin SHA256] [--max-batch-images N] [--max-batch-tokens N]
//!
//! Lanes: batches run on `lanes` copies of the sessions at the same time (default 1), each with
//! threads / lanes ONNX Runtime threads; each lane holds its own copy of the weights (ONNX
//! Runtime shares the prepacked-weights container, but keeps each session's initializers). On 2
//! cores two single-threaded lanes measured the same images/s and texts/s as one lane of two
//! threads (benches/inference/service_results.md); lanes are for machines with many cores,
//! where one thread pool over all of them is inefficient at small batches.

mod scheduler;
mod service;

use biomedclip_core::model::ModelError;
use biomedclip_core::runtime::{self, LocalModel, Provider, RuntimeConfig};
use biomedclip_core::service_protocol::{self as proto, ErrorKind, ModelDescription, ServiceError};
use scheduler::Scheduler;
use service::{Counters, Shared};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

struct Options {
    model_dir: Option<PathBuf>,
    ort_library: Option<PathBuf>,
    threads: usize,
    lanes: usize,
    provider: Provider,
    pin: Option<String>,
    max_images: usize,
    max_tokens: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options { model_dir: None, ort_library: None, threads: 1, lanes: 1, provider: Provider::Cpu, pin: None, max_images: 32, max_tokens: 8192 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--model-dir" => o.model_dir = (!value.is_empty()).then(|| PathBuf::from(value)),
            "--ort-library" => o.ort_library = (!value.is_empty()).then(|| PathBuf::from(value)),
            "--threads" => o.threads = number(&value)?.max(1),
            "--lanes" => o.lanes = number(&value)?.max(1),
            "--provider" => {
                o.provider = match value.as_str() {
                    "cpu" => Provider::Cpu,
                    "cuda" => Provider::Cuda,
                    "auto" => Provider::Auto,
                    other => return Err(format!("--provider: {other} is not cpu, cuda or auto")),
                }
            }
            "--pin" => o.pin = (!value.is_empty()).then_some(value),
            "--max-batch-images" => o.max_images = number(&value)?,
            "--max-batch-tokens" => o.max_tokens = number(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Options {
    /// (lanes, threads per lane): never more lanes than threads.
    fn lanes(&self) -> (usize, usize) {
        let lanes = self.lanes.clamp(1, self.threads);
        (lanes, (self.threads / lanes).max(1))
    }
}

fn load(o: &Options) -> Result<(Vec<LocalModel>, ModelDescription), ModelError> {
    let dir = o.model_dir.clone().ok_or(ModelError::NoModelDir)?;
    let library = o.ort_library.clone().ok_or_else(|| ModelError::Runtime("biomedclip.ort_library is not set (path of libonnxruntime.so)".into()))?;
    runtime::init_ort(&library)?;
    let (lanes, threads) = o.lanes();
    let cfg = RuntimeConfig { intra_op_threads: threads, provider: o.provider, pinned_sha256: o.pin.clone() };
    let models = LocalModel::load_lanes(&dir, &cfg, lanes)?;
    let model = &models[0];
    let (ort_library, ort_library_sha256) = runtime::loaded_ort_library().map(|(p, s)| (p.display().to_string(), s)).unwrap_or_default();
    let description = ModelDescription {
        model_dir: dir.display().to_string(),
        manifest_sha256: model.verified.manifest_sha256.clone(),
        manifest_json: model.verified.manifest_bytes.clone(),
        tokenizer_json: model.verified.tokenizer_json.clone(),
        provider_in_use: model.provider_in_use.clone(),
        provider_fallback: model.provider_fallback.clone().unwrap_or_default(),
        ort_library,
        ort_library_sha256,
        loaded_at: now_utc(),
    };
    Ok((models, description))
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe { libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len) };
    (rc == 0).then_some(cred.uid)
}

fn listen(dir: &Path) -> std::io::Result<UnixListener> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(proto::SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn main() {
    // Everything this process creates is private to its user.
    unsafe { libc::umask(0o077) };
    // A segmentation fault or bus error ends this process, however it arrives. Rust's own
    // handler (for stack-overflow messages) returns from a SIGSEGV that was sent rather than
    // faulted, and the process would go on in an unknown state; the supervisor restarts a dead
    // service in well under a second, and backends get an ERROR.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("biomedclip-inference: {e}");
            std::process::exit(2);
        }
    };
    let started = std::time::Instant::now();
    let (models, description) = match load(&options) {
        Ok((m, d)) => {
            eprintln!(
                "biomedclip-inference: pid {} serving model manifest sha256 {} on {} in {} lane(s) of {} thread(s) ({:.0} ms to load)",
                std::process::id(),
                d.manifest_sha256,
                d.provider_in_use,
                m.len(),
                options.lanes().1,
                started.elapsed().as_secs_f64() * 1e3
            );
            (m, Ok(d))
        }
        Err(e) => {
            // Stay up and tell every backend why (the SQLSTATE backend mode would give), rather
            // than crash-looping; the supervisor restarts this process when the settings change.
            eprintln!("biomedclip-inference: cannot load the model: {e}");
            (Vec::new(), Err(ServiceError { kind: ErrorKind::ModelLoad, code: proto::model_error_code(&e), message: e.to_string() }))
        }
    };
    let image_size = models.first().map_or(0, |m| m.verified.manifest.image.size);
    let lanes = models.len().max(1);
    let shared = Arc::new(Shared {
        scheduler: Mutex::new(Scheduler::new(lanes, options.max_images, options.max_tokens, 64 * options.max_images.max(1))),
        work: Condvar::new(),
        writers: Mutex::new(HashMap::new()),
        abandon: (0..lanes).map(|_| AtomicBool::new(false)).collect(),
        counters: Counters::default(),
        model: description,
        started,
        image_size,
    });
    let listener = match listen(Path::new(proto::SOCKET_DIR)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("biomedclip-inference: cannot listen on {}/{}: {e}", proto::SOCKET_DIR, proto::SOCKET_NAME);
            std::process::exit(1);
        }
    };
    for (lane, model) in models.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("lane-{lane}"))
            .spawn(move || service::run_batches(shared, lane, model))
            .expect("the runner thread starts");
    }
    let me = unsafe { libc::getuid() };
    let mut next_conn = 0u64;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if peer_uid(&stream) != Some(me) {
            continue; // dropped: only the server's own processes may ask
        }
        next_conn += 1;
        let (shared, conn) = (Arc::clone(&shared), next_conn);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{conn}"))
            .stack_size(256 << 10)
            .spawn(move || service::serve_connection(shared, conn, stream));
        if let Err(e) = spawned {
            eprintln!("biomedclip-inference: cannot start a connection thread: {e}");
        }
    }
}
