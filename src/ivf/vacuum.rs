//! VACUUM: remove entries whose heap rows are dead, page by page, under generic WAL.
//! Freed space on inner pages of a chain is not reused by inserts (they append at the chain's
//! tail); REINDEX compacts an index after large deletions.

use super::pages::{self, INVALID_BLOCK};
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let index = (*info).index;
    let stats = if stats.is_null() { pgrx::PgBox::<pg_sys::IndexBulkDeleteResult>::alloc0().into_pg() } else { stats };
    let callback = callback.expect("bulk delete callback");
    let meta = pages::read_meta(index);
    for list in pages::read_lists(index, &meta) {
        let mut blkno = list.start;
        while blkno != INVALID_BLOCK {
            pg_sys::vacuum_delay_point();
            let buf = pg_sys::ReadBufferExtended(index, pg_sys::ForkNumber::MAIN_FORKNUM, blkno, pg_sys::ReadBufferMode::RBM_NORMAL, (*info).strategy);
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            let page = pg_sys::BufferGetPage(buf);
            let mut dead: Vec<pg_sys::OffsetNumber> = Vec::new();
            for off in 1..=pg_sys::PageGetMaxOffsetNumber(page) {
                let item = pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, off)) as *mut pg_sys::IndexTupleData;
                if callback(&mut (*item).t_tid, callback_state) {
                    dead.push(off);
                } else {
                    (*stats).num_index_tuples += 1.0;
                }
            }
            if !dead.is_empty() {
                let state = pg_sys::GenericXLogStart(index);
                let wpage = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
                pg_sys::PageIndexMultiDelete(wpage, dead.as_mut_ptr(), dead.len() as i32);
                pg_sys::GenericXLogFinish(state);
                (*stats).tuples_removed += dead.len() as f64;
            }
            blkno = (*pages::opaque(page)).next;
            pg_sys::UnlockReleaseBuffer(buf);
        }
    }
    stats
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(info: *mut pg_sys::IndexVacuumInfo, stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if (*info).analyze_only {
        return stats;
    }
    let stats = if stats.is_null() {
        // No bulk delete ran (nothing to delete): count the entries.
        let s = pgrx::PgBox::<pg_sys::IndexBulkDeleteResult>::alloc0().into_pg();
        let index = (*info).index;
        let meta = pages::read_meta(index);
        for list in pages::read_lists(index, &meta) {
            let mut blkno = list.start;
            while blkno != INVALID_BLOCK {
                let buf = pages::read_locked(index, blkno, pg_sys::BUFFER_LOCK_SHARE);
                let page = pg_sys::BufferGetPage(buf);
                (*s).num_index_tuples += pg_sys::PageGetMaxOffsetNumber(page) as f64;
                blkno = (*pages::opaque(page)).next;
                pg_sys::UnlockReleaseBuffer(buf);
            }
        }
        s
    } else {
        stats
    };
    (*stats).num_pages = pg_sys::RelationGetNumberOfBlocksInFork((*info).index, pg_sys::ForkNumber::MAIN_FORKNUM);
    stats
}
