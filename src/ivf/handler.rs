//! The access-method handler, reloptions, cost estimate and opclass support functions.

use super::{build, insert, scan, vacuum, OpClass, Quantizer};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{Internal, PgBox};
use std::ffi::c_char;

/// `WITH (lists = N)`, 1 to 32,768 as in pgvector; unset (stored as 0) means "choose from the row
/// count at build time". `WITH (quantizer = 'none' | 'rabitq')`, default none.
#[repr(C)]
pub struct IvfOptions {
    vl_len_: i32,
    pub lists: i32,
    pub quantizer: i32,
}

static mut RELOPT_KIND: pg_sys::relopt_kind::Type = 0;

pub fn register_reloptions() {
    unsafe {
        RELOPT_KIND = pg_sys::add_reloption_kind();
        pg_sys::add_int_reloption(
            RELOPT_KIND,
            c"lists".as_ptr(),
            c"Number of inverted lists (unset: rows/1000 up to 1M rows, then sqrt(rows))".as_ptr(),
            0,
            1,
            32768,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        // The enum members must outlive the registration (PostgreSQL keeps the pointer).
        let members: &'static mut [pg_sys::relopt_enum_elt_def; 3] = Box::leak(Box::new([
            pg_sys::relopt_enum_elt_def { string_val: c"none".as_ptr(), symbol_val: Quantizer::None as i32 },
            pg_sys::relopt_enum_elt_def { string_val: c"rabitq".as_ptr(), symbol_val: Quantizer::RaBitQ as i32 },
            pg_sys::relopt_enum_elt_def { string_val: std::ptr::null(), symbol_val: 0 },
        ]));
        pg_sys::add_enum_reloption(
            RELOPT_KIND,
            c"quantizer".as_ptr(),
            c"How list entries store vectors: none (full vectors) or rabitq (1-bit RaBitQ codes, exact re-rank from the table)".as_ptr(),
            members.as_mut_ptr(),
            Quantizer::None as i32,
            c"Valid values are \"none\" and \"rabitq\".".as_ptr(),
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn amoptions(reloptions: pg_sys::Datum, validate: bool) -> *mut pg_sys::bytea {
    let tab = [
        pg_sys::relopt_parse_elt {
            optname: c"lists".as_ptr(),
            opttype: pg_sys::relopt_type::RELOPT_TYPE_INT,
            offset: std::mem::offset_of!(IvfOptions, lists) as i32,
        },
        pg_sys::relopt_parse_elt {
            optname: c"quantizer".as_ptr(),
            opttype: pg_sys::relopt_type::RELOPT_TYPE_ENUM,
            offset: std::mem::offset_of!(IvfOptions, quantizer) as i32,
        },
    ];
    pg_sys::build_reloptions(reloptions, validate, RELOPT_KIND, std::mem::size_of::<IvfOptions>(), tab.as_ptr(), tab.len() as i32) as *mut pg_sys::bytea
}

/// The `quantizer` option of an index.
pub unsafe fn quantizer_option(index: pg_sys::Relation) -> Quantizer {
    let opts = (*index).rd_options as *const IvfOptions;
    if !opts.is_null() && (*opts).quantizer == Quantizer::RaBitQ as i32 {
        Quantizer::RaBitQ
    } else {
        Quantizer::None
    }
}

/// The `lists` option of an index (0 when unset).
pub unsafe fn lists_option(index: pg_sys::Relation) -> usize {
    let opts = (*index).rd_options as *const IvfOptions;
    if opts.is_null() {
        0
    } else {
        (*opts).lists.max(0) as usize
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn amvalidate(_opclassoid: pg_sys::Oid) -> bool {
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn ambuildphasename(phase: i64) -> *mut c_char {
    let name: &'static std::ffi::CStr = match phase {
        build::PHASE_KMEANS => c"performing k-means",
        build::PHASE_ASSIGN => c"assigning tuples",
        build::PHASE_LOAD => c"loading tuples",
        _ => return std::ptr::null_mut(),
    };
    name.as_ptr() as *mut c_char
}

/// Cost of an ivf scan. Without an ORDER BY on the opclass distance the index is useless, and
/// a finite cost here would let the planner pick it (even as an index-only scan for count(*)),
/// so the cost is infinite. Otherwise the model follows the scan:
///
/// * startup: ranking the centroids, then reading and scoring the first batch of `ivf.probes`
///   lists before the first row comes back. A list is a run of consecutive blocks written by the
///   build, so its pages cost `seq_page_cost`; each entry costs an index tuple and one distance.
/// * total: startup plus every further list an iterative scan may read (up to `ivf.max_probes`),
///   at the same rate. The planner charges a `LIMIT k` over `n` estimated rows the fraction
///   `k / n` of the run cost, and `n` already includes the filters' selectivity: a selective
///   filter makes the fraction larger, exactly as an iterative scan reads more lists to fill the
///   LIMIT.
#[pg_guard]
unsafe extern "C-unwind" fn amcostestimate(
    _root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    _loop_count: f64,
    index_startup_cost: *mut pg_sys::Cost,
    index_total_cost: *mut pg_sys::Cost,
    index_selectivity: *mut pg_sys::Selectivity,
    index_correlation: *mut f64,
    index_pages: *mut f64,
) {
    *index_correlation = 0.0;
    if (*path).indexorderbys.is_null() {
        *index_startup_cost = f64::INFINITY;
        *index_total_cost = f64::INFINITY;
        *index_selectivity = 0.0;
        *index_pages = 0.0;
        return;
    }
    let info = (*path).indexinfo;
    let index_rel = pg_sys::index_open((*info).indexoid, pg_sys::NoLock as i32);
    let lists = if pg_sys::RelationGetNumberOfBlocksInFork(index_rel, pg_sys::ForkNumber::MAIN_FORKNUM) > 0 {
        super::pages::read_meta(index_rel).lists
    } else {
        lists_option(index_rel).max(1)
    }
    .max(1) as f64;
    pg_sys::index_close(index_rel, pg_sys::NoLock as i32);
    let probes = (super::PROBES.get().max(1) as f64).min(lists);
    let max_lists = if super::ITERATIVE_SCAN.get() == super::IterativeScan::Off {
        probes
    } else {
        (super::MAX_PROBES.get() as f64).max(probes).min(lists)
    };
    let (mut random_page_cost, mut seq_page_cost) = (0.0, 0.0);
    pg_sys::get_tablespace_page_costs((*info).reltablespace, &mut random_page_cost, &mut seq_page_cost);
    let (cpu_index_tuple_cost, cpu_operator_cost) = (pg_sys::cpu_index_tuple_cost, pg_sys::cpu_operator_cost);
    let pages_per_list = ((*info).pages as f64 / lists).max(1.0);
    let tuples_per_list = (*info).tuples.max(0.0) / lists;
    let per_list = pages_per_list * seq_page_cost + tuples_per_list * (cpu_index_tuple_cost + cpu_operator_cost);
    let ranking = lists * cpu_operator_cost;
    let startup = ranking + probes * per_list;
    *index_startup_cost = startup;
    *index_total_cost = startup + (max_lists - probes) * per_list;
    *index_selectivity = 1.0;
    *index_pages = max_lists * pages_per_list;
}

#[pg_extern(sql = false)]
fn ivfhandler(_fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let mut am = unsafe { PgBox::<pg_sys::IndexAmRoutine>::alloc_node(pg_sys::NodeTag::T_IndexAmRoutine) };
    am.amstrategies = 0;
    am.amsupport = 1;
    am.amoptsprocnum = 0;
    am.amcanorder = false;
    am.amcanorderbyop = true;
    am.amcanbackward = false;
    am.amcanunique = false;
    am.amcanmulticol = false;
    am.amoptionalkey = true;
    am.amsearcharray = false;
    am.amsearchnulls = false;
    am.amstorage = false;
    am.amclusterable = false;
    am.ampredlocks = false;
    am.amcanparallel = false;
    am.amcaninclude = false;
    am.amusemaintenanceworkmem = true;
    am.amparallelvacuumoptions = pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL as u8;
    am.amkeytype = pg_sys::InvalidOid;
    am.ambuild = Some(build::ambuild);
    am.ambuildempty = Some(build::ambuildempty);
    am.aminsert = Some(insert::aminsert);
    am.ambulkdelete = Some(vacuum::ambulkdelete);
    am.amvacuumcleanup = Some(vacuum::amvacuumcleanup);
    am.amcanreturn = None;
    am.amcostestimate = Some(amcostestimate);
    am.amoptions = Some(amoptions);
    am.amproperty = None;
    am.ambuildphasename = Some(ambuildphasename);
    am.amvalidate = Some(amvalidate);
    am.amadjustmembers = None;
    am.ambeginscan = Some(scan::ambeginscan);
    am.amrescan = Some(scan::amrescan);
    am.amgettuple = Some(scan::amgettuple);
    am.amgetbitmap = None;
    am.amendscan = Some(scan::amendscan);
    am.ammarkpos = None;
    am.amrestrpos = None;
    am.amestimateparallelscan = None;
    am.aminitparallelscan = None;
    am.amparallelrescan = None;
    Internal::from(Some(pg_sys::Datum::from(am.into_pg())))
}

// Support function 1 of each opclass: its metric and element type (see `OpClass::code`).
macro_rules! support {
    ($name:ident, $metric:expr, $element:expr) => {
        #[pg_extern(sql = false)]
        fn $name(_unused: Internal) -> i32 {
            OpClass { metric: $metric, element: $element }.code()
        }
    };
}
use super::{Element::*, Metric::*};
support!(ivf_support_embedding_l2, L2, F32);
support!(ivf_support_embedding_ip, InnerProduct, F32);
support!(ivf_support_embedding_cosine, Cosine, F32);
support!(ivf_support_halfembedding_l2, L2, F16);
support!(ivf_support_halfembedding_ip, InnerProduct, F16);
support!(ivf_support_halfembedding_cosine, Cosine, F16);
