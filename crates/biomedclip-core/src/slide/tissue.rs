//! The tissue mask: HSV saturation on a thumbnail, thresholded with Otsu's method.
//!
//! Glass and background are near-white or grey (low saturation); stained tissue is not. The
//! thumbnail is built from the smallest image of the slide's pyramid (or its thumbnail page),
//! streamed tile by tile into at most [`THUMBNAIL_SIDE`] pixels on the long side.

use super::tiles::LevelReader;
use crate::image_decode::ImageError;

/// Long side of the thumbnail the mask is computed on.
pub const THUMBNAIL_SIDE: u32 = 1024;
/// Saturations at or below this (0..255) are background whatever Otsu says, so that a slide that
/// is nearly all glass does not call its noise tissue.
pub const MIN_SATURATION: u8 = 8;

/// A boolean tissue mask over the whole slide at thumbnail resolution.
#[derive(Clone, Debug)]
pub struct TissueMask {
    pub width: usize,
    pub height: usize,
    pub mask: Vec<bool>,
    /// The saturation threshold used (0..255): Otsu's, raised to at least [`MIN_SATURATION`].
    pub threshold: u8,
}

/// HSV saturation of one RGB pixel on 0..255, (max - min) / max, rounded to nearest.
pub fn saturation(p: &[u8]) -> u8 {
    let max = p[0].max(p[1]).max(p[2]) as u32;
    let min = p[0].min(p[1]).min(p[2]) as u32;
    if max == 0 {
        0
    } else {
        (((max - min) * 255 + max / 2) / max) as u8
    }
}

/// Otsu's threshold of a 256-bin histogram: the t maximising the between-class variance of
/// {v <= t} and {v > t}.
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(v, &n)| v as f64 * n as f64).sum();
    let (mut weight_low, mut sum_low) = (0u64, 0f64);
    let (mut best, mut best_t) = (-1f64, 0u8);
    for t in 0..256 {
        weight_low += hist[t];
        sum_low += t as f64 * hist[t] as f64;
        let weight_high = total - weight_low;
        if weight_low == 0 || weight_high == 0 {
            continue;
        }
        let mean_low = sum_low / weight_low as f64;
        let mean_high = (sum_all - sum_low) / weight_high as f64;
        let between = weight_low as f64 * weight_high as f64 * (mean_low - mean_high).powi(2);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// Streams the level through `reader` into an area-averaged thumbnail (RGB); `between_tiles` runs
/// before each tile-sized region (the extension checks for query cancel there).
fn thumbnail(reader: &mut LevelReader, between_tiles: &mut dyn FnMut()) -> Result<(usize, usize, Vec<u8>), ImageError> {
    let (w, h) = (reader.grid.width, reader.grid.height);
    let factor = w.max(h).div_ceil(THUMBNAIL_SIDE).max(1);
    let (tw, th) = (w.div_ceil(factor) as usize, h.div_ceil(factor) as usize);
    let mut sums = vec![0u64; tw * th * 3];
    let mut counts = vec![0u32; tw * th];
    let band = reader.grid.tile_height.max(factor);
    let mut y = 0;
    while y < h {
        let rows = band.min(h - y);
        let mut x = 0;
        while x < w {
            let cols = reader.grid.tile_width.max(factor).min(w - x);
            between_tiles();
            let region = reader.read_region(x, y, cols, rows)?;
            for ry in 0..rows as usize {
                let ty = (y as usize + ry) / factor as usize;
                for rx in 0..cols as usize {
                    let cell = ty * tw + (x as usize + rx) / factor as usize;
                    let p = &region.data[(ry * cols as usize + rx) * 3..][..3];
                    for c in 0..3 {
                        sums[cell * 3 + c] += p[c] as u64;
                    }
                    counts[cell] += 1;
                }
            }
            x += cols;
        }
        y += rows;
    }
    let rgb = sums.iter().enumerate().map(|(i, &s)| (s / counts[i / 3].max(1) as u64) as u8).collect();
    Ok((tw, th, rgb))
}

impl TissueMask {
    /// Builds the mask from the level read by `reader`, calling `between_tiles` as it streams.
    pub fn from_level(reader: &mut LevelReader, between_tiles: &mut dyn FnMut()) -> Result<TissueMask, ImageError> {
        let (width, height, rgb) = thumbnail(reader, between_tiles)?;
        let sat: Vec<u8> = rgb.chunks_exact(3).map(saturation).collect();
        let mut hist = [0u64; 256];
        for &s in &sat {
            hist[s as usize] += 1;
        }
        let threshold = otsu(&hist).max(MIN_SATURATION);
        let mask = sat.iter().map(|&s| s > threshold).collect();
        Ok(TissueMask { width, height, mask, threshold })
    }

    /// Share of mask pixels whose centres fall in the rectangle given as fractions of the slide's
    /// width and height; a rectangle smaller than one mask pixel takes the pixel under its centre.
    pub fn fraction(&self, left: f64, top: f64, right: f64, bottom: f64) -> f64 {
        let to_x = |f: f64| f * self.width as f64;
        let to_y = |f: f64| f * self.height as f64;
        // Pixel i covers [i, i+1); its centre is inside when left <= i + 0.5 < right.
        let x0 = (to_x(left) - 0.5).ceil().max(0.0) as usize;
        let x1 = ((to_x(right) - 0.5).ceil().max(0.0) as usize).min(self.width);
        let y0 = (to_y(top) - 0.5).ceil().max(0.0) as usize;
        let y1 = ((to_y(bottom) - 0.5).ceil().max(0.0) as usize).min(self.height);
        if x0 >= x1 || y0 >= y1 {
            let cx = (to_x((left + right) / 2.0) as usize).min(self.width - 1);
            let cy = (to_y((top + bottom) / 2.0) as usize).min(self.height - 1);
            return if self.mask[cy * self.width + cx] { 1.0 } else { 0.0 };
        }
        let mut tissue = 0usize;
        for y in y0..y1 {
            tissue += self.mask[y * self.width + x0..y * self.width + x1].iter().filter(|&&m| m).count();
        }
        tissue as f64 / ((x1 - x0) * (y1 - y0)) as f64
    }
}
