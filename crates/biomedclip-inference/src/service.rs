//! Connections and the batch runner.
//!
//! One thread per connection reads its requests (a backend sends one at a time) and hands them
//! to the [`Scheduler`]; one runner thread per lane (a copy of the model's sessions) takes
//! batches off it, runs them, and writes each backend its rows. A backend's `Cancel`, or its
//! connection closing, drops its queued work; a running batch is terminated (through ONNX
//! Runtime's terminate flag) only when every request in it has been cancelled.

use crate::scheduler::{Cancelled, Job, Payload, Refusal, Scheduler};
use biomedclip_core::batching;
use biomedclip_core::model::ModelError;
use biomedclip_core::runtime::{EmbeddingBackend, Interrupt, LocalModel};
use biomedclip_core::service_protocol::{self as proto, ErrorKind, ModelDescription, Request, Response, ServiceError};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub batches: AtomicU64,
    pub images: AtomicU64,
    pub texts: AtomicU64,
    pub requests: AtomicU64,
    pub cancelled: AtomicU64,
    pub terminated_batches: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Shared {
    pub scheduler: Mutex<Scheduler>,
    pub work: Condvar,
    /// Writers, by connection id.
    pub writers: Mutex<HashMap<u64, Arc<Mutex<UnixStream>>>>,
    /// Per lane: set when every request of the batch it runs was cancelled (the run is terminated).
    pub abandon: Vec<AtomicBool>,
    pub counters: Counters,
    /// The model, or why it could not be loaded (every connection is told).
    pub model: Result<ModelDescription, ServiceError>,
    pub started: std::time::Instant,
    /// The side of the image views the model takes (from its manifest, read once at load).
    pub image_size: usize,
}

fn send(writer: &Arc<Mutex<UnixStream>>, response: &Response) {
    if let Ok(frame) = response.encode() {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        // A backend that went away is not an error of the service.
        let _ = w.write_all(&frame).and_then(|_| w.flush());
    }
}

fn failed(id: u64, kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Failed { id, error: ServiceError { kind, code: 0, message: message.into() } }
}

fn status_json(shared: &Shared) -> String {
    let c = &shared.counters;
    let s = shared.scheduler.lock().unwrap_or_else(|p| p.into_inner());
    serde_json::json!({
        "pid": std::process::id(),
        "uptime_s": shared.started.elapsed().as_secs_f64(),
        "queue_requests": s.queued_requests(),
        "queue_items": s.queued_items(),
        "lanes": shared.abandon.len(),
        "running_requests": s.running_requests(),
        "max_batch_images": s.max_images,
        "max_batch_tokens": s.max_tokens,
        "connections": shared.writers.lock().map(|w| w.len()).unwrap_or(0),
        "connections_total": c.connections.load(Ordering::Relaxed),
        "requests": c.requests.load(Ordering::Relaxed),
        "batches": c.batches.load(Ordering::Relaxed),
        "images": c.images.load(Ordering::Relaxed),
        "texts": c.texts.load(Ordering::Relaxed),
        "cancelled_requests": c.cancelled.load(Ordering::Relaxed),
        "terminated_batches": c.terminated_batches.load(Ordering::Relaxed),
        "errors": c.errors.load(Ordering::Relaxed),
    })
    .to_string()
}

/// Serves one backend until it closes the connection (or breaks the protocol).
pub fn serve_connection(shared: Arc<Shared>, conn: u64, stream: UnixStream) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(write_half));
    shared.writers.lock().unwrap_or_else(|p| p.into_inner()).insert(conn, Arc::clone(&writer));
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let mut reader = stream;
    let mut greeted = false;
    loop {
        let body = match proto::read_frame(&mut reader) {
            Ok(Some(body)) => body,
            Ok(None) | Err(_) => break,
        };
        let request = match Request::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                send(&writer, &failed(0, ErrorKind::Protocol, e.to_string()));
                break;
            }
        };
        match request {
            Request::Hello { version } => {
                if version != proto::PROTOCOL_VERSION {
                    send(
                        &writer,
                        &failed(0, ErrorKind::Protocol, format!("protocol version {version}, the service speaks {}", proto::PROTOCOL_VERSION)),
                    );
                    break;
                }
                greeted = true;
                send(&writer, &Response::Welcome { pid: std::process::id(), model: shared.model.clone() });
            }
            Request::Status => send(&writer, &Response::Status { json: status_json(&shared) }),
            Request::Cancel { id } => {
                let mut s = shared.scheduler.lock().unwrap_or_else(|p| p.into_inner());
                match s.cancel(conn, id) {
                    Cancelled::Dequeued => {
                        shared.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                        drop(s);
                        send(&writer, &failed(id, ErrorKind::Cancelled, "cancelled"));
                    }
                    Cancelled::Running { lane, batch_all_cancelled } => {
                        shared.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                        if batch_all_cancelled {
                            shared.abandon[lane].store(true, Ordering::SeqCst);
                        }
                    }
                    Cancelled::Unknown => {}
                }
            }
            Request::Images { id, model_sha256, output, size, count, rgb } => {
                let job = Job { conn, id, output, payload: Payload::Images { count: count as usize, rgb } };
                submit(&shared, &writer, greeted, job, &model_sha256, Some(size as usize));
            }
            Request::Texts { id, model_sha256, output, sequences } => {
                submit(&shared, &writer, greeted, Job { conn, id, output, payload: Payload::Texts { sequences } }, &model_sha256, None);
            }
        }
    }
    // Gone: nothing of this backend stays queued, and a batch only it still wanted stops.
    let mut s = shared.scheduler.lock().unwrap_or_else(|p| p.into_inner());
    for lane in s.drop_connection(conn) {
        shared.abandon[lane].store(true, Ordering::SeqCst);
    }
    drop(s);
    shared.writers.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn);
}

fn submit(shared: &Shared, writer: &Arc<Mutex<UnixStream>>, greeted: bool, job: Job, sha: &str, size: Option<usize>) {
    let id = job.id;
    let model = match &shared.model {
        Ok(m) => m,
        Err(e) => return send(writer, &Response::Failed { id, error: e.clone() }),
    };
    if !greeted {
        return send(writer, &failed(id, ErrorKind::Protocol, "a request before Hello"));
    }
    if sha != model.manifest_sha256 {
        return send(
            writer,
            &failed(id, ErrorKind::ModelChanged, format!("the service runs model {}, the request was made for {sha}", model.manifest_sha256)),
        );
    }
    if size.is_some_and(|s| s != shared.image_size) {
        return send(writer, &failed(id, ErrorKind::Protocol, format!("images must be {0}x{0}", shared.image_size)));
    }
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let mut s = shared.scheduler.lock().unwrap_or_else(|p| p.into_inner());
    match s.submit(job) {
        Ok(()) => shared.work.notify_one(),
        Err(Refusal::Full) => {
            drop(s);
            send(writer, &failed(id, ErrorKind::Busy, "the inference service's queue is full; try again"));
        }
        Err(Refusal::SecondRequest) => {
            drop(s);
            send(writer, &failed(id, ErrorKind::Protocol, "a second request while one is in the service"));
        }
    }
}

fn runtime_error(e: &ModelError) -> ServiceError {
    let kind = match e {
        ModelError::BadOutput(_) => ErrorKind::BadOutput,
        ModelError::Interrupted => ErrorKind::Cancelled,
        _ => ErrorKind::Runtime,
    };
    ServiceError { kind, code: proto::model_error_code(e), message: e.to_string() }
}

/// Runs `batch` (all images or all texts, all for the same output); texts are sorted by length and cut by the token
/// budget, so that short texts are not padded to a long one.
fn run_batch(model: &mut LocalModel, batch: &[Job], max_tokens: usize, interrupt: &Interrupt) -> Result<Vec<Vec<f32>>, ModelError> {
    match &batch[0].payload {
        Payload::Images { .. } => {
            let count: usize = batch.iter().map(|j| j.payload.items()).sum();
            let mut rgb = Vec::new();
            for job in batch {
                if let Payload::Images { rgb: r, .. } = &job.payload {
                    rgb.extend_from_slice(r);
                }
            }
            model.embed_rgb(&rgb, count, batch[0].output, interrupt)
        }
        Payload::Texts { .. } => {
            let sequences: Vec<&Vec<u32>> = batch
                .iter()
                .flat_map(|j| match &j.payload {
                    Payload::Texts { sequences } => sequences.iter().collect::<Vec<_>>(),
                    Payload::Images { .. } => Vec::new(),
                })
                .collect();
            let mut order: Vec<usize> = (0..sequences.len()).collect();
            order.sort_by_key(|&i| sequences[i].len());
            let lens: Vec<usize> = order.iter().map(|&i| sequences[i].len()).collect();
            let mut rows = vec![Vec::new(); sequences.len()];
            for range in batching::token_batches(&lens, usize::MAX, max_tokens) {
                let part: Vec<Vec<u32>> = order[range.clone()].iter().map(|&i| sequences[i].clone()).collect();
                for (k, row) in model.embed_token_ids(&part, batch[0].output, interrupt)?.into_iter().enumerate() {
                    rows[order[range.start + k]] = row;
                }
            }
            Ok(rows)
        }
    }
}

/// The runner of one lane: forever takes the next batch, runs it on this lane's model copy,
/// answers each request.
pub fn run_batches(shared: Arc<Shared>, lane: usize, mut model: LocalModel) {
    let sha = model.verified.manifest_sha256.clone();
    loop {
        let (batch, max_tokens) = {
            let mut s = shared.scheduler.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(b) = s.next_batch(lane) {
                    // Reset under the lock: a cancel of this batch (which holds the lock to set
                    // the flag) can only come after.
                    shared.abandon[lane].store(false, Ordering::SeqCst);
                    break (b, s.max_tokens);
                }
                s = shared.work.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        let abandon = || shared.abandon[lane].load(Ordering::SeqCst);
        let interrupt = Interrupt::new(&abandon);
        let result = run_batch(&mut model, &batch, max_tokens, &interrupt);
        shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        let writers: Vec<Option<Arc<Mutex<UnixStream>>>> = {
            let w = shared.writers.lock().unwrap_or_else(|p| p.into_inner());
            batch.iter().map(|j| w.get(&j.conn).cloned()).collect()
        };
        let mut s = shared.scheduler.lock().unwrap_or_else(|p| p.into_inner());
        let cancelled: Vec<bool> = batch.iter().map(|j| s.was_cancelled(lane, j.conn, j.id)).collect();
        s.finish_batch(lane);
        drop(s);
        match result {
            Ok(rows) => {
                let mut rows = rows.into_iter();
                for ((job, writer), cancelled) in batch.iter().zip(&writers).zip(cancelled) {
                    let n = job.payload.items();
                    let part: Vec<Vec<f32>> = rows.by_ref().take(n).collect();
                    let dim = part.first().map_or(1, Vec::len) as u32;
                    let values: Vec<f32> = part.into_iter().flatten().collect();
                    let counter = if matches!(job.payload, Payload::Images { .. }) { &shared.counters.images } else { &shared.counters.texts };
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    let Some(writer) = writer else { continue };
                    if cancelled {
                        send(writer, &failed(job.id, ErrorKind::Cancelled, "cancelled"));
                    } else {
                        send(writer, &Response::Embeddings { id: job.id, model_sha256: sha.clone(), dim, values });
                    }
                }
            }
            Err(e) => {
                if matches!(e, ModelError::Interrupted) {
                    shared.counters.terminated_batches.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("biomedclip-inference: a batch of {} request(s) failed: {e}", batch.len());
                }
                let error = runtime_error(&e);
                for (job, writer) in batch.iter().zip(&writers) {
                    if let Some(writer) = writer {
                        send(writer, &Response::Failed { id: job.id, error: error.clone() });
                    }
                }
            }
        }
    }
}
