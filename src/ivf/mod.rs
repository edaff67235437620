//! The `ivf` index access method: an inverted-file index over `embedding` and `halfembedding`.
//!
//! # On-disk layout (version 4; 2 and 3 are still read)
//!
//! Every page ends in an 8-byte special area ([`pages::PageOpaque`]: next block, page id).
//!
//! * **Block 0, the metapage**: magic, layout version, dimensions, number of lists, the
//!   opclass code (metric and element type), where the list pages start, the quantizer and the
//!   RaBitQ rotation seed.
//! * **List pages**: one tuple per list: the first and the current insert page of each of the
//!   list's two chains (entries; RaBitQ extended codes), then the centroid in the column's
//!   precision.
//! * **Entry chains**, one per list, written by the build as a run of consecutive blocks. With
//!   `quantizer = none` an entry is an `IndexTupleData` header (heap TID, size), the vector's
//!   squared norm, then the vector in the column's precision (8-byte aligned, read in place by the
//!   SIMD kernels). With `quantizer = rabitq` it is the header, three RaBitQ factors, a pointer to
//!   the entry's extended code, and the 1-bit code (see `biomedclip_core::rabitq`).
//! * **Extended-code chains** (RaBitQ), one per list: the 4-bit code of each entry with its
//!   factors and heap TID. These pages are never compacted (entries point at their line pointers).
//!
//! Every change after the build goes through generic WAL (`GenericXLog*`), so the index is
//! crash-safe and replays on streaming standbys; the build writes its pages and then WAL-logs
//! them in one pass (`log_newpage_range`).
//!
//! # Scans
//!
//! See `scan`: the nearest `ivf.probes` lists by centroid, their entries in exact distance order
//! (RaBitQ: by lower bound, refined with the extended code, then re-ranked exactly from the table
//! row, lazily), more lists when filters reject rows (`ivf.iterative_scan`, strict order by
//! default). NULL vectors are not indexed, and zero vectors are not indexed by cosine opclasses
//! (their cosine distance is undefined); an index scan never returns them.

pub mod build;
pub mod train;
pub mod vectors;
pub mod handler;
pub mod info;
pub mod insert;
pub mod pages;
pub mod scan;
pub mod vacuum;

use biomedclip_core::distance::DistanceElement;
use half::f16;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

/// Distance metrics of the opclasses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    L2,
    InnerProduct,
    Cosine,
}

/// Element type of the indexed column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    F32,
    F16,
}

impl Element {
    pub fn size(self) -> usize {
        match self {
            Element::F32 => 4,
            Element::F16 => 2,
        }
    }
}

/// How data items hold their vectors (`WITH (quantizer = ...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Quantizer {
    /// The full vector, in the column's precision (exact distances during the scan).
    None = 0,
    /// A RaBitQ code (1 bit per dimension + 3 factors); exact distances come from the heap.
    RaBitQ = 1,
}

/// The opclass code returned by support function 1: metric + 10 * element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpClass {
    pub metric: Metric,
    pub element: Element,
}

impl OpClass {
    pub fn from_code(code: i32) -> Option<OpClass> {
        let metric = match code % 10 {
            1 => Metric::L2,
            2 => Metric::InnerProduct,
            3 => Metric::Cosine,
            _ => return None,
        };
        let element = match code / 10 {
            0 => Element::F32,
            1 => Element::F16,
            _ => return None,
        };
        Some(OpClass { metric, element })
    }

    pub fn code(self) -> i32 {
        let m = match self.metric {
            Metric::L2 => 1,
            Metric::InnerProduct => 2,
            Metric::Cosine => 3,
        };
        m + 10 * if self.element == Element::F16 { 1 } else { 0 }
    }

    /// The opclass of an index, from its support function 1.
    pub unsafe fn of_index(index: pg_sys::Relation) -> OpClass {
        let finfo = pg_sys::index_getprocinfo(index, 1, 1);
        let code = pg_sys::FunctionCall1Coll(finfo, pg_sys::InvalidOid, pg_sys::Datum::from(0usize));
        OpClass::from_code(code.value() as i32).unwrap_or_else(|| pgrx::error!("ivf: unknown operator class code {}", code.value()))
    }

    /// The k-means flavour: spherical for cosine and inner product.
    pub fn kmeans_metric(self) -> biomedclip_core::kmeans::Metric {
        match self.metric {
            Metric::L2 => biomedclip_core::kmeans::Metric::L2,
            _ => biomedclip_core::kmeans::Metric::Spherical,
        }
    }

    /// The vector as list assignment sees it: as is for L2, its direction for cosine and inner
    /// product (whose centroids are unit vectors). Build and insert must agree on this.
    pub fn assignment_vector(self, v: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::L2 => v.to_vec(),
            _ => biomedclip_core::vector_ops::l2_normalize(v),
        }
    }

    /// The vector as RaBitQ encodes it (and its query): unit length for cosine, whose distance
    /// is then half the squared L2 distance; as is for L2 and inner product.
    pub fn quantized_vector(self, v: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => biomedclip_core::vector_ops::l2_normalize(v),
            _ => v.to_vec(),
        }
    }

    /// The ORDER BY operator's value for a stored vector (raw element bytes, with its squared
    /// norm) and the query (with its squared norm): exactly what the SQL operator returns.
    pub fn distance(self, stored: &[u8], stored_sq_norm: f32, query: &[u8], query_sq_norm: f32) -> f64 {
        fn typed<T: DistanceElement>(metric: Metric, a: &[T], aa: f32, b: &[T], bb: f32) -> f64 {
            match metric {
                Metric::L2 => (T::squared_l2(a, b) as f64).sqrt(),
                Metric::InnerProduct => -(T::dot(a, b) as f64),
                Metric::Cosine => biomedclip_core::distance::cosine_from_parts(T::dot(a, b), aa, bb),
            }
        }
        match self.element {
            Element::F32 => typed::<f32>(self.metric, cast(stored), stored_sq_norm, cast(query), query_sq_norm),
            Element::F16 => typed::<f16>(self.metric, cast(stored), stored_sq_norm, cast(query), query_sq_norm),
        }
    }

    /// Squared norm of raw element bytes, as the distance kernels compute it.
    pub fn sq_norm(self, bytes: &[u8]) -> f32 {
        match self.element {
            Element::F32 => f32::dot(cast(bytes), cast(bytes)),
            Element::F16 => f16::dot(cast(bytes), cast(bytes)),
        }
    }
}

/// Reinterprets aligned element bytes. Callers guarantee alignment (page items are MAXALIGNed
/// and vectors start 8 bytes into them; query copies are Vec-allocated).
pub fn cast<T>(bytes: &[u8]) -> &[T] {
    assert_eq!(bytes.as_ptr() as usize % std::mem::align_of::<T>(), 0, "misaligned vector data");
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / std::mem::size_of::<T>()) }
}

/// Vector elements widened to f32.
pub fn to_f32(element: Element, bytes: &[u8]) -> Vec<f32> {
    match element {
        Element::F32 => cast::<f32>(bytes).to_vec(),
        Element::F16 => cast::<f16>(bytes).iter().map(|x| x.to_f32()).collect(),
    }
}

pub static PROBES: GucSetting<i32> = GucSetting::<i32>::new(10);
/// `ivf.iterative_scan`: `off` (one batch of `ivf.probes` lists), `strict_order` (the default:
/// further batches never return a row closer than one already returned) or `relaxed_order`
/// (they may; pgvector's names). `on`, the 0.1.0 spelling, keeps its 0.1.0 meaning, relaxed order.
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum IterativeScan {
    #[name = c"off"]
    Off,
    #[name = c"strict_order"]
    StrictOrder,
    #[name = c"relaxed_order"]
    RelaxedOrder,
    #[name = c"on"]
    On,
}

pub static ITERATIVE_SCAN: GucSetting<IterativeScan> = GucSetting::<IterativeScan>::new(IterativeScan::StrictOrder);
pub static MAX_PROBES: GucSetting<i32> = GucSetting::<i32>::new(32768);

pub fn register_settings() {
    GucRegistry::define_int_guc(
        c"ivf.probes",
        c"Lists an ivf index scan reads first (recall rises with probes; latency too).",
        c"",
        &PROBES,
        1,
        32768,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"ivf.iterative_scan",
        c"Continue into further lists, nearest first, when filters or row-level security reject rows: off, strict_order or relaxed_order.",
        c"Stops when the query has its rows or after ivf.max_probes lists. strict_order never returns a row closer than one already returned; relaxed_order may (and fills a LIMIT with fewer lists read).",
        &ITERATIVE_SCAN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ivf.max_probes",
        c"Most lists an iterative ivf scan reads (the default, 32768, is every list: an index has at most 32,768).",
        c"Never below ivf.probes.",
        &MAX_PROBES,
        1,
        32768,
        GucContext::Userset,
        GucFlags::default(),
    );
    handler::register_reloptions();
}

/// Default number of lists for a table of `rows` rows: rows / 1000 up to a million rows, then
/// sqrt(rows) (the usual IVF guidance, as pgvector documents), at least 1.
pub fn default_lists(rows: f64) -> usize {
    let lists = if rows <= 1_000_000.0 { rows / 1000.0 } else { rows.sqrt() };
    (lists as usize).clamp(1, 32768)
}
