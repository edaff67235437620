//! aminsert: a new row goes to the list of its nearest centroid, appended to the list's current
//! insert page; a full page is followed to its successor, or gets a new one, linked in one
//! generic-WAL record. A RaBitQ entry's extended code goes to the list's second chain first, so
//! that an entry never points to a code that is not there.
//!
//! Locking: the list page is read under a share lock and released before the data page is
//! locked; a data page is locked before (never after) a list page, so inserters cannot deadlock.

use super::pages::{self, Chain, INVALID_BLOCK};
use super::vectors::{check_dims, datum_vector, Encoder};
use super::{to_f32, OpClass};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The list whose centroid is nearest (L2 on the vector, or on its direction for cosine and
/// inner product, as the build assigns rows).
fn nearest_list(lists: &[pages::ListEntry], v: &[f32], opclass: OpClass) -> usize {
    let v = opclass.assignment_vector(v);
    let vn = biomedclip_core::distance::dot_f32(&v, &v);
    let mut best = (0usize, f32::INFINITY);
    for (i, l) in lists.iter().enumerate() {
        let cn = biomedclip_core::distance::dot_f32(&l.centroid, &l.centroid);
        let d = vn + cn - 2.0 * biomedclip_core::distance::dot_f32(&v, &l.centroid);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

unsafe fn add_or_fail(page: pg_sys::Page, item: &[u8], state: *mut pg_sys::GenericXLogState) -> pg_sys::OffsetNumber {
    match pages::try_add_at(page, item) {
        Some(off) => off,
        None => {
            pg_sys::GenericXLogAbort(state);
            error!("ivf: index row of {} bytes does not fit on a page", item.len());
        }
    }
}

/// Appends `item` to a chain of `list`, WAL-logged; returns where it went.
pub unsafe fn append(index: pg_sys::Relation, list: &pages::ListEntry, chain: Chain, item: &[u8]) -> pages::ExPointer {
    let mut blkno = list.chain(chain).1;
    if blkno == INVALID_BLOCK {
        // An empty chain: its first page is created and recorded under the list page's lock.
        let list_buf = pages::read_locked(index, list.blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        let now = pages::list_pages(list_buf, list.offset, chain);
        if now.1 != INVALID_BLOCK {
            // Someone else created it meanwhile.
            pg_sys::UnlockReleaseBuffer(list_buf);
            blkno = now.1;
        } else {
            let new_buf = pages::new_buffer(index, pg_sys::ForkNumber::MAIN_FORKNUM);
            let new_blk = pg_sys::BufferGetBlockNumber(new_buf);
            let state = pg_sys::GenericXLogStart(index);
            let npage = pg_sys::GenericXLogRegisterBuffer(state, new_buf, pg_sys::GENERIC_XLOG_FULL_IMAGE as i32);
            let lpage = pg_sys::GenericXLogRegisterBuffer(state, list_buf, 0);
            pages::init_page(npage);
            let off = add_or_fail(npage, item, state);
            pages::set_list_pages(lpage, list.offset, chain, new_blk, new_blk);
            pg_sys::GenericXLogFinish(state);
            pg_sys::UnlockReleaseBuffer(new_buf);
            pg_sys::UnlockReleaseBuffer(list_buf);
            return (new_blk, off);
        }
    }
    loop {
        let buf = pages::read_locked(index, blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        let page = pg_sys::BufferGetPage(buf);
        if pg_sys::PageGetFreeSpace(page) >= item.len() {
            let state = pg_sys::GenericXLogStart(index);
            let wpage = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
            let off = add_or_fail(wpage, item, state);
            pg_sys::GenericXLogFinish(state);
            pg_sys::UnlockReleaseBuffer(buf);
            return (blkno, off);
        }
        let next = (*pages::opaque(page)).next;
        if next != INVALID_BLOCK {
            // A later page of the chain (extended by another inserter, or after the free space
            // VACUUM pointed the insert page at): follow it.
            pg_sys::UnlockReleaseBuffer(buf);
            blkno = next;
            continue;
        }
        // Full tail page: link a new page, then point the chain's insert page at it.
        let new_buf = pages::new_buffer(index, pg_sys::ForkNumber::MAIN_FORKNUM);
        let new_blk = pg_sys::BufferGetBlockNumber(new_buf);
        let list_buf = pages::read_locked(index, list.blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        let state = pg_sys::GenericXLogStart(index);
        let wpage = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
        let npage = pg_sys::GenericXLogRegisterBuffer(state, new_buf, pg_sys::GENERIC_XLOG_FULL_IMAGE as i32);
        let lpage = pg_sys::GenericXLogRegisterBuffer(state, list_buf, 0);
        pages::init_page(npage);
        let off = add_or_fail(npage, item, state);
        (*pages::opaque(wpage)).next = new_blk;
        let (start, _) = pages::list_pages(list_buf, list.offset, chain);
        pages::set_list_pages(lpage, list.offset, chain, start, new_blk);
        pg_sys::GenericXLogFinish(state);
        pg_sys::UnlockReleaseBuffer(list_buf);
        pg_sys::UnlockReleaseBuffer(new_buf);
        pg_sys::UnlockReleaseBuffer(buf);
        return (new_blk, off);
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _info: *mut pg_sys::IndexInfo,
) -> bool {
    let meta = pages::read_meta(index);
    let Some(bytes) = datum_vector(meta.opclass, *values, *isnull) else { return false };
    let v = to_f32(meta.opclass.element, &bytes);
    check_dims(v.len(), meta.dims);
    let lists = pages::read_lists(index, &meta);
    let list = &lists[nearest_list(&lists, &v, meta.opclass)];
    let (mut entry, ex) = Encoder::new(&meta).item(*heap_tid, &bytes, &list.centroid);
    if let Some(ex) = ex {
        let at = append(index, list, Chain::Extended, &ex);
        pages::set_ex_pointer(&mut entry, at);
    }
    append(index, list, Chain::Entries, &entry);
    false
}
