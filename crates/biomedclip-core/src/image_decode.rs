//! Decoding image bytes into the pixel mode Pillow would open them in.
//!
//! open_clip resizes an image in the mode it was opened in and converts to RGB afterwards, so the
//! mode matters: palette and 1-bit images are resized with nearest-neighbour, RGBA and LA with
//! premultiplied alpha, 16-bit grayscale in 16 bits. PNG is read with the `png` crate without
//! expansion (to keep palettes and bit depths), JPEG with `mozjpeg` (libjpeg-turbo's decoder, which
//! Pillow uses too), TIFF, BMP and WebP with the `image` crate.
//!
//! Every size field is checked against the pixel limit before any pixel buffer is allocated.

use crate::resample::{Raster16, Raster8};
use std::fmt;
use std::io::Cursor;

/// Pillow image modes this pipeline supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// "1": one bit per pixel, stored as 0 or 255.
    Bilevel,
    L,
    LA,
    /// "P": palette indices; the palette is in [`Decoded::palette`].
    P,
    Rgb,
    Rgba,
    /// "I;16": 16-bit grayscale.
    I16,
}

/// Pixels as decoded.
#[derive(Clone, Debug)]
pub enum Pixels {
    U8(Raster8),
    U16(Raster16),
}

/// A decoded image in its Pillow mode.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub mode: Mode,
    pub pixels: Pixels,
    pub palette: Vec<[u8; 3]>,
}

impl Decoded {
    pub fn size(&self) -> (usize, usize) {
        match &self.pixels {
            Pixels::U8(r) => (r.width, r.height),
            Pixels::U16(r) => (r.width, r.height),
        }
    }
}

/// Image container formats recognised by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Tiff,
    Bmp,
    WebP,
}

/// Why an image was refused. Messages name the problem and never echo pixel data.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageError {
    Empty,
    NotAnImage,
    TooManyPixels { width: u64, height: u64, limit: u64 },
    Unsupported(String),
    /// Well-formed data that cannot be used as asked (no pixel data, a frame out of range, a bad
    /// window argument).
    Invalid(String),
    Corrupt { format: &'static str, detail: String },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Empty => write!(f, "image data is empty"),
            ImageError::NotAnImage => write!(
                f,
                "data is not a supported image (expected PNG, JPEG, TIFF, BMP, WebP or DICOM)"
            ),
            ImageError::TooManyPixels { width, height, limit } => write!(
                f,
                "image of {width}x{height} pixels exceeds the limit of {limit} pixels (biomedclip.max_image_pixels)"
            ),
            ImageError::Unsupported(what) => write!(f, "unsupported image: {what}"),
            ImageError::Invalid(what) => write!(f, "{what}"),
            ImageError::Corrupt { format, detail } => write!(f, "invalid or truncated {format} data: {detail}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// Detects the container format from the leading bytes.
pub fn sniff(data: &[u8]) -> Option<Format> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else if data.starts_with(b"BM") {
        Some(Format::Bmp)
    } else if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else {
        None
    }
}

pub(crate) fn check_pixels(width: u64, height: u64, limit: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Unsupported(format!("zero-sized image ({width}x{height})")));
    }
    if width.saturating_mul(height) > limit {
        return Err(ImageError::TooManyPixels { width, height, limit });
    }
    Ok(())
}

/// Decodes raster image bytes (PNG, JPEG, TIFF, BMP, WebP), refusing images with more than
/// `max_pixels` pixels before allocating them. This layer knows no medical formats: DICOM and
/// JPEG-tiled slide TIFFs are routed by [`crate::input_format::decode`], which sits above this
/// module, `dicom` and `slide`.
pub fn decode(data: &[u8], max_pixels: u64) -> Result<Decoded, ImageError> {
    if data.is_empty() {
        return Err(ImageError::Empty);
    }
    match sniff(data).ok_or(ImageError::NotAnImage)? {
        Format::Png => decode_png(data, max_pixels),
        Format::Jpeg => decode_jpeg(data, max_pixels),
        fmt => decode_with_image_crate(data, fmt, max_pixels),
    }
}

fn corrupt(format: &'static str, e: impl fmt::Display) -> ImageError {
    ImageError::Corrupt { format, detail: e.to_string() }
}

fn decode_png(data: &[u8], max_pixels: u64) -> Result<Decoded, ImageError> {
    use png::{BitDepth, ColorType, Transformations};
    // IHDR is the first chunk: check its size fields before the decoder reads any further.
    if data.len() >= 24 && &data[12..16] == b"IHDR" {
        let w = u32::from_be_bytes([data[16], data[17], data[18], data[19]]);
        let h = u32::from_be_bytes([data[20], data[21], data[22], data[23]]);
        check_pixels(w as u64, h as u64, max_pixels)?;
    }
    // The pixel limit, not png's 64 MiB default, bounds the allocation (16-bit RGBA: 8 bytes/px).
    let limits = png::Limits { bytes: (max_pixels.saturating_mul(8).min(usize::MAX as u64) as usize).max(64 << 20) };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(data), limits);
    decoder.set_transformations(Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| corrupt("PNG", e))?;
    let (width, height, color, depth, palette) = {
        let info = reader.info();
        let palette: Vec<[u8; 3]> = info
            .palette
            .as_ref()
            .map(|p| p.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
            .unwrap_or_default();
        (info.width as usize, info.height as usize, info.color_type, info.bit_depth, palette)
    };
    check_pixels(width as u64, height as u64, max_pixels)?;
    let size = reader.output_buffer_size().ok_or_else(|| corrupt("PNG", "image too large"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| corrupt("PNG", e))?;
    let stride = frame.line_size;
    let bits = depth as u8 as usize;

    // Samples of a row with sub-byte depths unpacked, MSB first as PNG stores them.
    let unpack_row = |row: &[u8], samples: usize| -> Vec<u8> {
        (0..samples)
            .map(|i| {
                let bit = i * bits;
                (row[bit / 8] >> (8 - bits - bit % 8)) & ((1u16 << bits) - 1) as u8
            })
            .collect()
    };
    let rows = |samples_per_row: usize, map: &dyn Fn(u8) -> u8| -> Vec<u8> {
        let mut out = Vec::with_capacity(samples_per_row * height);
        for y in 0..height {
            let row = &buf[y * stride..(y + 1) * stride];
            out.extend(unpack_row(row, samples_per_row).into_iter().map(map));
        }
        out
    };
    // 16-bit samples: Pillow keeps the high byte for every mode but 16-bit grayscale.
    let high_bytes = |channels: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(width * height * channels);
        for y in 0..height {
            let row = &buf[y * stride..y * stride + width * channels * 2];
            out.extend(row.chunks_exact(2).map(|c| c[0]));
        }
        out
    };
    let raster = |bands: usize, data: Vec<u8>| Pixels::U8(Raster8 { width, height, bands, data });
    let pack8 = |channels: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(width * height * channels);
        for y in 0..height {
            out.extend_from_slice(&buf[y * stride..y * stride + width * channels]);
        }
        out
    };

    let (mode, pixels) = match (color, depth) {
        (ColorType::Grayscale, BitDepth::One) => (Mode::Bilevel, raster(1, rows(width, &|v| v * 255))),
        (ColorType::Grayscale, BitDepth::Two) => (Mode::L, raster(1, rows(width, &|v| v * 85))),
        (ColorType::Grayscale, BitDepth::Four) => (Mode::L, raster(1, rows(width, &|v| v * 17))),
        (ColorType::Grayscale, BitDepth::Eight) => (Mode::L, raster(1, pack8(1))),
        (ColorType::Grayscale, BitDepth::Sixteen) => {
            let mut data = Vec::with_capacity(width * height);
            for y in 0..height {
                let row = &buf[y * stride..y * stride + width * 2];
                data.extend(row.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])));
            }
            (Mode::I16, Pixels::U16(Raster16 { width, height, data }))
        }
        (ColorType::Indexed, _) => (Mode::P, raster(1, rows(width, &|v| v))),
        (ColorType::Rgb, BitDepth::Eight) => (Mode::Rgb, raster(3, pack8(3))),
        (ColorType::Rgb, BitDepth::Sixteen) => (Mode::Rgb, raster(3, high_bytes(3))),
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => (Mode::LA, raster(2, pack8(2))),
        (ColorType::GrayscaleAlpha, BitDepth::Sixteen) => (Mode::LA, raster(2, high_bytes(2))),
        (ColorType::Rgba, BitDepth::Eight) => (Mode::Rgba, raster(4, pack8(4))),
        (ColorType::Rgba, BitDepth::Sixteen) => (Mode::Rgba, raster(4, high_bytes(4))),
        (c, d) => return Err(ImageError::Unsupported(format!("PNG colour type {c:?} at bit depth {d:?}"))),
    };
    Ok(Decoded { mode, pixels, palette })
}

/// An Adobe APP14 segment with transform 0: tells libjpeg that three components are RGB, not YCbCr
/// (TIFF and DICOM say so in their own headers, which libjpeg cannot see).
pub(crate) const ADOBE_RGB: [u8; 16] = [0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00];

thread_local! {
    /// Set by libjpeg's warning hook when the data ended before the image did.
    static JPEG_PREMATURE_END: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C-unwind" fn jpeg_warning(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: std::os::raw::c_int) {
    if level < 0 && !cinfo.err.is_null() && (*cinfo.err).msg_code == mozjpeg_sys::JWRN_JPEG_EOF as i32 {
        JPEG_PREMATURE_END.with(|f| f.set(true));
    }
}

unsafe extern "C-unwind" fn jpeg_error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let code = if cinfo.err.is_null() { -1 } else { (*cinfo.err).msg_code };
    std::panic::resume_unwind(Box::new(format!("libjpeg error {code}")));
}

/// libjpeg reports truncated data only as a warning and fills the rest with grey; Pillow refuses
/// such files ("image file is truncated"), and so do we. Other corrupt-data warnings are ignored,
/// as Pillow ignores them.
fn jpeg_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    unsafe {
        let mut err: mozjpeg_sys::jpeg_error_mgr = std::mem::zeroed();
        mozjpeg_sys::jpeg_std_error(&mut err);
        err.error_exit = Some(jpeg_error_exit);
        err.emit_message = Some(jpeg_warning);
        err
    }
}

pub(crate) fn decode_jpeg(data: &[u8], max_pixels: u64) -> Result<Decoded, ImageError> {
    JPEG_PREMATURE_END.with(|f| f.set(false));
    let result = std::panic::catch_unwind(|| decode_jpeg_inner(data, max_pixels))
        .unwrap_or_else(|_| Err(corrupt("JPEG", "libjpeg rejected the data")));
    if JPEG_PREMATURE_END.with(|f| f.get()) {
        return Err(corrupt("JPEG", "premature end of data (image file is truncated)"));
    }
    result
}

fn decode_jpeg_inner(data: &[u8], max_pixels: u64) -> Result<Decoded, ImageError> {
    use mozjpeg::ColorSpace;
    let d = mozjpeg::Decompress::with_err(jpeg_error_mgr()).from_mem(data).map_err(|e| corrupt("JPEG", e))?;
    let (width, height) = (d.width(), d.height());
    check_pixels(width as u64, height as u64, max_pixels)?;
    let (mode, bands, mut started) = match d.color_space() {
        ColorSpace::JCS_GRAYSCALE => (Mode::L, 1, d.grayscale().map_err(|e| corrupt("JPEG", e))?),
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => (Mode::Rgb, 3, d.rgb().map_err(|e| corrupt("JPEG", e))?),
        other => return Err(ImageError::Unsupported(format!("JPEG colour space {other:?}"))),
    };
    let data = started.read_scanlines::<u8>().map_err(|e| corrupt("JPEG", e))?;
    if data.len() != width * height * bands {
        return Err(corrupt("JPEG", format!("decoded {} bytes, expected {}", data.len(), width * height * bands)));
    }
    started.finish().map_err(|e| corrupt("JPEG", e))?;
    Ok(Decoded { mode, pixels: Pixels::U8(Raster8 { width, height, bands, data }), palette: Vec::new() })
}

fn decode_with_image_crate(data: &[u8], fmt: Format, max_pixels: u64) -> Result<Decoded, ImageError> {
    use image::{DynamicImage, ImageFormat, ImageReader};
    let (name, format) = match fmt {
        Format::Tiff => ("TIFF", ImageFormat::Tiff),
        Format::Bmp => ("BMP", ImageFormat::Bmp),
        Format::WebP => ("WebP", ImageFormat::WebP),
        Format::Png | Format::Jpeg => unreachable!("decoded elsewhere"),
    };
    let (w, h) = ImageReader::with_format(Cursor::new(data), format)
        .into_dimensions()
        .map_err(|e| corrupt(name, e))?;
    check_pixels(w as u64, h as u64, max_pixels)?;
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| corrupt(name, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let raster = |bands: usize, data: Vec<u8>| Pixels::U8(Raster8 { width, height, bands, data });
    let high = |v: Vec<u16>| v.into_iter().map(|x| (x >> 8) as u8).collect::<Vec<u8>>();
    let (mode, pixels) = match img {
        DynamicImage::ImageLuma8(b) => (Mode::L, raster(1, b.into_raw())),
        DynamicImage::ImageLumaA8(b) => (Mode::LA, raster(2, b.into_raw())),
        DynamicImage::ImageRgb8(b) => (Mode::Rgb, raster(3, b.into_raw())),
        DynamicImage::ImageRgba8(b) => (Mode::Rgba, raster(4, b.into_raw())),
        DynamicImage::ImageLuma16(b) => (Mode::I16, Pixels::U16(Raster16 { width, height, data: b.into_raw() })),
        DynamicImage::ImageLumaA16(b) => (Mode::LA, raster(2, high(b.into_raw()))),
        DynamicImage::ImageRgb16(b) => (Mode::Rgb, raster(3, high(b.into_raw()))),
        DynamicImage::ImageRgba16(b) => (Mode::Rgba, raster(4, high(b.into_raw()))),
        other => return Err(ImageError::Unsupported(format!("{name} pixel format {:?}", other.color()))),
    };
    Ok(Decoded { mode, pixels, palette: Vec::new() })
}

/// Encodes an 8-bit grayscale or RGB raster as PNG (what the render functions return).
pub fn encode_png(image: &Decoded) -> Result<Vec<u8>, ImageError> {
    let Pixels::U8(r) = &image.pixels else { return Err(ImageError::Unsupported("PNG output of 16-bit data".into())) };
    let colour = match r.bands {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        n => return Err(ImageError::Unsupported(format!("PNG output with {n} bands"))),
    };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, r.width as u32, r.height as u32);
        encoder.set_color(colour);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().map_err(|e| corrupt("PNG", e))?;
        writer.write_image_data(&r.data).map_err(|e| corrupt("PNG", e))?;
    }
    Ok(out)
}
