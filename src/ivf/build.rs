//! CREATE INDEX / REINDEX: sample, k-means, then assign every row to its nearest list.
//!
//! 1. A first heap scan counts the rows and keeps a uniform reservoir sample, bounded by
//!    `maintenance_work_mem` (phase "performing k-means" covers the k-means that follows).
//! 2. k-means++ and Lloyd iterations on the sample give the list centroids (spherical for cosine
//!    and inner product).
//! 3. A second heap scan assigns each row to its nearest centroid and appends it to that list's
//!    page chain ("assigning tuples").
//! 4. The list pages get their chain pointers and every page is WAL-logged ("loading tuples").

use super::pages::{self, Meta, INVALID_BLOCK};
use super::{handler, to_f32, Element, Metric, OpClass};
use crate::vector_datum::PgVector;
use biomedclip_core::kmeans::{self, Rng};
use pgrx::pg_sys;
use pgrx::prelude::*;

pub const PHASE_KMEANS: i64 = 2;
pub const PHASE_ASSIGN: i64 = 3;
pub const PHASE_LOAD: i64 = 4;

const KMEANS_ITERATIONS: usize = 10;
/// Training points per list (as FAISS's default cap): far fewer give visibly worse lists when
/// the data has many more natural clusters than the index has lists.
const SAMPLES_PER_LIST: usize = 256;

fn progress(param: u32, value: i64) {
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) };
}

/// The vector of a datum as raw element bytes (None for NULL, or a zero vector under cosine).
pub unsafe fn datum_vector(opclass: OpClass, datum: pg_sys::Datum, isnull: bool) -> Option<Vec<u8>> {
    if isnull {
        return None;
    }
    let bytes: Vec<u8> = match opclass.element {
        Element::F32 => {
            let v = PgVector::<f32>::from_polymorphic_datum(datum, false, pg_sys::InvalidOid)?;
            v.as_slice().iter().flat_map(|x| x.to_ne_bytes()).collect()
        }
        Element::F16 => {
            let v = PgVector::<half::f16>::from_polymorphic_datum(datum, false, pg_sys::InvalidOid)?;
            v.as_slice().iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect()
        }
    };
    if opclass.metric == Metric::Cosine && to_f32(opclass.element, &bytes).iter().all(|&x| x == 0.0) {
        return None;
    }
    Some(bytes)
}

/// Dimensions from the column's typmod, if it has one.
unsafe fn typmod_dims(index: pg_sys::Relation) -> Option<usize> {
    let attr = (*(*index).rd_att).attrs.as_slice(1)[0];
    (attr.atttypmod > 0).then_some(attr.atttypmod as usize)
}

pub fn check_dims(found: usize, expected: usize) {
    if found != expected {
        crate::model_cache::raise(pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("ivf: expected {expected} dimensions, not {found}"));
    }
}

struct SampleState {
    opclass: OpClass,
    dims: Option<usize>,
    capacity: usize,
    sample: Vec<Vec<f32>>,
    seen: u64,
    rng: Rng,
}

#[pg_guard]
unsafe extern "C-unwind" fn sample_callback(
    _index: pg_sys::Relation,
    _tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    let st = &mut *(state as *mut SampleState);
    let Some(bytes) = datum_vector(st.opclass, *values, *isnull) else { return };
    let v = to_f32(st.opclass.element, &bytes);
    match st.dims {
        Some(d) => check_dims(v.len(), d),
        None => st.dims = Some(v.len()),
    }
    st.seen += 1;
    // Reservoir sampling (Algorithm R): a uniform sample of everything seen so far.
    if st.sample.len() < st.capacity {
        st.sample.push(v);
    } else {
        let j = (st.rng.next_f64() * st.seen as f64) as usize;
        if j < st.capacity {
            st.sample[j] = v;
        }
    }
}

struct LoadState {
    opclass: OpClass,
    dims: usize,
    centroids: Vec<f32>,
    centroid_norms: Vec<f32>,
    start: Vec<pg_sys::BlockNumber>,
    tail: Vec<pg_sys::BlockNumber>,
    fork: pg_sys::ForkNumber::Type,
    indexed: f64,
}

impl LoadState {
    fn nearest(&self, v: &[f32]) -> usize {
        let v = self.opclass.assignment_vector(v);
        let vn = biomedclip_core::distance::dot_f32(&v, &v);
        kmeans::nearest(&self.centroids, &self.centroid_norms, self.dims, &v, vn).0
    }
}

/// A new page at the end of `fork` holding `item` (no WAL: the build logs its pages at the end).
unsafe fn new_page_with(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, item: &[u8]) -> pg_sys::BlockNumber {
    let buf = pages::new_buffer(index, fork);
    let blk = pg_sys::BufferGetBlockNumber(buf);
    let page = pg_sys::BufferGetPage(buf);
    pages::init_page(page);
    if !pages::try_add(page, item) {
        error!("ivf: index row of {} bytes does not fit on a page", item.len());
    }
    pg_sys::MarkBufferDirty(buf);
    pg_sys::UnlockReleaseBuffer(buf);
    blk
}

/// Appends an item to a list chain during the build. Returns (the chain's first block if this
/// call created it, else INVALID_BLOCK; the chain's tail block after the append).
unsafe fn append_unlogged(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, tail: pg_sys::BlockNumber, item: &[u8]) -> (pg_sys::BlockNumber, pg_sys::BlockNumber) {
    if tail == INVALID_BLOCK {
        let blk = new_page_with(index, fork, item);
        return (blk, blk);
    }
    let buf = pg_sys::ReadBufferExtended(index, fork, tail, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
    pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
    let page = pg_sys::BufferGetPage(buf);
    let new_tail = if pages::try_add(page, item) {
        tail
    } else {
        let next = new_page_with(index, fork, item);
        (*pages::opaque(page)).next = next;
        next
    };
    pg_sys::MarkBufferDirty(buf);
    pg_sys::UnlockReleaseBuffer(buf);
    (INVALID_BLOCK, new_tail)
}

#[pg_guard]
unsafe extern "C-unwind" fn load_callback(
    index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    let st = &mut *(state as *mut LoadState);
    let Some(bytes) = datum_vector(st.opclass, *values, *isnull) else { return };
    let v = to_f32(st.opclass.element, &bytes);
    check_dims(v.len(), st.dims);
    let list = st.nearest(&v);
    let item = pages::data_item(*tid, st.opclass.sq_norm(&bytes), &bytes);
    let (first, tail) = append_unlogged(index, st.fork, st.tail[list], &item);
    if st.start[list] == INVALID_BLOCK {
        st.start[list] = first;
    }
    st.tail[list] = tail;
    st.indexed += 1.0;
    if (st.indexed as u64) % 1000 == 0 {
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, st.indexed as i64);
    }
}

unsafe fn scan_heap(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
    callback: pg_sys::IndexBuildCallback,
    state: *mut std::ffi::c_void,
) -> f64 {
    let am = (*heap).rd_tableam;
    let scan = (*am).index_build_range_scan.expect("table AM supports index builds");
    scan(heap, index, info, true, false, true, 0, pg_sys::InvalidBlockNumber, callback, state, std::ptr::null_mut())
}

/// Samples the table and computes the centroids; returns (dims, lists, centroids, rows seen).
unsafe fn train(heap: pg_sys::Relation, index: pg_sys::Relation, info: *mut pg_sys::IndexInfo, opclass: OpClass) -> (usize, usize, Vec<f32>, f64) {
    let dims_hint = typmod_dims(index);
    let bytes_per_vector = dims_hint.unwrap_or(512) * 4 + 64;
    let budget = (pg_sys::maintenance_work_mem as usize) * 1024;
    let capacity = (budget / bytes_per_vector).clamp(1000, 1_000_000);
    let mut st = SampleState { opclass, dims: dims_hint, capacity, sample: Vec::new(), seen: 0, rng: Rng::new(0x1d2c) };
    let heap_tuples = scan_heap(heap, index, info, Some(sample_callback), &mut st as *mut _ as *mut _);
    let dims = st.dims.unwrap_or(1);
    let max = pages::max_dims(opclass.element);
    if dims > max {
        crate::model_cache::raise(pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("ivf: {dims} dimensions exceed the index limit of {max} for this type"));
    }
    let wanted = handler::lists_option(index);
    let lists = if wanted > 0 { wanted } else { super::default_lists(st.seen as f64) };
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_KMEANS);
    // k-means needs about SAMPLES_PER_LIST points per list; more adds time, little quality.
    let keep = (lists * SAMPLES_PER_LIST).max(lists).min(st.sample.len());
    let flat: Vec<f32> = st.sample.iter().take(keep).flatten().copied().collect();
    drop(st.sample);
    let centroids = kmeans::kmeans(&flat, dims, lists, opclass.kmeans_metric(), KMEANS_ITERATIONS, 42);
    (dims, lists, centroids, heap_tuples)
}

unsafe fn write_index(heap: pg_sys::Relation, index: pg_sys::Relation, info: *mut pg_sys::IndexInfo, fork: pg_sys::ForkNumber::Type) -> (f64, f64) {
    let opclass = OpClass::of_index(index);
    let (dims, lists, centroids, heap_tuples) = if heap.is_null() {
        // Init fork of an unlogged index: one list around the origin.
        (typmod_dims(index).unwrap_or(1), 1, vec![0.0; typmod_dims(index).unwrap_or(1)], 0.0)
    } else {
        train(heap, index, info, opclass)
    };

    // Metapage, then list pages.
    let meta_buf = pages::new_buffer(index, fork);
    if pg_sys::BufferGetBlockNumber(meta_buf) != pages::META_BLKNO {
        error!("ivf: index is not empty");
    }
    pages::init_page(pg_sys::BufferGetPage(meta_buf));
    pg_sys::MarkBufferDirty(meta_buf);
    pg_sys::UnlockReleaseBuffer(meta_buf);
    // Centroids are stored in the column's precision: round them first, so that the build assigns
    // rows with exactly the centroids that inserts and scans will read back.
    let centroids: Vec<f32> = match opclass.element {
        super::Element::F16 => centroids.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        super::Element::F32 => centroids,
    };
    let (first_list_blkno, locations) = pages::write_lists(index, fork, &centroids, dims, opclass.element);
    let meta = Meta { dims, lists, opclass, first_list_blkno, centroid_element: opclass.element };

    let mut st = LoadState {
        opclass,
        dims,
        centroid_norms: centroids.chunks_exact(dims).map(|c| biomedclip_core::distance::dot_f32(c, c)).collect(),
        centroids,
        start: vec![INVALID_BLOCK; lists],
        tail: vec![INVALID_BLOCK; lists],
        fork,
        indexed: 0.0,
    };
    if !heap.is_null() {
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_ASSIGN);
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, heap_tuples as i64);
        scan_heap(heap, index, info, Some(load_callback), &mut st as *mut _ as *mut _);
    }

    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_LOAD);
    for (list, &(blkno, off)) in locations.iter().enumerate() {
        let buf = pg_sys::ReadBufferExtended(index, fork, blkno, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        pages::set_list_pages(pg_sys::BufferGetPage(buf), off, st.start[list], st.tail[list]);
        pg_sys::MarkBufferDirty(buf);
        pg_sys::UnlockReleaseBuffer(buf);
    }
    let buf = pg_sys::ReadBufferExtended(index, fork, pages::META_BLKNO, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
    pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
    pages::write_meta(pg_sys::BufferGetPage(buf), &meta);
    pg_sys::MarkBufferDirty(buf);
    pg_sys::UnlockReleaseBuffer(buf);

    // WAL-log every page (init forks always; the main fork unless the relation is unlogged/temp).
    let permanent = (*(*index).rd_rel).relpersistence == pg_sys::RELPERSISTENCE_PERMANENT as std::ffi::c_char;
    if fork == pg_sys::ForkNumber::INIT_FORKNUM || permanent {
        let nblocks = pg_sys::RelationGetNumberOfBlocksInFork(index, fork);
        pg_sys::log_newpage_range(index, fork, 0, nblocks, true);
    }
    (heap_tuples, st.indexed)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(heap: pg_sys::Relation, index: pg_sys::Relation, info: *mut pg_sys::IndexInfo) -> *mut pg_sys::IndexBuildResult {
    let (heap_tuples, index_tuples) = write_index(heap, index, info, pg_sys::ForkNumber::MAIN_FORKNUM);
    let mut result = pgrx::PgBox::<pg_sys::IndexBuildResult>::alloc0();
    result.heap_tuples = heap_tuples;
    result.index_tuples = index_tuples;
    result.into_pg()
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    write_index(std::ptr::null_mut(), index, std::ptr::null_mut(), pg_sys::ForkNumber::INIT_FORKNUM);
}
