//! Shared state and the helpers every handler uses: who is calling (the JWT's role) and one
//! statement as that role.

use crate::auth::Verifier;
use crate::db::Db;
use crate::errors::ApiError;
use crate::metrics::Metrics;
use axum::http::HeaderMap;

pub struct App {
    pub db: Db,
    pub verifier: Verifier,
    pub metrics: Metrics,
}

impl App {
    /// The role of the bearer token (401 before any database work when it is missing or bad).
    pub fn role(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        self.verifier.role(authorization).map_err(|e| ApiError::unauthorized(e.to_string()))
    }

    /// One statement as the token's role.
    pub async fn query(&self, headers: &HeaderMap, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, ApiError> {
        let role = self.role(headers)?;
        self.db.query(&role, sql, params).await
    }

    /// One statement that returns one row, as the token's role.
    pub async fn query_one(&self, headers: &HeaderMap, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<tokio_postgres::Row, ApiError> {
        self.query(headers, sql, params).await?.into_iter().next().ok_or_else(|| ApiError::unavailable("the statement returned no row"))
    }

    /// A function of the extension, schema-qualified.
    pub fn f(&self, name: &str) -> String {
        format!("{}.{name}", self.db.ext)
    }
}
