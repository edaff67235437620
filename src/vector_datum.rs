//! The on-disk and in-memory form of `embedding` and `halfembedding` values, and their
//! conversions to and from PostgreSQL datums.
//!
//! Layout (pgvector's, so the two extensions' values look alike on disk):
//! `int32 varlena header | int16 dims | int16 reserved (0) | elements[dims]`
//! with f32 elements for `embedding` and IEEE binary16 for `halfembedding`.

use biomedclip_core::vector_format::{Element, VectorError};
use half::f16;
use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::marker::PhantomData;
use std::ptr::NonNull;

pub const HEADER_BYTES: usize = 8;

/// A detoasted vector value living in a PostgreSQL memory context.
pub struct PgVector<T> {
    ptr: NonNull<u8>,
    _element: PhantomData<T>,
}

// `embedding` is `PgVector<f32>`, `halfembedding` is `PgVector<f16>`.

impl<T: Element> PgVector<T> {
    /// Copies `values` into a new value allocated in the current memory context.
    /// Callers have validated the dimension count and the values.
    pub fn from_slice(values: &[T]) -> Self {
        let total = HEADER_BYTES + values.len() * T::SIZE;
        unsafe {
            let raw = pg_sys::palloc0(total) as *mut u8;
            set_varsize_4b(raw, total);
            (raw.add(4) as *mut i16).write(values.len() as i16);
            std::ptr::copy_nonoverlapping(values.as_ptr() as *const u8, raw.add(HEADER_BYTES), values.len() * T::SIZE);
            PgVector { ptr: NonNull::new_unchecked(raw), _element: PhantomData }
        }
    }

    pub fn dims(&self) -> usize {
        unsafe { (self.ptr.as_ptr().add(4) as *const i16).read() as usize }
    }

    pub fn as_slice(&self) -> &[T] {
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HEADER_BYTES) as *const T, self.dims()) }
    }

    /// The elements widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.as_slice().iter().map(|x| x.to_f32()).collect()
    }

    unsafe fn from_datum_ptr(datum: pg_sys::Datum) -> Self {
        // pg_detoast_datum also expands 1-byte short headers to the 4-byte form.
        let detoasted = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
        PgVector { ptr: NonNull::new_unchecked(detoasted as *mut u8), _element: PhantomData }
    }
}

pub unsafe fn set_varsize_4b(ptr: *mut u8, len: usize) {
    // SET_VARSIZE for a 4-byte header on little-endian machines: length << 2.
    (ptr as *mut u32).write((len as u32) << 2);
}

impl<T: Element> FromDatum for PgVector<T> {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        if is_null || datum.is_null() {
            None
        } else {
            Some(Self::from_datum_ptr(datum))
        }
    }
}

impl<T: Element> IntoDatum for PgVector<T> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.ptr.as_ptr()))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::InvalidOid
    }
}

unsafe impl<'fcx, T: Element> ArgAbi<'fcx> for PgVector<T> {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl<T: Element> BoxRet for PgVector<T> {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

impl_sql_translatable!(PgVector<f32>, "embedding");
impl_sql_translatable!(PgVector<f16>, "halfembedding");

/// Raises the PostgreSQL ERROR that matches a vector error. Never returns.
pub fn raise(err: VectorError) -> ! {
    use PgSqlErrorCode::*;
    let code = match &err {
        VectorError::Empty | VectorError::Malformed(_) => ERRCODE_INVALID_TEXT_REPRESENTATION,
        VectorError::Invalid(_) => ERRCODE_INVALID_PARAMETER_VALUE,
        VectorError::NotFinite(_) => ERRCODE_DATA_EXCEPTION,
        VectorError::OutOfRange(_) | VectorError::HalfOutOfRange(_) | VectorError::Overflow(_) | VectorError::Underflow(_) => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        VectorError::TooManyDims(_) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        VectorError::TruncatedBinary { .. } | VectorError::ReservedNonZero(_) => ERRCODE_INVALID_BINARY_REPRESENTATION,
        VectorError::DimMismatch { .. } | VectorError::TypmodMismatch { .. } => ERRCODE_DATA_EXCEPTION,
    };
    ereport!(ERROR, code, err.to_string());
}

/// Unwraps a result or raises its error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, VectorError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// Checks a value against a column's `embedding(n)` type modifier (-1 means none).
pub fn check_typmod(dims: usize, typmod: i32) {
    if typmod > 0 && dims != typmod as usize {
        raise(VectorError::TypmodMismatch { expected: typmod as usize, got: dims });
    }
}

/// Raises a dimension-mismatch error naming both sides unless they agree.
pub fn check_same_dims(a: usize, b: usize) {
    if a != b {
        raise(VectorError::DimMismatch { left: a, right: b });
    }
}
