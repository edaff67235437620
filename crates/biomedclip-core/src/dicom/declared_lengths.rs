//! Every value length a DICOM object declares, checked against the bytes that can follow it
//! before dicom-rs parses the object.
//!
//! dicom-object 0.10.1 reserves and zero-fills a value's declared length before it reads the value
//! (the file meta group's strings, every element and pixel fragment of the data set), so the
//! declared length, not the input, sets the allocation. Measured here before this check: a 1.3 KB
//! object whose Pixel Data declares 4 GB made the parse take 4.2 GB of resident memory and 6.6 s
//! to refuse it; a truncated 1 MB object, misread in the other VR encoding on the retry, 1 GB.
//!
//! The data set is walked with dicom-parser's own lazy token reader: the header decoding the parse
//! uses, values skipped instead of read, so the lengths checked are the lengths the parse would
//! allocate.

use super::header::corrupt;
use crate::image_decode::ImageError;
use dicom_core::header::{HasLength, Header};
use dicom_core::Tag;
use dicom_dictionary_std::uids::{DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN};
use dicom_encoding::decode::basic::LittleEndianBasicDecoder;
use dicom_encoding::decode::{file_header_decoder, BasicDecode, Decode};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_encoding::TransferSyntax;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::{DynStatefulDecoder, StatefulDecode};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::io::{Cursor, Read};

/// The largest data set a Deflated Explicit VR Little Endian object may inflate to (PostgreSQL's
/// own limit on one value is 1 GB; an uncompressed image of the default pixel limit fits 16 times).
pub(crate) const MAX_INFLATED_BYTES: u64 = 256 << 20;

fn too_long(tag: Tag, declared: u32, remaining: u64) -> ImageError {
    corrupt(format!(
        "element ({:04X},{:04X}) declares {declared} bytes where {remaining} remain (truncated or corrupt data)",
        tag.group(),
        tag.element()
    ))
}

/// Walks the file meta group that starts at `DICM` as dicom-object reads it (the elements after
/// the group length, until that many bytes are consumed); returns where the data set starts and
/// the declared transfer syntax UID. `None` where the meta group is malformed in a way the parse
/// refuses before it allocates anything.
pub(crate) fn check_meta_group(from_dicm: &[u8]) -> Result<Option<(usize, String)>, ImageError> {
    let total = from_dicm.len() as u64;
    let mut cursor = Cursor::new(from_dicm.get(4..).unwrap_or_default());
    let decoder = file_header_decoder();
    let Ok((group_length_header, _)) = decoder.decode_header(&mut cursor) else { return Ok(None) };
    if group_length_header.tag() != Tag(0x0002, 0x0000) || group_length_header.length().get() != Some(4) {
        return Ok(None);
    }
    let Ok(group_length) = LittleEndianBasicDecoder.decode_ul(&mut cursor) else { return Ok(None) };
    let mut consumed = 0u64;
    let mut ts_uid = String::new();
    while consumed < group_length as u64 {
        let Ok((header, header_bytes)) = decoder.decode_header(&mut cursor) else { return Ok(None) };
        let Some(len) = header.length().get() else { return Ok(None) };
        let at = 4 + cursor.position();
        let remaining = total.saturating_sub(at);
        if len as u64 > remaining {
            return Err(too_long(header.tag(), len, remaining));
        }
        if header.tag() == Tag(0x0002, 0x0010) {
            let value = &from_dicm[at as usize..at as usize + len as usize];
            ts_uid = String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_string();
        }
        cursor.set_position(cursor.position() + len as u64);
        consumed += header_bytes as u64 + len as u64;
    }
    Ok(Some((4 + cursor.position() as usize, ts_uid)))
}

/// Walks the data set in `data` (from its first element) in the transfer syntax `ts_uid`:
/// `Err` where a value or fragment declares more bytes than follow it, where the walk cannot read
/// the data set at all, or where a deflated data set inflates past [`MAX_INFLATED_BYTES`].
/// Unknown transfer syntaxes are left to the parse, which refuses them before reading values.
pub(crate) fn check_data_set(data: &[u8], ts_uid: &str) -> Result<(), ImageError> {
    let Some(ts) = TransferSyntaxRegistry.get(ts_uid) else { return Ok(()) };
    if ts_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        // Counted as it streams by, not stored: the walk below inflates it again.
        let inflated = std::io::copy(&mut flate2::read::DeflateDecoder::new(data).take(MAX_INFLATED_BYTES + 1), &mut std::io::sink())
            .map_err(|e| corrupt(format!("the deflated data set could not be inflated: {e}")))?;
        if inflated > MAX_INFLATED_BYTES {
            return Err(corrupt(format!("the deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes")));
        }
        let explicit = TransferSyntaxRegistry.get(EXPLICIT_VR_LITTLE_ENDIAN).expect("built-in transfer syntax");
        return walk(flate2::read::DeflateDecoder::new(data), inflated, explicit);
    }
    walk(data, data.len() as u64, ts)
}

fn walk<R: Read>(source: R, total: u64, ts: &TransferSyntax) -> Result<(), ImageError> {
    let Ok(decoder) = DynStatefulDecoder::new_with_ts(source, ts, 0) else { return Ok(()) };
    let mut reader = LazyDataSetReader::new(decoder);
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| corrupt(format!("the data set could not be read: {e}")))?;
        let (tag, len, position) = match &token {
            LazyDataToken::LazyValue { header, decoder } => (header.tag(), header.length().get(), decoder.position()),
            LazyDataToken::LazyItemValue { len, decoder } => (Tag(0xFFFE, 0xE000), Some(*len), decoder.position()),
            _ => continue,
        };
        if let Some(len) = len {
            let remaining = total.saturating_sub(position);
            if len as u64 > remaining {
                return Err(too_long(tag, len, remaining));
            }
        }
        token.skip().map_err(|e| corrupt(format!("the data set could not be read: {e}")))?;
    }
    Ok(())
}
