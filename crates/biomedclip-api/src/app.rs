//! Shared state and the helpers every handler uses: who is calling (the JWT's role) and a
//! transaction as that role.

use crate::auth::Verifier;
use crate::db::{Db, RoleSession};
use crate::errors::ApiError;
use crate::metrics::Metrics;
use axum::http::HeaderMap;

pub struct App {
    pub db: Db,
    pub verifier: Verifier,
    pub metrics: Metrics,
}

impl App {
    /// Verifies the bearer token (401 before any database work when it is missing or bad) and
    /// opens a transaction as its role.
    pub async fn session(&self, headers: &HeaderMap) -> Result<RoleSession, ApiError> {
        let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let role = self.verifier.role(authorization).map_err(|e| ApiError::unauthorized(e.to_string()))?;
        self.db.as_role(&role).await
    }

    /// A function of the extension, schema-qualified.
    pub fn f(&self, name: &str) -> String {
        format!("{}.{name}", self.db.ext)
    }
}
