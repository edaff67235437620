//! `ivf_index_info(regclass)`: what a build chose and how the lists are filled, so that
//! `lists` and `probes` can be tuned (reloptions show only what was asked, not what was chosen).

use super::pages::{self, INVALID_BLOCK};
use super::{Element, Metric};
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

#[pg_extern(sql = false)]
fn ivf_index_info(index: pg_sys::Oid) -> JsonB {
    unsafe {
        let rel = pg_sys::index_open(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        if (*(*rel).rd_rel).relam != pg_sys::get_am_oid(c"ivf".as_ptr(), false) {
            crate::model_cache::raise(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("\"{}\" is not an ivf index", pages::relname(rel)));
        }
        let table = (*(*rel).rd_index).indrelid;
        if pg_sys::pg_class_aclcheck(table, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) != pg_sys::AclResult::ACLCHECK_OK {
            crate::model_cache::raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for the table of index \"{}\"", pages::relname(rel)),
            );
        }
        let meta = pages::read_meta(rel);
        let lists = pages::read_lists(rel, &meta);
        let mut sizes = Vec::with_capacity(lists.len());
        let mut data_pages = 0u64;
        for list in &lists {
            let (mut rows, mut blkno) = (0u64, list.start);
            while blkno != INVALID_BLOCK {
                pgrx::check_for_interrupts!();
                let buf = pages::read_locked(rel, blkno, pg_sys::BUFFER_LOCK_SHARE);
                let page = pg_sys::BufferGetPage(buf);
                for off in 1..=pg_sys::PageGetMaxOffsetNumber(page) {
                    if (*pg_sys::PageGetItemId(page, off)).lp_flags() == pg_sys::LP_NORMAL {
                        rows += 1;
                    }
                }
                data_pages += 1;
                blkno = (*pages::opaque(page)).next;
                pg_sys::UnlockReleaseBuffer(buf);
            }
            sizes.push(rows);
        }
        let blocks = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::index_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let total: u64 = sizes.iter().sum();
        let mean = if sizes.is_empty() { 0.0 } else { total as f64 / sizes.len() as f64 };
        let max = sizes.iter().copied().max().unwrap_or(0);
        JsonB(serde_json::json!({
            "lists": meta.lists,
            "dims": meta.dims,
            "metric": match meta.opclass.metric { Metric::L2 => "l2", Metric::InnerProduct => "ip", Metric::Cosine => "cosine" },
            "element": match meta.opclass.element { Element::F32 => "f32", Element::F16 => "f16" },
            "quantizer": match meta.quantizer { super::Quantizer::None => "none", super::Quantizer::RaBitQ => "rabitq" },
            "rows": total,
            "rows_per_list": {"min": sizes.iter().copied().min().unwrap_or(0), "max": max, "mean": mean,
                              "empty_lists": sizes.iter().filter(|&&n| n == 0).count()},
            "imbalance": if mean > 0.0 { max as f64 / mean } else { 0.0 },
            "pages": blocks,
            "data_pages": data_pages,
            "size_bytes": blocks as u64 * pg_sys::BLCKSZ as u64,
            "list_sizes": sizes,
        }))
    }
}
