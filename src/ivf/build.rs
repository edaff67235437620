//! CREATE INDEX / REINDEX: train the lists, assign every row, write each list contiguously.
//!
//! 1. `train`: a uniform sample and k-means ("performing k-means").
//! 2. A second heap scan collects rows in batches; each batch is assigned to its nearest lists on
//!    `max_parallel_maintenance_workers` + 1 threads (which call nothing of PostgreSQL), and every
//!    entry goes into a tuplesort keyed by its list ("assigning tuples"). The sort spills to disk
//!    beyond `maintenance_work_mem`, as pgvector's build does.
//! 3. The sorted entries are written list after list, so that each list's chain is a run of
//!    consecutive blocks (a probe reads sequentially), then every page is WAL-logged ("loading
//!    tuples").

use super::pages::{self, Meta, INVALID_BLOCK};
use super::train::{self, build_threads};
use super::vectors::{check_dims, datum_vector, typmod_dims, Encoder};
use super::{to_f32, OpClass};
use biomedclip_core::kmeans;
use pgrx::pg_sys;
use pgrx::prelude::*;

pub const PHASE_KMEANS: i64 = 2;
pub const PHASE_ASSIGN: i64 = 3;
pub const PHASE_LOAD: i64 = 4;

/// Seed of the RaBitQ rotation (recorded in the metapage; fixed, so builds are reproducible).
const ROTATION_SEED: u64 = 0x4956_4652_6162_6974;
/// Rows assigned per parallel batch.
const ASSIGN_BATCH: usize = 2048;

pub fn progress(param: u32, value: i64) {
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) };
}

pub unsafe fn scan_heap(
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

struct AssignState {
    opclass: OpClass,
    dims: usize,
    centroids: Vec<f32>,
    centroid_norms: Vec<f32>,
    threads: usize,
    encoder: Encoder,
    /// The pending batch: assignment vectors (flat), heap TIDs and element bytes.
    batch_vectors: Vec<f32>,
    batch_rows: Vec<(pg_sys::ItemPointerData, Vec<u8>)>,
    sort: *mut pg_sys::Tuplesortstate,
    indexed: f64,
}

impl AssignState {
    /// Assigns the pending batch and feeds its entries to the sort as `bytea` values: the list
    /// number (big-endian, so that byte order is list order), the entry item's length (u16), the
    /// entry item, then (RaBitQ) the extended-code item.
    unsafe fn flush(&mut self) {
        if self.batch_rows.is_empty() {
            return;
        }
        let lists = kmeans::assign(&self.centroids, &self.centroid_norms, self.dims, &self.batch_vectors, self.threads);
        // Encoding (RaBitQ codes) runs on the same threads; it calls nothing of PostgreSQL.
        let (rows, encoder, centroids, dims) = (&self.batch_rows, &self.encoder, &self.centroids, self.dims);
        let items = kmeans::par_ranges(self.threads, rows.len(), 64, |r| {
            r.map(|i| {
                let list = lists[i];
                encoder.item(rows[i].0, &rows[i].1, &centroids[list * dims..(list + 1) * dims])
            })
            .collect::<Vec<_>>()
        })
        .concat();
        self.batch_rows.clear();
        let mut datum = Vec::new();
        for ((entry, ex), list) in items.into_iter().zip(lists) {
            datum.clear();
            datum.resize(4, 0);
            datum.extend_from_slice(&(list as u32).to_be_bytes());
            datum.extend_from_slice(&(entry.len() as u16).to_ne_bytes());
            datum.extend_from_slice(&entry);
            datum.extend_from_slice(ex.as_deref().unwrap_or_default());
            crate::vector_datum::set_varsize_4b(datum.as_mut_ptr(), datum.len());
            pg_sys::tuplesort_putdatum(self.sort, pg_sys::Datum::from(datum.as_ptr()), false);
        }
        self.batch_vectors.clear();
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, self.indexed as i64);
        pgrx::check_for_interrupts!();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    let st = &mut *(state as *mut AssignState);
    let Some(bytes) = datum_vector(st.opclass, *values, *isnull) else { return };
    let v = to_f32(st.opclass.element, &bytes);
    check_dims(v.len(), st.dims);
    st.batch_vectors.extend_from_slice(&st.opclass.assignment_vector(&v));
    st.batch_rows.push((*tid, bytes));
    st.indexed += 1.0;
    if st.batch_rows.len() >= ASSIGN_BATCH {
        st.flush();
    }
}

/// A new page at the end of `fork`, initialized, pinned and locked (no WAL: the build logs its
/// pages at the end).
unsafe fn new_page(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type) -> pg_sys::Buffer {
    let buf = pages::new_buffer(index, fork);
    pages::init_page(pg_sys::BufferGetPage(buf));
    buf
}

unsafe fn finish_page(buf: pg_sys::Buffer) {
    pg_sys::MarkBufferDirty(buf);
    pg_sys::UnlockReleaseBuffer(buf);
}

/// A chain being written by the build: its first and last block, and the last page (locked).
struct ChainWriter {
    first: pg_sys::BlockNumber,
    last: pg_sys::BlockNumber,
    page: Option<pg_sys::Buffer>,
}

impl ChainWriter {
    fn new() -> ChainWriter {
        ChainWriter { first: INVALID_BLOCK, last: INVALID_BLOCK, page: None }
    }

    /// Appends `item`, on a new page at the end of `fork` when the last one is full.
    unsafe fn add(&mut self, index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, item: &[u8]) -> pages::ExPointer {
        if let Some(buf) = self.page {
            if let Some(off) = pages::try_add_at(pg_sys::BufferGetPage(buf), item) {
                return (self.last, off);
            }
        }
        let next = new_page(index, fork);
        let next_blk = pg_sys::BufferGetBlockNumber(next);
        match self.page.take() {
            Some(buf) => {
                (*pages::opaque(pg_sys::BufferGetPage(buf))).next = next_blk;
                finish_page(buf);
            }
            None => self.first = next_blk,
        }
        self.last = next_blk;
        self.page = Some(next);
        match pages::try_add_at(pg_sys::BufferGetPage(next), item) {
            Some(off) => (next_blk, off),
            None => error!("ivf: index row of {} bytes does not fit on a page", item.len()),
        }
    }

    unsafe fn finish(&mut self) {
        if let Some(buf) = self.page.take() {
            finish_page(buf);
        }
    }
}

/// One sorted value: (list, entry item, extended-code item, possibly empty). The caller frees
/// `ptr` when done with the slices.
unsafe fn parse_sorted<'a>(ptr: *mut u8) -> (usize, &'a [u8], &'a [u8]) {
    let len = pgrx::varsize_any(ptr as *const pg_sys::varlena);
    let body = std::slice::from_raw_parts(ptr.add(4), len - 4);
    let list = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let entry_len = u16::from_ne_bytes([body[4], body[5]]) as usize;
    (list, &body[6..6 + entry_len], &body[6 + entry_len..])
}

/// Calls `f` on every sorted value, in order.
unsafe fn for_each_sorted(sort: *mut pg_sys::Tuplesortstate, mut f: impl FnMut(usize, &[u8], &[u8])) {
    let mut value = pg_sys::Datum::from(0usize);
    let mut isnull = false;
    let mut n: u64 = 0;
    while pg_sys::tuplesort_getdatum(sort, true, &mut value, &mut isnull, std::ptr::null_mut()) {
        let ptr = value.cast_mut_ptr::<u8>();
        let (list, entry, ex) = parse_sorted(ptr);
        f(list, entry, ex);
        pg_sys::pfree(ptr as *mut std::ffi::c_void);
        n += 1;
        if n % 10_000 == 0 {
            pgrx::check_for_interrupts!();
        }
    }
}

/// Writes the sorted entries list after list, each list's chain a run of consecutive blocks.
/// Under RaBitQ a first pass writes the extended codes (their chains first), a second the
/// entries pointing to them. Returns each list's (first, last) block of both chains.
unsafe fn load_sorted(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, sort: *mut pg_sys::Tuplesortstate, lists: usize, rabitq: bool) -> Vec<[pg_sys::BlockNumber; 4]> {
    let mut chains = vec![[INVALID_BLOCK; 4]; lists];
    let mut pointers: Vec<pages::ExPointer> = Vec::new();
    if rabitq {
        let mut current: Option<(usize, ChainWriter)> = None;
        let close = |c: Option<(usize, ChainWriter)>, chains: &mut Vec<[pg_sys::BlockNumber; 4]>| {
            if let Some((l, mut w)) = c {
                w.finish();
                chains[l][2] = w.first;
                chains[l][3] = w.last;
            }
        };
        for_each_sorted(sort, |list, _, ex| {
            if current.as_ref().is_none_or(|(l, _)| *l != list) {
                close(current.take(), &mut chains);
                current = Some((list, ChainWriter::new()));
            }
            let (_, w) = current.as_mut().expect("set above");
            pointers.push(w.add(index, fork, ex));
        });
        close(current.take(), &mut chains);
        pg_sys::tuplesort_rescan(sort);
    }
    let mut current: Option<(usize, ChainWriter)> = None;
    let mut i = 0usize;
    let mut entry_buf = Vec::new();
    for_each_sorted(sort, |list, entry, _| {
        if current.as_ref().is_none_or(|(l, _)| *l != list) {
            if let Some((l, mut w)) = current.take() {
                w.finish();
                chains[l][0] = w.first;
                chains[l][1] = w.last;
            }
            current = Some((list, ChainWriter::new()));
        }
        let (_, w) = current.as_mut().expect("set above");
        if rabitq {
            entry_buf.clear();
            entry_buf.extend_from_slice(entry);
            pages::set_ex_pointer(&mut entry_buf, pointers[i]);
            w.add(index, fork, &entry_buf);
        } else {
            w.add(index, fork, entry);
        }
        i += 1;
    });
    if let Some((l, mut w)) = current.take() {
        w.finish();
        chains[l][0] = w.first;
        chains[l][1] = w.last;
    }
    chains
}

unsafe fn write_index(heap: pg_sys::Relation, index: pg_sys::Relation, info: *mut pg_sys::IndexInfo, fork: pg_sys::ForkNumber::Type) -> (f64, f64) {
    let opclass = OpClass::of_index(index);
    let trained = if heap.is_null() {
        // Init fork of an unlogged index: one list around the origin.
        let dims = typmod_dims(index).unwrap_or(1);
        train::Trained { dims, lists: 1, centroids: vec![0.0; dims], heap_tuples: 0.0 }
    } else {
        train::train(heap, index, info, opclass)
    };
    let train::Trained { dims, lists, centroids, heap_tuples } = trained;

    // Metapage, then list pages.
    let meta_buf = pages::new_buffer(index, fork);
    if pg_sys::BufferGetBlockNumber(meta_buf) != pages::META_BLKNO {
        error!("ivf: index is not empty");
    }
    pages::init_page(pg_sys::BufferGetPage(meta_buf));
    finish_page(meta_buf);
    // Centroids are stored in the column's precision: round them first, so that the build assigns
    // rows with exactly the centroids that inserts and scans will read back.
    let centroids: Vec<f32> = match opclass.element {
        super::Element::F16 => centroids.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        super::Element::F32 => centroids,
    };
    let (first_list_blkno, locations) = pages::write_lists(index, fork, &centroids, dims, opclass.element);
    let quantizer = super::handler::quantizer_option(index);
    if quantizer == super::Quantizer::RaBitQ && (*(*index).rd_index).indkey.values.as_slice(1)[0] == 0 {
        crate::model_cache::raise(
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "ivf: quantizer = 'rabitq' re-ranks with the table's column, so it needs a plain column, not an expression".into(),
        );
    }
    let meta = Meta { dims, lists, opclass, first_list_blkno, centroid_element: opclass.element, quantizer, rotation_seed: ROTATION_SEED, list_header: pages::LIST_HEADER_V4 };

    let mut chains = vec![[INVALID_BLOCK; 4]; lists];
    let mut indexed = 0.0;
    if !heap.is_null() {
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_ASSIGN);
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, heap_tuples as i64);
        let sort = pg_sys::tuplesort_begin_datum(
            pg_sys::BYTEAOID,
            pg_sys::Oid::from(pg_sys::ByteaLessOperator),
            pg_sys::InvalidOid,
            false,
            pg_sys::maintenance_work_mem,
            std::ptr::null_mut(),
            // RaBitQ reads the sorted entries twice (extended codes, then entries).
            if quantizer == super::Quantizer::RaBitQ { pg_sys::TUPLESORT_RANDOMACCESS } else { pg_sys::TUPLESORT_NONE } as i32,
        );
        let mut st = AssignState {
            opclass,
            dims,
            centroid_norms: centroids.chunks_exact(dims).map(|c| biomedclip_core::distance::dot_f32(c, c)).collect(),
            centroids,
            threads: build_threads(),
            encoder: Encoder::new(&meta),
            batch_vectors: Vec::with_capacity(ASSIGN_BATCH * dims),
            batch_rows: Vec::with_capacity(ASSIGN_BATCH),
            sort,
            indexed: 0.0,
        };
        scan_heap(heap, index, info, Some(assign_callback), &mut st as *mut _ as *mut _);
        st.flush();
        indexed = st.indexed;
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_LOAD);
        pg_sys::tuplesort_performsort(sort);
        chains = load_sorted(index, fork, sort, lists, quantizer == super::Quantizer::RaBitQ);
        pg_sys::tuplesort_end(sort);
    }

    for (list, &(blkno, off)) in locations.iter().enumerate() {
        let buf = pg_sys::ReadBufferExtended(index, fork, blkno, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        let page = pg_sys::BufferGetPage(buf);
        let [start, last, ex_start, ex_last] = chains[list];
        pages::set_list_pages(page, off, pages::Chain::Entries, start, last);
        pages::set_list_pages(page, off, pages::Chain::Extended, ex_start, ex_last);
        finish_page(buf);
    }
    let buf = pg_sys::ReadBufferExtended(index, fork, pages::META_BLKNO, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
    pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
    pages::write_meta(pg_sys::BufferGetPage(buf), &meta);
    finish_page(buf);

    // WAL-log every page (init forks always; the main fork unless the relation is unlogged/temp).
    let permanent = (*(*index).rd_rel).relpersistence == pg_sys::RELPERSISTENCE_PERMANENT as std::ffi::c_char;
    if fork == pg_sys::ForkNumber::INIT_FORKNUM || permanent {
        let nblocks = pg_sys::RelationGetNumberOfBlocksInFork(index, fork);
        pg_sys::log_newpage_range(index, fork, 0, nblocks, true);
    }
    (heap_tuples, indexed)
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
