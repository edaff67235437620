//! Colour DICOM pixels to interleaved 8-bit RGB: planar configuration, YBR_FULL and YBR_FULL_422
//! (PS3.3 C.7.6.3.1.2, the JFIF equations of ISO/IEC 10918-5), 16-bit samples, and palette colour
//! lookup tables (PS3.3 C.7.6.3.1.5 and C.7.9).

use super::header::{corrupt, Geometry, Object};
use crate::image_decode::ImageError;
use dicom_dictionary_std::tags;

/// Samples of one frame as stored: 8-bit, or 16/32-bit little-endian words.
pub(crate) fn samples(frame: &[u8], bits_allocated: u16) -> Vec<u32> {
    match bits_allocated {
        8 => frame.iter().map(|&b| b as u32).collect(),
        16 => frame.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect(),
        _ => frame.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

/// Planar configuration 1 (RRR..GGG..BBB..) to interleaved RGB.
fn interleave(planes: &[u32], pixels: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(pixels * 3);
    for i in 0..pixels {
        out.extend_from_slice(&[planes[i], planes[pixels + i], planes[2 * pixels + i]]);
    }
    out
}

/// Full-range YCbCr to RGB, rounded half up and clamped, as ISO/IEC 10918-5 section 7 defines it.
fn ybr_to_rgb(y: f64, cb: f64, cr: f64) -> [u16; 3] {
    let (cb, cr) = (cb - 128.0, cr - 128.0);
    let r = y + 1.402 * cr;
    let g = y - (0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr;
    let b = y + 1.772 * cb;
    [r, g, b].map(|v| (v + 0.5).floor().clamp(0.0, 255.0) as u16)
}

/// Native YBR_FULL_422: each pair of pixels in a row is stored as Y1 Y2 Cb Cr (8-bit).
pub(crate) fn ybr_422_to_rgb(frame: &[u8], g: &Geometry) -> Result<Vec<u8>, ImageError> {
    if g.bits_allocated != 8 {
        return Err(ImageError::Unsupported("DICOM YBR_FULL_422 with more than 8 bits".into()));
    }
    let (w, h) = (g.cols as usize, g.rows as usize);
    let row_bytes = w.div_ceil(2) * 4;
    if w % 2 != 0 || frame.len() < row_bytes * h {
        return Err(corrupt("YBR_FULL_422 pixel data does not fit the image size"));
    }
    let mut out = Vec::with_capacity(w * h * 3);
    for pair in frame[..row_bytes * h].chunks_exact(4) {
        let (cb, cr) = (pair[2] as f64, pair[3] as f64);
        for y in [pair[0], pair[1]] {
            out.extend(ybr_to_rgb(y as f64, cb, cr).map(|v| v as u8));
        }
    }
    Ok(out)
}

/// 16-bit samples are scaled to 0..255 from their stored range; 8-bit ones are kept.
fn to_8bit(values: &[u32], bits_stored: u16) -> Vec<u8> {
    if bits_stored <= 8 {
        return values.iter().map(|&v| v.min(255) as u8).collect();
    }
    let top = 2f64.powi(bits_stored as i32) - 1.0;
    values
        .iter()
        .map(|&v| ((v as f64).min(top) * 255.0 / top).round_ties_even() as u8)
        .collect()
}

/// A decoded colour frame (RGB or YBR_FULL, either planar configuration) to interleaved RGB.
pub(crate) fn colour_frame(frame: &[u8], g: &Geometry, photometric: &str, planar: u16) -> Result<Vec<u8>, ImageError> {
    let pixels = g.rows as usize * g.cols as usize;
    let mut values = samples(frame, g.bits_allocated);
    if values.len() < pixels * 3 {
        return Err(corrupt("decoded colour frame is shorter than the image"));
    }
    values.truncate(pixels * 3);
    if planar == 1 {
        values = interleave(&values, pixels);
    }
    match photometric {
        "RGB" | "YBR_RCT" | "YBR_ICT" => Ok(to_8bit(&values, g.bits_stored)),
        "YBR_FULL" if g.bits_allocated == 8 => Ok(values
            .chunks_exact(3)
            .flat_map(|p| ybr_to_rgb(p[0] as f64, p[1] as f64, p[2] as f64).map(|v| v as u8))
            .collect()),
        other => Err(ImageError::Unsupported(format!("DICOM colour {other} at {} bits", g.bits_allocated))),
    }
}

struct PaletteChannel {
    entries: usize,
    first: i64,
    bits: u32,
    table: Vec<u16>,
}

fn palette_channel(obj: &Object, descriptor: dicom_core::Tag, data: dicom_core::Tag, colour: &str) -> Result<PaletteChannel, ImageError> {
    let missing = || ImageError::Unsupported(format!("DICOM palette without a {colour} lookup table (segmented palettes are not supported)"));
    let d: Vec<i64> = obj.get(descriptor).and_then(|e| e.to_multi_int::<i64>().ok()).ok_or_else(missing)?;
    if d.len() != 3 {
        return Err(corrupt(format!("{colour} palette descriptor has {} values", d.len())));
    }
    let entries = if d[0] == 0 { 65536 } else { d[0] as usize };
    let bits = d[2] as u32;
    if bits != 8 && bits != 16 {
        return Err(corrupt(format!("{colour} palette has {bits}-bit entries")));
    }
    let bytes = obj.get(data).and_then(|e| e.to_bytes().ok()).ok_or_else(missing)?;
    let table: Vec<u16> = if bytes.len() >= entries * 2 {
        bytes.chunks_exact(2).take(entries).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    } else if bits == 8 && bytes.len() >= entries {
        bytes.iter().take(entries).map(|&b| b as u16).collect()
    } else {
        return Err(corrupt(format!("{colour} palette data is shorter than its {entries} entries")));
    };
    Ok(PaletteChannel { entries, first: d[1], bits, table })
}

/// Palette indices to RGB through the three lookup tables; indices outside the table take the
/// first or last entry.
pub(crate) fn palette_to_rgb(obj: &Object, indices: &[f64]) -> Result<Vec<u8>, ImageError> {
    let channels = [
        palette_channel(obj, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "red")?,
        palette_channel(obj, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, "green")?,
        palette_channel(obj, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA, "blue")?,
    ];
    let mut out = Vec::with_capacity(indices.len() * 3);
    for &index in indices {
        for c in &channels {
            let i = ((index as i64) - c.first).clamp(0, c.entries as i64 - 1) as usize;
            let v = c.table[i];
            out.push(if c.bits == 8 { v.min(255) as u8 } else { (v as f64 * 255.0 / 65535.0).round_ties_even() as u8 });
        }
    }
    Ok(out)
}
