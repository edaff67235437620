//! The format dispatcher: which decoder reads a blob of image bytes.
//!
//! It sits above the three readers so that data flows one way: [`crate::image_decode`] reads
//! raster formats and knows nothing of medical ones, [`crate::dicom`] renders DICOM, and
//! [`crate::slide`] reads JPEG-tiled TIFFs tile by tile; only this module looks at a blob and picks.

use crate::dicom;
use crate::image_decode::{self, check_pixels, Decoded, Format, ImageError, Mode, Pixels};
use crate::slide::directory::{read_directories, Compression};
use crate::slide::LevelReader;

/// Decodes `data` (PNG, JPEG, TIFF, BMP, WebP or DICOM) into the mode Pillow (or, for DICOM,
/// pydicom's render) would give, refusing more than `max_pixels` pixels before allocating them.
pub fn decode(data: &[u8], max_pixels: u64) -> Result<Decoded, ImageError> {
    if data.is_empty() {
        return Err(ImageError::Empty);
    }
    // DICOM first: a DICOM preamble may itself be a TIFF header (dual-personality files).
    if dicom::is_dicom(data) {
        return dicom::render(data, &dicom::WindowSpec::Auto, 0, max_pixels);
    }
    if image_decode::sniff(data) == Some(Format::Tiff) {
        if let Some(result) = jpeg_tiled_tiff(data, max_pixels) {
            return result;
        }
    }
    image_decode::decode(data, max_pixels)
}

/// JPEG-compressed RGB TIFF (whole-slide files among them): the first image, decoded tile by tile
/// with libjpeg-turbo as libtiff does for Pillow. `None` when the file is not of that kind, and
/// the raster decoder reads it.
fn jpeg_tiled_tiff(data: &[u8], max_pixels: u64) -> Option<Result<Decoded, ImageError>> {
    let first = read_directories(data).ok()?.into_iter().next()?;
    if first.compression != Compression::Jpeg || first.samples != 3 {
        return None;
    }
    Some(check_pixels(first.width as u64, first.height as u64, max_pixels).and_then(|()| {
        let raster = LevelReader::new(data, &first).read_region(0, 0, first.width, first.height)?;
        Ok(Decoded { mode: Mode::Rgb, pixels: Pixels::U8(raster), palette: Vec::new() })
    }))
}
