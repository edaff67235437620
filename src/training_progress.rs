//! Training runs visible while they run. A run's audit row is written when it commits, with the
//! caller's transaction, so another session cannot see it earlier; instead each running training
//! function keeps a small JSON file, `pg_biomedclip/training/<pid>.json` in the data directory
//! (written to a temporary name and renamed, so a reader never sees half of one), updated at every
//! epoch or solver step and removed when the function returns, fails or is cancelled (the guard's
//! Drop runs as the error unwinds). `biomedclip_training_progress()` lists the files of live
//! backends of this database: which kind, name and role, phase, step, losses and times. It
//! carries no query text, no rows, no weights.

use crate::model_registry::now_utc;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Serialize, Deserialize, Clone)]
struct State {
    pid: i32,
    database: u32,
    kind: String,
    name: String,
    trained_by: String,
    phase: String,
    step: i64,
    steps: i64,
    train_loss: Option<f64>,
    val_loss: Option<f64>,
    started_at_unix: f64,
    updated_at_unix: f64,
}

fn dir() -> PathBuf {
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    PathBuf::from(data_dir).join("pg_biomedclip").join("training")
}

/// The running run of this backend; its file goes when it is dropped.
pub struct Progress {
    state: State,
    path: PathBuf,
    last_write: Option<Instant>,
}

impl Progress {
    /// Starts reporting a run of `kind` named `name` by `trained_by`, of `steps` steps (epochs, or
    /// the solver's iteration limit).
    pub fn start(kind: &str, name: &str, trained_by: &str, steps: usize) -> Progress {
        let pid = unsafe { pg_sys::MyProcPid };
        let now = now_utc().unix;
        let mut p = Progress {
            state: State {
                pid,
                database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
                kind: kind.into(),
                name: name.into(),
                trained_by: trained_by.into(),
                phase: "reading rows".into(),
                step: 0,
                steps: steps as i64,
                train_loss: None,
                val_loss: None,
                started_at_unix: now,
                updated_at_unix: now,
            },
            path: dir().join(format!("{pid}.json")),
            last_write: None,
        };
        p.write();
        p
    }

    /// Reports a phase and step with the latest losses. Solver steps come fast: the file is
    /// rewritten at most every 200 ms unless `force`.
    pub fn update(&mut self, phase: &str, step: usize, train_loss: Option<f64>, val_loss: Option<f64>, force: bool) {
        self.state.phase = phase.into();
        self.state.step = step as i64;
        self.state.train_loss = train_loss.or(self.state.train_loss);
        self.state.val_loss = val_loss.or(self.state.val_loss);
        if force || self.last_write.is_none_or(|t| t.elapsed().as_millis() >= 200) {
            self.write();
        }
    }

    /// Best effort: a run never fails because its progress could not be shown.
    fn write(&mut self) {
        self.state.updated_at_unix = now_utc().unix;
        self.last_write = Some(Instant::now());
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(dir())?;
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&self.state)?)?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            crate::report_held::held(|| pgrx::debug1!("biomedclip: could not write training progress: {e}"));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn timestamp(unix: f64) -> Option<TimestampWithTimeZone> {
    // PostgreSQL's epoch is 2000-01-01 00:00:00 UTC, 946,684,800 s after the Unix epoch.
    let micros = ((unix - 946_684_800.0) * 1e6).round() as i64;
    TimestampWithTimeZone::try_from(micros).ok()
}

#[pg_extern(sql = false)]
fn biomedclip_training_progress() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(kind, String),
        name!(name, String),
        name!(trained_by, String),
        name!(phase, String),
        name!(step, i64),
        name!(steps, i64),
        name!(train_loss, Option<f64>),
        name!(val_loss, Option<f64>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(updated_at, Option<TimestampWithTimeZone>),
    ),
> {
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut rows: Vec<State> = std::fs::read_dir(dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<State>(&bytes).ok())
        // Only this database's, and only live backends' (a killed backend's file stays behind
        // until a later run of that pid replaces it).
        .filter(|s| s.database == db && unsafe { !pg_sys::BackendPidGetProc(s.pid).is_null() })
        .collect();
    rows.sort_by(|a, b| a.started_at_unix.total_cmp(&b.started_at_unix).then(a.pid.cmp(&b.pid)));
    TableIterator::new(rows.into_iter().map(|s| {
        (
            s.pid,
            s.kind,
            s.name,
            s.trained_by,
            s.phase,
            s.step,
            s.steps,
            s.train_loss,
            s.val_loss,
            timestamp(s.started_at_unix),
            timestamp(s.updated_at_unix),
        )
    }))
}
