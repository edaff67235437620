//! SQL-callable functions of the `embedding` and `halfembedding` types: I/O, distances,
//! arithmetic, comparison, aggregate support and array casts.
//!
//! Both types get the same set of C functions from one macro; the SQL declarations that bind
//! them (with their volatility, strictness and parallel markings) are hand-written in
//! `sql/embedding.sql` and `sql/halfembedding.sql`, in pgvector's style, so that every marking is
//! explicit and reviewable. Hence `sql = false` on each function here.

use crate::vector_datum::{check_same_dims, check_typmod, raise, OrRaise, PgVector};
use biomedclip_core::distance::DistanceElement;
use biomedclip_core::vector_format::{self, check_dims, Element, VectorError};
use biomedclip_core::vector_ops::{self, SumState};
use pgrx::prelude::*;
use pgrx::array::RawArray;
use pgrx::{pg_sys, Internal};
use std::ffi::{CStr, CString};

/// Converts values to the element type, checking that each is finite and in range.
fn try_from_f64<T: Element>(values: impl Iterator<Item = f64>) -> Result<Vec<T>, VectorError> {
    values
        .map(|x| {
            let token = if x.is_nan() {
                "NaN".to_string()
            } else if x.is_infinite() {
                if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            } else {
                format!("{x:?}")
            };
            if !x.is_finite() {
                return Err(VectorError::NotFinite(token));
            }
            if x.abs() > f32::MAX as f64 {
                return Err(VectorError::OutOfRange(token));
            }
            T::from_f32_checked(x as f32, &token)
        })
        .collect()
}

fn checked_from_f64<T: Element>(values: impl Iterator<Item = f64>) -> Vec<T> {
    try_from_f64(values).or_raise()
}

/// The elements of a 1-D array without NULLs, as a cast source.
fn cast_array_values<E: Copy>(arr: Array<E>) -> Vec<E> {
    // Safety: `arr` came from a valid array datum; RawArray reads its header and data in place.
    let mut raw = unsafe { RawArray::from_array(arr) }.unwrap_or_else(|| raise(VectorError::Empty));
    if raw.dims().len() > 1 {
        raise(VectorError::Invalid("array must be 1-D".into()));
    }
    if unsafe { raw.any_nulls() } {
        raise(VectorError::Invalid("array must not contain nulls".into()));
    }
    unsafe { raw.data::<E>().as_ref().to_vec() }
}

pub(crate) fn parse_typmod_list(list: Array<&CStr>) -> i32 {
    let items: Vec<&str> = list
        .iter()
        .map(|x| x.and_then(|c| c.to_str().ok()).unwrap_or(""))
        .collect();
    match vector_format::parse_typmod(&items) {
        Ok(n) => n as i32,
        Err(msg) => {
            ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg);
        }
    }
}

/// `recv` helper: consumes the rest of the StringInfo and decodes pgvector's binary layout.
pub(crate) unsafe fn read_binary<T: Element>(buf: Internal) -> Vec<T> {
    let info = buf.unwrap().expect("recv buffer").cast_mut_ptr::<pg_sys::StringInfoData>();
    let info = &mut *info;
    let start = info.cursor.max(0) as usize;
    let len = (info.len.max(0) as usize).saturating_sub(start);
    let bytes = std::slice::from_raw_parts((info.data as *const u8).add(start), len);
    let values = vector_format::decode_binary::<T>(bytes).or_raise();
    info.cursor = info.len;
    values
}

fn accumulate<T: Element>(state: Array<f64>, v: &PgVector<T>) -> Vec<f64> {
    let mut s = SumState::from_array(state.as_slice().unwrap_or_else(|_| raise(VectorError::Invalid("invalid aggregate state".into()))));
    s.accumulate(&v.to_f32_vec()).or_raise();
    s.to_array()
}

fn finish<T: Element>(state: Array<f64>, avg: bool) -> Option<PgVector<T>> {
    let s = SumState::from_array(state.as_slice().unwrap_or_else(|_| raise(VectorError::Invalid("invalid aggregate state".into()))));
    let out = if avg { s.avg() } else { s.sum() }?;
    let values = out.or_raise();
    Some(PgVector::from_slice(&checked_from_f64::<T>(values.iter().map(|&x| x as f64))))
}

/// Combine function shared by every vector aggregate (the state is float8[] for both types).
#[pg_extern(sql = false)]
fn biomedclip_vector_combine(a: Array<f64>, b: Array<f64>) -> Vec<f64> {
    let bad = |_| raise(VectorError::Invalid("invalid aggregate state".into()));
    let mut s = SumState::from_array(a.as_slice().unwrap_or_else(bad));
    s.combine(&SumState::from_array(b.as_slice().unwrap_or_else(bad))).or_raise();
    s.to_array()
}

fn binary_op<T: Element>(
    a: &PgVector<T>,
    b: &PgVector<T>,
    op: &'static str,
    f: fn(&[f32], &[f32]) -> Result<Vec<f32>, VectorError>,
) -> PgVector<T> {
    let out = f(&a.to_f32_vec(), &b.to_f32_vec()).or_raise();
    // A result that fits f32 can still overflow (or, for a product, underflow) binary16.
    let narrowed = try_from_f64::<T>(out.iter().map(|&x| x as f64)).map_err(|_| VectorError::Overflow(op)).or_raise();
    if op == "multiplication" && narrowed.iter().zip(&out).any(|(n, &x)| n.to_f32() == 0.0 && x != 0.0) {
        Err::<(), _>(VectorError::Underflow(op)).or_raise();
    }
    PgVector::from_slice(&narrowed)
}

macro_rules! vector_sql_functions {
    ($p:ident, $T:ty) => {
        paste::paste! {
            #[pg_extern(sql = false)]
            fn [<$p _in>](input: &CStr, _oid: pg_sys::Oid, typmod: i32) -> PgVector<$T> {
                let text = input.to_str().unwrap_or_else(|_| raise(VectorError::Malformed("input is not valid UTF-8".into())));
                let values = vector_format::parse_text::<$T>(text).or_raise();
                check_typmod(values.len(), typmod);
                PgVector::from_slice(&values)
            }

            #[pg_extern(sql = false)]
            fn [<$p _out>](v: PgVector<$T>) -> CString {
                CString::new(vector_format::format_text(v.as_slice())).expect("no NUL in formatted vector")
            }

            #[pg_extern(sql = false)]
            fn [<$p _typmod_in>](list: Array<&CStr>) -> i32 {
                parse_typmod_list(list)
            }

            #[pg_extern(sql = false)]
            fn [<$p _recv>](buf: Internal, _oid: pg_sys::Oid, typmod: i32) -> PgVector<$T> {
                let values = unsafe { read_binary::<$T>(buf) };
                check_typmod(values.len(), typmod);
                PgVector::from_slice(&values)
            }

            #[pg_extern(sql = false)]
            fn [<$p _send>](v: PgVector<$T>) -> Vec<u8> {
                vector_format::encode_binary(v.as_slice())
            }

            /// `embedding(n)` coercion: enforces the column's dimension on insert and cast.
            #[pg_extern(sql = false)]
            fn [<$p _typmod_cast>](v: PgVector<$T>, typmod: i32, _explicit: bool) -> PgVector<$T> {
                check_typmod(v.dims(), typmod);
                v
            }

            #[pg_extern(sql = false)]
            fn [<$p _l2_distance>](a: PgVector<$T>, b: PgVector<$T>) -> f64 {
                check_same_dims(a.dims(), b.dims());
                (<$T as DistanceElement>::squared_l2(a.as_slice(), b.as_slice()) as f64).sqrt()
            }

            #[pg_extern(sql = false)]
            fn [<$p _inner_product>](a: PgVector<$T>, b: PgVector<$T>) -> f64 {
                check_same_dims(a.dims(), b.dims());
                <$T as DistanceElement>::dot(a.as_slice(), b.as_slice()) as f64
            }

            #[pg_extern(sql = false)]
            fn [<$p _negative_inner_product>](a: PgVector<$T>, b: PgVector<$T>) -> f64 {
                check_same_dims(a.dims(), b.dims());
                -(<$T as DistanceElement>::dot(a.as_slice(), b.as_slice()) as f64)
            }

            #[pg_extern(sql = false)]
            fn [<$p _cosine_distance>](a: PgVector<$T>, b: PgVector<$T>) -> f64 {
                check_same_dims(a.dims(), b.dims());
                <$T as DistanceElement>::cosine_distance(a.as_slice(), b.as_slice())
            }

            #[pg_extern(sql = false)]
            fn [<$p _l1_distance>](a: PgVector<$T>, b: PgVector<$T>) -> f64 {
                check_same_dims(a.dims(), b.dims());
                <$T as DistanceElement>::l1(a.as_slice(), b.as_slice()) as f64
            }

            #[pg_extern(sql = false)]
            fn [<$p _dims>](v: PgVector<$T>) -> i32 {
                v.dims() as i32
            }

            #[pg_extern(sql = false)]
            fn [<$p _norm>](v: PgVector<$T>) -> f64 {
                biomedclip_core::distance::norm_f32(&v.to_f32_vec())
            }

            #[pg_extern(sql = false)]
            fn [<$p _l2_normalize>](v: PgVector<$T>) -> PgVector<$T> {
                let out = vector_ops::l2_normalize(&v.to_f32_vec());
                PgVector::from_slice(&checked_from_f64::<$T>(out.iter().map(|&x| x as f64)))
            }

            #[pg_extern(sql = false)]
            fn [<$p _subvector>](v: PgVector<$T>, start: i32, count: i32) -> PgVector<$T> {
                let out = vector_ops::subvector(&v.to_f32_vec(), start, count).or_raise();
                PgVector::from_slice(&checked_from_f64::<$T>(out.iter().map(|&x| x as f64)))
            }

            #[pg_extern(sql = false)]
            fn [<$p _add>](a: PgVector<$T>, b: PgVector<$T>) -> PgVector<$T> {
                binary_op(&a, &b, "addition", vector_ops::add)
            }

            #[pg_extern(sql = false)]
            fn [<$p _sub>](a: PgVector<$T>, b: PgVector<$T>) -> PgVector<$T> {
                binary_op(&a, &b, "subtraction", vector_ops::sub)
            }

            #[pg_extern(sql = false)]
            fn [<$p _mul>](a: PgVector<$T>, b: PgVector<$T>) -> PgVector<$T> {
                binary_op(&a, &b, "multiplication", vector_ops::mul)
            }

            #[pg_extern(sql = false)]
            fn [<$p _scale>](a: PgVector<$T>, s: f64) -> PgVector<$T> {
                let out = vector_ops::scale(&a.to_f32_vec(), s).or_raise();
                let narrowed = try_from_f64::<$T>(out.iter().map(|&x| x as f64)).map_err(|_| VectorError::Overflow("scaling"));
                PgVector::from_slice(&narrowed.or_raise())
            }

            #[pg_extern(sql = false)]
            fn [<$p _concat>](a: PgVector<$T>, b: PgVector<$T>) -> PgVector<$T> {
                binary_op(&a, &b, "concatenation", vector_ops::concat)
            }

            #[pg_extern(sql = false)]
            fn [<$p _cmp>](a: PgVector<$T>, b: PgVector<$T>) -> i32 {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()) as i32
            }

            #[pg_extern(sql = false)]
            fn [<$p _lt>](a: PgVector<$T>, b: PgVector<$T>) -> bool {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()).is_lt()
            }

            #[pg_extern(sql = false)]
            fn [<$p _le>](a: PgVector<$T>, b: PgVector<$T>) -> bool {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()).is_le()
            }

            #[pg_extern(sql = false)]
            fn [<$p _eq>](a: PgVector<$T>, b: PgVector<$T>) -> bool {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()).is_eq()
            }

            #[pg_extern(sql = false)]
            fn [<$p _ne>](a: PgVector<$T>, b: PgVector<$T>) -> bool {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()).is_ne()
            }

            #[pg_extern(sql = false)]
            fn [<$p _ge>](a: PgVector<$T>, b: PgVector<$T>) -> bool {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()).is_ge()
            }

            #[pg_extern(sql = false)]
            fn [<$p _gt>](a: PgVector<$T>, b: PgVector<$T>) -> bool {
                vector_ops::compare(&a.to_f32_vec(), &b.to_f32_vec()).is_gt()
            }

            #[pg_extern(sql = false)]
            fn [<$p _hash>](v: PgVector<$T>) -> i32 {
                vector_ops::hash(&v.to_f32_vec()) as i32
            }

            #[pg_extern(sql = false)]
            fn [<$p _accum>](state: Array<f64>, v: PgVector<$T>) -> Vec<f64> {
                accumulate(state, &v)
            }

            #[pg_extern(sql = false)]
            fn [<$p _avg>](state: Array<f64>) -> Option<PgVector<$T>> {
                finish::<$T>(state, true)
            }

            #[pg_extern(sql = false)]
            fn [<$p _sum>](state: Array<f64>) -> Option<PgVector<$T>> {
                finish::<$T>(state, false)
            }

            #[pg_extern(sql = false)]
            fn [<array_float4_to_ $p>](arr: Array<f32>, typmod: i32, _explicit: bool) -> PgVector<$T> {
                from_array_values::<$T>(cast_array_values(arr).into_iter().map(|x| x as f64), typmod)
            }

            #[pg_extern(sql = false)]
            fn [<array_float8_to_ $p>](arr: Array<f64>, typmod: i32, _explicit: bool) -> PgVector<$T> {
                from_array_values::<$T>(cast_array_values(arr).into_iter(), typmod)
            }

            #[pg_extern(sql = false)]
            fn [<array_int4_to_ $p>](arr: Array<i32>, typmod: i32, _explicit: bool) -> PgVector<$T> {
                from_array_values::<$T>(cast_array_values(arr).into_iter().map(|x| x as f64), typmod)
            }

            #[pg_extern(sql = false)]
            fn [<$p _to_float4_array>](v: PgVector<$T>, _typmod: i32, _explicit: bool) -> Vec<f32> {
                v.to_f32_vec()
            }

            #[pg_extern(sql = false)]
            fn [<$p _to_float8_array>](v: PgVector<$T>, _typmod: i32, _explicit: bool) -> Vec<f64> {
                v.as_slice().iter().map(|x| x.to_f32() as f64).collect()
            }
        }
    };
}

fn from_array_values<T: Element>(values: impl Iterator<Item = f64>, typmod: i32) -> PgVector<T> {
    let values = checked_from_f64::<T>(values);
    check_dims(values.len()).or_raise();
    check_typmod(values.len(), typmod);
    PgVector::from_slice(&values)
}

vector_sql_functions!(embedding, f32);
vector_sql_functions!(halfembedding, half::f16);

/// embedding -> halfembedding; a value beyond f16's range is an error, not infinity.
#[pg_extern(sql = false)]
fn embedding_to_halfembedding(v: PgVector<f32>, typmod: i32, _explicit: bool) -> PgVector<half::f16> {
    check_typmod(v.dims(), typmod);
    PgVector::from_slice(&checked_from_f64::<half::f16>(v.as_slice().iter().map(|&x| x as f64)))
}

/// halfembedding -> embedding: exact.
#[pg_extern(sql = false)]
fn halfembedding_to_embedding(v: PgVector<half::f16>, typmod: i32, _explicit: bool) -> PgVector<f32> {
    check_typmod(v.dims(), typmod);
    PgVector::from_slice(&v.to_f32_vec())
}
