//! POST /v1/search, POST /v1/feedback, GET /v1/collections, GET /v1/thumbnail/{collection}/{id}:
//! thin calls of the extension's SQL functions, as the token's role.

use crate::app::App;
use crate::errors::ApiError;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct SearchRequest {
    /// A collection registered with biomedclip_register_collection.
    pub collection: String,
    /// {"text": ...}, {"image": base64}, {"dicom": base64, "window": ..., "frame": ...} or {"embedding": [...]};
    /// a text, image or DICOM query may add {"adapter": name} (a residual adapter applied to the query).
    #[schema(value_type = Object)]
    pub query: Value,
    #[serde(default = "default_k")]
    pub k: i32,
    /// {"column": value} or {"column": {"gte": .., "lt": ..}} on the collection's display columns.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filters: Option<Value>,
}

fn default_k() -> i32 {
    10
}

#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    pub rank: i32,
    pub id: Option<String>,
    pub distance: f64,
    #[schema(value_type = Object)]
    pub display: Value,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    /// The query log's row (null while biomedclip.query_log is off); feedback refers to it.
    pub query_id: Option<i64>,
    pub results: Vec<SearchResult>,
}

#[utoipa::path(post, path = "/v1/search", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 400, description = "bad query (SQLSTATE 22023)"),
              (status = 401, description = "missing, forged or expired token, or a role the API cannot act as")),
    security(("bearer" = [])))]
pub async fn search(State(app): State<Arc<App>>, headers: HeaderMap, Json(req): Json<SearchRequest>) -> Result<Json<SearchResponse>, ApiError> {
    let sql = format!("SELECT rank, id, distance, display, query_id FROM {}($1, $2, $3, $4)", app.f("biomedclip_search"));
    let filters = req.filters.unwrap_or_else(|| Value::Object(Default::default()));
    let rows = app.query(&headers, &sql, &[&req.collection, &req.query, &req.k, &filters]).await?;
    let query_id = rows.first().and_then(|r| r.get::<_, Option<i64>>(4));
    let results = rows.iter().map(|r| SearchResult { rank: r.get(0), id: r.get(1), distance: r.get(2), display: r.get(3) }).collect();
    Ok(Json(SearchResponse { query_id, results }))
}

#[derive(Deserialize, ToSchema)]
pub struct FeedbackRequest {
    pub query_id: i64,
    pub result_id: String,
    /// click, relevant, wrong, correction or flag.
    pub action: String,
    /// Free text; stored only when biomedclip.query_log_notes = on (it may hold PHI).
    pub note: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FeedbackResponse {
    pub feedback_id: i64,
}

#[utoipa::path(post, path = "/v1/feedback", request_body = FeedbackRequest,
    responses((status = 200, body = FeedbackResponse), (status = 404, description = "no logged search of this role with that id")),
    security(("bearer" = [])))]
pub async fn feedback(State(app): State<Arc<App>>, headers: HeaderMap, Json(req): Json<FeedbackRequest>) -> Result<Json<FeedbackResponse>, ApiError> {
    let sql = format!("SELECT {}($1, $2, $3, $4)", app.f("biomedclip_feedback"));
    let row = app.query_one(&headers, &sql, &[&req.query_id, &req.result_id, &req.action, &req.note]).await?;
    Ok(Json(FeedbackResponse { feedback_id: row.get(0) }))
}

#[derive(Serialize, ToSchema)]
pub struct CollectionInfo {
    pub name: String,
    pub display_columns: Vec<String>,
    pub has_thumbnail: bool,
}

#[utoipa::path(get, path = "/v1/collections", responses((status = 200, body = [CollectionInfo])), security(("bearer" = [])))]
pub async fn collections(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Vec<CollectionInfo>>, ApiError> {
    let rows = app
        .query(&headers, "SELECT c.name, c.display_columns::pg_catalog.text[], c.thumbnail IS NOT NULL FROM biomedclip.collections c ORDER BY c.name", &[])
        .await?;
    Ok(Json(rows.iter().map(|r| CollectionInfo { name: r.get(0), display_columns: r.get(1), has_thumbnail: r.get(2) }).collect()))
}

#[utoipa::path(get, path = "/v1/thumbnail/{collection}/{id}",
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "image bytes"), (status = 404, description = "no thumbnail, or the row is not visible to this role")),
    security(("bearer" = [])))]
pub async fn thumbnail(State(app): State<Arc<App>>, headers: HeaderMap, Path((collection, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    let sql = format!("SELECT {}($1, $2)", app.f("biomedclip_thumbnail"));
    let row = app.query_one(&headers, &sql, &[&collection, &id]).await?;
    let Some(bytes) = row.get::<_, Option<Vec<u8>>>(0) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no thumbnail"));
    };
    let kind = if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        "image/jpeg"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "private, no-store")], bytes).into_response())
}
