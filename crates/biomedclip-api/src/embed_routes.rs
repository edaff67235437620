//! POST /v1/embed/text, POST /v1/embed/image (raw bytes or multipart; DICOM recognised by its
//! content type or its DICM preamble), POST /v1/zero-shot.

use crate::app::App;
use crate::errors::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, ToSchema)]
pub struct EmbedTextRequest {
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingResponse {
    pub dims: usize,
    pub embedding: Vec<f32>,
}

#[utoipa::path(post, path = "/v1/embed/text", request_body = EmbedTextRequest, responses((status = 200, body = EmbeddingResponse)), security(("bearer" = [])))]
pub async fn embed_text(State(app): State<Arc<App>>, headers: HeaderMap, Json(req): Json<EmbedTextRequest>) -> Result<Json<EmbeddingResponse>, ApiError> {
    let sql = format!("SELECT {}($1)::pg_catalog.float4[]", app.f("biomedclip_embed_text"));
    let row = app.query_one(&headers, &sql, &[&req.text]).await?;
    let embedding: Vec<f32> = row.get(0);
    Ok(Json(EmbeddingResponse { dims: embedding.len(), embedding }))
}

#[derive(Deserialize, IntoParams)]
pub struct ImageParams {
    /// DICOM only: 'auto', 'minmax', a preset (biomedclip_window_presets) or 'C/W'.
    pub window: Option<String>,
    /// DICOM only: the frame of a multi-frame object.
    pub frame: Option<i32>,
}

fn is_dicom(content_type: Option<&str>, bytes: &[u8]) -> bool {
    content_type.is_some_and(|t| t.starts_with("application/dicom")) || (bytes.len() > 132 && &bytes[128..132] == b"DICM")
}

async fn upload(req: Request) -> Result<(Option<String>, Vec<u8>), ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    if content_type.as_deref().is_some_and(|t| t.starts_with("multipart/form-data")) {
        let mut form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        while let Some(field) = form.next_field().await.map_err(|e| ApiError::new(e.status(), e.body_text()))? {
            if field.name() == Some("file") {
                let kind = field.content_type().map(str::to_string);
                let bytes = field.bytes().await.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
                return Ok((kind, bytes.to_vec()));
            }
        }
        return Err(ApiError::bad_request("the multipart form has no \"file\" field"));
    }
    let bytes = Bytes::from_request(req, &()).await.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    Ok((content_type, bytes.to_vec()))
}

#[utoipa::path(post, path = "/v1/embed/image", params(ImageParams),
    request_body(content = Vec<u8>, description = "PNG, JPEG, TIFF, BMP, WebP or DICOM bytes, raw or as the \"file\" field of a multipart form", content_type = "application/octet-stream"),
    responses((status = 200, body = EmbeddingResponse), (status = 413, description = "over the body limit")), security(("bearer" = [])))]
pub async fn embed_image(State(app): State<Arc<App>>, headers: HeaderMap, Query(p): Query<ImageParams>, req: Request) -> Result<Json<EmbeddingResponse>, ApiError> {
    // The token is checked before the body is read.
    app.role(&headers)?;
    let (kind, bytes) = upload(req).await?;
    let row = if is_dicom(kind.as_deref(), &bytes) {
        let sql = format!("SELECT {}($1, $2, $3)::pg_catalog.float4[]", app.f("biomedclip_embed_dicom"));
        let window = p.window.unwrap_or_else(|| "auto".into());
        app.query_one(&headers, &sql, &[&bytes, &window, &p.frame.unwrap_or(0)]).await?
    } else {
        let sql = format!("SELECT {}($1)::pg_catalog.float4[]", app.f("biomedclip_embed_image"));
        app.query_one(&headers, &sql, &[&bytes]).await?
    };
    let embedding: Vec<f32> = row.get(0);
    Ok(Json(EmbeddingResponse { dims: embedding.len(), embedding }))
}

#[derive(Deserialize, ToSchema)]
pub struct ZeroShotRequest {
    /// The image as base64 (PNG, JPEG, ... or DICOM), or
    pub image: Option<String>,
    /// an embedding already computed.
    pub embedding: Option<Vec<f32>>,
    pub labels: Vec<String>,
    pub templates: Option<Vec<String>>,
    /// A calibration saved with biomedclip_save_calibration.
    pub calibration: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ZeroShotRow {
    pub label: String,
    pub probability: f64,
    pub logit: f64,
    pub rank: i32,
}

#[utoipa::path(post, path = "/v1/zero-shot", request_body = ZeroShotRequest, responses((status = 200, body = [ZeroShotRow])), security(("bearer" = [])))]
pub async fn zero_shot(State(app): State<Arc<App>>, headers: HeaderMap, Json(req): Json<ZeroShotRequest>) -> Result<Json<Vec<ZeroShotRow>>, ApiError> {
    let templates = req.templates.unwrap_or_else(|| vec!["this is a photo of {}".into()]);
    let zs = app.f("biomedclip_zero_shot");
    let rows = match (req.image, req.embedding) {
        (Some(b64), None) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| ApiError::bad_request(format!("image is not valid base64: {e}")))?;
            let embed = if is_dicom(None, &bytes) { app.f("biomedclip_embed_dicom") } else { app.f("biomedclip_embed_image") };
            let sql = format!("SELECT label, probability, logit, rank FROM {zs}({embed}($1), $2, $3, $4)");
            app.query(&headers, &sql, &[&bytes, &req.labels, &templates, &req.calibration]).await?
        }
        (None, Some(v)) => {
            let sql = format!("SELECT label, probability, logit, rank FROM {zs}($1::pg_catalog.float4[]::{}.embedding, $2, $3, $4)", app.db.ext);
            app.query(&headers, &sql, &[&v, &req.labels, &templates, &req.calibration]).await?
        }
        _ => return Err(ApiError::bad_request("give exactly one of \"image\" and \"embedding\"")),
    };
    Ok(Json(rows.iter().map(|r| ZeroShotRow { label: r.get(0), probability: r.get(1), logit: r.get(2), rank: r.get(3) }).collect()))
}
