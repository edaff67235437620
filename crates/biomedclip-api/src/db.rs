//! The connection pool of the authenticator role and the transaction every request runs in:
//! `BEGIN; SET LOCAL ROLE <token role>; SET LOCAL statement_timeout; SET LOCAL search_path`,
//! then the request's one statement, then COMMIT, pipelined in one round trip. The role switch
//! ends with the transaction, so a pooled connection never carries one request's role into the next.

use crate::auth::quote_ident;
use crate::errors::ApiError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Timeouts};
use std::time::Duration;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// How long a role's superuser / BYPASSRLS answer is reused.
const ROLE_CHECK_TTL: Duration = Duration::from_secs(5);


pub struct Db {
    pool: Pool,
    statement_timeout_ms: u64,
    /// The extension's schema, quoted, for qualified calls.
    pub ext: String,
    roles: Mutex<HashMap<String, (bool, std::time::Instant)>>,
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
        Ok(Db { pool, statement_timeout_ms, ext, roles: Mutex::new(HashMap::new()) })
    }

    /// Runs one statement in a transaction of its own as `role`, in one round trip: `BEGIN; SET
    /// LOCAL ROLE; SET LOCAL statement_timeout; SET LOCAL search_path`, the statement and `COMMIT`
    /// are pipelined. When the role switch fails the transaction is already aborted, so the
    /// statement does not run (25P02) and the COMMIT rolls back: a role that does not exist or
    /// that the authenticator cannot become is a 401 and nothing ran. Superuser and BYPASSRLS
    /// roles are refused before (see `check_role`).
    pub async fn query(&self, role: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, ApiError> {
        self.check_role(role).await?;
        let mut session = Session { client: Some(self.client().await?) };
        let c = session.client.as_ref().expect("present");
        let statement = c.prepare_cached(sql).await?;
        let setup = format!(
            "BEGIN; SET LOCAL ROLE {}; SET LOCAL statement_timeout = {}; SET LOCAL search_path = pg_catalog, pg_temp",
            quote_ident(role),
            self.statement_timeout_ms
        );
        let (switched, rows, commit) = tokio::join!(c.simple_query(&setup), c.query(&statement, params), c.simple_query("COMMIT"));
        if let Err(e) = switched {
            let code = e.as_db_error().map(|d| d.code().code().to_string());
            return Err(match code.as_deref() {
                // 42501: not a member of the role; 22023 / 42704: no such role.
                Some("42501") | Some("22023") | Some("42704") => ApiError::unauthorized(format!("the API cannot act as role \"{role}\"")),
                _ => ApiError::from(e),
            });
        }
        let rows = rows?;
        commit?;
        session.keep();
        Ok(rows)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => ApiError::busy(),
            other => ApiError::unavailable(other.to_string()),
        })
    }

    /// Refuses (401) a role that does not exist, is a superuser or bypasses row-level security.
    /// Answers are kept for `ROLE_CHECK_TTL`; membership itself is checked by SET ROLE on every
    /// request.
    async fn check_role(&self, role: &str) -> Result<(), ApiError> {
        {
            let cache = self.roles.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((allowed, at)) = cache.get(role) {
                if at.elapsed() < ROLE_CHECK_TTL {
                    return if *allowed { Ok(()) } else { Err(refused(role)) };
                }
            }
        }
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) $1", &[&role])
            .await?;
        let allowed = matches!(row.map(|r| r.get::<_, bool>(0)), Some(false));
        let mut cache = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(role.to_string(), (allowed, std::time::Instant::now()));
        if allowed {
            Ok(())
        } else {
            Err(refused(role))
        }
    }

    /// Whether the database answers (for /healthz), without any role switch.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

/// A pooled connection for one request. Unless `keep` is called (the transaction ended with
/// COMMIT or its ROLLBACK), it is closed instead of pooled: when the HTTP client goes away in the
/// middle of a request, no open transaction or role goes back into the pool.
struct Session {
    client: Option<deadpool_postgres::Object>,
}

impl Session {
    fn keep(&mut self) {
        drop(self.client.take());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

fn refused(role: &str) -> ApiError {
    ApiError::unauthorized(format!("the API cannot act as role \"{role}\""))
}
