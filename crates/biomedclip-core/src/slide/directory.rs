//! The directories (IFDs) of a tiled pyramidal TIFF or Aperio SVS: which are resolution levels,
//! which is a usable thumbnail, and where each tile or strip lies in the file.
//!
//! Every offset and size is checked against the data before anything is decoded; nothing here
//! decodes pixels.

use super::tiles::TileGrid;
use crate::image_decode::ImageError;
use std::io::Cursor;
use tiff::decoder::{Decoder, Limits};
use tiff::tags::Tag;

pub(crate) fn corrupt(detail: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt { format: "TIFF slide", detail: detail.to_string() }
}

/// Largest tile or strip we decode in one piece (pixels).
pub const MAX_CHUNK_PIXELS: u64 = 16 << 20;
/// Most directories read from one file.
const MAX_DIRECTORIES: usize = 64;

/// TIFF compression schemes the slide reader decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Lzw,
    Jpeg,
    Deflate,
}

/// One image directory, as far as reading pixels needs it.
#[derive(Clone, Debug)]
pub struct Directory {
    /// Position in the file's IFD chain.
    pub index: usize,
    pub width: u32,
    pub height: u32,
    /// Tile size, or (width, rows per strip) for stripped images.
    pub chunk_width: u32,
    pub chunk_height: u32,
    pub tiled: bool,
    pub offsets: Vec<u64>,
    pub byte_counts: Vec<u64>,
    pub compression: Compression,
    /// TIFF PhotometricInterpretation: 1 BlackIsZero, 2 RGB, 6 YCbCr.
    pub photometric: u16,
    pub samples: u16,
    pub jpeg_tables: Option<Vec<u8>>,
    pub description: String,
}

impl Directory {
    /// The image and tile (or strip) size.
    pub fn grid(&self) -> TileGrid {
        TileGrid { width: self.width, height: self.height, tile_width: self.chunk_width, tile_height: self.chunk_height }
    }

    /// Aperio marks the slide label and the overview ("macro") photo in the description.
    pub fn is_associated_image(&self) -> bool {
        let d = self.description.to_ascii_lowercase();
        d.contains("label") || d.contains("macro")
    }
}

fn tag_u32(d: &mut Decoder<Cursor<&[u8]>>, tag: Tag) -> Result<Option<u32>, ImageError> {
    d.find_tag_unsigned::<u32>(tag).map_err(corrupt)
}

fn read_directory(d: &mut Decoder<Cursor<&[u8]>>, index: usize, file_len: u64) -> Result<Directory, ImageError> {
    let width = tag_u32(d, Tag::ImageWidth)?.ok_or_else(|| corrupt("missing ImageWidth"))?;
    let height = tag_u32(d, Tag::ImageLength)?.ok_or_else(|| corrupt("missing ImageLength"))?;
    let tile_width = tag_u32(d, Tag::TileWidth)?;
    let tiled = tile_width.is_some();
    let (chunk_width, chunk_height, offsets_tag, counts_tag) = if tiled {
        let th = tag_u32(d, Tag::TileLength)?.ok_or_else(|| corrupt("TileWidth without TileLength"))?;
        (tile_width.unwrap_or(0), th, Tag::TileOffsets, Tag::TileByteCounts)
    } else {
        let rows = tag_u32(d, Tag::RowsPerStrip)?.unwrap_or(height).min(height.max(1));
        (width, rows, Tag::StripOffsets, Tag::StripByteCounts)
    };
    if width == 0 || height == 0 || chunk_width == 0 || chunk_height == 0 {
        return Err(corrupt(format!("directory {index}: zero image or tile size")));
    }
    if chunk_width as u64 * chunk_height as u64 > MAX_CHUNK_PIXELS {
        return Err(ImageError::Unsupported(format!(
            "TIFF slide: {chunk_width}x{chunk_height} tiles/strips are larger than {MAX_CHUNK_PIXELS} pixels"
        )));
    }
    let offsets: Vec<u64> = d.find_tag_unsigned_vec(offsets_tag).map_err(corrupt)?.ok_or_else(|| corrupt("missing tile/strip offsets"))?;
    let byte_counts: Vec<u64> = d.find_tag_unsigned_vec(counts_tag).map_err(corrupt)?.ok_or_else(|| corrupt("missing tile/strip byte counts"))?;
    let expected = width.div_ceil(chunk_width) as u64 * height.div_ceil(chunk_height) as u64;
    if offsets.len() as u64 != expected || byte_counts.len() as u64 != expected {
        return Err(corrupt(format!("directory {index}: {} offsets and {} byte counts for {expected} chunks", offsets.len(), byte_counts.len())));
    }
    for (o, c) in offsets.iter().zip(&byte_counts) {
        if o.checked_add(*c).is_none_or(|end| end > file_len) {
            return Err(corrupt(format!("directory {index}: a tile/strip lies outside the file (truncated?)")));
        }
    }
    let compression = match tag_u32(d, Tag::Compression)?.unwrap_or(1) {
        1 => Compression::None,
        5 => Compression::Lzw,
        6 | 7 => Compression::Jpeg,
        8 | 32946 => Compression::Deflate,
        33003 | 33005 => return Err(ImageError::Unsupported("TIFF slide compression: Aperio JPEG 2000 (33003/33005)".into())),
        other => return Err(ImageError::Unsupported(format!("TIFF slide compression {other}"))),
    };
    let samples = tag_u32(d, Tag::SamplesPerPixel)?.unwrap_or(1) as u16;
    let bits: Vec<u16> = d.find_tag_unsigned_vec(Tag::BitsPerSample).map_err(corrupt)?.unwrap_or_else(|| vec![1]);
    if bits.iter().any(|&b| b != 8) || !matches!(samples, 1 | 3 | 4) {
        return Err(ImageError::Unsupported(format!("TIFF slide with {samples} samples of {bits:?} bits (8-bit gray, RGB or RGBA are supported)")));
    }
    if tag_u32(d, Tag::PlanarConfiguration)?.unwrap_or(1) != 1 {
        return Err(ImageError::Unsupported("TIFF slide with separate colour planes".into()));
    }
    let photometric = tag_u32(d, Tag::PhotometricInterpretation)?.unwrap_or(if samples == 1 { 1 } else { 2 }) as u16;
    let jpeg_tables = match d.find_tag(Tag::JPEGTables).map_err(corrupt)? {
        Some(v) => Some(v.into_u8_vec().map_err(corrupt)?),
        None => None,
    };
    let description = match d.find_tag(Tag::ImageDescription).map_err(corrupt)? {
        Some(v) => v.into_string().unwrap_or_default(),
        None => String::new(),
    };
    Ok(Directory {
        index,
        width,
        height,
        chunk_width,
        chunk_height,
        tiled,
        offsets,
        byte_counts,
        compression,
        photometric,
        samples,
        jpeg_tables,
        description,
    })
}

/// Reads every directory in the chain (up to 64).
pub fn read_directories(data: &[u8]) -> Result<Vec<Directory>, ImageError> {
    let mut limits = Limits::default();
    limits.ifd_value_size = 64 << 20;
    let mut d = Decoder::new(Cursor::new(data)).map_err(corrupt)?.with_limits(limits);
    let mut dirs = Vec::new();
    loop {
        dirs.push(read_directory(&mut d, dirs.len(), data.len() as u64)?);
        if !d.more_images() || dirs.len() >= MAX_DIRECTORIES {
            break;
        }
        d.next_image().map_err(corrupt)?;
    }
    Ok(dirs)
}
