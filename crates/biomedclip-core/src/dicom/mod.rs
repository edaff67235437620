//! DICOM to the 8-bit image the model sees.
//!
//! The pipeline follows the standard, in order: decode the frame (dicom-pixeldata: native, deflate,
//! RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000), the modality LUT (Rescale
//! Slope/Intercept), the VOI stage (the file's VOI LUT or first window, a preset, an explicit
//! window or min-max; [`voi`]), MONOCHROME1 inversion, colour to RGB ([`colour`]). Grayscale stays
//! one channel here; the image preprocessing converts it to three as Pillow's `convert("RGB")`.
//!
//! The header is validated against the data before any decoder runs ([`header`]), and every decode
//! runs under `catch_unwind`.

mod colour;
mod declared_lengths;
mod frame;
pub(crate) mod frame_attributes;
mod header;
mod jpeg_ls;
mod info;
pub mod voi;
pub mod wsi;

pub use header::{framing, Framing};
pub use info::technical_info;
pub use voi::{WindowSpec, PRESETS};

use crate::image_decode::{Decoded, ImageError, Mode, Pixels};
use crate::resample::Raster8;
use dicom_dictionary_std::tags;
use header::{corrupt, Geometry, Object};
use voi::{Voi, VoiFunction};

/// True when the bytes are a DICOM object (by the rules of [`framing`]).
pub fn is_dicom(data: &[u8]) -> bool {
    framing(data).is_some()
}

/// Renders `frame` of a DICOM object to 8-bit grayscale or RGB.
pub fn render(data: &[u8], window: &WindowSpec, frame: u32, max_pixels: u64) -> Result<Decoded, ImageError> {
    let obj = header::parse(data)?;
    let (ts_uid, _) = header::transfer_syntax(&obj)?;
    let g = header::geometry(&obj, max_pixels)?;
    header::check_pixel_data(&obj, &g, &ts_uid, frame)?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render_checked(&obj, &g, &ts_uid, window, frame)));
    result.unwrap_or_else(|_| Err(corrupt("the pixel decoder rejected the data")))
}

fn render_checked(obj: &Object, g: &Geometry, ts_uid: &str, window: &WindowSpec, frame: u32) -> Result<Decoded, ImageError> {
    let (w, h) = (g.cols as usize, g.rows as usize);
    let rgb = |data: Vec<u8>| Decoded { mode: Mode::Rgb, pixels: Pixels::U8(Raster8 { width: w, height: h, bands: 3, data }), palette: Vec::new() };
    if g.samples == 3 && *window != WindowSpec::Auto {
        return Err(ImageError::Invalid(format!(
            "DICOM: windows apply to grayscale images; this object is {} (use window 'auto')",
            g.photometric
        )));
    }
    let values = match frame::frame_pixels(obj, g, ts_uid, frame)? {
        frame::FramePixels::Rgb(data) => return Ok(rgb(data)),
        frame::FramePixels::Gray(values) => values,
    };
    if values.len() != w * h {
        return Err(corrupt("decoded frame is shorter than the image"));
    }
    if g.photometric == "PALETTE COLOR" {
        return Ok(rgb(colour::palette_to_rgb(obj, &values)?));
    }
    let levels = resolve_voi(obj, window, frame, &values)?.apply_all(&values, g.photometric == "MONOCHROME1");
    Ok(Decoded { mode: Mode::L, pixels: Pixels::U8(Raster8 { width: w, height: h, bands: 1, data: levels }), palette: Vec::new() })
}

fn file_voi_lut(obj: &Object) -> Result<Option<Voi>, ImageError> {
    let Some(items) = obj.get(tags::VOILUT_SEQUENCE).and_then(|e| e.items()) else { return Ok(None) };
    let Some(item) = items.first() else { return Ok(None) };
    let descriptor: Vec<i64> = item
        .get(tags::LUT_DESCRIPTOR)
        .and_then(|e| e.to_multi_int::<i64>().ok())
        .ok_or_else(|| corrupt("VOI LUT without a descriptor"))?;
    if descriptor.len() != 3 || !(8..=16).contains(&descriptor[2]) {
        return Err(corrupt("invalid VOI LUT descriptor"));
    }
    let entries = if descriptor[0] == 0 { 65536 } else { descriptor[0] as usize };
    let data = item.get(tags::LUT_DATA).ok_or_else(|| corrupt("VOI LUT without data"))?;
    let table: Vec<u16> = match data.to_multi_int::<u16>() {
        Ok(v) if v.len() >= entries => v[..entries].to_vec(),
        _ => {
            let bytes = data.to_bytes().map_err(corrupt)?;
            if bytes.len() < entries * 2 {
                return Err(corrupt("VOI LUT data is shorter than its descriptor"));
            }
            bytes.chunks_exact(2).take(entries).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
        }
    };
    Ok(Some(Voi::Lut { first: descriptor[1] as f64, bits: descriptor[2] as u32, table }))
}

fn resolve_voi(obj: &Object, window: &WindowSpec, frame: u32, values: &[f64]) -> Result<Voi, ImageError> {
    match *window {
        WindowSpec::MinMax => Ok(Voi::min_max(values)),
        WindowSpec::Explicit { center, width } => Ok(Voi::Window { center, width, function: VoiFunction::Linear }),
        WindowSpec::Auto => {
            if let Some(lut) = file_voi_lut(obj)? {
                return Ok(lut);
            }
            let file_window = frame_attributes::window(obj, frame).and_then(|w| {
                let function = match w.function.as_deref() {
                    Some("LINEAR_EXACT") => VoiFunction::LinearExact,
                    Some("SIGMOID") => VoiFunction::Sigmoid,
                    _ => VoiFunction::Linear,
                };
                // PS3.3 C.11.2.1.2: width >= 1 for LINEAR, > 0 for the others.
                let valid = if function == VoiFunction::Linear { w.width >= 1.0 } else { w.width > 0.0 };
                valid.then_some(Voi::Window { center: w.center, width: w.width, function })
            });
            Ok(file_window.unwrap_or_else(|| Voi::min_max(values)))
        }
    }
}
