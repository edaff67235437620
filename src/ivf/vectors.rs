//! Vectors as the index sees them: datums to element bytes, dimension checks.

use super::pages::INVALID_BLOCK;
use super::{to_f32, Element, Metric, OpClass};
use crate::vector_datum::HEADER_BYTES;
use pgrx::pg_sys;

/// The vector of a datum as raw element bytes (None for NULL, or a zero vector under cosine).
/// A detoasted copy is freed before returning, so that a build or a bulk insert over vectors
/// stored out of line does not grow its memory context with every row.
pub unsafe fn datum_vector(opclass: OpClass, datum: pg_sys::Datum, isnull: bool) -> Option<Vec<u8>> {
    if isnull || datum.is_null() {
        return None;
    }
    let raw = datum.cast_mut_ptr::<pg_sys::varlena>();
    let detoasted = pg_sys::pg_detoast_datum(raw);
    let total = pgrx::varsize_any(detoasted as *const pg_sys::varlena);
    let body = std::slice::from_raw_parts((detoasted as *const u8).add(HEADER_BYTES), total.saturating_sub(HEADER_BYTES));
    let dims = ((detoasted as *const u8).add(4) as *const i16).read_unaligned().max(0) as usize;
    let len = (dims * opclass.element.size()).min(body.len());
    let bytes = body[..len].to_vec();
    if detoasted != raw {
        pg_sys::pfree(detoasted as *mut std::ffi::c_void);
    }
    if opclass.metric == Metric::Cosine && zero(opclass.element, &bytes) {
        return None;
    }
    Some(bytes)
}

fn zero(element: Element, bytes: &[u8]) -> bool {
    to_f32(element, bytes).iter().all(|&x| x == 0.0)
}

/// Dimensions from the indexed column's typmod, if it has one.
pub unsafe fn typmod_dims(index: pg_sys::Relation) -> Option<usize> {
    let attr = (*(*index).rd_att).attrs.as_slice(1)[0];
    (attr.atttypmod > 0).then_some(attr.atttypmod as usize)
}

pub fn check_dims(found: usize, expected: usize) {
    if found != expected {
        crate::model_cache::raise(pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("ivf: expected {expected} dimensions, not {found}"));
    }
}

/// Builds data items as the index stores them: the full vector (quantizer none) or its RaBitQ
/// code against the list's centroid.
pub struct Encoder {
    pub opclass: OpClass,
    pub rotation: Option<biomedclip_core::rabitq::Rotation>,
}

impl Encoder {
    pub fn new(meta: &super::pages::Meta) -> Encoder {
        let rotation = (meta.quantizer == super::Quantizer::RaBitQ).then(|| meta.rotation());
        Encoder { opclass: meta.opclass, rotation }
    }

    /// The entry item for `bytes` (the column's elements) assigned to the list with `centroid`,
    /// and under RaBitQ its extended-code item (the entry's pointer to it is set once it is
    /// stored, with `pages::set_ex_pointer`).
    pub fn item(&self, tid: pg_sys::ItemPointerData, bytes: &[u8], centroid: &[f32]) -> (Vec<u8>, Option<Vec<u8>>) {
        match &self.rotation {
            None => (super::pages::data_item(tid, self.opclass.sq_norm(bytes), bytes), None),
            Some(rotation) => {
                let v = self.opclass.quantized_vector(&to_f32(self.opclass.element, bytes));
                let (code, ex, factors) = biomedclip_core::rabitq::encode(rotation, &v, centroid);
                (super::pages::rabitq_item(tid, &factors, (INVALID_BLOCK, 0), &code), Some(super::pages::ex_item(tid, &factors, &ex)))
            }
        }
    }
}
