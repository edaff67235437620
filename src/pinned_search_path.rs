//! SQL that the extension runs internally (through SPI, as the calling user) resolves names with
//! `search_path` pinned to `pg_catalog` alone, and its text schema-qualifies every table,
//! function and operator as well: a caller's schema that shadows `=` or `now()` is never
//! consulted.

use pgrx::pg_sys;

/// Runs `f` with the active search path replaced by `pg_catalog` only (no user schemas, no
/// pg_temp). On an error PostgreSQL's (sub)transaction abort pops the override.
pub fn with_pinned_search_path<T>(f: impl FnOnce() -> T) -> T {
    unsafe {
        let mut path = pg_sys::OverrideSearchPath {
            schemas: std::ptr::null_mut(),
            addCatalog: true,
            addTemp: false,
            generation: 0,
        };
        pg_sys::PushOverrideSearchPath(&mut path);
        let out = f();
        pg_sys::PopOverrideSearchPath();
        out
    }
}

/// The first column of the first row of `sql` (None when there is no row or it is NULL), run as
/// the current user with the search path pinned; an SPI failure is an ERROR.
pub fn first_value<T: pgrx::datum::IntoDatum + pgrx::datum::FromDatum>(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Option<T> {
    with_pinned_search_path(|| {
        pgrx::spi::Spi::connect(|client| {
            let table = client.select(sql, Some(1), args)?;
            match table.into_iter().next() {
                Some(row) => row.get::<T>(1),
                None => Ok(None),
            }
        })
    })
    .unwrap_or_else(|e: pgrx::spi::Error| pgrx::error!("{e}"))
}
