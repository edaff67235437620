//! Index scans: ORDER BY distance via the nearest lists, iterative when filters reject rows.
//!
//! A scan ranks the centroids, reads the nearest `ivf.probes` lists (a *batch*) and returns their
//! entries nearest first. Candidates are not fully sorted: the nearest few are selected and sorted
//! (a chunk that doubles each time), so a LIMIT 10 costs one linear pass over the batch.
//!
//! * **Memory.** The state is owned by the scan's memory context (a reset callback frees it), so a
//!   cancelled or failed query leaks nothing. Candidates are bounded by `work_mem`: when a batch
//!   holds more, the nearest half is kept and the batch is read again later for the rest (only
//!   entries after the last one returned), so every entry still comes back, in order.
//! * **Order across batches** (`ivf.iterative_scan`): `strict_order` (the default) never returns
//!   an entry closer than one already returned: later batches skip those (pgvector HNSW's rule),
//!   so the output is monotonic; `relaxed_order` returns them, so a later batch can go back to
//!   closer distances; `off` reads one batch only.
//! * **Filling a LIMIT in strict order.** Rows a filter or a policy rejects still raise the
//!   distance below which later batches are skipped; with a selective filter that floor could
//!   climb past most qualifying rows before the next batch is read. So in strict order, once
//!   `MERGE_AFTER` rows (doubling each time) have come out of the buffer, the next batch is read
//!   early and merged into it, while the floor is still low.

use super::pages::{self, INVALID_BLOCK};
use super::vectors::{check_dims, datum_vector};
use super::{to_f32, IterativeScan, Metric, OpClass, Quantizer};
use biomedclip_core::rabitq::{QueryLut, Rotation};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

mod rabitq;

#[derive(Clone, Copy)]
struct Candidate {
    distance: f64,
    tid: pg_sys::ItemPointerData,
    /// RaBitQ: where the entry's extended code is, and the entry's list (by position in the
    /// scan's ranking, for its prepared query).
    ex: pages::ExPointer,
    list: u16,
}

impl Candidate {
    fn new(distance: f64, tid: pg_sys::ItemPointerData) -> Candidate {
        Candidate { distance, tid, ex: (INVALID_BLOCK, 0), list: 0 }
    }
}

fn tid_key(t: &pg_sys::ItemPointerData) -> (u16, u16, u16) {
    (t.ip_blkid.bi_hi, t.ip_blkid.bi_lo, t.ip_posid)
}

/// Total order of candidates: distance (`total_cmp`, NaN last), then heap TID.
fn cmp(a: &Candidate, b: &Candidate) -> Ordering {
    sort_key(a).cmp(&sort_key(b))
}

/// The total order as one integer (one comparison where sorting needs many): the distance's
/// bits mapped to their `total_cmp` order, then the TID's 48 bits.
#[inline]
fn sort_key(c: &Candidate) -> u128 {
    let ordered = biomedclip_core::distance::total_order_bits(c.distance);
    let (hi, lo, pos) = tid_key(&c.tid);
    ((ordered as u128) << 64) | ((hi as u128) << 32) | ((lo as u128) << 16) | pos as u128
}

/// A re-ranked candidate (exact distance), ordered as `cmp`.
#[derive(Clone, Copy)]
struct Exact(Candidate);

impl PartialEq for Exact {
    fn eq(&self, other: &Self) -> bool {
        cmp(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Exact {}
impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Exact {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp(&self.0, &other.0)
    }
}

/// First chunk selected and sorted from a batch; it doubles with each further chunk. A RaBitQ
/// scan takes hundreds of bounds from the front before its first row is certain, so it starts
/// larger.
const FIRST_CHUNK: usize = 32;
const FIRST_CHUNK_RABITQ: usize = 512;
/// Strict order: rows returned from the buffer before the next batch is merged in (doubles).
const MERGE_AFTER: usize = 32;
/// Fewest candidates a scan keeps, however small `work_mem` is.
const MIN_CANDIDATES: usize = 1024;

struct ScanState {
    /// The metapage, read once per scan.
    meta: pages::Meta,
    opclass: OpClass,
    dims: usize,
    quantizer: Quantizer,
    rotation: Option<Rotation>,
    /// RaBitQ: the centroid of each list in `lists` order, and the query as codes see it.
    list_centroids: Vec<Vec<f32>>,
    quantized_query: Vec<f32>,
    /// RaBitQ: candidates whose bound was refined with the extended code, not yet re-ranked.
    refined: BinaryHeap<Reverse<Exact>>,
    /// RaBitQ: candidates re-ranked with their exact distance, not yet returned.
    exact: BinaryHeap<Reverse<Exact>>,
    /// RaBitQ: the prepared query of each list read, by position in `lists`.
    luts: Vec<Option<QueryLut>>,
    /// RaBitQ: extended-code pages kept pinned between refines (see `rabitq::ExPins`).
    ex_pins: rabitq::ExPins,
    /// RaBitQ: the table fetch used to re-rank (opened at the first re-rank).
    heap: pg_sys::Relation,
    fetch: *mut pg_sys::IndexFetchTableData,
    slot: *mut pg_sys::TupleTableSlot,
    heap_attnum: i32,
    mode: IterativeScan,
    first: bool,
    query: Option<Vec<u8>>,
    query_sq_norm: f32,
    /// List chains ordered by centroid distance to the query.
    lists: Vec<pg_sys::BlockNumber>,
    /// The current batch is lists[batch_start..next_list].
    batch_start: usize,
    next_list: usize,
    max_lists: usize,
    probes: usize,
    candidates: Vec<Candidate>,
    /// candidates[pos..sorted_end] are sorted and the nearest remaining.
    pos: usize,
    sorted_end: usize,
    chunk: usize,
    /// Most candidates held at once (from work_mem).
    capacity: usize,
    /// The batch overflowed `capacity`: entries after `cut` were dropped and need a re-read.
    cut: Option<Candidate>,
    /// Entries at or before this one were already returned (a re-read skips them).
    after: Option<Candidate>,
    /// strict_order, flat entries: later batches skip entries closer than this (the floor when
    /// they were read).
    min_distance: Option<f64>,
    /// The last candidate taken from the buffer (returned, or re-ranked under RaBitQ).
    last: Option<Candidate>,
    /// strict_order: the distance of the last row returned; nothing closer is returned after it.
    floor: Option<f64>,
    /// Strict order: rows returned since the last batch was read, and when to merge the next.
    returned_since_read: usize,
    merge_after: usize,
}

/// The palloc'd holder behind `scan->opaque`: the reset callback that frees the state with its
/// memory context, and the state itself (null once freed).
#[repr(C)]
struct Holder {
    callback: pg_sys::MemoryContextCallback,
    state: *mut ScanState,
}

#[pg_guard]
unsafe extern "C-unwind" fn free_state(arg: *mut std::ffi::c_void) {
    let holder = arg as *mut Holder;
    if !(*holder).state.is_null() {
        drop(Box::from_raw((*holder).state));
        (*holder).state = std::ptr::null_mut();
    }
}

unsafe fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut ScanState {
    &mut *(*((*scan).opaque as *mut Holder)).state
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
    let per_candidate = std::mem::size_of::<Candidate>();
    let capacity = ((pg_sys::work_mem as usize) * 1024 / per_candidate).max(MIN_CANDIDATES);
    let state = Box::new(ScanState {
        meta,
        opclass: meta.opclass,
        dims: meta.dims,
        quantizer: meta.quantizer,
        rotation: (meta.quantizer == Quantizer::RaBitQ).then(|| meta.rotation()),
        list_centroids: Vec::new(),
        quantized_query: Vec::new(),
        refined: BinaryHeap::new(),
        exact: BinaryHeap::new(),
        luts: Vec::new(),
        ex_pins: rabitq::ExPins::new(),
        heap: std::ptr::null_mut(),
        fetch: std::ptr::null_mut(),
        slot: std::ptr::null_mut(),
        heap_attnum: (*(*index).rd_index).indkey.values.as_slice(1)[0] as i32,
        mode: super::ITERATIVE_SCAN.get(),
        first: true,
        query: None,
        query_sq_norm: 0.0,
        lists: Vec::new(),
        batch_start: 0,
        next_list: 0,
        max_lists: 0,
        probes: 1,
        candidates: Vec::new(),
        pos: 0,
        sorted_end: 0,
        chunk: FIRST_CHUNK,
        capacity,
        cut: None,
        after: None,
        min_distance: None,
        last: None,
        floor: None,
        returned_since_read: 0,
        merge_after: MERGE_AFTER,
    });
    let holder = pg_sys::palloc0(std::mem::size_of::<Holder>()) as *mut Holder;
    (*holder).state = Box::into_raw(state);
    (*holder).callback.func = Some(free_state);
    (*holder).callback.arg = holder as *mut std::ffi::c_void;
    pg_sys::MemoryContextRegisterResetCallback(pg_sys::CurrentMemoryContext, &mut (*holder).callback);
    (*scan).opaque = holder as *mut std::ffi::c_void;
    scan
}

fn centroid_distance(metric: Metric, q: &[f32], c: &[f32]) -> f32 {
    match metric {
        Metric::L2 => biomedclip_core::distance::squared_l2_f32(q, c),
        // Centroids of cosine/IP indexes are unit vectors: rank by direction.
        _ => -biomedclip_core::distance::dot_f32(q, c),
    }
}

impl ScanState {
    fn reset_candidates(&mut self) {
        self.candidates.clear();
        self.pos = 0;
        self.sorted_end = 0;
        self.chunk = if self.quantizer == Quantizer::RaBitQ { FIRST_CHUNK_RABITQ } else { FIRST_CHUNK };
        self.cut = None;
    }

    /// Adds a candidate of the batch being read, keeping at most `capacity`.
    fn push(&mut self, c: Candidate) {
        if self.after.is_some_and(|a| cmp(&c, &a) != Ordering::Greater) {
            return;
        }
        if self.quantizer == Quantizer::None && self.min_distance.is_some_and(|m| c.distance < m) {
            return;
        }
        if self.cut.is_some_and(|cut| cmp(&c, &cut) == Ordering::Greater) {
            return;
        }
        self.candidates.push(c);
        if self.candidates.len() >= self.capacity {
            // Keep the nearest half; the rest comes back with a re-read of this batch.
            let keep = self.capacity / 2;
            self.candidates.select_nth_unstable_by(keep - 1, cmp);
            self.candidates.truncate(keep);
            self.cut = self.candidates.iter().copied().max_by(cmp);
        }
    }

    /// The next candidate in order without taking it.
    fn peek(&mut self) -> Option<Candidate> {
        self.select_chunk();
        self.candidates.get(self.pos).copied()
    }

    /// The next candidate in order, from the current batch's buffer.
    fn next(&mut self) -> Option<Candidate> {
        self.select_chunk();
        let c = *self.candidates.get(self.pos)?;
        self.pos += 1;
        Some(c)
    }

    /// Selects and sorts the next chunk when the sorted prefix is used up.
    fn select_chunk(&mut self) {
        if self.pos == self.sorted_end {
            let remaining = self.candidates.len() - self.pos;
            if remaining == 0 {
                return;
            }
            // A RaBitQ scan refines about a tenth of a batch's entries before its rows are certain
            // (measured on real text embeddings: 7% to 27%): one selection of a sixth of the batch
            // is cheaper than a second pass over the rest.
            let wanted = if self.quantizer == Quantizer::RaBitQ { self.chunk.max(remaining / 6) } else { self.chunk };
            let m = wanted.min(remaining);
            let rest = &mut self.candidates[self.pos..];
            if m < rest.len() {
                rest.select_nth_unstable_by_key(m - 1, sort_key);
            }
            rest[..m].sort_unstable_by_key(sort_key);
            self.sorted_end = self.pos + m;
            self.chunk = wanted.saturating_mul(2);
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(scan: pg_sys::IndexScanDesc, _keys: pg_sys::ScanKey, _nkeys: i32, orderbys: pg_sys::ScanKey, norderbys: i32) {
    let st = state(scan);
    st.reset_candidates();
    st.lists.clear();
    st.batch_start = 0;
    st.next_list = 0;
    st.after = None;
    st.min_distance = None;
    st.last = None;
    st.floor = None;
    st.exact.clear();
    st.refined.clear();
    st.luts.clear();
    st.ex_pins.release();
    st.returned_since_read = 0;
    st.merge_after = MERGE_AFTER;
    st.query = None;
    st.first = true;
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
    check_dims(q.len(), st.dims);
    st.query_sq_norm = st.opclass.sq_norm(query);
    let mut lists = pages::read_lists((*scan).indexRelation, &st.meta);
    let mut ranked: Vec<(f32, usize)> = lists.iter().enumerate().map(|(i, l)| (centroid_distance(st.opclass.metric, &q, &l.centroid), i)).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    st.lists = ranked.iter().map(|&(_, i)| lists[i].start).collect();
    if st.quantizer == Quantizer::RaBitQ {
        st.quantized_query = st.opclass.quantized_vector(&q);
        st.list_centroids = ranked.iter().map(|&(_, i)| std::mem::take(&mut lists[i].centroid)).collect();
        st.luts = (0..ranked.len()).map(|_| None).collect();
    }
    st.probes = (super::PROBES.get().max(1) as usize).min(st.lists.len().max(1));
    st.mode = super::ITERATIVE_SCAN.get();
    st.max_lists = if st.mode != IterativeScan::Off {
        (super::MAX_PROBES.get().max(st.probes as i32) as usize).min(st.lists.len())
    } else {
        st.probes.min(st.lists.len())
    };
}

/// Reads lists[from..to] into the candidate buffer (through the filters in `push`).
unsafe fn read_lists(index: pg_sys::Relation, st: &mut ScanState, from: usize, to: usize) {
    if st.quantizer == Quantizer::RaBitQ {
        return rabitq::read_codes(index, st, from, to);
    }
    let query = st.query.take().expect("query set");
    let vector_bytes = st.dims * st.opclass.element.size();
    for i in from..to {
        pages::for_each_item(index, st.lists[i], |page, off| {
            let (tid, sq_norm, vector) = pages::read_item(page, off, vector_bytes);
            let distance = st.opclass.distance(vector, sq_norm, &query, st.query_sq_norm);
            st.push(Candidate::new(distance, tid));
        });
    }
    st.query = Some(query);
}

/// Refills the buffer: the rest of an overflowed batch, else the next batch. False at the end.
unsafe fn refill(index: pg_sys::Relation, st: &mut ScanState) -> bool {
    let cut = st.cut;
    st.reset_candidates();
    if cut.is_some() {
        // Entries of this batch after the cut were dropped: read it again for those.
        st.after = st.last;
        read_lists(index, st, st.batch_start, st.next_list);
        return true;
    }
    st.after = None;
    st.batch_start = st.next_list;
    read_next_lists(index, st)
}

/// Reads the next `ivf.probes` lists into the buffer (which then covers lists[batch_start..]).
/// In strict order, entries closer than the last one returned are skipped. False at the end.
unsafe fn read_next_lists(index: pg_sys::Relation, st: &mut ScanState) -> bool {
    let end = (st.next_list + st.probes).min(st.max_lists);
    if st.next_list >= end {
        return false;
    }
    if st.mode == IterativeScan::StrictOrder {
        st.min_distance = st.floor;
    }
    let from = st.next_list;
    st.next_list = end;
    read_lists(index, st, from, end);
    // The sorted prefix may no longer hold the nearest entries: select again.
    st.sorted_end = st.pos;
    st.returned_since_read = 0;
    true
}

/// pgstat_count_index_scan: monitoring tools read idx_scan to find unused indexes.
unsafe fn count_index_scan(index: pg_sys::Relation) {
    if (*index).pgstat_info.is_null() {
        if !(*index).pgstat_enabled {
            return;
        }
        pg_sys::pgstat_assoc_relation(index);
    }
    (*(*index).pgstat_info).t_counts.t_numscans += 1;
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(scan: pg_sys::IndexScanDesc, _dir: pg_sys::ScanDirection::Type) -> bool {
    let st = state(scan);
    if (*scan).numberOfOrderBys == 0 {
        error!("ivf index scans require ORDER BY an ivf distance operator");
    }
    if st.first {
        st.first = false;
        count_index_scan((*scan).indexRelation);
        // Entries are read under a short share lock and returned later, without a pin: only an
        // MVCC snapshot makes that safe (https://www.postgresql.org/docs/current/index-locking.html).
        let snapshot = (*scan).xs_snapshot;
        let mvcc = !snapshot.is_null()
            && matches!((*snapshot).snapshot_type, pg_sys::SnapshotType::SNAPSHOT_MVCC | pg_sys::SnapshotType::SNAPSHOT_HISTORIC_MVCC);
        if !mvcc {
            error!("ivf index scans need an MVCC snapshot");
        }
    }
    if st.query.is_none() {
        return false;
    }
    loop {
        if st.mode == IterativeScan::StrictOrder && st.returned_since_read >= st.merge_after && st.cut.is_none() {
            // A filter is rejecting rows: merge the next batch in before the floor climbs.
            st.merge_after = st.merge_after.saturating_mul(2);
            read_next_lists((*scan).indexRelation, st);
            st.returned_since_read = 0;
        }
        let found = if st.quantizer == Quantizer::RaBitQ {
            match rabitq::step(scan, st) {
                rabitq::Step::Row(c) => Some(c),
                rabitq::Step::Again => continue,
                rabitq::Step::Refill => None,
            }
        } else {
            let c = st.next();
            if c.is_some() {
                st.last = c;
            }
            c
        };
        if let Some(c) = found {
            if st.mode == IterativeScan::StrictOrder && st.floor.is_some_and(|f| c.distance < f) {
                continue;
            }
            st.returned_since_read += 1;
            st.floor = Some(c.distance);
            (*scan).xs_heaptid = c.tid;
            (*scan).xs_recheck = false;
            (*scan).xs_recheckorderby = false;
            *(*scan).xs_orderbyvals = pg_sys::Datum::from(c.distance.to_bits());
            *(*scan).xs_orderbynulls = false;
            return true;
        }
        if !refill((*scan).indexRelation, st) && st.exact.is_empty() && st.refined.is_empty() {
            return false;
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    let holder = (*scan).opaque as *mut Holder;
    if !holder.is_null() && !(*holder).state.is_null() {
        let st = &mut *(*holder).state;
        st.ex_pins.release();
        if !st.fetch.is_null() {
            (*(*st.heap).rd_tableam).index_fetch_end.expect("table AM fetch")(st.fetch);
            pg_sys::ExecDropSingleTupleTableSlot(st.slot);
            st.fetch = std::ptr::null_mut();
        }
        free_state(holder as *mut std::ffi::c_void);
    }
}
