//! open_clip's evaluation transform, reproduced exactly:
//! `Resize(224, BICUBIC)` on the image in the mode it was opened in, `CenterCrop(224)`, then
//! convert to RGB, `ToTensor` (divide by 255 in f32) and `Normalize(mean, std)` in f32.
//!
//! Size arithmetic follows torchvision: the short side becomes `size`, the long side
//! `int(size * long / short)`; the crop offset is `int(round((H - size) / 2))` with Python's
//! round-half-to-even.

use crate::image_decode::{Decoded, ImageError, Mode, Pixels};
use crate::input_format;
use crate::resample::{self, Raster16, Raster8};

/// Parameters of the transform (from the model manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    pub image_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    /// BiomedCLIP's values (open_clip_config.json).
    fn default() -> Self {
        PreprocessConfig {
            image_size: 224,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }
}

/// torchvision's resized size for `Resize(size)` with a single int: (width, height).
pub fn resized_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    // Python: int(requested_new_short * long / short), true division then truncation.
    let new_long = (size as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's CenterCrop offset: int(round((in - out) / 2.0)), ties to even.
pub fn crop_offset(input: usize, output: usize) -> usize {
    ((input as f64 - output as f64) / 2.0).round_ties_even().max(0.0) as usize
}

fn resize(img: Decoded, w: usize, h: usize) -> Decoded {
    if img.size() == (w, h) {
        return img;
    }
    let pixels = match (img.mode, img.pixels) {
        (Mode::P | Mode::Bilevel, Pixels::U8(r)) => Pixels::U8(resample::resize_nearest8(&r, w, h)),
        (Mode::LA | Mode::Rgba, Pixels::U8(mut r)) => {
            resample::premultiply(&mut r);
            let mut out = resample::resize_bicubic8(&r, w, h);
            resample::unpremultiply(&mut out);
            Pixels::U8(out)
        }
        (_, Pixels::U8(r)) => Pixels::U8(resample::resize_bicubic8(&r, w, h)),
        (_, Pixels::U16(r)) => Pixels::U16(resample::resize_bicubic16(&r, w, h)),
    };
    Decoded { mode: img.mode, pixels, palette: img.palette }
}

fn crop8(r: &Raster8, left: usize, top: usize, size: usize) -> Raster8 {
    let b = r.bands;
    let mut data = Vec::with_capacity(size * size * b);
    for y in top..top + size {
        let start = (y * r.width + left) * b;
        data.extend_from_slice(&r.data[start..start + size * b]);
    }
    Raster8 { width: size, height: size, bands: b, data }
}

fn crop16(r: &Raster16, left: usize, top: usize, size: usize) -> Raster16 {
    let mut data = Vec::with_capacity(size * size);
    for y in top..top + size {
        let start = y * r.width + left;
        data.extend_from_slice(&r.data[start..start + size]);
    }
    Raster16 { width: size, height: size, data }
}

/// Pillow's `convert("RGB")` for each supported mode: interleaved RGB bytes.
fn to_rgb(img: &Decoded) -> Vec<u8> {
    match &img.pixels {
        Pixels::U16(r) => r
            .data
            .iter()
            // I;16 -> RGB clips at 255 (Pillow's I16_RGB), odd as it is.
            .flat_map(|&v| {
                let g = if v > 255 { 255 } else { v as u8 };
                [g, g, g]
            })
            .collect(),
        Pixels::U8(r) => match img.mode {
            Mode::Rgb => r.data.clone(),
            Mode::Rgba => r.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            Mode::L | Mode::Bilevel => r.data.iter().flat_map(|&g| [g, g, g]).collect(),
            Mode::LA => r.data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
            Mode::P => r
                .data
                .iter()
                .flat_map(|&i| img.palette.get(i as usize).copied().unwrap_or([0, 0, 0]))
                .collect(),
            Mode::I16 => unreachable!("16-bit pixels are handled above"),
        },
    }
}

/// Resize + crop in the image's own mode, then RGB: the 8-bit image the model sees.
pub fn model_view_rgb(img: Decoded, size: usize) -> (usize, Vec<u8>) {
    let (w, h) = img.size();
    let (rw, rh) = resized_size(w, h, size);
    let resized = resize(img, rw, rh);
    // After resizing the short side equals `size`, so the crop never pads.
    let (left, top) = (crop_offset(rw, size), crop_offset(rh, size));
    let cropped = match &resized.pixels {
        Pixels::U8(r) => Pixels::U8(crop8(r, left, top, size)),
        Pixels::U16(r) => Pixels::U16(crop16(r, left, top, size)),
    };
    let cropped = Decoded { mode: resized.mode, pixels: cropped, palette: resized.palette };
    (size, to_rgb(&cropped))
}

/// Normalizes interleaved RGB bytes into a channel-first (CHW) f32 tensor.
pub fn normalize_chw(rgb: &[u8], size: usize, cfg: &PreprocessConfig, out: &mut Vec<f32>) {
    let plane = size * size;
    let base = out.len();
    out.resize(base + 3 * plane, 0.0);
    let (dst, _) = out[base..].split_at_mut(3 * plane);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            // torchvision: (x / 255) then (x - mean) / std, every step in f32.
            let x = px[c] as f32 / 255.0f32;
            dst[c * plane + i] = (x - cfg.mean[c]) / cfg.std[c];
        }
    }
}

/// Decodes and preprocesses one image, appending its 3×size×size tensor to `out`.
pub fn preprocess_into(data: &[u8], cfg: &PreprocessConfig, max_pixels: u64, out: &mut Vec<f32>) -> Result<(), ImageError> {
    let img = input_format::decode(data, max_pixels)?;
    preprocess_decoded(img, cfg, out);
    Ok(())
}

/// Preprocesses an already decoded image (a DICOM render, a slide patch), appending its tensor.
pub fn preprocess_decoded(img: Decoded, cfg: &PreprocessConfig, out: &mut Vec<f32>) {
    let (size, rgb) = model_view_rgb(img, cfg.image_size);
    normalize_chw(&rgb, size, cfg, out);
}

/// Decodes one image and appends the model's 8-bit RGB view of it (size×size×3) to `out`.
pub fn model_view_into(data: &[u8], size: usize, max_pixels: u64, out: &mut Vec<u8>) -> Result<(), ImageError> {
    let img = input_format::decode(data, max_pixels)?;
    out.extend_from_slice(&model_view_rgb(img, size).1);
    Ok(())
}

/// Decodes and preprocesses one image into a new 3×size×size tensor.
pub fn preprocess(data: &[u8], cfg: &PreprocessConfig, max_pixels: u64) -> Result<Vec<f32>, ImageError> {
    let mut out = Vec::with_capacity(3 * cfg.image_size * cfg.image_size);
    preprocess_into(data, cfg, max_pixels, &mut out)?;
    Ok(out)
}
