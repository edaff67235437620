//! The marker structure of a JPEG-LS codestream (ITU-T T.87 Annex C), checked before CharLS
//! decodes a frame.
//!
//! CharLS 2.4.5 (the version charls-sys bundles) does not stop when the entropy-coded data of a
//! scan runs out inside a Golomb code's unary prefix: its count of valid bits goes negative and it
//! reads zero bits until that count wraps around (team-charls/charls#434, open upstream). Measured
//! here: 8-12 s of CPU, which no query cancel can interrupt, for each truncated copy of a 1.6 MB
//! frame, against 0.1 s to decode the whole frame. A codestream cut anywhere before its end has
//! no EOI marker, so walking the markers refuses every truncation before CharLS sees it. A stream
//! whose structure is complete but whose scan data is too short for its image (crafted, or
//! corrupted inside the scan) can still reach that loop; the fix for that belongs upstream.

use super::header::corrupt;
use crate::image_decode::ImageError;

const MARKER: u8 = 0xFF;
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

fn bad(detail: impl std::fmt::Display) -> ImageError {
    corrupt(format!("JPEG-LS frame: {detail}"))
}

fn truncated() -> ImageError {
    bad("the codestream is truncated (it ends before its EOI marker)")
}

/// Where the entropy-coded data that starts at `from` ends: at the first marker that is not a
/// restart marker. Inside scan data an 0xFF byte is followed by a byte whose high bit is a stuffed
/// 0 (T.87 A.1), so 0xFF followed by a byte of 0x80 or more is a marker.
fn scan_data_end(data: &[u8], mut from: usize) -> Result<usize, ImageError> {
    loop {
        let at = from + data[from..].iter().position(|&b| b == MARKER).ok_or_else(truncated)?;
        let next = *data.get(at + 1).ok_or_else(truncated)?;
        if next < 0x80 || (0xD0..=0xD7).contains(&next) {
            from = at + 2;
            continue;
        }
        return Ok(at);
    }
}

/// Walks SOI, the marker segments, each scan's entropy-coded data, up to EOI. Whatever follows
/// EOI (a fragment's padding byte) is left alone, as the decoder leaves it.
pub(crate) fn check_codestream(data: &[u8]) -> Result<(), ImageError> {
    if data.len() < 2 || data[0] != MARKER || data[1] != SOI {
        return Err(bad("the codestream does not start with an SOI marker"));
    }
    let mut at = 2;
    let mut scans = 0u32;
    loop {
        if *data.get(at).ok_or_else(truncated)? != MARKER {
            return Err(bad(format!("expected a marker at byte {at}")));
        }
        // A marker may be preceded by any number of fill bytes (0xFF).
        while data.get(at) == Some(&MARKER) {
            at += 1;
        }
        let marker = *data.get(at).ok_or_else(truncated)?;
        at += 1;
        match marker {
            EOI if scans == 0 => return Err(bad("EOI before any scan")),
            EOI => return Ok(()),
            SOI => return Err(bad("a second SOI marker")),
            0xD0..=0xD7 | 0x01 => {} // stand-alone markers: no length field
            _ => {
                let field = data.get(at..at + 2).ok_or_else(truncated)?;
                let length = u16::from_be_bytes([field[0], field[1]]) as usize;
                if length < 2 {
                    return Err(bad(format!("marker segment 0xFF{marker:02X} has length {length}")));
                }
                if at + length > data.len() {
                    return Err(truncated());
                }
                at += length;
                if marker == SOS {
                    scans += 1;
                    at = scan_data_end(data, at)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_codestream;

    // SOI, an SOF55 segment (1 component), SOS, scan bytes, EOI.
    fn stream(scan: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 8, 0, 2, 0, 2, 1, 1, 0x11, 0];
        s.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0, 0]);
        s.extend_from_slice(scan);
        s.extend_from_slice(tail);
        s
    }

    #[test]
    fn complete_streams_pass() {
        check_codestream(&stream(&[0x12, 0x34], &[0xFF, 0xD9])).unwrap();
        // A stuffed 0xFF inside the scan, a restart marker, fill bytes before EOI, fragment padding.
        check_codestream(&stream(&[0xFF, 0x7F, 0x00, 0xFF, 0xD0, 0x55], &[0xFF, 0xFF, 0xD9, 0x00])).unwrap();
    }

    #[test]
    fn every_cut_is_truncated() {
        let full = stream(&[0x12, 0xFF, 0x00, 0x34, 0x56], &[0xFF, 0xD9]);
        for cut in 0..full.len() {
            let err = check_codestream(&full[..cut]).expect_err("a cut stream passed").to_string();
            assert!(err.contains("truncated") || err.contains("SOI"), "cut {cut}: {err}");
        }
    }

    #[test]
    fn structure_lies_are_refused() {
        assert!(check_codestream(&[0xFF, 0xD8, 0xFF, 0xD9]).unwrap_err().to_string().contains("before any scan"));
        let mut zero_length = stream(&[1], &[0xFF, 0xD9]);
        zero_length[5] = 0; // the SOF55 segment's length
        assert!(check_codestream(&zero_length).unwrap_err().to_string().contains("length 0"));
        let mut long = stream(&[1], &[0xFF, 0xD9]);
        long[4] = 0x7F; // the SOF55 segment's length runs past the end
        assert!(check_codestream(&long).unwrap_err().to_string().contains("truncated"));
    }
}
