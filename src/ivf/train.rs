//! Training an ivf index: a uniform sample of the table, then k-means on it.
//!
//! The first heap scan keeps a reservoir sample (Algorithm R: every row, wherever it sits in the
//! heap, is kept with the same probability) bounded by `maintenance_work_mem`; k-means then trains
//! on a uniform subsample of it, about `SAMPLES_PER_LIST` points per list. Both draws are uniform,
//! so a table loaded in time order (one department, scanner or year after another) gets the same
//! lists as a shuffled one.

use super::vectors::{check_dims, datum_vector, typmod_dims};
use super::{handler, pages, to_f32, OpClass};
use biomedclip_core::kmeans::{self, Control, Rng};
use pgrx::pg_sys;
use pgrx::prelude::*;

const KMEANS_ITERATIONS: usize = 10;
/// Training points per list (as FAISS's default cap): far fewer give visibly worse lists when
/// the data has many more natural clusters than the index has lists.
const SAMPLES_PER_LIST: usize = 256;
/// Below this many rows per list, CREATE INDEX warns that the lists will be poor.
const FEW_ROWS_PER_LIST: u64 = 10;

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
    if st.sample.len() < st.capacity {
        st.sample.push(v);
    } else {
        let j = (st.rng.next_f64() * st.seen as f64) as usize;
        if j < st.capacity {
            st.sample[j] = v;
        }
    }
}

/// A uniform draw of `keep` of the sampled vectors (partial Fisher-Yates), flattened.
fn subsample(mut sample: Vec<Vec<f32>>, keep: usize, rng: &mut Rng) -> Vec<f32> {
    let n = sample.len();
    let keep = keep.min(n);
    for i in 0..keep {
        let j = i + rng.below(n - i);
        sample.swap(i, j);
    }
    sample.truncate(keep);
    sample.into_iter().flatten().collect()
}

/// Worker threads for k-means and list assignment: the backend plus
/// `max_parallel_maintenance_workers`, no more than the machine's cores.
pub fn build_threads() -> usize {
    let wanted = 1 + unsafe { pg_sys::max_parallel_maintenance_workers }.max(0) as usize;
    wanted.min(std::thread::available_parallelism().map_or(1, |t| t.get()))
}

/// After k-means stopped for a pending cancel or termination: PostgreSQL raises its own error if
/// it acts on it; if it does not (the cancel was absorbed), k-means runs again (it is seeded, so
/// the result is the same), unless the flag is still set (cancels held off), which raises 57014.
fn after_interrupted() {
    pgrx::check_for_interrupts!();
    if crate::model_cache::pg_interrupt_pending() {
        crate::model_cache::raise(pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED, "canceling statement due to user request".into())
    }
}

pub struct Trained {
    pub dims: usize,
    pub lists: usize,
    pub centroids: Vec<f32>,
    pub heap_tuples: f64,
}

/// Samples the table and computes the centroids.
pub unsafe fn train(heap: pg_sys::Relation, index: pg_sys::Relation, info: *mut pg_sys::IndexInfo, opclass: OpClass) -> Trained {
    let dims_hint = typmod_dims(index);
    let bytes_per_vector = dims_hint.unwrap_or(512) * 4 + 64;
    let budget = (pg_sys::maintenance_work_mem as usize) * 1024;
    let capacity = (budget / bytes_per_vector).clamp(1000, 1_000_000);
    let mut st = SampleState { opclass, dims: dims_hint, capacity, sample: Vec::new(), seen: 0, rng: Rng::new(0x1d2c) };
    let heap_tuples = super::build::scan_heap(heap, index, info, Some(sample_callback), &mut st as *mut _ as *mut _);
    let Some(dims) = st.dims else {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ivf: column \"{}\" has no dimensions and the table has no rows to take them from", index_column_name(index)),
            pgrx::function_name!(),
        )
        .set_hint("Declare the column with its dimensions, e.g. embedding(512), or build the index after loading rows.")
        .report(PgLogLevel::ERROR);
        unreachable!();
    };
    let max = pages::max_dims(opclass.element);
    if dims > max {
        crate::model_cache::raise(pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("ivf: {dims} dimensions exceed the index limit of {max} for this type"));
    }
    let wanted = handler::lists_option(index);
    let lists = if wanted > 0 { wanted } else { super::default_lists(st.seen as f64) };
    if st.seen < lists as u64 * FEW_ROWS_PER_LIST {
        let report = pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("ivf index created with little data ({} rows for {} lists)", st.seen, lists),
            pgrx::function_name!(),
        )
        .set_detail("Lists trained on few rows give low recall.")
        .set_hint("REINDEX once the table holds more data.");
        crate::report_held::held(|| report.report(PgLogLevel::NOTICE));
    }
    super::build::progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, super::build::PHASE_KMEANS);
    let flat = subsample(std::mem::take(&mut st.sample), lists * SAMPLES_PER_LIST, &mut st.rng);
    // Only a cancel, timeout or termination stops k-means: InterruptPending is also set by
    // interrupts that are not errors (a memory-context log request, a ProcSignal barrier, sinval
    // catch-up, ...), and treating those as a cancel failed long builds (seen on Citus shards).
    let control = Control { threads: build_threads(), interrupted: &crate::model_cache::pg_interrupt_pending };
    let centroids = loop {
        match kmeans::kmeans_with(&flat, dims, lists, opclass.kmeans_metric(), KMEANS_ITERATIONS, 42, &control) {
            Ok(c) => break c,
            Err(_) => after_interrupted(),
        }
    };
    Trained { dims, lists, centroids, heap_tuples }
}

unsafe fn index_column_name(index: pg_sys::Relation) -> String {
    let attr = (*(*index).rd_att).attrs.as_slice(1)[0];
    std::ffi::CStr::from_ptr(attr.attname.data.as_ptr()).to_string_lossy().into_owned()
}
