//! VACUUM: remove entries whose heap rows are dead, page by page, under generic WAL, and point
//! each list's insert page at the first page of its chain with room for an entry, so that later
//! inserts fill the freed space before the chain grows (as pgvector's ivfflat does).

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
    // An entry needs its item plus a line pointer.
    let entry_bytes = meta.item_bytes() + std::mem::size_of::<pg_sys::ItemIdData>();
    for list in pages::read_lists(index, &meta) {
        let mut blkno = list.start;
        let mut first_with_room = INVALID_BLOCK;
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
            if first_with_room == INVALID_BLOCK && pg_sys::PageGetFreeSpace(page) + std::mem::size_of::<pg_sys::ItemIdData>() >= entry_bytes {
                first_with_room = blkno;
            }
            blkno = (*pages::opaque(page)).next;
            pg_sys::UnlockReleaseBuffer(buf);
        }
        if first_with_room != INVALID_BLOCK {
            move_insert_page(index, &list, first_with_room);
        }
    }
    stats
}

/// Points a list's insert page back at `blkno` (an earlier page of its chain with room).
unsafe fn move_insert_page(index: pg_sys::Relation, list: &pages::ListEntry, blkno: pg_sys::BlockNumber) {
    let buf = pages::read_locked(index, list.blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
    let (start, insert) = pages::list_pages(buf, list.offset);
    if insert != blkno && start != INVALID_BLOCK {
        let state = pg_sys::GenericXLogStart(index);
        let page = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
        pages::set_list_pages(page, list.offset, start, blkno);
        pg_sys::GenericXLogFinish(state);
    }
    pg_sys::UnlockReleaseBuffer(buf);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(info: *mut pg_sys::IndexVacuumInfo, stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    // No bulk delete ran (nothing was deleted): the index did not change, and reading all of it
    // to count entries would make every VACUUM of a large table pay a full index read.
    if (*info).analyze_only || stats.is_null() {
        return stats;
    }
    (*stats).num_pages = pg_sys::RelationGetNumberOfBlocksInFork((*info).index, pg_sys::ForkNumber::MAIN_FORKNUM);
    stats
}
