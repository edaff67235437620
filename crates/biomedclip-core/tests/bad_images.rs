//! Decoding refuses truncated, corrupt, oversized and foreign data with an error (never a panic),
//! on mutations of the real shared images. A property-based fuzzer (proptest) drives random
//! truncations and bit flips; any panic fails the test.
mod common;
use biomedclip_core::image_decode::ImageError;
use biomedclip_core::input_format::decode;
use biomedclip_core::preprocess::{preprocess, PreprocessConfig};
use proptest::prelude::*;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(common::shared_data().join(name)).unwrap()
}

#[test]
fn truncated_images_are_errors() {
    for name in ["biomedclip/example_images/bone_X-ray.jpg", "biomedclip/example_images/brain_MRI.jpg", "medpix/images/MPX1031_synpic20041.png", "biomedclip/example_images/covid_line_chart.png"] {
        let data = sample(name);
        for cut in [1usize, 10, 100, data.len() / 3, data.len() / 2, data.len() - 10] {
            let r = decode(&data[..cut], 1 << 28);
            assert!(r.is_err(), "{name} cut at {cut} of {} decoded", data.len());
        }
    }
}

#[test]
fn size_fields_are_checked_before_decoding() {
    // PNG IHDR claiming 100000 x 100000.
    let mut png = sample("medpix/images/MPX1031_synpic20041.png");
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(decode(&png, 100_000_000), Err(ImageError::TooManyPixels { .. })));
    // JPEG frame header claiming 60000 x 60000.
    let mut jpg = sample("biomedclip/example_images/bone_X-ray.jpg");
    // Walk the marker segments to the frame header (SOF0/1/2).
    let mut sof = 2;
    while !matches!(jpg[sof + 1], 0xC0..=0xC2) {
        sof += 2 + u16::from_be_bytes([jpg[sof + 2], jpg[sof + 3]]) as usize;
    }
    jpg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]); // 60000 x 60000
    assert!(matches!(decode(&jpg, 100_000_000), Err(ImageError::TooManyPixels { .. })));
    assert!(matches!(decode(b"", 10), Err(ImageError::Empty)));
    assert!(matches!(decode(b"hello world", 10), Err(ImageError::NotAnImage)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_images_never_panic(which in 0usize..4, cut in 0.0f64..1.0, flips in prop::collection::vec((0.0f64..1.0, 0u8..8), 0..8)) {
        let names = ["biomedclip/example_images/bone_X-ray.jpg", "medpix/images/MPX1031_synpic20041.png",
                     "biomedclip/example_images/covid_line_chart.png", "biomedclip/example_images/squamous_cell_carcinoma_histopathology.jpeg"];
        let mut data = sample(names[which]);
        for (pos, bit) in flips {
            let i = (pos * data.len() as f64) as usize % data.len();
            data[i] ^= 1 << bit;
        }
        let len = ((cut * data.len() as f64) as usize).max(1);
        let _ = preprocess(&data[..len], &PreprocessConfig::default(), 50_000_000);
    }

    #[test]
    fn random_bytes_with_image_magics_never_panic(magic in 0usize..5, body in prop::collection::vec(any::<u8>(), 0..400)) {
        let prefixes: [&[u8]; 5] = [b"\x89PNG\r\n\x1a\n", &[0xFF, 0xD8, 0xFF], b"II*\0", b"BM", b"RIFF\0\0\0\0WEBP"];
        let mut data = prefixes[magic].to_vec();
        data.extend(body);
        let _ = preprocess(&data, &PreprocessConfig::default(), 50_000_000);
    }
}
