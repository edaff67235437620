//! Image resampling that reproduces Pillow 13 bit for bit.
//!
//! open_clip resizes with Pillow's BICUBIC, and no Rust crate matches it (`fast_image_resize` and
//! `image::imageops` differ by up to 22 levels, see FIELD_NOTES). Pillow's algorithm, as described
//! in its documentation and source (`libImaging/Resample.c`), is:
//!
//! * a separable convolution; per output coordinate, a window of input samples centred on
//!   `(i + 0.5) * scale`, whose half-width is the filter support (2 for bicubic) times
//!   `max(scale, 1)`, so that downscaling averages over more input;
//! * the weights come from the a = -0.5 cubic kernel evaluated at
//!   `(x - center + 0.5) / max(scale, 1)` and are normalized to sum to 1;
//! * for 8-bit images the weights become fixed point with 22 fractional bits, each pass adds a
//!   rounding half and clips to 0..=255, so the first pass is quantized before the second;
//! * the horizontal pass runs first unless the height shrinks by more than twice as much as the
//!   width does;
//! * 16-bit grayscale (`I;16`) accumulates in f64 and rounds half away from zero;
//! * palette and 1-bit images use nearest-neighbour with Pillow's accumulated source positions.

/// Bits of the fixed-point weights of 8-bit passes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Interleaved 8-bit samples, `bands` per pixel (1 to 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raster8 {
    pub width: usize,
    pub height: usize,
    pub bands: usize,
    pub data: Vec<u8>,
}

/// Single-band 16-bit samples (Pillow's `I;16`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raster16 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u16>,
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Weights of one axis: for each output index, the first input index and its weights.
struct Kernel {
    starts: Vec<usize>,
    weights: Vec<Vec<f64>>,
}

impl Kernel {
    fn new(in_size: usize, out_size: usize) -> Kernel {
        const SUPPORT: f64 = 2.0;
        // Pillow computes the scale from a float box (0, in_size) in double precision.
        let scale = (in_size as f32 as f64) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let inv_filterscale = 1.0 / filterscale;
        let mut starts = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size);
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C truncation toward zero of a value that may be negative, then clamped at 0.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * inv_filterscale))
                .collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                for w in &mut k {
                    *w /= total;
                }
            }
            starts.push(xmin);
            weights.push(k);
        }
        Kernel { starts, weights }
    }

    /// The weights as 8-bit-path fixed point (rounded half away from zero).
    fn fixed_point(&self) -> Vec<Vec<i32>> {
        let one = (1u32 << PRECISION_BITS) as f64;
        self.weights
            .iter()
            .map(|k| {
                k.iter()
                    .map(|&w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 })
                    .collect()
            })
            .collect()
    }
}

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let dy = in_h as i64 - out_h as i64;
    let dx = in_w as i64 - out_w as i64;
    !(dy > 0 && dy > dx * 2)
}

fn pass8_horizontal(src: &Raster8, out_w: usize) -> Raster8 {
    let kernel = Kernel::new(src.width, out_w);
    let fixed = kernel.fixed_point();
    let b = src.bands;
    let mut data = vec![0u8; out_w * src.height * b];
    for y in 0..src.height {
        let row = &src.data[y * src.width * b..(y + 1) * src.width * b];
        let out = &mut data[y * out_w * b..(y + 1) * out_w * b];
        for (xx, (k, &start)) in fixed.iter().zip(&kernel.starts).enumerate() {
            for c in 0..b {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (i, &w) in k.iter().enumerate() {
                    acc += row[(start + i) * b + c] as i32 * w;
                }
                out[xx * b + c] = clip8(acc);
            }
        }
    }
    Raster8 { width: out_w, height: src.height, bands: b, data }
}

fn pass8_vertical(src: &Raster8, out_h: usize) -> Raster8 {
    let kernel = Kernel::new(src.height, out_h);
    let fixed = kernel.fixed_point();
    let stride = src.width * src.bands;
    let mut data = vec![0u8; stride * out_h];
    let mut acc = vec![0i32; stride];
    for (yy, (k, &start)) in fixed.iter().zip(&kernel.starts).enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (i, &w) in k.iter().enumerate() {
            let row = &src.data[(start + i) * stride..(start + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in data[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    Raster8 { width: src.width, height: out_h, bands: src.bands, data }
}

/// Pillow BICUBIC resize of an 8-bit image.
pub fn resize_bicubic8(src: &Raster8, out_w: usize, out_h: usize) -> Raster8 {
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    if horizontal_first(src.width, src.height, out_w, out_h) {
        let tmp = if need_h { pass8_horizontal(src, out_w) } else { src.clone() };
        if need_v {
            pass8_vertical(&tmp, out_h)
        } else {
            tmp
        }
    } else {
        let tmp = if need_v { pass8_vertical(src, out_h) } else { src.clone() };
        if need_h {
            pass8_horizontal(&tmp, out_w)
        } else {
            tmp
        }
    }
}

/// C's `ROUND_UP` (half away from zero) then `CLIP16`.
fn round_clip16(ss: f64) -> u16 {
    let r = if ss >= 0.0 { (ss + 0.5) as i64 } else { (ss - 0.5) as i64 };
    r.clamp(0, 65535) as u16
}

fn pass16(src: &Raster16, out_w: usize, out_h: usize, horizontal: bool) -> Raster16 {
    let (in_len, out_len) = if horizontal { (src.width, out_w) } else { (src.height, out_h) };
    let kernel = Kernel::new(in_len, out_len);
    let (w, h) = if horizontal { (out_w, src.height) } else { (src.width, out_h) };
    let mut data = vec![0u16; w * h];
    for y in 0..h {
        for x in 0..w {
            let o = if horizontal { x } else { y };
            let mut ss = 0.0f64;
            for (i, &k) in kernel.weights[o].iter().enumerate() {
                let s = kernel.starts[o] + i;
                let p = if horizontal { src.data[y * src.width + s] } else { src.data[s * src.width + x] };
                ss += p as f64 * k;
            }
            data[y * w + x] = round_clip16(ss);
        }
    }
    Raster16 { width: w, height: h, data }
}

/// Pillow BICUBIC resize of a 16-bit grayscale image.
pub fn resize_bicubic16(src: &Raster16, out_w: usize, out_h: usize) -> Raster16 {
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let mut cur = src.clone();
    let order = if horizontal_first(src.width, src.height, out_w, out_h) { [true, false] } else { [false, true] };
    for horizontal in order {
        if (horizontal && need_h) || (!horizontal && need_v) {
            cur = pass16(&cur, out_w, out_h, horizontal);
        }
    }
    cur
}

/// Source indices Pillow's nearest-neighbour scaling picks along one axis. The positions are
/// accumulated by repeated addition in f64, exactly as Pillow does.
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = (in_size as f32 as f64) / out_size as f64;
    let mut pos = step * 0.5;
    let mut out = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        let idx = if pos < 0.0 { 0 } else { (pos as usize).min(in_size - 1) };
        out.push(idx);
        pos += step;
    }
    out
}

/// Pillow NEAREST resize (used for palette and 1-bit images).
pub fn resize_nearest8(src: &Raster8, out_w: usize, out_h: usize) -> Raster8 {
    let xs = nearest_indices(src.width, out_w);
    let ys = nearest_indices(src.height, out_h);
    let b = src.bands;
    let mut data = Vec::with_capacity(out_w * out_h * b);
    for &y in &ys {
        for &x in &xs {
            let p = (y * src.width + x) * b;
            data.extend_from_slice(&src.data[p..p + b]);
        }
    }
    Raster8 { width: out_w, height: out_h, bands: b, data }
}

/// Pillow's premultiplication of the colour bands by alpha (the last band): `RGBA -> RGBa`.
pub fn premultiply(img: &mut Raster8) {
    let b = img.bands;
    for px in img.data.chunks_exact_mut(b) {
        let alpha = px[b - 1] as u32;
        for v in &mut px[..b - 1] {
            let t = *v as u32 * alpha + 128;
            *v = (((t >> 8) + t) >> 8) as u8;
        }
    }
}

/// Pillow's inverse: `RGBa -> RGBA`, integer division, clipped.
pub fn unpremultiply(img: &mut Raster8) {
    let b = img.bands;
    for px in img.data.chunks_exact_mut(b) {
        let alpha = px[b - 1] as u32;
        if alpha == 0 || alpha == 255 {
            continue;
        }
        for v in &mut px[..b - 1] {
            *v = ((255 * *v as u32) / alpha).min(255) as u8;
        }
    }
}
