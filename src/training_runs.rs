//! The audit row every training function writes to `biomedclip.training_runs`, as the extension's
//! owner (callers have no privilege on the table), and the start time it records.

use crate::extension_owner::{as_extension_owner, ExtensionInfo};
use crate::model_cache;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// What one run records.
pub struct Run<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub weights_sha256: &'a str,
    pub options_given: Value,
    pub options_used: Value,
    pub seed: u64,
    pub fingerprint: &'a str,
    pub row_counts: Value,
    pub query: &'a str,
    pub metrics: Value,
    pub started_at: &'a str,
    /// The caller (taken before switching to the extension's owner).
    pub trained_by: &'a str,
    /// The model the run started from (kind 'projection': the heads' manifest); otherwise the
    /// model this backend has active, if any.
    pub base_model_sha256: Option<&'a str>,
}

/// The statement's clock now, as text (the run's start).
pub fn now() -> String {
    Spi::get_one::<String>("SELECT pg_catalog.clock_timestamp()::pg_catalog.text").ok().flatten().unwrap_or_default()
}

/// Whether `table` (biomedclip.probes or biomedclip.adapters) has a row named `name`; read as
/// the owner.
pub fn exists(ext: &ExtensionInfo, table: &str, name: &str) -> bool {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} t WHERE t.name OPERATOR(pg_catalog.=) $1)");
    matches!(as_extension_owner(ext.owner, || Spi::get_one_with_args::<bool>(&sql, &[name.into()])), Ok(Some(true)))
}

/// Inserts the audit row and returns its run_id (call inside `as_extension_owner`, with
/// `trained_by` taken before).
pub fn record(run: Run) -> i64 {
    let base = run.base_model_sha256.map(str::to_string).or_else(model_cache::active_manifest_sha256);
    Spi::get_one_with_args::<i64>(
        "INSERT INTO biomedclip.training_runs (kind, name, base_model_sha256, weights_sha256, options_given, options_used, seed, \
           dataset_fingerprint, row_counts, query, metrics, status, trained_by, started_at, software_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'succeeded', $12, $13::pg_catalog.timestamptz, $14) RETURNING run_id",
        &[
            run.kind.into(),
            run.name.into(),
            base.into(),
            run.weights_sha256.into(),
            JsonB(run.options_given).into(),
            JsonB(run.options_used).into(),
            (run.seed as i64).into(),
            run.fingerprint.into(),
            JsonB(run.row_counts).into(),
            run.query.into(),
            JsonB(run.metrics).into(),
            run.trained_by.into(),
            run.started_at.into(),
            concat!("biomedclip ", env!("CARGO_PKG_VERSION")).into(),
        ],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| error!("could not write biomedclip.training_runs"))
}
