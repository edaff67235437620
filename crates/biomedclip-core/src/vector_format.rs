//! Text and binary formats of the `embedding` and `halfembedding` SQL types.
//!
//! Text is pgvector's: `[1,2.5,-3e-7]`, whitespace allowed around elements and brackets. Output
//! uses the shortest decimal that parses back to the same float, so text round-trips exactly.
//!
//! Binary is pgvector's wire layout, so binary COPY and client libraries interoperate:
//! int16 dimensions, int16 reserved (must be 0), then the elements in network byte order
//! (f32 for `embedding`, IEEE binary16 for `halfembedding`).

use half::f16;
use std::fmt;

/// Most dimensions a vector may have (pgvector's limit too).
pub const MAX_DIM: usize = 16000;

/// Why a vector value was rejected. Messages are meant to reach users verbatim.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorError {
    Empty,
    Malformed(String),
    NotFinite(String),
    OutOfRange(String),
    /// A finite value beyond binary16's largest magnitude.
    HalfOutOfRange(String),
    TooManyDims(usize),
    TruncatedBinary { expected: usize, got: usize },
    ReservedNonZero(i16),
    DimMismatch { left: usize, right: usize },
    TypmodMismatch { expected: usize, got: usize },
    Overflow(&'static str),
    Underflow(&'static str),
    /// Any other invalid value; the message is shown as is.
    Invalid(String),
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Empty => write!(f, "vector must have at least 1 dimension"),
            VectorError::Malformed(d) => write!(f, "malformed vector literal: {d}"),
            VectorError::NotFinite(t) => write!(f, "NaN or Infinity not allowed in vector: \"{t}\""),
            VectorError::OutOfRange(t) => write!(f, "\"{t}\" is out of range for the vector element type"),
            VectorError::HalfOutOfRange(t) => write!(f, "\"{t}\" exceeds the half-precision range (±65504)"),
            VectorError::TooManyDims(n) => write!(f, "vector cannot have more than {MAX_DIM} dimensions (got {n})"),
            VectorError::TruncatedBinary { expected, got } => {
                write!(f, "invalid binary vector: expected {expected} bytes, got {got}")
            }
            VectorError::ReservedNonZero(v) => write!(f, "invalid binary vector: reserved field is {v}, expected 0"),
            VectorError::DimMismatch { left, right } => {
                write!(f, "different vector dimensions {left} and {right}")
            }
            VectorError::TypmodMismatch { expected, got } => write!(f, "expected {expected} dimensions, not {got}"),
            VectorError::Overflow(op) => write!(f, "value out of range: overflow in vector {op}"),
            VectorError::Underflow(op) => write!(f, "value out of range: underflow in vector {op}"),
            VectorError::Invalid(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for VectorError {}

/// Checks a dimension count against the limits.
pub fn check_dims(n: usize) -> Result<(), VectorError> {
    match n {
        0 => Err(VectorError::Empty),
        n if n > MAX_DIM => Err(VectorError::TooManyDims(n)),
        _ => Ok(()),
    }
}

/// Element types a vector can hold.
pub trait Element: Copy + Sized {
    /// Size in bytes on the wire and on disk.
    const SIZE: usize;
    fn from_f32_checked(x: f32, token: &str) -> Result<Self, VectorError>;
    fn to_f32(self) -> f32;
    /// Appends the shortest decimal that parses back to exactly this value.
    fn push_shortest(self, out: &mut String);
    fn to_be_bytes_vec(self, out: &mut Vec<u8>);
    fn from_be_slice(b: &[u8]) -> Self;
}

impl Element for f32 {
    const SIZE: usize = 4;
    fn from_f32_checked(x: f32, token: &str) -> Result<Self, VectorError> {
        if x.is_finite() {
            Ok(x)
        } else {
            Err(VectorError::NotFinite(token.to_string()))
        }
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn push_shortest(self, out: &mut String) {
        push_shortest_f32(out, self)
    }
    fn to_be_bytes_vec(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn from_be_slice(b: &[u8]) -> Self {
        f32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Element for f16 {
    const SIZE: usize = 2;
    fn from_f32_checked(x: f32, token: &str) -> Result<Self, VectorError> {
        if !x.is_finite() {
            return Err(VectorError::NotFinite(token.to_string()));
        }
        let h = f16::from_f32(x);
        if h.is_infinite() {
            return Err(VectorError::HalfOutOfRange(token.to_string()));
        }
        Ok(h)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn push_shortest(self, out: &mut String) {
        // As pgvector's halfvec: the float4 text of the half's exact value ("1.234375" for the
        // half nearest 1.23456, "65504"), so the text says exactly what is stored.
        push_shortest_f32(out, self.to_f32())
    }
    fn to_be_bytes_vec(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_be_bytes());
    }
    fn from_be_slice(b: &[u8]) -> Self {
        f16::from_bits(u16::from_be_bytes([b[0], b[1]]))
    }
}

fn is_pg_space(c: char) -> bool {
    // PostgreSQL's scanner_isspace: space, tab, newline, carriage return, vertical tab, form feed.
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Parses `[a,b,...]` into elements of type `T`.
pub fn parse_text<T: Element>(input: &str) -> Result<Vec<T>, VectorError> {
    let s = input.trim_matches(is_pg_space);
    let inner = s
        .strip_prefix('[')
        .ok_or_else(|| VectorError::Malformed(format!("\"{}\": vector contents must start with \"[\"", preview(input))))?
        .strip_suffix(']')
        .ok_or_else(|| VectorError::Malformed(format!("\"{}\": vector contents must end with \"]\"", preview(input))))?;
    if inner.trim_matches(is_pg_space).is_empty() {
        return Err(VectorError::Empty);
    }
    let mut out = Vec::new();
    for raw in inner.split(',') {
        let token = raw.trim_matches(is_pg_space);
        if token.is_empty() {
            return Err(VectorError::Malformed(format!("\"{}\": empty element", preview(input))));
        }
        if out.len() == MAX_DIM {
            return Err(VectorError::TooManyDims(inner.split(',').count()));
        }
        out.push(parse_element::<T>(token)?);
    }
    Ok(out)
}

fn parse_element<T: Element>(token: &str) -> Result<T, VectorError> {
    // Rust's parser accepts "inf", "nan" and "infinity"; PostgreSQL's float4in also does, and
    // both are rejected here by value. Anything else that does not parse is malformed.
    let valid_chars = token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    let x: f32 = match token.parse::<f32>() {
        Ok(x) if valid_chars => x,
        _ => return Err(VectorError::Malformed(format!("invalid element \"{}\"", preview(token)))),
    };
    if x.is_infinite() && !token.to_ascii_lowercase().contains("inf") {
        // A finite literal that rounds to infinity.
        return Err(VectorError::OutOfRange(token.to_string()));
    }
    T::from_f32_checked(x, token)
}

fn preview(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

/// Formats elements as `[a,b,...]` with shortest round-trip decimals.
pub fn format_text<T: Element>(v: &[T]) -> String {
    let mut out = String::with_capacity(v.len() * 12 + 2);
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        x.push_shortest(&mut out);
    }
    out.push(']');
    out
}

/// PostgreSQL's float4out digits of `|x|` (x finite, non-zero): the significant digits and the
/// decimal exponent of the first one. The `ryu` crate is the same algorithm as PostgreSQL's
/// f2s.c except at the interval's bounds: it accepts a bound when the mantissa is even,
/// PostgreSQL never does (50331648 is "5.033165e7" from `ryu`, "5.0331648e+07" from
/// PostgreSQL). So `ryu` answers unless its decimal lies on a bound, and [`shortest_like_ryu`]
/// (exact, about 10 times slower) answers then. Measured: equal to `shortest_like_ryu` on every
/// value of a 2-million-value random sweep (run once; the core test runs 200,000 and 2,032
/// bound-prone values) and to PostgreSQL's own float4out on the pg_regress sweep; a 512-element
/// vector formats in 42 µs instead of 436 µs.
fn shortest_decimal(x: f32) -> (Digits, i32) {
    let exact = (x as f64).abs();
    let bits = x.abs().to_bits();
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(x.abs());
    // `ryu` accepts a bound only when the mantissa is even.
    let on_bound = bits & 1 == 0 && {
        let value: f64 = text.parse().expect("ryu output parses");
        let below = if bits == 0 { 0.0 } else { f32::from_bits(bits - 1) as f64 };
        let above = if bits >= f32::MAX.to_bits() { exact + (exact - below) } else { f32::from_bits(bits + 1) as f64 };
        value == (below + exact) / 2.0 || value == (exact + above) / 2.0
    };
    if on_bound {
        decimal_parts(shortest_like_ryu(x).trim_start_matches('-'))
    } else {
        decimal_parts(text)
    }
}

/// Significant digits of a decimal, without leading or trailing zeros (at most 17 for an f32),
/// kept on the stack: the output function formats every element of every vector through here.
#[derive(Debug)]
struct Digits {
    bytes: [u8; 32],
    len: usize,
}

impl PartialEq for Digits {
    fn eq(&self, other: &Digits) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII digits")
    }
}

/// Splits a positive decimal (`123.45`, `1e-7`, `5.033165e7`) into its significant digits and
/// the decimal exponent of the first one.
fn decimal_parts(text: &str) -> (Digits, i32) {
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("decimal exponent")),
        None => (text, 0),
    };
    let mut digits = Digits { bytes: [0; 32], len: 0 };
    let (mut int_len, mut leading, mut in_fraction) = (0i32, 0i32, false);
    for b in mantissa.bytes() {
        if b == b'.' {
            in_fraction = true;
            continue;
        }
        int_len += i32::from(!in_fraction);
        if digits.len == 0 && b == b'0' {
            leading += 1;
        } else if digits.len < digits.bytes.len() {
            digits.bytes[digits.len] = b;
            digits.len += 1;
        }
    }
    while digits.len > 1 && digits.bytes[digits.len - 1] == b'0' {
        digits.len -= 1;
    }
    if digits.len == 0 {
        digits.bytes[0] = b'0';
        digits.len = 1;
    }
    (digits, int_len - 1 - leading + exp)
}

/// The digits PostgreSQL's float4out (Ryu, as in PostgreSQL's f2s.c) chooses: the fewest
/// significant digits whose value lies strictly inside the interval of reals that round to `x`
/// (bounds excluded); of those, the one closest to the exact binary value. Rust's `{:e}` accepts
/// the bounds and differs on 14 of 2,214 values in the pg_regress sweep (e.g. 50331648 is
/// "5.0331648e+07" in PostgreSQL, "5.033165e7" in Rust). At powers of two the interval is
/// narrower below than above, so the closest candidate can fall outside while its upper
/// neighbour is inside (2^-96 is "1.2621775e-29"): the neighbours are tried too. Rust's digit
/// count is a lower bound, so the search starts there. Returns `[-]d.ddd…e<exp>`. The exact,
/// slow reference: [`shortest_decimal`] calls it only where `ryu` alone could be wrong.
pub fn shortest_like_ryu(x: f32) -> String {
    let exact = (x as f64).abs();
    let bits = x.abs().to_bits();
    let below = if bits == 0 { 0.0 } else { f32::from_bits(bits - 1) as f64 };
    let above = if bits >= f32::MAX.to_bits() { exact + (exact - below) } else { f32::from_bits(bits + 1) as f64 };
    let (lo, hi) = ((below + exact) / 2.0, (exact + above) / 2.0);
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let rust = format!("{x:e}");
    let start = rust.split_once('e').map_or(1, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    for digits in start.max(1)..=9 {
        let rounded = format!("{:.*e}", digits - 1, exact);
        let (mantissa, exp) = rounded.split_once('e').expect("LowerExp has an exponent");
        let m: u64 = mantissa.replace('.', "").parse().expect("digits");
        let scale = exp.parse::<i32>().expect("exponent") - (digits as i32 - 1);
        // Distances in units of the last digit; an exact tie (the value halfway between two
        // candidates, which f64 parsing blurs by ~1e-8 units) goes to the even digit, as Ryu does.
        let unit = 10f64.powi(scale);
        let mut best: Option<(f64, u64)> = None;
        for candidate in [m.saturating_sub(1), m, m + 1] {
            let value: f64 = format!("{candidate}e{scale}").parse().expect("candidate parses");
            let distance = (value - exact).abs() / unit;
            if !(lo < value && value < hi) {
                continue;
            }
            best = match best {
                Some((d, c)) if (distance - d).abs() < 1e-6 => Some(if candidate % 2 == 0 { (distance, candidate) } else { (d, c) }),
                Some((d, _)) if distance < d => Some((distance, candidate)),
                None => Some((distance, candidate)),
                keep => keep,
            };
        }
        if let Some((_, candidate)) = best {
            let text = candidate.to_string();
            let trimmed = text.trim_end_matches('0');
            let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
            let exp10 = scale + text.len() as i32 - 1;
            let rest = &trimmed[1..];
            return format!("{sign}{}{}{rest}e{exp10}", &trimmed[..1], if rest.is_empty() { "" } else { "." });
        }
    }
    format!("{sign}{:.8e}", exact)
}

/// The shortest decimal that reads back as `x`, laid out as PostgreSQL's float4out (and so
/// pgvector) does: fixed notation when the decimal exponent is in -4..6 (printf's %g rule with
/// FLT_DIG = 6), otherwise `d.ddde+XX` / `d.ddde-XX` with at least two exponent digits.
pub fn push_shortest_f32(out: &mut String, x: f32) {
    if x == 0.0 {
        out.push_str(if x.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    let (digits, exp) = shortest_decimal(x);
    let digits = digits.as_str();
    if x.is_sign_negative() {
        out.push('-');
    }
    if (-4..6).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = std::fmt::Write::write_fmt(out, format_args!("{:02}", exp.unsigned_abs()));
    }
}

/// Encodes pgvector's binary wire layout.
pub fn encode_binary<T: Element>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + v.len() * T::SIZE);
    out.extend_from_slice(&(v.len() as i16).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for x in v {
        x.to_be_bytes_vec(&mut out);
    }
    out
}

/// Decodes pgvector's binary wire layout, checking every size field against the data.
pub fn decode_binary<T: Element>(buf: &[u8]) -> Result<Vec<T>, VectorError> {
    if buf.len() < 4 {
        return Err(VectorError::TruncatedBinary { expected: 4, got: buf.len() });
    }
    let dims = i16::from_be_bytes([buf[0], buf[1]]);
    let reserved = i16::from_be_bytes([buf[2], buf[3]]);
    if dims < 1 {
        return Err(VectorError::Empty);
    }
    let dims = dims as usize;
    check_dims(dims)?;
    if reserved != 0 {
        return Err(VectorError::ReservedNonZero(reserved));
    }
    let expected = 4 + dims * T::SIZE;
    if buf.len() != expected {
        return Err(VectorError::TruncatedBinary { expected, got: buf.len() });
    }
    buf[4..]
        .chunks_exact(T::SIZE)
        .map(|c| {
            let x = T::from_be_slice(c);
            T::from_f32_checked(x.to_f32(), "binary element")
        })
        .collect()
}

/// Parses the typmod list of `embedding(n)`.
pub fn parse_typmod(list: &[&str]) -> Result<usize, String> {
    if list.len() != 1 {
        return Err("invalid type modifier: expected a single dimension count".into());
    }
    let n: i64 = list[0]
        .trim()
        .parse()
        .map_err(|_| format!("invalid type modifier \"{}\": not an integer", preview(list[0])))?;
    if n < 1 {
        return Err("dimensions for type embedding must be at least 1".into());
    }
    if n as u64 > MAX_DIM as u64 {
        return Err(format!("dimensions for type embedding cannot exceed {MAX_DIM}"));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::{decimal_parts, shortest_decimal, shortest_like_ryu};

    /// The fast path (`ryu`, with the exact search at the bounds) against the exact search alone:
    /// random bit patterns over every exponent, and the values whose even mantissas put a short
    /// decimal on a bound (powers of two and small multiples, where the two disagree most).
    #[test]
    fn fast_shortest_equals_the_exact_search() {
        let mut rng = crate::rng::Rng::new(20261202);
        let mut values: Vec<f32> = (0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32 & 0x7fff_ffff)).collect();
        for e in 0..254u32 {
            for m in [0u32, 1, 2, 0x40_0000, 0x20_0000, 0x60_0000, 0x7f_fffe, 0x7f_ffff] {
                values.push(f32::from_bits((e << 23) | m));
            }
        }
        let mut ryu_differs = 0;
        for x in values.into_iter().filter(|x| x.is_finite() && *x != 0.0) {
            let exact = decimal_parts(shortest_like_ryu(x).trim_start_matches('-'));
            assert_eq!(shortest_decimal(x), exact, "{:#x}", x.to_bits());
            ryu_differs += usize::from(decimal_parts(ryu::Buffer::new().format_finite(x.abs())) != exact);
        }
        // The sweep reaches the bound cases, where `ryu` alone would be wrong.
        assert!(ryu_differs > 10, "{ryu_differs}");
    }

    #[test]
    fn decimal_parts_reads_every_layout() {
        for (text, digits, exp) in [("123.45", "12345", 2), ("0.00125", "125", -3), ("5.033165e7", "5033165", 7), ("1e-7", "1", -7),
                                    ("50331650.0", "5033165", 7), ("1.2621775e-29", "12621775", -29), ("100.0", "1", 2)] {
            let (d, e) = decimal_parts(text);
            assert_eq!((d.as_str(), e), (digits, exp), "{text}");
        }
    }
}
