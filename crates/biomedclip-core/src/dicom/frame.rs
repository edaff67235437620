//! Getting one frame's pixels out of a validated object: modality values for grayscale (and
//! palette indices), interleaved 8-bit RGB for colour.
//!
//! Decoders: dicom-pixeldata for native, deflate, RLE, JPEG lossless, JPEG-LS and JPEG 2000;
//! libjpeg-turbo (mozjpeg) for 8-bit JPEG baseline/extended, because the colour transform of a
//! JPEG frame follows the DICOM Photometric Interpretation (RGB means no transform, PS3.5 8.2.1),
//! which libjpeg-turbo can be told and the pure-Rust decoder cannot.

use super::colour;
use super::frame_attributes;
use super::header::{corrupt, Geometry, Object};
use crate::image_decode::{self, ImageError, Pixels};
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, Rescale};

/// One frame's pixels before the VOI stage.
pub(crate) enum FramePixels {
    /// Modality values (or palette indices), one per pixel.
    Gray(Vec<f64>),
    /// Interleaved 8-bit RGB.
    Rgb(Vec<u8>),
}

use super::header::EXPLICIT_BE;
use dicom_dictionary_std::uids::{
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, JPEGLS_LOSSLESS, JPEGLS_NEAR_LOSSLESS,
    JPEG_BASELINE8_BIT as JPEG_BASELINE, JPEG_EXTENDED12_BIT as JPEG_EXTENDED, RLE_LOSSLESS as RLE,
};

/// Big-endian OW pixel data is parsed as 16-bit words in host order, so a 32-bit sample arrives
/// as (high word, low word); reorder to little-endian 32-bit.
fn swap_word_halves(data: &[u8]) -> Vec<u8> {
    data.chunks_exact(4).flat_map(|c| [c[2], c[3], c[0], c[1]]).collect()
}

pub(crate) fn is_native(ts_uid: &str) -> bool {
    [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_BE, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN].contains(&ts_uid)
}

/// Rescale Slope/Intercept of `frame` applied to stored values (the modality LUT, linear form).
fn modality(stored: impl Iterator<Item = f64>, obj: &Object, frame: u32) -> Vec<f64> {
    let (slope, intercept) = frame_attributes::rescale(obj, frame);
    stored.map(|v| v * slope + intercept).collect()
}

/// Stored values of `bits_stored` bits in little-endian words of `bits_allocated`, sign-extended
/// when Pixel Representation is signed.
fn stored_values(frame: &[u8], g: &Geometry, signed: bool) -> Vec<f64> {
    let bytes = g.bits_allocated as usize / 8;
    let shift = 64 - g.bits_stored as u32;
    frame
        .chunks_exact(bytes)
        .map(|c| {
            let mut word = [0u8; 8];
            word[..bytes].copy_from_slice(c);
            let raw = u64::from_le_bytes(word) << shift;
            if signed { ((raw as i64) >> shift) as f64 } else { (raw >> shift) as f64 }
        })
        .collect()
}

fn is_signed(obj: &Object) -> bool {
    super::header::int_tag(obj, tags::PIXEL_REPRESENTATION) == Some(1)
}

/// The JPEG bitstream of `frame`: one fragment per frame, or all fragments of a single frame.
fn jpeg_frame_bytes(obj: &Object, g: &Geometry, frame: u32) -> Option<Vec<u8>> {
    let element = obj.get(tags::PIXEL_DATA)?;
    let Value::PixelSequence(seq) = element.value() else { return None };
    let fragments = seq.fragments();
    if g.frames == 1 {
        Some(fragments.concat())
    } else if fragments.len() == g.frames as usize {
        Some(fragments[frame as usize].clone())
    } else {
        None
    }
}

/// Marks the stream as RGB without colour transform (an Adobe APP14 segment after SOI), unless it
/// has a complete Adobe segment of its own (libjpeg ignores an APP14 shorter than 14 bytes, which
/// some writers produce).
fn without_colour_transform(stream: &[u8]) -> Vec<u8> {
    let complete_adobe = |w: &[u8]| w[0] == 0xFF && w[1] == 0xEE && u16::from_be_bytes([w[2], w[3]]) >= 14 && &w[4..9] == b"Adobe";
    if stream.windows(9).any(complete_adobe) {
        return stream.to_vec();
    }
    let mut out = Vec::with_capacity(stream.len() + image_decode::ADOBE_RGB.len());
    out.extend_from_slice(&stream[..2]);
    out.extend_from_slice(&image_decode::ADOBE_RGB);
    out.extend_from_slice(&stream[2..]);
    out
}

fn jpeg_8bit(obj: &Object, g: &Geometry, frame: u32, bytes: Vec<u8>) -> Result<FramePixels, ImageError> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(corrupt("JPEG frame does not start with SOI"));
    }
    let stream = if g.photometric == "RGB" { without_colour_transform(&bytes) } else { bytes };
    let decoded = image_decode::decode_jpeg(&stream, g.rows as u64 * g.cols as u64)
        .map_err(|e| corrupt(format!("JPEG frame {frame}: {e}")))?;
    let Pixels::U8(r) = decoded.pixels else { return Err(corrupt("JPEG frame decoded to 16 bits")) };
    if (r.width, r.height, r.bands) != (g.cols as usize, g.rows as usize, g.samples as usize) {
        return Err(corrupt(format!("JPEG frame is {}x{}x{}, the header says {}x{}x{}", r.width, r.height, r.bands, g.cols, g.rows, g.samples)));
    }
    if g.samples == 3 {
        return Ok(FramePixels::Rgb(r.data));
    }
    let stored = stored_values(&r.data, g, is_signed(obj));
    if g.photometric == "PALETTE COLOR" {
        return Ok(FramePixels::Gray(stored));
    }
    Ok(FramePixels::Gray(modality(stored.into_iter(), obj, frame)))
}

/// Decodes `frame` (already range-checked) of a validated object.
pub(crate) fn frame_pixels(obj: &Object, g: &Geometry, ts_uid: &str, frame: u32) -> Result<FramePixels, ImageError> {
    let native = is_native(ts_uid);
    if native && g.photometric == "YBR_FULL_422" {
        let size = g.native_frame_bytes() as usize;
        let bytes = obj.element(tags::PIXEL_DATA).map_err(corrupt)?.to_bytes().map_err(corrupt)?;
        let frame_bytes = bytes.get(size * frame as usize..size * (frame as usize + 1)).ok_or_else(|| corrupt("pixel data is truncated"))?;
        return Ok(FramePixels::Rgb(colour::ybr_422_to_rgb(frame_bytes, g)?));
    }
    if ts_uid == JPEG_BASELINE || ts_uid == JPEG_EXTENDED {
        if g.bits_stored > 8 {
            return Err(ImageError::Unsupported(format!(
                "DICOM JPEG Extended with {}-bit samples (no 12-bit JPEG decoder is built in)",
                g.bits_stored
            )));
        }
        if let Some(bytes) = jpeg_frame_bytes(obj, g, frame) {
            return jpeg_8bit(obj, g, frame, bytes);
        }
    }
    if g.bits_allocated == 32 && ts_uid == RLE {
        return Err(ImageError::Unsupported("DICOM RLE with 32-bit samples".into()));
    }
    if ts_uid == JPEGLS_LOSSLESS || ts_uid == JPEGLS_NEAR_LOSSLESS {
        // Multi-frame objects whose frames span several fragments are left to the decoder.
        if let Some(bytes) = jpeg_frame_bytes(obj, g, frame) {
            super::jpeg_ls::check_codestream(&bytes)?;
        }
    }
    let decoded = obj.decode_pixel_data_frame(frame).map_err(|e| corrupt(format!("pixel data could not be decoded: {e}")))?;
    if decoded.rows() != g.rows || decoded.columns() != g.cols {
        return Err(corrupt("decoded frame size differs from Rows/Columns"));
    }
    let data = decoded.frame_data(0).map_err(corrupt)?;
    if data.len() < g.rows as usize * g.cols as usize * g.samples as usize * (g.bits_allocated as usize / 8) {
        return Err(corrupt("decoded frame is shorter than the image"));
    }
    if g.samples == 3 {
        // Native and RLE data keep their colour space; the JPEG family decoders return RGB.
        let keeps = native || ts_uid == RLE;
        let (photometric, planar) = if keeps { (g.photometric.as_str(), if native { g.planar } else { 0 }) } else { ("RGB", 0) };
        return Ok(FramePixels::Rgb(colour::colour_frame(data, g, photometric, planar)?));
    }
    if g.bits_allocated == 32 {
        let words = if ts_uid == EXPLICIT_BE { swap_word_halves(data) } else { data.to_vec() };
        return Ok(FramePixels::Gray(modality(stored_values(&words, g, is_signed(obj)).into_iter(), obj, frame)));
    }
    // The crate's modality LUT (it masks to BitsStored and reconciles the sign of the decoded
    // samples), with the rescale of our per-frame rule so that every decoder path uses the same one.
    // Palette indices are not rescaled.
    let (slope, intercept) = if g.photometric == "PALETTE COLOR" { (1.0, 0.0) } else { frame_attributes::rescale(obj, frame) };
    let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::Override(Rescale { slope, intercept }));
    let values: Vec<f64> = decoded.to_vec_frame_with_options::<f64>(0, &options).map_err(|e| corrupt(format!("pixel values: {e}")))?;
    Ok(FramePixels::Gray(values))
}
