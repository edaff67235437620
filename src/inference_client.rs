//! The backend's side of the shared inference service (`crates/biomedclip-inference`): one Unix
//! socket connection per backend, opened on the first model call, to the service that the
//! supervisor worker (src/inference_supervisor.rs) keeps running.
//!
//! Decoding, DICOM rendering, slide tiling and tokenization stay here, under this backend's
//! limits; only the model's 8-bit image views and token ids travel. The tokenizer and the
//! manifest come from the service at connect time, and this backend checks their hashes itself.
//!
//! Waiting: the socket is polled every few milliseconds alongside PostgreSQL's interrupt flags.
//! A cancel, statement timeout or termination sends `Cancel` for the request and returns at once
//! (PostgreSQL then raises its own error); a late answer to an abandoned request is skipped. If
//! the service dies, the wait ends with an ERROR ("the inference service stopped"), never a hang.

use biomedclip_core::model::{sha256_hex, Manifest, ModelError, Output, Tower};
use biomedclip_core::preprocess::PreprocessConfig;
use biomedclip_core::runtime::{EmbeddingBackend, Interrupt};
use biomedclip_core::service_protocol::{self as proto, ErrorKind, ModelDescription, Request, Response, ServiceError};
use biomedclip_core::tokenize::TextTokenizer;
use std::cell::OnceCell;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a call waits for the service to come up (it may be loading the model) or to have
/// room, before its ERROR.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// How often the wait looks at PostgreSQL's interrupt flags.
const POLL_MS: i32 = 2;

pub struct ServiceClient {
    stream: UnixStream,
    pub pid: u32,
    pub description: ModelDescription,
    manifest: Manifest,
    preprocess: PreprocessConfig,
    tokenizer: OnceCell<TextTokenizer>,
    next_id: u64,
}

fn unavailable(message: impl Into<String>) -> ModelError {
    ModelError::ServiceUnavailable { busy: false, message: message.into() }
}

fn remote(e: ServiceError) -> ModelError {
    match e.kind {
        ErrorKind::Busy => ModelError::ServiceUnavailable { busy: true, message: e.message },
        ErrorKind::ModelLoad => ModelError::Remote { code: e.code, message: e.message },
        ErrorKind::BadOutput => ModelError::BadOutput(e.message),
        ErrorKind::Cancelled => ModelError::Interrupted,
        _ => ModelError::Runtime(format!("inference service: {}", e.message)),
    }
}

/// Waits until `fd` is readable (or hung up), polling `interrupt`. `Ok(false)`: interrupted.
fn wait_readable(fd: i32, interrupt: &Interrupt, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        if interrupt.is_pending() {
            return Ok(false);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from the inference service"));
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else if n > 0 {
            return Ok(true);
        }
    }
}

fn read_response(stream: &mut UnixStream) -> Result<Response, ModelError> {
    let lost = |e: io::Error| unavailable(format!("the inference service stopped during the request (it is restarted automatically; retry): {e}"));
    match proto::read_frame(stream).map_err(lost)? {
        None => Err(unavailable("the inference service stopped during the request (it is restarted automatically; retry)")),
        Some(body) => Response::decode(&body).map_err(|e| ModelError::Runtime(format!("inference service: {e}"))),
    }
}

impl ServiceClient {
    /// Connects (waiting, interruptibly, for a service that is starting) and reads what it runs.
    pub fn connect(interrupt: &Interrupt) -> Result<ServiceClient, ModelError> {
        let path = format!("{}/{}", proto::SOCKET_DIR, proto::SOCKET_NAME);
        let start = Instant::now();
        let mut stream = loop {
            match UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < CONNECT_WAIT => {
                    if interrupt.is_pending() {
                        return Err(ModelError::Interrupted);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "the inference service is not running ({e}); see the server log, or SET biomedclip.inference = backend"
                    )))
                }
            }
        };
        let hello = Request::Hello { version: proto::PROTOCOL_VERSION }.encode().map_err(|e| ModelError::Runtime(e.to_string()))?;
        proto::write_frame(&mut stream, &hello).map_err(|e| unavailable(format!("cannot reach the inference service: {e}")))?;
        if !wait_readable(stream.as_raw_fd(), interrupt, Some(Instant::now() + CONNECT_WAIT)).map_err(|e| unavailable(e.to_string()))? {
            return Err(ModelError::Interrupted);
        }
        let (pid, model) = match read_response(&mut stream)? {
            Response::Welcome { pid, model } => (pid, model),
            other => return Err(ModelError::Runtime(format!("inference service: unexpected answer {other:?}"))),
        };
        let description = model.map_err(remote)?;
        // What travelled is checked here, not trusted: the manifest is the one named, and the
        // tokenizer is the one the manifest names.
        if sha256_hex(&description.manifest_json) != description.manifest_sha256 {
            return Err(ModelError::Runtime("inference service: the manifest does not match its SHA-256".into()));
        }
        let manifest: Manifest = serde_json::from_slice(&description.manifest_json).map_err(|e| ModelError::BadManifest(e.to_string()))?;
        let tokenizer_sha = manifest.files.get(biomedclip_core::model::TOKENIZER).cloned().unwrap_or_default();
        if sha256_hex(&description.tokenizer_json) != tokenizer_sha.to_ascii_lowercase() {
            return Err(ModelError::Runtime("inference service: tokenizer.json does not match the manifest".into()));
        }
        let preprocess = PreprocessConfig { image_size: manifest.image.size, mean: manifest.image.mean, std: manifest.image.std };
        Ok(ServiceClient { stream, pid, description, manifest, preprocess, tokenizer: OnceCell::new(), next_id: 1 })
    }

    /// Whether the connection still looks usable (the service has not closed it meanwhile).
    pub fn is_alive(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        // Nothing is ever unsolicited except a late answer to an abandoned request; a hang-up
        // or an end of stream means the service went away.
        if n == 0 {
            return true;
        }
        let mut byte = [0u8; 1];
        let peeked = unsafe { libc::recv(self.stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        peeked > 0
    }

    /// Sends `request` and waits for its answer, skipping late answers to abandoned requests.
    fn call(&mut self, build: impl FnOnce(u64) -> Request, width: usize, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        if interrupt.is_pending() {
            return Err(ModelError::Interrupted);
        }
        let id = self.next_id;
        self.next_id += 1;
        let frame = build(id).encode().map_err(|e| ModelError::Runtime(e.to_string()))?;
        let started = Instant::now();
        loop {
            proto::write_frame(&mut self.stream, &frame)
                .map_err(|e| unavailable(format!("the inference service stopped (it is restarted automatically; retry): {e}")))?;
            match self.answer(id, width, interrupt)? {
                Ok(rows) => return Ok(rows),
                // Full: wait a little (interruptibly) and offer the request again.
                Err(ModelError::ServiceUnavailable { busy: true, message }) => {
                    if started.elapsed() >= CONNECT_WAIT {
                        return Err(ModelError::ServiceUnavailable { busy: true, message });
                    }
                    let until = Instant::now() + Duration::from_millis(20);
                    while Instant::now() < until {
                        if interrupt.is_pending() {
                            return Err(ModelError::Interrupted);
                        }
                        std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The answer to request `id`: the rows (of `width` values), or the error the service gave.
    fn answer(&mut self, id: u64, width: usize, interrupt: &Interrupt) -> Result<Result<Vec<Vec<f32>>, ModelError>, ModelError> {
        loop {
            let readable = wait_readable(self.stream.as_raw_fd(), interrupt, None).map_err(|e| unavailable(e.to_string()))?;
            if !readable {
                // Tell the service to drop the request; its late answer is skipped next time.
                if let Ok(cancel) = (Request::Cancel { id }).encode() {
                    let _ = proto::write_frame(&mut self.stream, &cancel);
                }
                return Err(ModelError::Interrupted);
            }
            match read_response(&mut self.stream)? {
                Response::Embeddings { id: got, model_sha256, dim, values } if got == id => {
                    if model_sha256 != self.description.manifest_sha256 {
                        return Err(ModelError::Runtime(format!(
                            "inference service answered with model {model_sha256}, not {}; refusing the result",
                            self.description.manifest_sha256
                        )));
                    }
                    if dim as usize != width {
                        return Err(ModelError::BadOutput(format!("{dim} values per row, expected {width}")));
                    }
                    return Ok(Ok(values.chunks_exact(dim as usize).map(<[f32]>::to_vec).collect()));
                }
                Response::Failed { id: got, error } if got == id => return Ok(Err(remote(error))),
                // An answer to a request this backend abandoned (cancelled) earlier.
                Response::Embeddings { .. } | Response::Failed { .. } => continue,
                other => return Err(ModelError::Runtime(format!("inference service: unexpected answer {other:?}"))),
            }
        }
    }

    fn checked_rows(rows: Vec<Vec<f32>>, expected: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        if rows.len() != expected {
            return Err(ModelError::BadOutput(format!("{} rows for {expected} inputs", rows.len())));
        }
        if let Some(x) = rows.iter().flatten().find(|x| !x.is_finite()) {
            return Err(ModelError::BadOutput(format!("the service returned {x}")));
        }
        Ok(rows)
    }

    /// The service's counters (queue depth, batches, items), as JSON.
    pub fn status(&mut self, interrupt: &Interrupt) -> Result<serde_json::Value, ModelError> {
        let frame = Request::Status.encode().map_err(|e| ModelError::Runtime(e.to_string()))?;
        proto::write_frame(&mut self.stream, &frame).map_err(|e| unavailable(e.to_string()))?;
        loop {
            if !wait_readable(self.stream.as_raw_fd(), interrupt, None).map_err(|e| unavailable(e.to_string()))? {
                return Err(ModelError::Interrupted);
            }
            match read_response(&mut self.stream)? {
                Response::Status { json } => return serde_json::from_str(&json).map_err(|e| ModelError::Runtime(e.to_string())),
                Response::Embeddings { .. } | Response::Failed { .. } => continue,
                other => return Err(ModelError::Runtime(format!("inference service: unexpected answer {other:?}"))),
            }
        }
    }
}

impl EmbeddingBackend for ServiceClient {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn manifest_sha256(&self) -> &str {
        &self.description.manifest_sha256
    }

    /// Built on first use: a session that only embeds images never parses the tokenizer.
    fn tokenizer(&self) -> Result<&TextTokenizer, ModelError> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t);
        }
        let sha = self.manifest.files.get(biomedclip_core::model::TOKENIZER).map_or("", String::as_str);
        if let Some(t) = crate::tokenizer_preload::matching(sha, self.manifest.text.context_length) {
            return Ok(t);
        }
        let t = TextTokenizer::from_bytes(&self.description.tokenizer_json, self.manifest.text.context_length)
            .map_err(|e| ModelError::BadManifest(format!("tokenizer.json: {e}")))?;
        Ok(self.tokenizer.get_or_init(|| t))
    }

    fn preprocess(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// The service's model directory, whose manifest this backend verified.
    fn model_dir(&self) -> &Path {
        Path::new(&self.description.model_dir)
    }

    fn embed_rgb(&mut self, rgb: &[u8], count: usize, output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        let width = self.manifest.output(Tower::Image, output)?.1;
        let size = self.preprocess.image_size;
        let model_sha256 = self.description.manifest_sha256.clone();
        let rgb = rgb.to_vec();
        let rows = self.call(|id| Request::Images { id, model_sha256, output, size: size as u32, count: count as u32, rgb }, width, interrupt)?;
        Self::checked_rows(rows, count)
    }

    fn embed_token_ids(&mut self, sequences: &[Vec<u32>], output: Output, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
        let width = self.manifest.output(Tower::Text, output)?.1;
        let model_sha256 = self.description.manifest_sha256.clone();
        let sequences = sequences.to_vec();
        let n = sequences.len();
        let rows = self.call(|id| Request::Texts { id, model_sha256, output, sequences }, width, interrupt)?;
        Self::checked_rows(rows, n)
    }
}
