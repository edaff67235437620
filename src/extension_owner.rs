//! The few writes the extension makes on a caller's behalf to tables the caller may not write
//! (the collection registry, the query log, feedback) run as the extension's owner: the caller's
//! statement cannot name the row's contents beyond what the function checked. Only these
//! INSERT/DELETE statements run that way (never the search, never user SQL), with `search_path`
//! pinned and under SECURITY_RESTRICTED_OPERATION.

use crate::pinned_search_path::with_pinned_search_path;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The schema the extension lives in (quoted for SQL) and its owner.
pub struct ExtensionInfo {
    pub schema_sql: String,
    pub owner: pg_sys::Oid,
}

pub fn extension_info() -> ExtensionInfo {
    let row = with_pinned_search_path(|| {
        Spi::get_two::<String, pg_sys::Oid>(
            "SELECT pg_catalog.quote_ident(n.nspname::pg_catalog.text), e.extowner FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
             WHERE e.extname OPERATOR(pg_catalog.=) 'biomedclip'",
        )
    });
    match row {
        Ok((Some(schema_sql), Some(owner))) => ExtensionInfo { schema_sql, owner },
        _ => error!("biomedclip is not installed in this database"),
    }
}

/// Restores the saved user and security context when dropped (an ERROR in between is restored
/// by PostgreSQL's (sub)transaction abort as well).
struct RestoreUser {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for RestoreUser {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as the extension's owner, with search_path pinned to pg_catalog.
pub fn as_extension_owner<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let mut user = pg_sys::Oid::INVALID;
    let mut context = 0i32;
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32);
    }
    let _restore = RestoreUser { user, context };
    with_pinned_search_path(f)
}

/// The current user's name (the role a search or feedback is recorded under).
pub fn current_role_name() -> String {
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false);
        std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}
