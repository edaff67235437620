//! The de-identified query log: the HMAC key (a file of the server, never a table), the log row
//! each search writes when `biomedclip.query_log` is on, and `biomedclip_feedback`.
//! Rows are written as the extension's owner (callers have no privilege on the log tables), and
//! only with what these functions computed: a caller cannot forge another role's row.

use crate::extension_owner::{as_extension_owner, current_role_name, extension_info};
use crate::model_cache::raise;
use crate::settings;
use biomedclip_core::query_log::{KEY_BYTES, MIN_KEY_BYTES};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;
use std::cell::RefCell;
use std::io::{Read, Write};

thread_local! {
    static KEY: RefCell<Option<(String, Vec<u8>)>> = const { RefCell::new(None) };
}

fn key_path() -> String {
    settings::path_setting(&settings::QUERY_LOG_KEY_FILE, "biomedclip.query_log_key_file").unwrap_or_else(|| {
        let dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir).to_string_lossy().into_owned() };
        format!("{dir}/biomedclip_query_log.key")
    })
}

/// Reads the key, creating it (0600, 32 random bytes) the first time; the first backend to
/// create it wins and the others read what it wrote.
fn read_or_create_key(path: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            let mut key = vec![0u8; KEY_BYTES];
            std::fs::File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut key)).map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
            f.write_all(&key).and_then(|_| f.sync_all()).map_err(|e| format!("cannot write the query log key: {e}"))?;
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create the query log key: {e}")),
    }
    // Another backend may be writing it right now: a short key is retried briefly.
    for _ in 0..50 {
        let key = std::fs::read(path).map_err(|e| format!("cannot read the query log key: {e}"))?;
        if key.len() >= MIN_KEY_BYTES {
            return Ok(key);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(format!("the query log key holds fewer than {MIN_KEY_BYTES} bytes"))
}

/// The HMAC key (cached per backend and path; the path is not in the message: it is a file of
/// the server).
pub fn key() -> Vec<u8> {
    let path = key_path();
    KEY.with(|cell| {
        if let Some((p, k)) = cell.borrow().as_ref() {
            if *p == path {
                return k.clone();
            }
        }
        let k = read_or_create_key(&path).unwrap_or_else(|e| raise(ERRCODE_CONFIG_FILE_ERROR, format!("biomedclip.query_log_key_file: {e}")));
        *cell.borrow_mut() = Some((path, k.clone()));
        k
    })
}

/// One search, as the log keeps it.
pub struct LoggedSearch<'a> {
    pub collection: &'a str,
    pub model_sha256: Option<String>,
    pub adapter: Option<String>,
    pub query_kind: &'a str,
    pub query_hmac: String,
    pub k: i32,
    pub filter_columns: Vec<String>,
    pub result_ids: Vec<String>,
    pub distances: Vec<f64>,
    pub latency_ms: f64,
}

/// Writes the log row (as the extension's owner) and returns its query_id.
pub fn write(entry: LoggedSearch) -> i64 {
    let ext = extension_info();
    let role = current_role_name();
    let id = as_extension_owner(ext.owner, || {
        Spi::get_one_with_args::<i64>(
            "INSERT INTO biomedclip.query_log (collection, role, model_sha256, adapter, query_kind, query_hmac, k, filter_columns, result_ids, distances, latency_ms) \
             VALUES ($1, $2, $3, $11, $4, $5, $6, $7, $8, $9, $10) RETURNING query_id",
            &[
                entry.collection.into(),
                role.as_str().into(),
                entry.model_sha256.into(),
                entry.query_kind.into(),
                entry.query_hmac.into(),
                entry.k.into(),
                entry.filter_columns.into(),
                entry.result_ids.into(),
                entry.distances.into(),
                entry.latency_ms.into(),
                entry.adapter.into(),
            ],
        )
    });
    match id {
        Ok(Some(id)) => id,
        _ => error!("could not write biomedclip.query_log"),
    }
}

const ACTIONS: [&str; 5] = ["click", "relevant", "wrong", "correction", "flag"];

#[pg_extern(sql = false)]
fn biomedclip_feedback(query_id: Option<i64>, result_id: Option<&str>, action: Option<&str>, note: Option<&str>) -> i64 {
    let (Some(query_id), Some(result_id), Some(action)) = (query_id, result_id, action) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "query_id, result_id and action are required".into());
    };
    if !ACTIONS.contains(&action) {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("unknown feedback action \"{action}\" (one of {})", ACTIONS.join(", ")));
    }
    let ext = extension_info();
    let role = current_role_name();
    // Read as the owner, but only this role's own searches are found: another role's query_id
    // gets the same answer as a query_id that does not exist.
    let logged = as_extension_owner(ext.owner, || {
        Spi::get_one_with_args::<Vec<String>>(
            "SELECT l.result_ids FROM biomedclip.query_log l WHERE l.query_id OPERATOR(pg_catalog.=) $1 AND l.role OPERATOR(pg_catalog.=) $2",
            &[query_id.into(), role.as_str().into()],
        )
    });
    let Ok(Some(results)) = logged else {
        raise(ERRCODE_UNDEFINED_OBJECT, format!("no logged search {query_id} of the current role"));
    };
    let rank = results.iter().position(|r| r == result_id).map(|i| i as i32 + 1);
    if rank.is_none() && action != "correction" {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, format!("\"{result_id}\" is not a result of search {query_id} (only a correction may name another id)"));
    }
    let keep_note = settings::QUERY_LOG_NOTES.get();
    if note.is_some() && !keep_note {
        crate::report_held::held(|| notice!("the feedback's note was not stored (biomedclip.query_log_notes is off)"));
    }
    let note = note.filter(|_| keep_note);
    let id = as_extension_owner(ext.owner, || {
        Spi::get_one_with_args::<i64>(
            "INSERT INTO biomedclip.query_feedback (query_id, role, result_id, result_rank, action, note) VALUES ($1, $2, $3, $4, $5, $6) RETURNING feedback_id",
            &[query_id.into(), role.as_str().into(), result_id.into(), rank.into(), action.into(), note.into()],
        )
    });
    match id {
        Ok(Some(id)) => id,
        _ => error!("could not write biomedclip.query_feedback"),
    }
}
