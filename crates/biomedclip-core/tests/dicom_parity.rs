//! DICOM renders against the pydicom + numpy reference renders in ../shared/data/dicom/reference_8bit
//! (made outside this project): the file's own window or min-max, the lung and mediastinum presets
//! for CT, MONOCHROME1 inversion and colour, on every transfer syntax there.
mod common;
use biomedclip_core::dicom::{render, technical_info, WindowSpec};
use biomedclip_core::image_decode::{ImageError, Pixels};

fn reference_png(path: &std::path::Path) -> (usize, usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let bands = info.color_type.samples();
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, bands, buf)
}

/// Largest absolute difference between our render and the reference PNG.
fn max_diff(data: &[u8], window: &WindowSpec, reference: &std::path::Path) -> u8 {
    let rendered = render(data, window, 0, 1 << 28).unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
    let Pixels::U8(ours) = rendered.pixels else { panic!("16-bit render") };
    let (w, h, bands, theirs) = reference_png(reference);
    assert_eq!((ours.width, ours.height, ours.bands), (w, h, bands), "{}", reference.display());
    ours.data.iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0)
}

#[test]
fn every_shared_file_matches_its_reference_render() {
    let dir = common::shared_data().join("dicom");
    let refs = dir.join("reference_8bit");
    let mut checked = 0;
    for file in common::files_in(&dir, &["dcm"]) {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let data = std::fs::read(&file).unwrap();
        // The lossy JPEG 2000 files are decoded by OpenJPEG on both sides; all others are lossless.
        let mut renders = vec![(WindowSpec::Auto, refs.join(format!("{stem}.png")))];
        for preset in ["lung", "mediastinum"] {
            let path = refs.join(format!("{stem}.{preset}.png"));
            if path.exists() {
                renders.push((WindowSpec::parse(preset).unwrap(), path));
            }
        }
        for (window, reference) in renders {
            let diff = max_diff(&data, &window, &reference);
            assert_eq!(diff, 0, "{} differs by up to {diff} levels", reference.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 34, "renders compared");
}

#[test]
fn technical_info_never_contains_identifying_attributes() {
    use dicom_dictionary_std::tags;
    // CT_small_pydicom.dcm carries a patient name and ID, dates, an institution and instance UIDs.
    let path = common::shared_data().join("dicom/CT_small_pydicom.dcm");
    let data = std::fs::read(&path).unwrap();
    let info = technical_info(&data).unwrap();
    let text = info.to_string();
    assert_eq!(info["modality"], "CT");
    assert_eq!(info["rows"], 128);
    assert_eq!(info["transfer_syntax"], "Explicit VR Little Endian");
    let obj = dicom_object::open_file(&path).unwrap();
    let identifying = [
        tags::PATIENT_NAME, tags::PATIENT_ID, tags::PATIENT_BIRTH_DATE, tags::STUDY_DATE, tags::SERIES_DATE,
        tags::ACQUISITION_DATE, tags::CONTENT_DATE, tags::STUDY_TIME, tags::INSTITUTION_NAME,
        tags::REFERRING_PHYSICIAN_NAME, tags::OPERATORS_NAME, tags::ACCESSION_NUMBER, tags::STUDY_ID,
        tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID, tags::FRAME_OF_REFERENCE_UID,
    ];
    let mut present = 0;
    for tag in identifying {
        let Some(value) = obj.get(tag).and_then(|e| e.to_str().ok()) else { continue };
        let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string();
        if value.len() >= 3 {
            present += 1;
            assert!(!text.contains(&value), "{tag:?} value leaked into {text}");
        }
    }
    assert!(present >= 8, "the test file should carry identifying attributes ({present} found)");
    for key in info.as_object().unwrap().keys() {
        for word in ["patient", "physician", "institution", "date", "time", "operator", "accession"] {
            assert!(!key.contains(word), "{key}");
        }
        assert!(!key.contains("uid") || key == "transfer_syntax_uid", "{key}");
    }
}

#[test]
fn bad_requests_name_the_problem() {
    let ct = std::fs::read(common::shared_data().join("dicom/CT1_UNC.dcm")).unwrap();
    let err = render(&ct, &WindowSpec::Auto, 1, 1 << 28).unwrap_err().to_string();
    assert!(err.contains("frame 1 is out of range"), "{err}");
    assert!(matches!(render(&ct, &WindowSpec::Auto, 0, 1000), Err(ImageError::TooManyPixels { .. })));
    let err = render(&ct[..ct.len() / 2], &WindowSpec::Auto, 0, 1 << 28).unwrap_err().to_string();
    assert!(err.contains("DICOM"), "{err}");
    let us = std::fs::read(common::shared_data().join("dicom/US1_UNC.dcm")).unwrap();
    let err = render(&us, &WindowSpec::parse("lung").unwrap(), 0, 1 << 28).unwrap_err().to_string();
    assert!(err.contains("grayscale"), "{err}");
}
