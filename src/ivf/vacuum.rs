//! VACUUM: remove entries whose heap rows are dead, page by page, under generic WAL, and point
//! each list's insert page at the first page of its chain with room for an entry, so that later
//! inserts fill the freed space before the chain grows (as pgvector's ivfflat does).
//!
//! Under RaBitQ a dead entry's extended code is removed too. Entries point to their codes by
//! line pointer, so code pages are never compacted: a removed code leaves an unused line
//! pointer (reused by a later insert) and its space is reclaimed in place.

use super::pages::{self, Chain, INVALID_BLOCK};
use super::Quantizer;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::BTreeMap;

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
    let rabitq = meta.quantizer == Quantizer::RaBitQ;
    let code_bytes = biomedclip_core::rabitq::code_bytes(meta.dims);
    for list in pages::read_lists(index, &meta) {
        let mut blkno = list.start;
        let mut first_with_room = INVALID_BLOCK;
        // Dead entries' extended codes, by block.
        let mut dead_codes: BTreeMap<pg_sys::BlockNumber, Vec<pg_sys::OffsetNumber>> = BTreeMap::new();
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
                    if rabitq {
                        let (_, _, at, _) = pages::read_rabitq_item(page, off, code_bytes);
                        dead_codes.entry(at.0).or_default().push(at.1);
                    }
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
            // PageGetFreeSpace already leaves room for the new item's line pointer.
            if first_with_room == INVALID_BLOCK && pg_sys::PageGetFreeSpace(page) >= meta.item_bytes() {
                first_with_room = blkno;
            }
            blkno = (*pages::opaque(page)).next;
            pg_sys::UnlockReleaseBuffer(buf);
        }
        if first_with_room != INVALID_BLOCK {
            move_insert_page(index, &list, Chain::Entries, first_with_room);
        }
        if !dead_codes.is_empty() {
            remove_codes(index, &info, &dead_codes);
            // The first page of the code chain with room for a code.
            let mut blkno = list.ex_start;
            while blkno != INVALID_BLOCK {
                let buf = pages::read_locked(index, blkno, pg_sys::BUFFER_LOCK_SHARE);
                let page = pg_sys::BufferGetPage(buf);
                let room = pg_sys::PageGetFreeSpace(page) >= meta.ex_item_bytes();
                let next = (*pages::opaque(page)).next;
                pg_sys::UnlockReleaseBuffer(buf);
                if room {
                    move_insert_page(index, &list, Chain::Extended, blkno);
                    break;
                }
                blkno = next;
            }
        }
    }
    stats
}

/// Removes extended codes (block -> offsets) without moving the others' line pointers.
unsafe fn remove_codes(index: pg_sys::Relation, info: &*mut pg_sys::IndexVacuumInfo, dead: &BTreeMap<pg_sys::BlockNumber, Vec<pg_sys::OffsetNumber>>) {
    for (&blkno, offsets) in dead {
        pg_sys::vacuum_delay_point();
        let buf = pg_sys::ReadBufferExtended(index, pg_sys::ForkNumber::MAIN_FORKNUM, blkno, pg_sys::ReadBufferMode::RBM_NORMAL, (**info).strategy);
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        let state = pg_sys::GenericXLogStart(index);
        let page = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
        let mut offsets = offsets.clone();
        // Highest first: removing the last line pointer shortens the array.
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        for off in offsets {
            if off <= pg_sys::PageGetMaxOffsetNumber(page) && (*pg_sys::PageGetItemId(page, off)).lp_flags() == pg_sys::LP_NORMAL {
                pg_sys::PageIndexTupleDeleteNoCompact(page, off);
            }
        }
        // Let PageAddItem look for the unused line pointers left behind.
        (*(page as *mut pg_sys::PageHeaderData)).pd_flags |= pg_sys::PD_HAS_FREE_LINES as u16;
        pg_sys::GenericXLogFinish(state);
        pg_sys::UnlockReleaseBuffer(buf);
    }
}

/// Points a chain's insert page back at `blkno` (an earlier page of the chain with room).
unsafe fn move_insert_page(index: pg_sys::Relation, list: &pages::ListEntry, chain: Chain, blkno: pg_sys::BlockNumber) {
    let buf = pages::read_locked(index, list.blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
    let (start, insert) = pages::list_pages(buf, list.offset, chain);
    if insert != blkno && start != INVALID_BLOCK {
        let state = pg_sys::GenericXLogStart(index);
        let page = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
        pages::set_list_pages(page, list.offset, chain, start, blkno);
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
