//! The access-method handler, reloptions, cost estimate and opclass support functions.

use super::{build, insert, scan, vacuum, OpClass};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{Internal, PgBox};
use std::ffi::c_char;

/// `WITH (lists = N)`, 1 to 32,768 as in pgvector; unset (stored as 0) means "choose from the row
/// count at build time".
#[repr(C)]
pub struct IvfOptions {
    vl_len_: i32,
    pub lists: i32,
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
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn amoptions(reloptions: pg_sys::Datum, validate: bool) -> *mut pg_sys::bytea {
    let tab = [pg_sys::relopt_parse_elt {
        optname: c"lists".as_ptr(),
        opttype: pg_sys::relopt_type::RELOPT_TYPE_INT,
        offset: std::mem::offset_of!(IvfOptions, lists) as i32,
    }];
    pg_sys::build_reloptions(reloptions, validate, RELOPT_KIND, std::mem::size_of::<IvfOptions>(), tab.as_ptr(), tab.len() as i32) as *mut pg_sys::bytea
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
/// so the cost is infinite. Otherwise: the fraction `probes / lists` of the index, all of it
/// read before the first row comes back (startup = total).
#[pg_guard]
unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    index_startup_cost: *mut pg_sys::Cost,
    index_total_cost: *mut pg_sys::Cost,
    index_selectivity: *mut pg_sys::Selectivity,
    index_correlation: *mut f64,
    index_pages: *mut f64,
) {
    if (*path).indexorderbys.is_null() {
        *index_startup_cost = f64::INFINITY;
        *index_total_cost = f64::INFINITY;
        *index_selectivity = 0.0;
        *index_correlation = 0.0;
        *index_pages = 0.0;
        return;
    }
    let index_rel = pg_sys::index_open((*(*path).indexinfo).indexoid, pg_sys::NoLock as i32);
    let meta_lists = {
        let opt = lists_option(index_rel);
        if pg_sys::RelationGetNumberOfBlocksInFork(index_rel, pg_sys::ForkNumber::MAIN_FORKNUM) > 0 {
            super::pages::read_meta(index_rel).lists
        } else {
            opt.max(1)
        }
    };
    pg_sys::index_close(index_rel, pg_sys::NoLock as i32);
    let probes = super::PROBES.get().max(1) as f64;
    let ratio = (probes / meta_lists.max(1) as f64).min(1.0);
    let mut costs: pg_sys::GenericCosts = std::mem::zeroed();
    costs.numIndexTuples = (*(*path).indexinfo).tuples * ratio;
    pg_sys::genericcostestimate(root, path, loop_count, &mut costs);
    // Most of the work (reading and sorting the probed lists) happens before the first tuple.
    *index_startup_cost = costs.indexTotalCost;
    *index_total_cost = costs.indexTotalCost;
    *index_selectivity = costs.indexSelectivity;
    *index_correlation = 0.0;
    *index_pages = costs.numIndexPages * ratio;
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
