//! RaBitQ scans: 1-bit bounds from the entry chain, refined with the extended codes, re-ranked
//! exactly from the table row; a row is returned once no bound is below its exact distance.

use super::{tid_key, Candidate, Exact, ScanState};
use crate::ivf::pages;
use crate::ivf::vectors::datum_vector;
use crate::ivf::{Metric, OpClass};
use biomedclip_core::rabitq::{Factors, QueryLut};
use pgrx::pg_sys;
use pgrx::prelude::*;
use rustc_hash::FxBuildHasher;
use std::cmp::Reverse;
use std::collections::HashMap;

/// What the next step of a RaBitQ scan found.
pub enum Step {
    /// A row to return (exact distance).
    Row(Candidate),
    /// A bound moved on one stage; take the next step.
    Again,
    /// Nothing left in the buffer or the heaps: read more lists.
    Refill,
}

/// One step: return the nearest re-ranked row if no bound is below it, else move the lowest bound
/// on one stage (1-bit -> refined with the extended code -> exact).
pub unsafe fn step(scan: pg_sys::IndexScanDesc, st: &mut ScanState) -> Step {
    // With the buffer used up after an overflow, the entries dropped beyond the cut are still
    // unread: their bounds are at least the cut's, so nothing farther may be returned first.
    let buffered = st.peek();
    let cut_pending = buffered.is_none() && st.cut.is_some();
    let next_bound = if cut_pending { st.cut } else { buffered };
    let next_refined = st.refined.peek().map(|Reverse(Exact(c))| *c);
    let lowest = match (next_bound, next_refined) {
        (Some(b), Some(r)) => Some(if r.distance <= b.distance { (r, true) } else { (b, false) }),
        (Some(b), None) => Some((b, false)),
        (None, Some(r)) => Some((r, true)),
        (None, None) => None,
    };
    match (st.exact.peek(), lowest) {
        (Some(Reverse(Exact(top))), l) if l.is_none_or(|(c, _)| top.distance <= c.distance) => {
            let top = *top;
            st.exact.pop();
            Step::Row(top)
        }
        (_, Some((_, true))) => {
            let Reverse(Exact(c)) = st.refined.pop().expect("peeked");
            if let Some(distance) = rerank(scan, st, c.tid) {
                st.exact.push(Reverse(Exact(Candidate::new(distance, c.tid))));
            }
            Step::Again
        }
        (_, Some((_, false))) if cut_pending => Step::Refill,
        (_, Some((_, false))) => {
            prefetch_ahead((*scan).indexRelation, st);
            let c = st.next().expect("peeked");
            st.last = Some(c);
            let r = refine((*scan).indexRelation, st, c);
            st.refined.push(Reverse(Exact(r)));
            Step::Again
        }
        (_, None) => Step::Refill,
    }
}

/// The ORDER BY distance's lower bound from an estimate of ⟨o − c, q − c⟩ and its bound.
#[inline]
fn lower_bound(metric: Metric, lut: &QueryLut, estimate: (f32, f32), factors: &Factors) -> f64 {
    match metric {
        Metric::L2 => (lut.squared_l2_lower_bound(estimate, factors) as f64).sqrt(),
        // Unit vectors: cosine distance = squared L2 / 2.
        Metric::Cosine => lut.squared_l2_lower_bound(estimate, factors) as f64 / 2.0,
        Metric::InnerProduct => -(lut.inner_product_upper_bound(estimate, factors) as f64),
    }
}

/// Reads lists[from..to] as lower bounds of the distances, from the 1-bit codes.
pub unsafe fn read_codes(index: pg_sys::Relation, st: &mut ScanState, from: usize, to: usize) {
    let rotation = st.rotation.take().expect("rabitq rotation");
    let code_bytes = biomedclip_core::rabitq::code_bytes(st.dims);
    let metric = st.opclass.metric;
    for i in from..to {
        let lut = st.luts[i].take().unwrap_or_else(|| QueryLut::new(&rotation, &st.quantized_query, &st.list_centroids[i]));
        pages::for_each_item(index, st.lists[i], |page, off| {
            let (tid, factors, ex, code) = pages::read_rabitq_item(page, off, code_bytes);
            let bound = lower_bound(metric, &lut, lut.residual_dot(code, &factors), &factors);
            st.push(Candidate { distance: bound, tid, ex, list: i as u16 });
        });
        st.luts[i] = Some(lut);
    }
    st.rotation = Some(rotation);
}

/// Most extended-code pages a scan keeps pinned.
const MAX_EX_PINS: usize = 256;

/// Extended-code pages a scan keeps pinned (not locked) between refines, so that the hundreds of
/// refines of a query look each page up once rather than once per candidate (the page lookup
/// was most of a refine's cost). A hash map by block number: a query's refines touch a hundred
/// or more pages in runs of consecutive blocks, and the direct-mapped slots it replaces let runs
/// evict each other (measured on real text embeddings: 282 code-page reads per query where 145
/// distinct pages are needed). Released at rescan and at the end of the scan, and all at once
/// when full. A failed query's pins are released by its resource owner, so nothing else releases
/// them (dropping the scan state only frees memory). A backend may hold at most its share of
/// shared buffers pinned (shared_buffers / (max backends + 16), as PostgreSQL's own bulk
/// operations limit themselves), so that many concurrent scans cannot run out of buffers.
pub struct ExPins {
    pinned: HashMap<pg_sys::BlockNumber, pg_sys::Buffer, FxBuildHasher>,
    /// Most pages pinned at once (set at the first pin).
    limit: usize,
}

impl ExPins {
    pub fn new() -> ExPins {
        ExPins { pinned: HashMap::default(), limit: 0 }
    }

    /// The pinned buffer of `blkno`, reading (and pinning) it the first time.
    unsafe fn get(&mut self, index: pg_sys::Relation, blkno: pg_sys::BlockNumber) -> pg_sys::Buffer {
        if let Some(&buf) = self.pinned.get(&blkno) {
            return buf;
        }
        if self.limit == 0 {
            let share = (pg_sys::NBuffers.max(0) as usize) / (pg_sys::MaxBackends.max(0) as usize + 16);
            self.limit = share.clamp(1, MAX_EX_PINS);
            self.pinned.reserve(self.limit);
        }
        if self.pinned.len() >= self.limit {
            self.release();
        }
        let buf = pg_sys::ReadBufferExtended(index, pg_sys::ForkNumber::MAIN_FORKNUM, blkno, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
        self.pinned.insert(blkno, buf);
        buf
    }

    /// Releases every pin (rescan, end of scan, a full map).
    pub unsafe fn release(&mut self) {
        for (_, buf) in self.pinned.drain() {
            pg_sys::ReleaseBuffer(buf);
        }
    }
}

/// How far ahead in the sorted buffer a refine prefetches its extended code.
const PREFETCH_DISTANCE: usize = 6;

/// Prefetches the extended code of the candidate `PREFETCH_DISTANCE` places ahead in the sorted
/// buffer (it is refined a few steps later unless the scan ends first). A refine's cost was
/// mostly two cache misses, the line pointer and the item; the item's address is computed, not
/// read (extended-code items have one size and fill their pages in offset order from the end),
/// so a page moved by VACUUM only makes a prefetch useless, never wrong. Pins the page (as the
/// refine would).
unsafe fn prefetch_ahead(index: pg_sys::Relation, st: &mut ScanState) {
    let at = st.pos + PREFETCH_DISTANCE;
    if at >= st.sorted_end {
        return;
    }
    let (blkno, off) = st.candidates[at].ex;
    if blkno == pages::INVALID_BLOCK || off == 0 {
        return;
    }
    let page = pg_sys::BufferGetPage(st.ex_pins.get(index, blkno)) as *const u8;
    let line_pointer = std::mem::size_of::<pg_sys::PageHeaderData>() - std::mem::size_of::<pg_sys::ItemIdData>() + off as usize * std::mem::size_of::<pg_sys::ItemIdData>();
    let special = pg_sys::BLCKSZ as usize - pages::maxalign(std::mem::size_of::<pages::PageOpaque>());
    let item = special.saturating_sub(off as usize * st.meta.ex_item_bytes());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(page.add(line_pointer.min(pg_sys::BLCKSZ as usize - 1)) as *const i8);
        for line in (item..(item + st.meta.ex_item_bytes()).min(pg_sys::BLCKSZ as usize)).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(page.add(line) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (page, line_pointer, item);
}

/// The candidate with its bound from the extended code (no lower than the 1-bit one).
/// If the code is gone or belongs to another row now (VACUUM and a later insert), the 1-bit
/// bound stays and the exact re-rank decides.
unsafe fn refine(index: pg_sys::Relation, st: &mut ScanState, c: Candidate) -> Candidate {
    let mut refined = c;
    let Some(lut) = st.luts.get(c.list as usize).and_then(|l| l.as_ref()) else { return refined };
    if c.ex.0 == pages::INVALID_BLOCK {
        return refined;
    }
    let buf = st.ex_pins.get(index, c.ex.0);
    pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_SHARE as i32);
    let page = pg_sys::BufferGetPage(buf);
    if c.ex.1 >= 1 && c.ex.1 <= pg_sys::PageGetMaxOffsetNumber(page) && (*pg_sys::PageGetItemId(page, c.ex.1)).lp_flags() == pg_sys::LP_NORMAL {
        let (tid, factors, ex) = pages::read_ex_item(page, c.ex.1, biomedclip_core::rabitq::ex_code_bytes(st.dims));
        if tid_key(&tid) == tid_key(&c.tid) {
            refined.distance = lower_bound(st.opclass.metric, lut, lut.ex_residual_dot(ex, &factors), &factors).max(c.distance);
        }
    }
    pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_UNLOCK as i32);
    refined
}

/// The exact distance of a candidate, from the table row its TID points to (the version
/// visible to the scan's snapshot); None when no version is visible (the executor would skip it).
unsafe fn rerank(scan: pg_sys::IndexScanDesc, st: &mut ScanState, tid: pg_sys::ItemPointerData) -> Option<f64> {
    if st.fetch.is_null() {
        st.heap = (*scan).heapRelation;
        if st.heap.is_null() {
            error!("ivf: a RaBitQ index scan needs its table");
        }
        st.fetch = (*(*st.heap).rd_tableam).index_fetch_begin.expect("table AM fetch")(st.heap);
        st.slot = pg_sys::table_slot_create(st.heap, std::ptr::null_mut());
    }
    let mut tid = tid;
    let (mut call_again, mut all_dead) = (false, false);
    let found = (*(*st.heap).rd_tableam).index_fetch_tuple.expect("table AM fetch")(st.fetch, &mut tid, (*scan).xs_snapshot, st.slot, &mut call_again, &mut all_dead);
    if !found {
        return None;
    }
    let attnum = st.heap_attnum;
    if ((*st.slot).tts_nvalid as i32) < attnum {
        pg_sys::slot_getsomeattrs_int(st.slot, attnum);
    }
    let datum = *(*st.slot).tts_values.add(attnum as usize - 1);
    let isnull = *(*st.slot).tts_isnull.add(attnum as usize - 1);
    let bytes = datum_vector(OpClass { metric: Metric::L2, element: st.opclass.element }, datum, isnull);
    (*(*st.slot).tts_ops).clear.expect("slot clear")(st.slot);
    let bytes = bytes?;
    let query = st.query.as_ref().expect("query set");
    if bytes.len() != query.len() {
        return None;
    }
    Some(st.opclass.distance(&bytes, st.opclass.sq_norm(&bytes), query, st.query_sq_norm))
}

