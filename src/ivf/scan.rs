//! Index scans: ORDER BY distance via the nearest lists, iterative when filters reject rows.

use super::pages::{self, INVALID_BLOCK};
use super::{build::datum_vector, to_f32, Metric, OpClass};
use pgrx::pg_sys;
use pgrx::prelude::*;

struct ScanState {
    opclass: OpClass,
    dims: usize,
    query: Option<Vec<u8>>,
    /// List chains ordered by centroid distance to the query.
    lists: Vec<pg_sys::BlockNumber>,
    next_list: usize,
    max_lists: usize,
    /// Candidates of the lists read so far, sorted by descending distance (pop = nearest).
    candidates: Vec<(f64, pg_sys::ItemPointerData)>,
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(index: pg_sys::Relation, nkeys: i32, norderbys: i32) -> pg_sys::IndexScanDesc {
    let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
    // The access method owns the ORDER BY value arrays (as GiST does).
    let n = norderbys.max(1) as usize;
    (*scan).xs_orderbyvals = pg_sys::palloc0(n * std::mem::size_of::<pg_sys::Datum>()) as *mut pg_sys::Datum;
    (*scan).xs_orderbynulls = pg_sys::palloc(n * std::mem::size_of::<bool>()) as *mut bool;
    for i in 0..n {
        *(*scan).xs_orderbynulls.add(i) = true;
    }
    let meta = pages::read_meta(index);
    let state = Box::new(ScanState {
        opclass: meta.opclass,
        dims: meta.dims,
        query: None,
        lists: Vec::new(),
        next_list: 0,
        max_lists: 0,
        candidates: Vec::new(),
    });
    (*scan).opaque = Box::into_raw(state) as *mut std::ffi::c_void;
    scan
}

fn centroid_distance(metric: Metric, q: &[f32], c: &[f32]) -> f32 {
    match metric {
        Metric::L2 => biomedclip_core::distance::squared_l2_f32(q, c),
        // Centroids of cosine/IP indexes are unit vectors: rank by direction.
        _ => -biomedclip_core::distance::dot_f32(q, c),
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(scan: pg_sys::IndexScanDesc, _keys: pg_sys::ScanKey, _nkeys: i32, orderbys: pg_sys::ScanKey, norderbys: i32) {
    let st = &mut *((*scan).opaque as *mut ScanState);
    st.candidates.clear();
    st.lists.clear();
    st.next_list = 0;
    st.query = None;
    if norderbys > 0 && !orderbys.is_null() {
        std::ptr::copy_nonoverlapping(orderbys, (*scan).orderByData, norderbys as usize);
        let key = &*orderbys;
        if key.sk_flags & pg_sys::SK_ISNULL as i32 == 0 {
            st.query = datum_vector(OpClass { metric: Metric::L2, element: st.opclass.element }, key.sk_argument, false);
        } else {
            // A NULL query vector scans as the zero vector, as pgvector does: every indexed row
            // comes back (the order is that of the distances to zero), rather than none.
            st.query = Some(vec![0u8; st.dims * st.opclass.element.size()]);
        }
    }
    let Some(query) = &st.query else { return };
    let q = to_f32(st.opclass.element, query);
    super::build::check_dims(q.len(), st.dims);
    let meta = pages::read_meta((*scan).indexRelation);
    let lists = pages::read_lists((*scan).indexRelation, &meta);
    let mut ranked: Vec<(f32, pg_sys::BlockNumber)> = lists.iter().map(|l| (centroid_distance(st.opclass.metric, &q, &l.centroid), l.start)).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    st.lists = ranked.into_iter().map(|(_, start)| start).collect();
    let probes = super::PROBES.get().max(1) as usize;
    st.max_lists = if super::ITERATIVE_SCAN.get() != super::IterativeScan::Off {
        (super::MAX_PROBES.get().max(probes as i32) as usize).min(st.lists.len())
    } else {
        probes.min(st.lists.len())
    };
}

/// Reads the next batch of `ivf.probes` lists into the candidate buffer.
unsafe fn read_batch(index: pg_sys::Relation, st: &mut ScanState) -> bool {
    let probes = super::PROBES.get().max(1) as usize;
    let end = (st.next_list + probes).min(st.max_lists);
    if st.next_list >= end {
        return false;
    }
    let query = st.query.as_ref().expect("query set");
    let query_sq_norm = st.opclass.sq_norm(query);
    let vector_bytes = st.dims * st.opclass.element.size();
    for &start in &st.lists[st.next_list..end] {
        let mut blkno = start;
        while blkno != INVALID_BLOCK {
            pgrx::check_for_interrupts!();
            let buf = pages::read_locked(index, blkno, pg_sys::BUFFER_LOCK_SHARE);
            let page = pg_sys::BufferGetPage(buf);
            for off in 1..=pg_sys::PageGetMaxOffsetNumber(page) {
                let item_id = pg_sys::PageGetItemId(page, off);
                if (*item_id).lp_flags() != pg_sys::LP_NORMAL {
                    continue;
                }
                let (tid, sq_norm, vector) = pages::read_item(page, off, vector_bytes);
                let d = st.opclass.distance(vector, sq_norm, query, query_sq_norm);
                st.candidates.push((d, tid));
            }
            blkno = (*pages::opaque(page)).next;
            pg_sys::UnlockReleaseBuffer(buf);
        }
    }
    st.next_list = end;
    // Descending, so that pop() yields the nearest; NaN last.
    st.candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    true
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(scan: pg_sys::IndexScanDesc, _dir: pg_sys::ScanDirection::Type) -> bool {
    let st = &mut *((*scan).opaque as *mut ScanState);
    if (*scan).numberOfOrderBys == 0 {
        error!("ivf index scans require ORDER BY an ivf distance operator");
    }
    if st.query.is_none() {
        return false;
    }
    loop {
        if let Some((d, tid)) = st.candidates.pop() {
            (*scan).xs_heaptid = tid;
            (*scan).xs_recheck = false;
            (*scan).xs_recheckorderby = false;
            *(*scan).xs_orderbyvals = pg_sys::Datum::from(d.to_bits());
            *(*scan).xs_orderbynulls = false;
            return true;
        }
        if !read_batch((*scan).indexRelation, st) {
            return false;
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    let state = (*scan).opaque as *mut ScanState;
    if !state.is_null() {
        drop(Box::from_raw(state));
        (*scan).opaque = std::ptr::null_mut();
    }
}
