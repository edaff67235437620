//! Technical metadata of a DICOM object, from a fixed whitelist of tags.
//!
//! Only acquisition and pixel-encoding attributes are read; patient, physician, institution, date,
//! time and UID attributes are never looked at, so they cannot leak into the output.

use super::header::{self, str_tag, Object};
use crate::image_decode::ImageError;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde_json::{json, Map, Value};

fn floats(obj: &Object, tag: dicom_core::Tag) -> Option<Value> {
    let values = obj.get(tag)?.to_multi_float64().ok()?;
    let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| json!(finite))
}

fn float(obj: &Object, tag: dicom_core::Tag) -> Option<Value> {
    obj.get(tag)?.to_float64().ok().filter(|v| v.is_finite()).map(|v| json!(v))
}

fn int(obj: &Object, tag: dicom_core::Tag) -> Option<Value> {
    header::int_tag(obj, tag).map(|v| json!(v))
}

/// The whitelisted attributes that are present, as a JSON object with snake_case keys.
pub fn technical_info(data: &[u8]) -> Result<Value, ImageError> {
    let obj = header::parse(data)?;
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            out.insert(key.to_string(), v);
        }
    };
    let text = |tag| str_tag(&obj, tag).map(Value::String);
    put("modality", text(tags::MODALITY));
    put("body_part_examined", text(tags::BODY_PART_EXAMINED));
    put("rows", int(&obj, tags::ROWS));
    put("columns", int(&obj, tags::COLUMNS));
    put("number_of_frames", int(&obj, tags::NUMBER_OF_FRAMES).or_else(|| obj.get(tags::PIXEL_DATA).map(|_| json!(1))));
    put("samples_per_pixel", int(&obj, tags::SAMPLES_PER_PIXEL));
    put("photometric_interpretation", text(tags::PHOTOMETRIC_INTERPRETATION));
    put("bits_allocated", int(&obj, tags::BITS_ALLOCATED));
    put("bits_stored", int(&obj, tags::BITS_STORED));
    put("pixel_representation", int(&obj, tags::PIXEL_REPRESENTATION));
    let uid = obj.meta().transfer_syntax().trim_end_matches('\0').trim().to_string();
    let name = TransferSyntaxRegistry.get(&uid).map(|ts| ts.name().to_string());
    put("transfer_syntax", name.map(Value::String));
    put("transfer_syntax_uid", Some(Value::String(uid)));
    put("pixel_spacing", floats(&obj, tags::PIXEL_SPACING));
    put("slice_thickness", float(&obj, tags::SLICE_THICKNESS));
    // Enhanced objects keep windows and rescale in functional groups: frame 0's are reported then.
    let window = super::frame_attributes::window(&obj, 0);
    put("window_center", floats(&obj, tags::WINDOW_CENTER).or_else(|| window.as_ref().map(|w| json!([w.center]))));
    put("window_width", floats(&obj, tags::WINDOW_WIDTH).or_else(|| window.as_ref().map(|w| json!([w.width]))));
    put("voi_lut_function", text(tags::VOILUT_FUNCTION));
    put("has_voi_lut", obj.get(tags::VOILUT_SEQUENCE).map(|_| json!(true)));
    let rescale = super::frame_attributes::file_rescale(&obj, 0);
    put("rescale_slope", float(&obj, tags::RESCALE_SLOPE).or_else(|| rescale.map(|r| json!(r.0))));
    put("rescale_intercept", float(&obj, tags::RESCALE_INTERCEPT).or_else(|| rescale.map(|r| json!(r.1))));
    put("rescale_type", text(tags::RESCALE_TYPE));
    put("manufacturer", text(tags::MANUFACTURER));
    put("manufacturer_model_name", text(tags::MANUFACTURER_MODEL_NAME));
    put("has_pixel_data", Some(json!(obj.get(tags::PIXEL_DATA).is_some())));
    Ok(Value::Object(out))
}
