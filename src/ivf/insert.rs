//! aminsert: a new row goes to the list of its nearest centroid, appended to the list's current
//! insert page; a full page gets a successor page, linked in one generic-WAL record.
//!
//! Locking: the list page is read under a share lock and released before the data page is
//! locked; a data page is locked before (never after) a list page, so inserters cannot deadlock.

use super::vectors::{check_dims, datum_vector, Encoder};
use super::pages::{self, INVALID_BLOCK};
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

/// Appends `item` to the chain of `list`, WAL-logged.
pub unsafe fn append(index: pg_sys::Relation, list: &pages::ListEntry, item: &[u8]) {
    let mut blkno = list.insert;
    if blkno == INVALID_BLOCK {
        // An empty list: its first page is created and recorded under the list page's lock.
        let list_buf = pages::read_locked(index, list.blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        let entry_now = pages::list_pages(list_buf, list.offset);
        if entry_now.1 != INVALID_BLOCK {
            // Someone else created it meanwhile.
            pg_sys::UnlockReleaseBuffer(list_buf);
            blkno = entry_now.1;
        } else {
            let new_buf = pages::new_buffer(index, pg_sys::ForkNumber::MAIN_FORKNUM);
            let new_blk = pg_sys::BufferGetBlockNumber(new_buf);
            let state = pg_sys::GenericXLogStart(index);
            let npage = pg_sys::GenericXLogRegisterBuffer(state, new_buf, pg_sys::GENERIC_XLOG_FULL_IMAGE as i32);
            let lpage = pg_sys::GenericXLogRegisterBuffer(state, list_buf, 0);
            pages::init_page(npage);
            if !pages::try_add(npage, item) {
                error!("ivf: index row of {} bytes does not fit on a page", item.len());
            }
            pages::set_list_pages(lpage, list.offset, new_blk, new_blk);
            pg_sys::GenericXLogFinish(state);
            pg_sys::UnlockReleaseBuffer(new_buf);
            pg_sys::UnlockReleaseBuffer(list_buf);
            return;
        }
    }
    loop {
        let buf = pages::read_locked(index, blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        let page = pg_sys::BufferGetPage(buf);
        if pg_sys::PageGetFreeSpace(page) >= item.len() {
            let state = pg_sys::GenericXLogStart(index);
            let wpage = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
            if !pages::try_add(wpage, item) {
                pg_sys::GenericXLogAbort(state);
                error!("ivf: could not add an index row");
            }
            pg_sys::GenericXLogFinish(state);
            pg_sys::UnlockReleaseBuffer(buf);
            return;
        }
        let next = (*pages::opaque(page)).next;
        if next != INVALID_BLOCK {
            // Another inserter already extended the chain; follow it.
            pg_sys::UnlockReleaseBuffer(buf);
            blkno = next;
            continue;
        }
        // Full tail page: link a new page, then point the list's insert page at it.
        let new_buf = pages::new_buffer(index, pg_sys::ForkNumber::MAIN_FORKNUM);
        let new_blk = pg_sys::BufferGetBlockNumber(new_buf);
        let list_buf = pages::read_locked(index, list.blkno, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        let state = pg_sys::GenericXLogStart(index);
        let wpage = pg_sys::GenericXLogRegisterBuffer(state, buf, 0);
        let npage = pg_sys::GenericXLogRegisterBuffer(state, new_buf, pg_sys::GENERIC_XLOG_FULL_IMAGE as i32);
        let lpage = pg_sys::GenericXLogRegisterBuffer(state, list_buf, 0);
        pages::init_page(npage);
        if !pages::try_add(npage, item) {
            pg_sys::GenericXLogAbort(state);
            error!("ivf: index row of {} bytes does not fit on a page", item.len());
        }
        (*pages::opaque(wpage)).next = new_blk;
        let (start, _) = pages::list_pages(list_buf, list.offset);
        pages::set_list_pages(lpage, list.offset, start, new_blk);
        pg_sys::GenericXLogFinish(state);
        pg_sys::UnlockReleaseBuffer(list_buf);
        pg_sys::UnlockReleaseBuffer(new_buf);
        pg_sys::UnlockReleaseBuffer(buf);
        return;
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
    append(index, list, &Encoder::new(&meta).item(*heap_tid, &bytes, &list.centroid));
    false
}
