//! DICOM functions: `biomedclip_embed_dicom`, `biomedclip_render_dicom`, `biomedclip_dicom_info`
//! and `biomedclip_window_presets`. Declared in `sql/medical_images.sql`; the work is in
//! `biomedclip_core::dicom`.

use crate::embed_sql::{caught, embed_views, guarded, model_image_size, pixel_limit, skip_or_raise};
use crate::model_cache::image_error_code;
use crate::vector_datum::PgVector;
use biomedclip_core::dicom::{self, WindowSpec};
use biomedclip_core::image_decode::{Decoded, ImageError};
use biomedclip_core::preprocess;
use pgrx::prelude::*;
use pgrx::JsonB;

/// `window` may end in `,auto` ('lung,auto'): the window for grayscale objects, and 'auto' (the
/// colours as stored) for colour objects, which a window cannot apply to. Without it a colour
/// object with a window is an error: the fallback happens only when asked for.
fn try_render(data: &[u8], window: &str, frame: i32) -> Result<Decoded, ImageError> {
    caught(|| {
        let (window, colour_auto) = match window.rsplit_once(',') {
            Some((w, fallback)) if fallback.trim().eq_ignore_ascii_case("auto") => (w, true),
            _ => (window, false),
        };
        let mut spec = WindowSpec::parse(window)?;
        if colour_auto {
            let info = dicom::technical_info(data)?;
            if info.get("samples_per_pixel").and_then(|v| v.as_u64()) == Some(3) {
                spec = WindowSpec::Auto;
            }
        }
        let frame = u32::try_from(frame).map_err(|_| ImageError::Invalid(format!("DICOM: frame {frame} is out of range (frames are numbered from 0)")))?;
        dicom::render(data, &spec, frame, pixel_limit())
    })
}

fn render(data: &[u8], window: &str, frame: i32) -> Decoded {
    guarded(|| try_render(data, window, frame))
}

/// One frame, embedded; a DICOM that cannot be rendered as asked is an error, or NULL with a
/// WARNING under biomedclip.on_error = null (a bulk load of a series finishes).
#[pg_extern(sql = false)]
fn biomedclip_embed_dicom(data: &[u8], window: &str, frame: i32) -> Option<PgVector<f32>> {
    let rendered = match try_render(data, window, frame) {
        Ok(r) => r,
        Err(e) => {
            skip_or_raise(image_error_code(&e), e.to_string(), None);
            return None;
        }
    };
    let (_, view) = preprocess::model_view_rgb(rendered, model_image_size());
    let row = embed_views(&view, 1).pop().expect("one row per image");
    Some(PgVector::from_slice(&row))
}

/// The 8-bit frame the model sees (before resizing), as PNG.
#[pg_extern(sql = false)]
fn biomedclip_render_dicom(data: &[u8], window: &str, frame: i32) -> Vec<u8> {
    let rendered = render(data, window, frame);
    guarded(|| biomedclip_core::image_decode::encode_png(&rendered))
}

/// Whitelisted technical attributes only (no patient, physician, institution, date or UID tags).
#[pg_extern(sql = false)]
fn biomedclip_dicom_info(data: &[u8]) -> JsonB {
    JsonB(guarded(|| dicom::technical_info(data)))
}

#[pg_extern(sql = false)]
fn biomedclip_window_presets() -> TableIterator<'static, (name!(name, String), name!(center, f64), name!(width, f64))> {
    TableIterator::new(dicom::PRESETS.iter().map(|&(n, c, w)| (n.to_string(), c, w)))
}
