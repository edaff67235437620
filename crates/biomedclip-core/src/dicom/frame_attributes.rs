//! Per-frame attributes: Rescale Slope/Intercept and the first window, looked up at the top level
//! of the data set, then in the frame's Per-Frame Functional Groups item, then in the Shared
//! Functional Groups (enhanced CT/MR objects keep them only in the functional groups: the Pixel
//! Value Transformation and Frame VOI LUT macros, PS3.3 C.7.6.16.2.9 and C.7.6.16.2.10).

use super::header::Object;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// A window as the file gives it: center, width and VOI LUT Function.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FileWindow {
    pub center: f64,
    pub width: f64,
    pub function: Option<String>,
}

fn first_float(item: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    item.get(tag).and_then(|e| e.to_multi_float64().ok()).and_then(|v| v.first().copied()).filter(|v| v.is_finite())
}

/// The data sets to look in, in order: the top level, the frame's per-frame item and the shared
/// item, each narrowed to the macro's sequence item.
fn places<'a>(obj: &'a Object, frame: u32, sequence: dicom_core::Tag) -> Vec<&'a InMemDicomObject> {
    let mut out = vec![&**obj];
    let group = |tag, index: usize| obj.get(tag).and_then(|e| e.items()).and_then(|items| items.get(index));
    for item in [group(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frame as usize), group(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0)].into_iter().flatten() {
        if let Some(inner) = item.get(sequence).and_then(|e| e.items()).and_then(|items| items.first()) {
            out.push(inner);
        }
    }
    out
}

/// (slope, intercept) for `frame`, if the file gives them.
pub(crate) fn file_rescale(obj: &Object, frame: u32) -> Option<(f64, f64)> {
    places(obj, frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).into_iter().find_map(|place| {
        Some((first_float(place, tags::RESCALE_SLOPE)?, first_float(place, tags::RESCALE_INTERCEPT)?))
    })
}

/// (slope, intercept) for `frame`; the identity (1, 0) when none is given.
pub(crate) fn rescale(obj: &Object, frame: u32) -> (f64, f64) {
    file_rescale(obj, frame).unwrap_or((1.0, 0.0))
}

/// The first window for `frame`, if the file gives one.
pub(crate) fn window(obj: &Object, frame: u32) -> Option<FileWindow> {
    for place in places(obj, frame, tags::FRAME_VOILUT_SEQUENCE) {
        if let (Some(center), Some(width)) = (first_float(place, tags::WINDOW_CENTER), first_float(place, tags::WINDOW_WIDTH)) {
            let function = place
                .get(tags::VOILUT_FUNCTION)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_ascii_uppercase());
            return Some(FileWindow { center, width, function });
        }
    }
    None
}
