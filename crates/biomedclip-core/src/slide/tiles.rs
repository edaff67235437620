//! Decoding single tiles/strips of a slide level and assembling regions from them, with a small
//! fixed-size cache: memory is bounded by the cache (64 tiles), never by the slide's size.

use super::directory::{corrupt, Compression, Directory, MAX_CHUNK_PIXELS};
use crate::image_decode::{self, ImageError, Pixels};
use crate::resample::Raster8;
use std::io::Cursor;
use std::rc::Rc;

/// Decoded tiles kept for reuse by neighbouring patches.
pub const TILE_CACHE: usize = 64;

/// A complete JPEG stream for one TIFF JPEG chunk: the shared tables (JPEGTables) merged in.
fn jpeg_stream(dir: &Directory, chunk: &[u8]) -> Result<Vec<u8>, ImageError> {
    if chunk.len() < 4 || chunk[0] != 0xFF || chunk[1] != 0xD8 {
        return Err(corrupt("a JPEG tile does not start with SOI"));
    }
    let mut stream = Vec::with_capacity(chunk.len() + 1024);
    stream.extend_from_slice(&[0xFF, 0xD8]);
    // TIFF says RGB-without-transform with PhotometricInterpretation = RGB; Aperio writes its tiles so.
    if dir.photometric == 2 && dir.samples == 3 {
        stream.extend_from_slice(&image_decode::ADOBE_RGB);
    }
    if let Some(tables) = &dir.jpeg_tables {
        // Tables are an abbreviated stream: SOI, DQT/DHT segments, EOI.
        if tables.len() >= 4 && tables.starts_with(&[0xFF, 0xD8]) && tables.ends_with(&[0xFF, 0xD9]) {
            stream.extend_from_slice(&tables[2..tables.len() - 2]);
        } else {
            return Err(corrupt("invalid JPEGTables"));
        }
    }
    stream.extend_from_slice(&chunk[2..]);
    Ok(stream)
}

/// Any 8-bit gray/RGB/RGBA buffer to interleaved RGB.
fn to_rgb(width: usize, height: usize, samples: usize, data: Vec<u8>) -> Result<Raster8, ImageError> {
    if data.len() < width * height * samples {
        return Err(corrupt("a tile decoded to fewer pixels than its size"));
    }
    let data = match samples {
        3 => data,
        1 => data.iter().take(width * height).flat_map(|&g| [g, g, g]).collect(),
        4 => data.chunks_exact(4).take(width * height).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        n => return Err(ImageError::Unsupported(format!("TIFF slide with {n} samples"))),
    };
    Ok(Raster8 { width, height, bands: 3, data })
}

/// The tile grid of one level: image size and tile size (edge tiles may decode smaller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGrid {
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
}

impl TileGrid {
    pub fn tiles_across(&self) -> u32 {
        self.width.div_ceil(self.tile_width)
    }
}

/// Where tiles come from: a TIFF directory's tiles or strips, or the frames of a DICOM
/// whole-slide instance.
pub trait TileSource {
    fn grid(&self) -> TileGrid;
    /// Tile `index` (row-major) as RGB.
    fn decode(&mut self, index: u32) -> Result<Raster8, ImageError>;
}

/// The tiles or strips of one TIFF directory.
pub struct TiffTiles<'a> {
    data: &'a [u8],
    dir: &'a Directory,
    tiff: Option<tiff::decoder::Decoder<Cursor<&'a [u8]>>>,
}

impl<'a> TiffTiles<'a> {
    pub fn new(data: &'a [u8], dir: &'a Directory) -> TiffTiles<'a> {
        TiffTiles { data, dir, tiff: None }
    }
}

impl TileSource for TiffTiles<'_> {
    fn grid(&self) -> TileGrid {
        self.dir.grid()
    }

    fn decode(&mut self, index: u32) -> Result<Raster8, ImageError> {
        let dir = self.dir;
        let (start, len) = (dir.offsets[index as usize] as usize, dir.byte_counts[index as usize] as usize);
        let bytes = &self.data[start..start + len];
        if dir.compression == Compression::Jpeg {
            let decoded = image_decode::decode_jpeg(&jpeg_stream(dir, bytes)?, MAX_CHUNK_PIXELS)?;
            let Pixels::U8(r) = decoded.pixels else { return Err(corrupt("16-bit JPEG tile")) };
            if r.width > dir.chunk_width as usize || r.height > dir.chunk_height as usize {
                return Err(corrupt(format!("a {}x{} tile decoded to {}x{}", dir.chunk_width, dir.chunk_height, r.width, r.height)));
            }
            return to_rgb(r.width, r.height, r.bands, r.data);
        }
        if dir.photometric == 6 {
            return Err(ImageError::Unsupported("TIFF slide with uncompressed YCbCr".into()));
        }
        if self.tiff.is_none() {
            let mut d = tiff::decoder::Decoder::new(Cursor::new(self.data)).map_err(corrupt)?;
            d.seek_to_image(dir.index).map_err(corrupt)?;
            self.tiff = Some(d);
        }
        let d = self.tiff.as_mut().expect("opened above");
        let (w, h) = d.chunk_data_dimensions(index);
        let result = d.read_chunk(index).map_err(corrupt)?;
        let tiff::decoder::DecodingResult::U8(buf) = result else { return Err(corrupt("a tile is not 8-bit")) };
        to_rgb(w as usize, h as usize, dir.samples as usize, buf)
    }
}

/// Reads regions of one level from its tiles, keeping the last [`TILE_CACHE`] decoded.
pub struct LevelReader<'a> {
    source: Box<dyn TileSource + 'a>,
    pub grid: TileGrid,
    cache: Vec<(u32, Rc<Raster8>)>,
    /// Tiles decoded so far (cache misses).
    pub decoded_chunks: usize,
}

impl<'a> LevelReader<'a> {
    pub fn new(data: &'a [u8], dir: &'a Directory) -> LevelReader<'a> {
        LevelReader::from_source(Box::new(TiffTiles::new(data, dir)))
    }

    pub fn from_source(source: Box<dyn TileSource + 'a>) -> LevelReader<'a> {
        let grid = source.grid();
        LevelReader { source, grid, cache: Vec::with_capacity(TILE_CACHE), decoded_chunks: 0 }
    }

    /// The decoded chunk, from the cache when it is there.
    fn chunk(&mut self, index: u32) -> Result<Rc<Raster8>, ImageError> {
        if let Some(pos) = self.cache.iter().position(|(i, _)| *i == index) {
            let hit = self.cache.remove(pos);
            let raster = hit.1.clone();
            self.cache.push(hit);
            return Ok(raster);
        }
        let raster = Rc::new(self.source.decode(index)?);
        self.decoded_chunks += 1;
        if self.cache.len() == TILE_CACHE {
            self.cache.remove(0);
        }
        self.cache.push((index, raster.clone()));
        Ok(raster)
    }

    /// The RGB pixels of the rectangle (x, y, width, height) of this level; parts outside the
    /// image are white.
    pub fn read_region(&mut self, x: u32, y: u32, width: u32, height: u32) -> Result<Raster8, ImageError> {
        let (w, h) = (width as usize, height as usize);
        let mut out = Raster8 { width: w, height: h, bands: 3, data: vec![255; w * h * 3] };
        let TileGrid { width: gw, height: gh, tile_width: cw, tile_height: ch } = self.grid;
        let x_end = (x + width).min(gw);
        let y_end = (y + height).min(gh);
        if x >= x_end || y >= y_end {
            return Ok(out);
        }
        for row in y / ch..=(y_end - 1) / ch {
            for col in x / cw..=(x_end - 1) / cw {
                let index = row * self.grid.tiles_across() + col;
                let chunk = self.chunk(index)?;
                let (cx, cy) = (col * cw, row * ch);
                let left = x.max(cx);
                let right = x_end.min(cx + chunk.width as u32);
                let top = y.max(cy);
                let bottom = y_end.min(cy + chunk.height as u32);
                for py in top..bottom {
                    let src = ((py - cy) as usize * chunk.width + (left - cx) as usize) * 3;
                    let dst = ((py - y) as usize * w + (left - x) as usize) * 3;
                    let n = right.saturating_sub(left) as usize * 3;
                    out.data[dst..dst + n].copy_from_slice(&chunk.data[src..src + n]);
                }
            }
        }
        Ok(out)
    }
}
