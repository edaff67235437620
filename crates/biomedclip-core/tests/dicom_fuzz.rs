//! Corrupt DICOM never crashes: targeted header lies that are known to make the pixel decoders
//! panic or allocate gigabytes (RLE segment count and offsets, BitsStored = 0, huge Rows/Columns,
//! NumberOfFrames, truncation) and random bit flips and truncations (proptest) on the shared files.
//! A decoder abort would kill this test process; a panic must come back as an error.
mod common;
use biomedclip_core::dicom::{render, technical_info, WindowSpec};
use biomedclip_core::image_decode::ImageError;
use proptest::prelude::*;

fn shared(name: &str) -> Vec<u8> {
    std::fs::read(common::shared_data().join("dicom").join(name)).unwrap()
}

/// Offset of the value of an explicit-VR little-endian US element (group, element).
fn us_value_offset(data: &[u8], group: u16, element: u16) -> usize {
    let mut pattern = Vec::new();
    pattern.extend_from_slice(&group.to_le_bytes());
    pattern.extend_from_slice(&element.to_le_bytes());
    pattern.extend_from_slice(b"US\x02\x00");
    data.windows(8).position(|w| w == pattern.as_slice()).expect("element present") + 8
}

/// Offset of the first RLE fragment's header (after the pixel data tag and the offset table item).
fn rle_header_offset(data: &[u8]) -> usize {
    let pixel = data.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
    let item = [0xFE, 0xFF, 0x00, 0xE0];
    let first = pixel + data[pixel..].windows(4).position(|w| w == item).unwrap();
    let table_len = u32::from_le_bytes(data[first + 4..first + 8].try_into().unwrap()) as usize;
    first + 8 + table_len + 8
}

fn render_auto(data: &[u8]) -> Result<(), ImageError> {
    render(data, &WindowSpec::Auto, 0, 1 << 26).map(|_| ())
}

#[test]
fn rle_header_lies_are_refused_before_decoding() {
    let rle = shared("CT1_RLE.dcm");
    let header = rle_header_offset(&rle);
    assert_eq!(u32::from_le_bytes(rle[header..header + 4].try_into().unwrap()), 2, "CT1_RLE has 2 segments");
    for (what, at, value) in [
        ("segment count 0xFFFFFFFF", 0usize, u32::MAX),
        ("segment count 15", 0, 15),
        ("segment count 0", 0, 0),
        ("first offset past the end", 4, 0x7FFF_FFFF),
        ("second offset before the first", 8, 10),
        ("second offset past the end", 8, 0x00FF_FFFF),
    ] {
        let mut bad = rle.clone();
        bad[header + at..header + at + 4].copy_from_slice(&value.to_le_bytes());
        let err = render_auto(&bad).expect_err(what).to_string();
        assert!(err.contains("RLE"), "{what}: {err}");
    }
    // Garbage inside a segment (the decoder indexes out of bounds on some) is an error or a render.
    for seed in 0..64u32 {
        let mut bad = rle.clone();
        for k in 0..16 {
            let i = header + 64 + ((seed as usize * 7919 + k * 104_729) % (rle.len() - header - 64));
            bad[i] ^= 0x5A;
        }
        let _ = render_auto(&bad);
    }
}

#[test]
fn pixel_description_lies_are_refused() {
    let ct = shared("CT1_UNC.dcm");
    let cases: [(&str, u16, u16, u16); 6] = [
        ("BitsStored 0", 0x0028, 0x0101, 0),
        ("BitsStored above BitsAllocated", 0x0028, 0x0101, 17),
        ("BitsAllocated 12", 0x0028, 0x0100, 12),
        ("Rows 65535", 0x0028, 0x0010, 65535),
        ("Columns 0", 0x0028, 0x0011, 0),
        ("SamplesPerPixel 2", 0x0028, 0x0002, 2),
    ];
    for (what, group, element, value) in cases {
        let mut bad = ct.clone();
        let at = us_value_offset(&bad, group, element);
        bad[at..at + 2].copy_from_slice(&value.to_le_bytes());
        assert!(render_auto(&bad).is_err(), "{what} rendered");
    }
    // Rows and Columns of 60000: refused by the pixel limit before anything is allocated.
    let mut big = ct.clone();
    for element in [0x0010, 0x0011] {
        let at = us_value_offset(&big, 0x0028, element);
        big[at..at + 2].copy_from_slice(&60000u16.to_le_bytes());
    }
    assert!(matches!(render_auto(&big), Err(ImageError::TooManyPixels { .. })));
}

#[test]
fn every_truncation_point_class_is_an_error() {
    for name in ["CT1_UNC.dcm", "CT1_RLE.dcm", "CT1_JPLL.dcm", "CT1_JLSL.dcm", "CT1_J2KR.dcm", "US1_UNC.dcm"] {
        let data = shared(name);
        for cut in [1usize, 100, 131, 132, 300, 1000, data.len() / 2, data.len() - 100, data.len() - 20] {
            assert!(render_auto(&data[..cut]).is_err(), "{name} cut at {cut} rendered");
        }
    }
}

/// A JPEG-LS codestream cut short inside a well-formed object (its fragment's length and the
/// sequence delimiter fixed up, so that only the codestream is short) is refused by the marker
/// walk before CharLS runs: CharLS 2.4.5 spends ~10 s in a loop on such cuts of RG2_JLSL (see
/// dicom/jpeg_ls.rs).
#[test]
fn truncated_jpeg_ls_codestreams_are_refused_before_decoding() {
    for name in ["CT1_JLSL.dcm", "RG2_JLSL.dcm"] {
        let data = shared(name);
        render_auto(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pixel = data.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
        let item = [0xFE, 0xFF, 0x00, 0xE0];
        let table = pixel + data[pixel..].windows(4).position(|w| w == item).unwrap();
        let fragment = table + 8 + u32::from_le_bytes(data[table + 4..table + 8].try_into().unwrap()) as usize;
        assert_eq!(data[fragment..fragment + 4], item);
        let length = u32::from_le_bytes(data[fragment + 4..fragment + 8].try_into().unwrap()) as usize;
        for k in 1..=16 {
            let cut = length * k / 17 & !1;
            let mut short = data[..fragment + 8 + cut].to_vec();
            short[fragment + 4..fragment + 8].copy_from_slice(&(cut as u32).to_le_bytes());
            short.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
            let err = render_auto(&short).expect_err("a truncated codestream rendered").to_string();
            assert!(err.contains("before its EOI marker"), "{name} codestream cut at {cut}: {err}");
        }
    }
}

/// A value or fragment that declares more bytes than follow it is refused before dicom-rs
/// allocates the declared length (it reserves and zero-fills it before reading).
#[test]
fn declared_lengths_past_the_end_are_refused_before_allocating() {
    let ct = shared("CT1_UNC.dcm");
    let pixel = ct.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
    let mut huge = ct[..pixel + 12 + 100].to_vec();
    huge[pixel + 8..pixel + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let before = peak_rss_kib();
    let err = render_auto(&huge).expect_err("a 4 GB Pixel Data rendered").to_string();
    assert!(err.contains("(7FE0,0010) declares 4294967280 bytes where 100 remain"), "{err}");
    assert!(technical_info(&huge).is_err());
    // A truncated object read in the other VR encoding on the retry (it once took 1 GB).
    let vl = shared("VL1_UNC.dcm");
    assert!(render_auto(&vl[..1_000_000]).unwrap_err().to_string().contains("remain"));
    let grown = peak_rss_kib() - before;
    assert!(grown < 512 * 1024, "peak resident memory grew by {grown} KiB");
}

fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_corruption_never_escapes(file in 0usize..6, flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..12), cut in 0.0f64..1.0) {
        let name = ["CT1_UNC.dcm", "CT1_RLE.dcm", "CT1_JPLL.dcm", "CT1_JLSL.dcm", "CT1_J2KI.dcm", "MR1_RLE.dcm"][file];
        let mut data = shared(name);
        // Bias the flips toward the header, where the lies are.
        for (at, byte) in flips {
            let i = ((at * at) * data.len() as f64) as usize % data.len();
            data[i] ^= byte | 1;
        }
        let keep = if cut > 0.8 { ((cut - 0.8) * 5.0 * data.len() as f64) as usize } else { data.len() };
        let data = &data[..keep.max(1)];
        let _ = render_auto(data);
        let _ = technical_info(data);
    }
}
