//! DICOM whole-slide images (VL Whole Slide Microscopy, TILED_FULL): one instance is one pyramid
//! level whose frames are the tiles of the total pixel matrix, row by row. Tiles are decoded one
//! frame at a time through the same validated pipeline as any DICOM frame.

use super::frame::{frame_pixels, FramePixels};
use super::header::{self, int_tag, str_tag, Geometry, Object};
use crate::image_decode::ImageError;
use crate::resample::Raster8;
use crate::slide::directory::MAX_CHUNK_PIXELS;
use crate::slide::tiles::{TileGrid, TileSource};
use dicom_dictionary_std::tags;

/// A parsed and validated DICOM whole-slide instance.
pub struct DicomSlide {
    obj: Object,
    geometry: Geometry,
    ts_uid: String,
    grid: TileGrid,
}

fn unsupported(what: &str) -> ImageError {
    ImageError::Unsupported(format!("DICOM whole-slide image: {what}"))
}

impl DicomSlide {
    pub fn open(data: &[u8]) -> Result<DicomSlide, ImageError> {
        let obj = header::parse(data)?;
        let (ts_uid, _) = header::transfer_syntax(&obj)?;
        let geometry = header::geometry(&obj, MAX_CHUNK_PIXELS)?;
        let (Some(width), Some(height)) = (int_tag(&obj, tags::TOTAL_PIXEL_MATRIX_COLUMNS), int_tag(&obj, tags::TOTAL_PIXEL_MATRIX_ROWS)) else {
            return Err(unsupported("no TotalPixelMatrixColumns/Rows (not a tiled whole-slide instance; use biomedclip_embed_dicom)"));
        };
        if width <= 0 || height <= 0 || width > u32::MAX as i64 || height > u32::MAX as i64 {
            return Err(header::corrupt(format!("invalid total pixel matrix {width}x{height}")));
        }
        if let Some(organization) = str_tag(&obj, tags::DIMENSION_ORGANIZATION_TYPE) {
            if organization != "TILED_FULL" {
                return Err(unsupported(&format!("{organization} tile organization (TILED_FULL is supported)")));
            }
        }
        if geometry.samples != 3 {
            return Err(unsupported(&format!("{} (colour slides are supported)", geometry.photometric)));
        }
        let grid = TileGrid { width: width as u32, height: height as u32, tile_width: geometry.cols, tile_height: geometry.rows };
        let tiles = grid.tiles_across() as u64 * grid.height.div_ceil(grid.tile_height) as u64;
        if (geometry.frames as u64) < tiles {
            return Err(header::corrupt(format!("{} frames for {tiles} tiles of the total pixel matrix", geometry.frames)));
        }
        Ok(DicomSlide { obj, geometry, ts_uid, grid })
    }

    pub fn grid(&self) -> TileGrid {
        self.grid
    }
}

/// Tiles of a [`DicomSlide`] for a [`crate::slide::LevelReader`].
pub struct DicomTiles<'a>(pub &'a DicomSlide);

impl TileSource for DicomTiles<'_> {
    fn grid(&self) -> TileGrid {
        self.0.grid
    }

    fn decode(&mut self, index: u32) -> Result<Raster8, ImageError> {
        let s = self.0;
        header::check_pixel_data(&s.obj, &s.geometry, &s.ts_uid, index)?;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| frame_pixels(&s.obj, &s.geometry, &s.ts_uid, index)))
            .unwrap_or_else(|_| Err(header::corrupt("the pixel decoder rejected a tile")))?;
        let FramePixels::Rgb(data) = decoded else { return Err(unsupported("grayscale tiles")) };
        Ok(Raster8 { width: s.geometry.cols as usize, height: s.geometry.rows as usize, bands: 3, data })
    }
}
