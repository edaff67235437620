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
