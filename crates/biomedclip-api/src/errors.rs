//! Errors as JSON: the PostgreSQL SQLSTATE and message when the database refused, never a stack
//! trace or a query. The HTTP status follows the SQLSTATE class.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, sqlstate: None, message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn busy() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "all database connections are busy; retry later")
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

/// HTTP status for a SQLSTATE.
pub fn status_for(sqlstate: &str) -> StatusCode {
    match sqlstate {
        "42501" => StatusCode::FORBIDDEN,
        "42704" | "42P01" | "42883" => StatusCode::NOT_FOUND,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        "53300" | "57P03" | "53200" => StatusCode::SERVICE_UNAVAILABLE,
        "0A000" => StatusCode::NOT_IMPLEMENTED,
        "42710" | "23505" => StatusCode::CONFLICT,
        s if s.starts_with("22") || s.starts_with("2F") || s == "42804" || s == "42703" => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code().to_string();
                ApiError { status: status_for(&code), message: db.message().to_string(), sqlstate: Some(code) }
            }
            None => ApiError::unavailable("the database connection failed"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "sqlstate": self.sqlstate, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("WWW-Authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_for("42501"), StatusCode::FORBIDDEN);
        assert_eq!(status_for("22023"), StatusCode::BAD_REQUEST);
        assert_eq!(status_for("57014"), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_for("XX000"), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
