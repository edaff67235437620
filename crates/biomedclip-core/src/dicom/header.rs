//! Parsing a DICOM object from memory and validating its pixel description *before* any decoder
//! sees it.
//!
//! The pixel decoders trust the header: a bogus RLE segment count makes one allocate gigabytes
//! (an abort, not an unwind, under a memory limit), corrupt RLE offsets and `BitsStored = 0` make
//! them panic, and a native frame shorter than rows × columns × samples is sliced out of bounds.
//! Everything those decoders will rely on is checked here against the bytes actually present.

use super::declared_lengths;
use crate::image_decode::ImageError;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{FileDicomObject, FileMetaTable, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

pub(crate) type Object = FileDicomObject<InMemDicomObject>;

pub(crate) fn corrupt(detail: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt { format: "DICOM", detail: detail.to_string() }
}

fn invalid(detail: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("DICOM: {detail}"))
}

use dicom_dictionary_std::uids::{EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT_LE, IMPLICIT_VR_LITTLE_ENDIAN as IMPLICIT_LE, RLE_LOSSLESS as RLE};

/// Explicit VR big-endian: retired from the standard (the dictionary marks it deprecated), still
/// found in archives and read here.
pub(crate) const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// How the bytes announce themselves as DICOM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// 128-byte preamble, then `DICM` and the file meta group.
    Preamble,
    /// `DICM` and the file meta group at offset 0.
    MetaOnly,
    /// A bare data set (no meta group), in the given transfer syntax.
    BareDataset(&'static str),
}

fn looks_like_vr(b: &[u8]) -> bool {
    b.len() == 2 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase()
}

/// Recognises DICOM: the `DICM` marker at offset 128 (or at 0 without a preamble), or a bare data
/// set that starts with a group 0008 element (little- or big-endian, explicit or implicit VR).
pub fn framing(data: &[u8]) -> Option<Framing> {
    if data.len() >= 132 && &data[128..132] == b"DICM" {
        return Some(Framing::Preamble);
    }
    if data.starts_with(b"DICM") {
        return Some(Framing::MetaOnly);
    }
    if data.len() < 8 {
        return None;
    }
    let le_group = u16::from_le_bytes([data[0], data[1]]);
    let be_group = u16::from_be_bytes([data[0], data[1]]);
    if le_group == 0x0008 {
        let vr = looks_like_vr(&data[4..6]);
        return Some(Framing::BareDataset(if vr { EXPLICIT_LE } else { IMPLICIT_LE }));
    }
    if be_group == 0x0008 && looks_like_vr(&data[4..6]) {
        return Some(Framing::BareDataset(EXPLICIT_BE));
    }
    None
}

/// Parses the whole object from memory, after every declared length has been checked against
/// the bytes that follow it ([`declared_lengths`]).
pub(crate) fn parse(data: &[u8]) -> Result<Object, ImageError> {
    let framing = framing(data).ok_or_else(|| invalid("data is not a DICOM object"))?;
    let parsed = std::panic::catch_unwind(|| match framing {
        Framing::Preamble | Framing::MetaOnly => {
            let (preamble, start) = if framing == Framing::Preamble { (ReadPreamble::Always, 128) } else { (ReadPreamble::Never, 0) };
            let from_dicm = &data[start..];
            let (data_set_at, ts_uid) =
                declared_lengths::check_meta_group(from_dicm)?.ok_or_else(|| corrupt("the file meta group is malformed"))?;
            let data_set = &from_dicm[data_set_at..];
            let declared = match declared_lengths::check_data_set(data_set, &ts_uid) {
                Ok(()) => match OpenFileOptions::new().read_preamble(preamble).from_reader(data) {
                    Ok(obj) => return Ok(obj),
                    Err(e) => corrupt(e),
                },
                Err(e) => e,
            };
            with_other_vr_encoding(from_dicm, data_set, &ts_uid).ok_or(declared)
        }
        Framing::BareDataset(uid) => {
            declared_lengths::check_data_set(data, uid)?;
            let ts = TransferSyntaxRegistry.get(uid).expect("built-in transfer syntax");
            let obj = InMemDicomObject::read_dataset_with_ts(data, ts).map_err(corrupt)?;
            let meta = FileMetaTableBuilder::new()
                .transfer_syntax(uid)
                .media_storage_sop_class_uid(dicom_dictionary_std::uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
                .media_storage_sop_instance_uid("2.25.0");
            obj.with_meta(meta).map_err(corrupt)
        }
    });
    parsed.unwrap_or_else(|_| Err(corrupt("the DICOM parser rejected the data")))
}

/// Some writers declare explicit VR in the meta group but write the data set in implicit VR (or
/// the reverse); pydicom reads such files with a warning, and so do we: when the declared
/// encoding fails, the data set is read once more in the other little-endian VR encoding (its
/// declared lengths checked in that encoding first).
fn with_other_vr_encoding(from_dicm: &[u8], data_set: &[u8], declared: &str) -> Option<Object> {
    let other = match declared {
        IMPLICIT_LE => EXPLICIT_LE,
        EXPLICIT_BE => return None,
        _ => IMPLICIT_LE,
    };
    declared_lengths::check_data_set(data_set, other).ok()?;
    let meta = FileMetaTable::from_reader(from_dicm).ok()?;
    let ts = TransferSyntaxRegistry.get(other)?;
    let obj = InMemDicomObject::read_dataset_with_ts(data_set, ts).ok()?;
    let builder = FileMetaTableBuilder::new()
        .transfer_syntax(declared)
        .media_storage_sop_class_uid(meta.media_storage_sop_class_uid())
        .media_storage_sop_instance_uid(meta.media_storage_sop_instance_uid());
    obj.with_meta(builder).ok()
}

/// The pixel description of an image object, validated.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    pub rows: u32,
    pub cols: u32,
    pub frames: u32,
    pub samples: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub photometric: String,
    pub planar: u16,
}

pub(crate) fn int_tag(obj: &Object, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

pub(crate) fn str_tag(obj: &Object, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
        .filter(|s| !s.is_empty())
}

fn required(obj: &Object, tag: dicom_core::Tag, name: &str) -> Result<i64, ImageError> {
    int_tag(obj, tag).ok_or_else(|| invalid(format!("missing or unreadable {name}")))
}

/// Reads and checks rows, columns, frames, samples, bit depths and the photometric
/// interpretation, and the pixel count against `max_pixels`.
pub(crate) fn geometry(obj: &Object, max_pixels: u64) -> Result<Geometry, ImageError> {
    if obj.get(tags::PIXEL_DATA).is_none() {
        if obj.get(tags::FLOAT_PIXEL_DATA).is_some() || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some() {
            return Err(ImageError::Unsupported("DICOM float pixel data".into()));
        }
        return Err(invalid("the object has no pixel data (7FE0,0010)"));
    }
    let rows = required(obj, tags::ROWS, "Rows")?;
    let cols = required(obj, tags::COLUMNS, "Columns")?;
    if rows <= 0 || cols <= 0 || rows > u16::MAX as i64 || cols > u16::MAX as i64 {
        return Err(invalid(format!("invalid image size {cols}x{rows}")));
    }
    if (rows as u64) * (cols as u64) > max_pixels {
        return Err(ImageError::TooManyPixels { width: cols as u64, height: rows as u64, limit: max_pixels });
    }
    let frames = int_tag(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    if frames > 1 << 20 {
        return Err(invalid(format!("implausible NumberOfFrames {frames}")));
    }
    let samples = int_tag(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples != 1 && samples != 3 {
        return Err(ImageError::Unsupported(format!("DICOM SamplesPerPixel {samples}")));
    }
    let bits_allocated = required(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
    if !matches!(bits_allocated, 8 | 16 | 32) {
        return Err(ImageError::Unsupported(format!("DICOM BitsAllocated {bits_allocated} (8, 16 and 32 are supported)")));
    }
    let bits_stored = int_tag(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    if bits_stored < 1 || bits_stored > bits_allocated {
        return Err(invalid(format!("BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}")));
    }
    let photometric = str_tag(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .ok_or_else(|| invalid("missing PhotometricInterpretation"))?
        .to_ascii_uppercase();
    let expected_samples = match photometric.as_str() {
        "MONOCHROME1" | "MONOCHROME2" | "PALETTE COLOR" => 1,
        "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_RCT" | "YBR_ICT" => 3,
        other => return Err(ImageError::Unsupported(format!("DICOM PhotometricInterpretation {other}"))),
    };
    if samples != expected_samples {
        return Err(invalid(format!("{photometric} with SamplesPerPixel {samples}")));
    }
    let planar = int_tag(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0);
    if samples == 3 && planar != 0 && planar != 1 {
        return Err(invalid(format!("PlanarConfiguration {planar}")));
    }
    Ok(Geometry {
        rows: rows as u32,
        cols: cols as u32,
        frames: frames as u32,
        samples: samples as u16,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        photometric,
        planar: planar as u16,
    })
}

impl Geometry {
    /// Bytes of one native (uncompressed) frame.
    pub fn native_frame_bytes(&self) -> u64 {
        let per_pixel = self.samples as u64 * (self.bits_allocated as u64 / 8);
        let pixels = self.rows as u64 * self.cols as u64;
        if self.photometric == "YBR_FULL_422" {
            // two luminance samples share one Cb and one Cr
            pixels * 2 * (self.bits_allocated as u64 / 8)
        } else {
            pixels * per_pixel
        }
    }
}

/// The transfer syntax's UID and name; an ERROR naming it when its pixel data cannot be decoded.
pub(crate) fn transfer_syntax(obj: &Object) -> Result<(String, String), ImageError> {
    let uid = obj.meta().transfer_syntax().trim_end_matches('\0').trim().to_string();
    let ts = TransferSyntaxRegistry
        .get(&uid)
        .ok_or_else(|| ImageError::Unsupported(format!("DICOM transfer syntax {uid} (unknown)")))?;
    let name = ts.name().to_string();
    if ts.is_unsupported() || ts.is_unsupported_pixel_encapsulation() || !ts.can_decode_all() {
        return Err(ImageError::Unsupported(format!("DICOM transfer syntax {name} ({uid})")));
    }
    Ok((uid, name))
}

/// Checks that `frame` exists and that the pixel data holds what the header promises for it.
pub(crate) fn check_pixel_data(obj: &Object, g: &Geometry, ts_uid: &str, frame: u32) -> Result<(), ImageError> {
    if frame >= g.frames {
        return Err(invalid(format!("frame {frame} is out of range (the object has {} frame(s), numbered from 0)", g.frames)));
    }
    let element = obj.get(tags::PIXEL_DATA).ok_or_else(|| invalid("the object has no pixel data (7FE0,0010)"))?;
    match element.value() {
        Value::PixelSequence(seq) => {
            let fragments = seq.fragments();
            if fragments.is_empty() || fragments.iter().all(|f| f.is_empty()) {
                return Err(corrupt("encapsulated pixel data has no fragments"));
            }
            if ts_uid == RLE {
                if fragments.len() != g.frames as usize {
                    return Err(corrupt(format!(
                        "RLE pixel data has {} fragment(s) for {} frame(s)",
                        fragments.len(),
                        g.frames
                    )));
                }
                check_rle_fragment(&fragments[frame as usize], g)?;
            }
            Ok(())
        }
        Value::Primitive(p) => {
            let have = p.calculate_byte_len() as u64;
            let need = g.native_frame_bytes() * g.frames as u64;
            if have < need {
                return Err(corrupt(format!(
                    "pixel data is truncated: {have} bytes for {} frame(s) of {}x{}x{} at {} bits (need {need})",
                    g.frames, g.cols, g.rows, g.samples, g.bits_allocated
                )));
            }
            Ok(())
        }
        Value::Sequence(_) => Err(corrupt("pixel data is a sequence")),
    }
}

/// An RLE frame starts with a 64-byte header: the segment count (one segment per byte of each
/// sample) and up to 15 offsets, the first 64, increasing, all inside the fragment.
fn check_rle_fragment(fragment: &[u8], g: &Geometry) -> Result<(), ImageError> {
    if fragment.len() < 64 {
        return Err(corrupt(format!("RLE header needs 64 bytes, fragment has {}", fragment.len())));
    }
    let word = |i: usize| u32::from_le_bytes([fragment[4 * i], fragment[4 * i + 1], fragment[4 * i + 2], fragment[4 * i + 3]]);
    let count = word(0) as usize;
    let expected = g.samples as usize * (g.bits_allocated as usize / 8);
    if count != expected {
        return Err(corrupt(format!("RLE header declares {count} segment(s); {expected} expected")));
    }
    let mut previous = 0u32;
    for i in 1..=count {
        let offset = word(i);
        if (i == 1 && offset != 64) || offset < previous || offset as usize > fragment.len() {
            return Err(corrupt(format!("RLE segment {i} has an invalid offset {offset}")));
        }
        previous = offset;
    }
    Ok(())
}
