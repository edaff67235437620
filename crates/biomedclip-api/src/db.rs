//! The connection pool of the authenticator role and the transaction every request runs in:
//! `BEGIN; SET LOCAL ROLE <token role>; SET LOCAL statement_timeout; SET LOCAL search_path`,
//! then the request's one statement, then COMMIT. The role switch ends with the transaction, so a
//! pooled connection never carries one request's role into the next.

use crate::auth::quote_ident;
use crate::errors::ApiError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Timeouts};
use std::time::Duration;
use tokio_postgres::{NoTls, SimpleQueryMessage};


pub struct Db {
    pool: Pool,
    statement_timeout_ms: u64,
    /// The extension's schema, quoted, for qualified calls.
    pub ext: String,
}

pub fn pool(database: &str, size: usize, wait_ms: u64) -> Result<Pool, String> {
    let pg: tokio_postgres::Config = database.parse().map_err(|e| format!("database: {e}"))?;
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .timeouts(Timeouts { wait: Some(Duration::from_millis(wait_ms)), create: Some(Duration::from_secs(10)), recycle: Some(Duration::from_secs(5)) })
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| format!("pool: {e}"))
}

impl Db {
    /// Connects once to check the authenticator: it must not be a superuser or bypass RLS (it could
    /// then become anyone), and the extension must be installed.
    pub async fn open(pool: Pool, statement_timeout_ms: u64) -> Result<Db, String> {
        let client = pool.get().await.map_err(|e| format!("cannot connect to the database: {e}"))?;
        let row = client
            .query_one(
                "SELECT r.rolsuper OR r.rolbypassrls, r.rolname::text, \
                        (SELECT pg_catalog.quote_ident(n.nspname::text) FROM pg_catalog.pg_extension e \
                         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
                         WHERE e.extname OPERATOR(pg_catalog.=) 'biomedclip') \
                 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER",
                &[],
            )
            .await
            .map_err(|e| format!("cannot check the authenticator role: {e}"))?;
        let (privileged, name, ext): (bool, String, Option<String>) = (row.get(0), row.get(1), row.get(2));
        if privileged {
            return Err(format!("the database role \"{name}\" is a superuser or bypasses row-level security; connect as an authenticator role without those attributes"));
        }
        let ext = ext.ok_or("the biomedclip extension is not installed in that database")?;
        Ok(Db { pool, statement_timeout_ms, ext })
    }

    /// Opens a transaction as `role`. A role that does not exist, that the authenticator cannot
    /// switch to, or that is a superuser or bypasses RLS is refused (401) and nothing else runs.
    pub async fn as_role(&self, role: &str) -> Result<RoleSession, ApiError> {
        let client = self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => ApiError::busy(),
            other => ApiError::unavailable(other.to_string()),
        })?;
        let mut session = RoleSession { client: Some(client) };
        let setup = format!(
            "BEGIN; SET LOCAL ROLE {}; SET LOCAL statement_timeout = {}; SET LOCAL search_path = pg_catalog, pg_temp; \
             SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER",
            quote_ident(role),
            self.statement_timeout_ms
        );
        match session.client().simple_query(&setup).await {
            Ok(messages) => {
                let privileged = messages.iter().any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("t")));
                if privileged {
                    return Err(ApiError::unauthorized(format!("role \"{role}\" may not be used through the API")));
                }
            }
            Err(e) => {
                // 42501: not a member; 22023 / 42704: no such role. Nothing else has run.
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                return Err(match code.as_deref() {
                    Some("42501") | Some("22023") | Some("42704") => ApiError::unauthorized(format!("the API cannot act as role \"{role}\"")),
                    _ => ApiError::from(e),
                });
            }
        }
        Ok(session)
    }

    /// Whether the database answers (for /healthz), without any role switch.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

/// A pooled connection inside a transaction as one role. `commit` ends it and returns the
/// connection to the pool; dropped without a commit (an error, or the HTTP client went away), the
/// connection is closed instead of pooled, so no transaction or role outlives its request.
pub struct RoleSession {
    client: Option<deadpool_postgres::Object>,
}

impl RoleSession {
    pub fn client(&mut self) -> &deadpool_postgres::Object {
        self.client.as_ref().expect("present until commit")
    }

    pub async fn commit(mut self) -> Result<(), ApiError> {
        self.client().simple_query("COMMIT").await?;
        // Back to the pool only now: the transaction (and its SET LOCAL ROLE) is over.
        drop(self.client.take());
        Ok(())
    }
}

impl Drop for RoleSession {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}
