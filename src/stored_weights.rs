//! Fine-tuned weights stored in the extension's tables (biomedclip.adapters, biomedclip.probes):
//! read as the extension's owner (callers of the apply functions hold no privilege on the
//! tables), and kept per backend under the stored row's version (its xmin and weights SHA-256),
//! so that the weights are read and their SHA-256 verified again whenever the row changes and
//! not on every call otherwise. The caller's `load` does the verification.

use crate::extension_owner::{as_extension_owner, extension_info};
use crate::model_cache::raise;
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;
use pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT;
use std::cell::RefCell;
use std::collections::HashMap;
use std::thread::LocalKey;

/// Verified weights by name, each with the row version it was read from.
pub type Cache<T> = RefCell<HashMap<String, (String, T)>>;

/// One of the tables that hold weights, and what its rows are called in messages.
pub struct WeightsTable {
    /// Schema-qualified table name (a constant, never user input).
    pub table: &'static str,
    /// "adapter", "probe".
    pub kind: &'static str,
}

impl WeightsTable {
    fn missing(&self, name: &str) -> ! {
        raise(ERRCODE_UNDEFINED_OBJECT, format!("{} \"{name}\" does not exist", self.kind))
    }

    /// The stored row's version, or an error that it does not exist.
    fn version(&self, name: &str) -> String {
        let owner = extension_info().owner;
        let sql = format!(
            "SELECT t.xmin::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) t.weights_sha256 \
             FROM {} t WHERE t.name OPERATOR(pg_catalog.=) $1",
            self.table
        );
        as_extension_owner(owner, || crate::pinned_search_path::first_value::<String>(&sql, &[name.into()])).unwrap_or_else(|| self.missing(name))
    }

    /// Reads `columns` of the row named `name` as the extension's owner and hands it to `read`
    /// (ordinals from 1, in the order of `columns`), with the row's version.
    pub fn read_row<T>(&self, name: &str, columns: &str, read: impl Fn(&SpiHeapTupleData) -> Result<T, pgrx::spi::Error>) -> (String, T) {
        let owner = extension_info().owner;
        let sql = format!(
            "SELECT {columns}, t.xmin::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) t.weights_sha256 AS row_version \
             FROM {} t WHERE t.name OPERATOR(pg_catalog.=) $1",
            self.table
        );
        let row = as_extension_owner(owner, || {
            crate::pinned_search_path::with_pinned_search_path(|| {
                Spi::connect(|client| {
                    let mut out = None;
                    for r in client.select(&sql, None, &[name.into()])? {
                        out = Some((r.get_by_name::<String, _>("row_version")?.unwrap_or_default(), read(&r)?));
                    }
                    Ok::<_, pgrx::spi::Error>(out)
                })
            })
        })
        .unwrap_or_else(|e| error!("cannot read {}: {e}", self.table));
        row.unwrap_or_else(|| self.missing(name))
    }

    /// The weights named `name`: from `cache` while the stored row is unchanged, otherwise from
    /// `load` (which reads the row with [`WeightsTable::read_row`] and verifies it).
    pub fn cached<T: Clone>(&self, cache: &'static LocalKey<Cache<T>>, name: &str, load: impl FnOnce() -> (String, T)) -> T {
        let version = self.version(name);
        if let Some(hit) = cache.with(|c| c.borrow().get(name).filter(|e| e.0 == version).map(|e| e.1.clone())) {
            return hit;
        }
        let (version, value) = load();
        cache.with(|c| c.borrow_mut().insert(name.to_string(), (version, value.clone())));
        value
    }
}
