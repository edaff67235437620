//! Which model was active when: `biomedclip.models` (one row per model, by manifest SHA-256) and
//! `biomedclip.model_activity` (one row per model and UTC day, with the number of loads).
//!
//! A backend never writes these tables itself. A write inside the caller's statement fails in
//! parallel plans, waits on other sessions' row locks, raises serialization errors under
//! REPEATABLE READ, deadlocks Citus shard tasks, and, run as another user, opened a search_path
//! hijack. Instead a load is
//! 1. written to the server log (LOG: name, version, manifest SHA-256; nothing else), and
//! 2. appended to a spool directory in the data directory (`pg_biomedclip/spool`, one small JSON
//!    file per load, written to a temporary name and renamed), and
//! 3. a dynamic background worker is started for the database. It connects as the owner of
//!    `biomedclip.models`, claims spool files by renaming them, and records each in its own
//!    transaction with fixed, schema-qualified SQL under `search_path = pg_catalog, pg_temp`.
//!
//! A spool file whose worker could not start (no free worker slot) is picked up by the next
//! worker of that database. Standbys only log: they cannot write.

use biomedclip_core::model::Manifest;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// A load time: seconds since the Unix epoch, and its UTC text.
pub struct LoadTime {
    pub unix: f64,
    pub text: String,
}

pub fn now_utc() -> LoadTime {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let text = format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:06}+00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    );
    LoadTime { unix: d.as_secs_f64(), text }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Serialize, Deserialize)]
struct SpoolEntry {
    manifest_sha256: String,
    /// manifest.json as loaded; the worker checks it against `manifest_sha256`.
    manifest: String,
    loaded_at_unix: f64,
}

fn spool_dir() -> PathBuf {
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    PathBuf::from(data_dir).join("pg_biomedclip").join("spool")
}

/// The owner of `biomedclip.models` in this database, from the catalog (no SQL, no search_path).
fn registry_owner() -> Option<pg_sys::Oid> {
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"biomedclip".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let rel = pg_sys::get_relname_relid(c"models".as_ptr(), nsp);
        if rel == pg_sys::InvalidOid {
            return None;
        }
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(rel));
        if tuple.is_null() {
            return None;
        }
        let header = (*tuple).t_data;
        let form = (header as *const u8).add((*header).t_hoff as usize) as *const pg_sys::FormData_pg_class;
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// Logs the load and hands it to the registry worker. Never raises an error: the model is loaded
/// either way, and the server log has the record.
/// Records that this backend uses the model (loaded here, or run by the inference service).
pub fn record_load(m: &Manifest, manifest_bytes: &[u8], manifest_sha256: &str, at: &LoadTime) {
    // Held: the caller owns the model it just loaded, which a cancel here must not leak.
    crate::report_held::held(|| {
        pgrx::log!("biomedclip: using model \"{}\" version \"{}\" ({}), manifest sha256 {}", m.name, m.version, m.precision, manifest_sha256)
    });
    if unsafe { pg_sys::RecoveryInProgress() } {
        return;
    }
    let Some(owner) = registry_owner() else { return };
    let entry = SpoolEntry {
        manifest_sha256: manifest_sha256.to_string(),
        manifest: String::from_utf8_lossy(manifest_bytes).into_owned(),
        loaded_at_unix: at.unix,
    };
    let db = unsafe { pg_sys::MyDatabaseId };
    if let Err(e) = write_spool(db, &entry) {
        crate::report_held::held(|| pgrx::log!("biomedclip: could not spool the model load for biomedclip.models: {e}"));
        return;
    }
    start_worker(db, owner);
}

fn write_spool(db: pg_sys::Oid, entry: &SpoolEntry) -> std::io::Result<()> {
    let dir = spool_dir();
    std::fs::create_dir_all(&dir)?;
    let stamp = (entry.loaded_at_unix * 1e6) as u64;
    let name = format!("{}-{stamp}-{}", db.to_u32(), std::process::id());
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(entry)?)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json")))
}

fn start_worker(db: pg_sys::Oid, owner: pg_sys::Oid) {
    let started = BackgroundWorkerBuilder::new("biomedclip model registry")
        .set_type("biomedclip model registry")
        .set_library("biomedclip")
        .set_function("biomedclip_registry_worker_main")
        .set_argument(Some(pg_sys::Datum::from(db.to_u32() as usize)))
        .set_extra(&owner.to_u32().to_string())
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        crate::report_held::held(|| pgrx::log!("biomedclip: no background worker slot to record the model load now; the next load records it"));
    }
}

const RECORD_MODEL_SQL: &str = "
    INSERT INTO biomedclip.models AS r (manifest_sha256, name, version, precision, files, first_loaded_at, loaded_at, load_count)
    VALUES ($1, $2, $3, $4, $5, pg_catalog.to_timestamp($6), pg_catalog.to_timestamp($6), 1)
    ON CONFLICT (manifest_sha256) DO UPDATE SET
        loaded_at = GREATEST(r.loaded_at, excluded.loaded_at),
        first_loaded_at = LEAST(r.first_loaded_at, excluded.first_loaded_at),
        load_count = r.load_count OPERATOR(pg_catalog.+) 1";

/// The activity row, after the models row (0.2.0 and later; 0.1.0 has no model_activity).
const RECORD_ACTIVITY_SQL: &str = "
INSERT INTO biomedclip.model_activity AS a (manifest_sha256, day, loads, first_at, last_at)
SELECT $1, pg_catalog.timezone('UTC', pg_catalog.to_timestamp($6))::pg_catalog.date, 1,
       pg_catalog.to_timestamp($6), pg_catalog.to_timestamp($6)
FROM m
ON CONFLICT (manifest_sha256, day) DO UPDATE SET
    loads = a.loads OPERATOR(pg_catalog.+) 1,
    first_at = LEAST(a.first_at, excluded.first_at),
    last_at = GREATEST(a.last_at, excluded.last_at)";

/// The registry worker: records this database's spooled loads, then exits.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn biomedclip_registry_worker_main(arg: pg_sys::Datum) {
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    let db = pg_sys::Oid::from(arg.value() as u32);
    let Ok(owner) = BackgroundWorker::get_extra().trim().parse::<u32>() else { return };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), Some(pg_sys::Oid::from(owner)));
    let prefix = format!("{}-", db.to_u32());
    let Ok(entries) = std::fs::read_dir(spool_dir()) else { return };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".json")
        })
        .collect();
    files.sort();
    for file in files {
        // Claim the file: of several workers, exactly one rename succeeds.
        let claimed = file.with_extension(format!("claimed-{}", std::process::id()));
        if std::fs::rename(&file, &claimed).is_err() {
            continue;
        }
        let entry = std::fs::read(&claimed).ok().and_then(|b| serde_json::from_slice::<SpoolEntry>(&b).ok());
        let Some(entry) = entry else {
            pgrx::log!("biomedclip: unreadable registry spool file {} removed", claimed.display());
            let _ = std::fs::remove_file(&claimed);
            continue;
        };
        record(&entry);
        let _ = std::fs::remove_file(&claimed);
    }
}

fn record(entry: &SpoolEntry) {
    if biomedclip_core::model::sha256_hex(entry.manifest.as_bytes()) != entry.manifest_sha256 {
        pgrx::log!("biomedclip: registry spool entry does not match its manifest hash; skipped");
        return;
    }
    let Ok(manifest) = serde_json::from_str::<biomedclip_core::model::Manifest>(&entry.manifest) else { return };
    let files = JsonB(serde_json::to_value(&manifest.files).unwrap_or_default());
    BackgroundWorker::transaction(|| {
        Spi::run("SET LOCAL search_path = pg_catalog, pg_temp").expect("pin search_path");
        let has_activity = unsafe {
            let nsp = pg_sys::get_namespace_oid(c"biomedclip".as_ptr(), true);
            nsp != pg_sys::InvalidOid && pg_sys::get_relname_relid(c"model_activity".as_ptr(), nsp) != pg_sys::InvalidOid
        };
        let sql = if has_activity {
            format!("WITH m AS ({RECORD_MODEL_SQL} RETURNING 1) {RECORD_ACTIVITY_SQL}")
        } else {
            RECORD_MODEL_SQL.to_string()
        };
        Spi::run_with_args(
            &sql,
            &[
                entry.manifest_sha256.clone().into(),
                manifest.name.clone().into(),
                manifest.version.clone().into(),
                manifest.precision.clone().into(),
                files.into(),
                entry.loaded_at_unix.into(),
            ],
        )
        .expect("record the model load");
    });
}
