//! Whole-slide images (tiled pyramidal TIFF, Aperio SVS, DICOM VL Whole Slide Microscopy) as a grid
//! of patches.
//!
//! A slide is read from its compressed bytes one tile at a time; no level is ever decoded whole.
//! Patches are non-overlapping `patch_size` squares on the chosen level, kept when the tissue
//! mask ([`tissue`]) covers at least `tissue_threshold` of them. Coordinates are pixels of the
//! chosen level (level 0 is full resolution).

pub mod directory;
pub mod tiles;
pub mod tissue;

use crate::dicom::wsi::{DicomSlide, DicomTiles};
use crate::image_decode::ImageError;
use directory::Directory;
pub use tiles::LevelReader;
use tiles::TileGrid;
pub use tissue::TissueMask;

/// True when the bytes are a TIFF (classic or BigTIFF), the container of SVS and pyramidal TIFF.
pub fn is_tiff(data: &[u8]) -> bool {
    data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") || data.starts_with(b"II+\0") || data.starts_with(b"MM\0+")
}

/// One pyramid level.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelInfo {
    pub level: usize,
    pub width: u32,
    pub height: u32,
    /// Level-0 width over this level's width.
    pub downsample: f64,
    pub tile_width: u32,
    pub tile_height: u32,
}

/// What to cut and keep.
#[derive(Clone, Debug)]
pub struct PatchParams {
    pub patch_size: u32,
    pub level: usize,
    pub tissue_threshold: f64,
    pub max_patches: usize,
}

/// A patch to read: top-left corner on its level, and the tissue share under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub x: u32,
    pub y: u32,
    pub tissue_fraction: f64,
}

/// The patches chosen, and how many the grid and the mask offered.
#[derive(Clone, Debug)]
pub struct PatchPlan {
    pub patches: Vec<Patch>,
    pub grid: usize,
    pub with_tissue: usize,
}

/// Where a slide's pixels live.
enum Source {
    /// TIFF/SVS: the pyramid's tiled directories (largest first) and the image the mask uses.
    Tiff { levels: Vec<Directory>, mask_source: Directory },
    /// One DICOM whole-slide instance: a single level.
    Dicom(DicomSlide),
}

/// A parsed slide: its pyramid levels and the image the tissue mask is computed from.
pub struct Slide<'a> {
    data: &'a [u8],
    source: Source,
}

fn same_aspect(a: &Directory, b: &Directory) -> bool {
    let ra = a.width as f64 / a.height as f64;
    let rb = b.width as f64 / b.height as f64;
    ((ra - rb) / rb).abs() < 0.02
}

impl<'a> Slide<'a> {
    /// Opens a TIFF/SVS pyramid or a DICOM whole-slide instance (TILED_FULL).
    pub fn open(data: &'a [u8]) -> Result<Slide<'a>, ImageError> {
        if crate::dicom::is_dicom(data) {
            return Ok(Slide { data, source: Source::Dicom(DicomSlide::open(data)?) });
        }
        if !is_tiff(data) {
            return Err(ImageError::Invalid("slide data is not a TIFF, SVS or DICOM whole-slide file".into()));
        }
        let dirs = directory::read_directories(data)?;
        let base = dirs
            .iter()
            .find(|d| d.tiled && !d.is_associated_image())
            .cloned()
            .ok_or_else(|| ImageError::Unsupported("TIFF without a tiled image: not a whole-slide image".into()))?;
        let candidates: Vec<&Directory> = dirs.iter().filter(|d| !d.is_associated_image() && same_aspect(d, &base) && d.width <= base.width).collect();
        let mut levels: Vec<Directory> = candidates.iter().filter(|d| d.tiled).map(|d| (*d).clone()).collect();
        levels.sort_by(|a, b| b.width.cmp(&a.width));
        let mask_source = candidates.iter().min_by_key(|d| d.width as u64 * d.height as u64).map(|d| (*d).clone()).unwrap_or_else(|| base.clone());
        Ok(Slide { data, source: Source::Tiff { levels, mask_source } })
    }

    fn grids(&self) -> Vec<TileGrid> {
        match &self.source {
            Source::Tiff { levels, .. } => levels.iter().map(Directory::grid).collect(),
            Source::Dicom(d) => vec![d.grid()],
        }
    }

    pub fn levels(&self) -> Vec<LevelInfo> {
        let grids = self.grids();
        let base = grids[0].width as f64;
        grids
            .iter()
            .enumerate()
            .map(|(level, g)| LevelInfo {
                level,
                width: g.width,
                height: g.height,
                downsample: base / g.width as f64,
                tile_width: g.tile_width,
                tile_height: g.tile_height,
            })
            .collect()
    }

    fn level(&self, level: usize) -> Result<TileGrid, ImageError> {
        let grids = self.grids();
        grids.get(level).copied().ok_or_else(|| {
            ImageError::Invalid(format!("level {level} does not exist (the slide has {} level(s), numbered from 0)", grids.len()))
        })
    }

    /// A reader for regions of `level`.
    pub fn reader(&self, level: usize) -> Result<LevelReader<'_>, ImageError> {
        self.level(level)?;
        Ok(match &self.source {
            Source::Tiff { levels, .. } => LevelReader::new(self.data, &levels[level]),
            Source::Dicom(d) => LevelReader::from_source(Box::new(DicomTiles(d))),
        })
    }

    /// The tissue mask, from the smallest image of the pyramid (or the slide's thumbnail).
    pub fn tissue_mask(&self) -> Result<TissueMask, ImageError> {
        self.tissue_mask_with(&mut || {})
    }

    /// [`Slide::tissue_mask`], calling `between_tiles` before each tile it reads.
    pub fn tissue_mask_with(&self, between_tiles: &mut dyn FnMut()) -> Result<TissueMask, ImageError> {
        let mut reader = match &self.source {
            Source::Tiff { mask_source, .. } => LevelReader::new(self.data, mask_source),
            Source::Dicom(d) => LevelReader::from_source(Box::new(DicomTiles(d))),
        };
        TissueMask::from_level(&mut reader, between_tiles)
    }

    /// The patch grid of a level with each patch's tissue share; patches below the threshold are
    /// dropped, and when more than `max_patches` remain an evenly spaced subset is kept.
    pub fn plan(&self, params: &PatchParams, mask: &TissueMask) -> Result<PatchPlan, ImageError> {
        let dir = self.level(params.level)?;
        if !(16..=4096).contains(&params.patch_size) {
            return Err(ImageError::Invalid(format!("patch_size {} is outside 16..4096", params.patch_size)));
        }
        if !(0.0..=1.0).contains(&params.tissue_threshold) {
            return Err(ImageError::Invalid(format!("tissue_threshold {} is outside 0..1", params.tissue_threshold)));
        }
        if params.max_patches == 0 {
            return Err(ImageError::Invalid("max_patches must be at least 1".into()));
        }
        let ps = params.patch_size;
        let (across, down) = (dir.width / ps, dir.height / ps);
        let (fw, fh) = (dir.width as f64, dir.height as f64);
        let mut kept = Vec::new();
        for row in 0..down {
            for col in 0..across {
                let (x, y) = (col * ps, row * ps);
                let fraction = mask.fraction(x as f64 / fw, y as f64 / fh, (x + ps) as f64 / fw, (y + ps) as f64 / fh);
                if fraction >= params.tissue_threshold {
                    kept.push(Patch { x, y, tissue_fraction: fraction });
                }
            }
        }
        let with_tissue = kept.len();
        if kept.len() > params.max_patches {
            let n = kept.len();
            kept = (0..params.max_patches).map(|i| kept[i * n / params.max_patches].clone()).collect();
        }
        Ok(PatchPlan { patches: kept, grid: (across * down) as usize, with_tissue })
    }
}
