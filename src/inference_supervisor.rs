//! The supervisor: a background worker, registered when the library is in
//! shared_preload_libraries, that keeps the inference service (`biomedclip-inference`, installed
//! next to the extension's library) running.
//!
//! Why a separate process: in PostgreSQL 15 the death of any postmaster child from a signal
//! makes the postmaster restart every session. ONNX Runtime (and a GPU driver) therefore runs in
//! a process this worker starts with fork + exec: not a postmaster child, no PostgreSQL shared
//! memory, every inherited descriptor closed, killed if this worker dies. When it dies, this
//! worker logs how and starts it again (backing off if it dies again at once); waiting backends
//! get an ERROR from their broken connection.
//!
//! The service is (re)started with the server-level settings: biomedclip.model_dir,
//! ort_library, execution_provider, service_threads, service_lanes, model_sha256,
//! max_batch_images and max_batch_tokens. After a configuration reload that changes any of
//! them, the old service is stopped and a new one started: a backend can never get a result of
//! the old model for a request made for the new one (each answer names its model's manifest
//! SHA-256).

use crate::settings::{self, ExecutionProvider};
use biomedclip_core::service_protocol as proto;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Registers the supervisor (from `_PG_init`, while shared_preload_libraries is processed).
pub fn register() {
    BackgroundWorkerBuilder::new("biomedclip inference supervisor")
        .set_type("biomedclip inference supervisor")
        .set_library("biomedclip")
        .set_function("biomedclip_inference_supervisor_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// The service binary: `$libdir/biomedclip-inference`.
pub fn service_binary() -> std::path::PathBuf {
    let libdir = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::pkglib_path).cast()) };
    std::path::Path::new(&*libdir.to_string_lossy()).join("biomedclip-inference")
}

/// biomedclip.service_threads, or one per CPU core.
fn service_threads() -> usize {
    match settings::SERVICE_THREADS.get() {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }
}

/// The service's command line, from the current settings.
fn service_args() -> Vec<String> {
    let text = |s: Option<String>| s.unwrap_or_default();
    let provider = match settings::EXECUTION_PROVIDER.get() {
        ExecutionProvider::Cpu => "cpu",
        ExecutionProvider::Cuda => "cuda",
        ExecutionProvider::Auto => "auto",
    };
    vec![
        "--model-dir".into(),
        text(settings::path_setting(&settings::MODEL_DIR, "biomedclip.model_dir")),
        "--ort-library".into(),
        text(settings::path_setting(&settings::ORT_LIBRARY, "biomedclip.ort_library")),
        "--threads".into(),
        service_threads().to_string(),
        "--lanes".into(),
        settings::SERVICE_LANES.get().to_string(),
        "--provider".into(),
        provider.into(),
        "--pin".into(),
        text(settings::path_setting(&settings::MODEL_SHA256, "biomedclip.model_sha256")),
        "--max-batch-images".into(),
        settings::MAX_BATCH_IMAGES.get().to_string(),
        "--max-batch-tokens".into(),
        settings::MAX_BATCH_TOKENS.get().to_string(),
    ]
}

fn spawn(args: &[String]) -> std::io::Result<Child> {
    std::fs::create_dir_all(proto::SOCKET_DIR)?;
    std::fs::set_permissions(proto::SOCKET_DIR, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut cmd = Command::new(service_binary());
    cmd.args(args).stdin(Stdio::null());
    unsafe {
        cmd.pre_exec(|| {
            // Dies with this worker; inherits no descriptor of the postmaster (its sockets, the
            // postmaster-death pipe) beyond stdin/stdout/stderr.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd.spawn()
}

/// SIGTERM, then SIGKILL after 5 s, and reap.
fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (_, Some(sig)) => format!("was terminated by signal {sig}"),
        _ => "stopped".into(),
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn biomedclip_inference_supervisor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let mut child: Option<(Child, Vec<String>, Instant)> = None;
    let mut next_start = Instant::now();
    let mut backoff = Duration::from_millis(100);
    // Wakes every 20 ms to notice a dead service quickly (restarted within about a second).
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(20))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let args = service_args();
        match child.take() {
            Some((c, running_args, _)) if running_args != args => {
                pgrx::log!("biomedclip: inference settings changed; restarting the inference service (pid {})", c.id());
                stop(c);
                next_start = Instant::now();
            }
            Some((mut c, running_args, since)) => match c.try_wait() {
                Ok(Some(status)) => {
                    pgrx::log!("biomedclip: the inference service (pid {}) {}; starting it again", c.id(), describe(status));
                    // Dying again soon after a start backs off (up to 1 s); a long life resets it.
                    backoff = if since.elapsed() < Duration::from_secs(10) {
                        (backoff * 2).min(Duration::from_secs(1))
                    } else {
                        Duration::from_millis(100)
                    };
                    next_start = Instant::now() + backoff;
                }
                _ => child = Some((c, running_args, since)),
            },
            None => {}
        }
        if child.is_none() && Instant::now() >= next_start {
            match spawn(&args) {
                Ok(c) => {
                    pgrx::log!("biomedclip: inference service started (pid {})", c.id());
                    child = Some((c, args, Instant::now()));
                }
                Err(e) => {
                    pgrx::log!("biomedclip: cannot start the inference service {}: {e}", service_binary().display());
                    next_start = Instant::now() + Duration::from_secs(5);
                }
            }
        }
    }
    if let Some((c, _, _)) = child {
        stop(c);
    }
}
