//! GET /v1/model, GET /v1/drift, GET /healthz, GET /metrics, GET /openapi.json and the search page.

use crate::app::App;
use crate::errors::ApiError;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::IntoParams;

#[utoipa::path(get, path = "/v1/model", responses((status = 200, description = "biomedclip_model_info() of the server, and the API's version")), security(("bearer" = [])))]
pub async fn model(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let row = app.query_one(&headers, &format!("SELECT {}()", app.f("biomedclip_model_info")), &[]).await?;
    let info: Value = row.get(0);
    Ok(Json(json!({"model": info, "api": {"name": "biomedclip-api", "version": env!("CARGO_PKG_VERSION")},
                   "notice": "Decision support and research tooling, not a medical device."})))
}

#[derive(Deserialize, IntoParams)]
pub struct DriftParams {
    /// A PostgreSQL interval, e.g. "7 days".
    pub window: Option<String>,
}

#[utoipa::path(get, path = "/v1/drift", params(DriftParams), responses((status = 200, description = "biomedclip_drift_report(window)")), security(("bearer" = [])))]
pub async fn drift(State(app): State<Arc<App>>, headers: HeaderMap, Query(p): Query<DriftParams>) -> Result<Json<Value>, ApiError> {
    let window = p.window.unwrap_or_else(|| "7 days".into());
    let row = app.query_one(&headers, &format!("SELECT {}($1::pg_catalog.text::pg_catalog.interval, NULL)", app.f("biomedclip_drift_report")), &[&window]).await?;
    Ok(Json(row.get(0)))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the API and its database answer"), (status = 503, description = "the database does not answer")))]
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.db.ping().await {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "database unavailable"}))).into_response()
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CONTENT_SECURITY_POLICY, CSP), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body).into_response()
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", include_str!("../page/index.html"))
}

pub async fn page_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../page/app.js"))
}

pub async fn page_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../page/app.css"))
}
