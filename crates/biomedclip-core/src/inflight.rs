//! Threads that run ONNX Runtime on behalf of the calling process, and how the process waits for
//! them before it exits.
//!
//! A model load or an inference run happens on its own thread (signals blocked) while the caller
//! polls for interrupts. An interrupted caller returns at once; the thread is told to stop (runs
//! through ORT's terminate flag, loads are simply abandoned) and finishes on its own. Such a
//! thread must never still be inside ONNX Runtime when the process exits: library destructors
//! would run under it and the process could die from a signal, which PostgreSQL answers by
//! restarting every session. [`shutdown`] (called from PostgreSQL's proc-exit hook) terminates
//! every run still in flight and joins the threads, with a bounded wait.

use ort::session::RunOptions;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct InFlight {
    handle: JoinHandle<()>,
    /// Set for inference runs; a load cannot be stopped early and is simply waited for.
    options: Option<Arc<RunOptions>>,
}

static IN_FLIGHT: Mutex<Vec<InFlight>> = Mutex::new(Vec::new());

/// Keeps `handle` until it finishes or [`shutdown`] joins it.
pub(crate) fn track(handle: JoinHandle<()>, options: Option<Arc<RunOptions>>) {
    let mut list = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    // Finished threads are joined here so that the list stays short.
    let mut i = 0;
    while i < list.len() {
        if list[i].handle.is_finished() {
            let done = list.swap_remove(i);
            let _ = done.handle.join();
        } else {
            i += 1;
        }
    }
    list.push(InFlight { handle, options });
}

/// How many tracked threads have not finished (for tests and `biomedclip_model_info`).
pub fn pending() -> usize {
    IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|t| !t.handle.is_finished()).count()
}

/// Terminates the runs still in flight and joins every tracked thread, waiting at most `limit`.
/// Returns the number of threads still running when the wait ended (0 in every measured case).
pub fn shutdown(limit: Duration) -> usize {
    let list = std::mem::take(&mut *IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()));
    for t in &list {
        if let Some(options) = &t.options {
            let _ = options.terminate();
        }
    }
    let deadline = Instant::now() + limit;
    let mut left = 0;
    for t in list {
        while !t.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.handle.is_finished() {
            let _ = t.handle.join();
        } else {
            left += 1;
        }
    }
    left
}
