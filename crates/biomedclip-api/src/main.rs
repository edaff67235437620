//! biomedclip-api: a thin HTTP API and search page over the biomedclip extension.
//!
//! Usage: biomedclip-api --config api.toml
//!
//! Authentication as PostgREST does it: a bearer JWT whose `role` claim names a PostgreSQL role;
//! the service connects as an authenticator role and runs each request in its own transaction
//! after `SET LOCAL ROLE`, so PostgreSQL's privileges and row-level security decide what anyone
//! sees, exactly as in SQL. No token, a bad signature, an expired token or a role the
//! authenticator cannot become: 401, and nothing runs.

mod app;
mod auth;
mod config;
mod db;
mod embed_routes;
mod errors;
mod meta_routes;
mod metrics;
mod openapi;
mod search_routes;
mod tls;

use app::App;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use std::sync::Arc;

/// Counts and times every request under its route template (never the path itself: ids stay
/// out of the metrics), and keeps responses out of caches.
async fn observe(State(app): State<Arc<App>>, matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let endpoint = matched.map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    app.metrics.observe(endpoint, response.status().as_u16(), started.elapsed().as_secs_f64());
    response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

fn router(app: Arc<App>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/search", post(search_routes::search))
        .route("/v1/feedback", post(search_routes::feedback))
        .route("/v1/collections", get(search_routes::collections))
        .route("/v1/thumbnail/{collection}/{id}", get(search_routes::thumbnail))
        .route("/v1/embed/text", post(embed_routes::embed_text))
        .route("/v1/embed/image", post(embed_routes::embed_image))
        .route("/v1/zero-shot", post(embed_routes::zero_shot))
        .route("/v1/model", get(meta_routes::model))
        .route("/v1/drift", get(meta_routes::drift))
        .route("/healthz", get(meta_routes::healthz))
        .route("/metrics", get(meta_routes::metrics))
        .route("/openapi.json", get(meta_routes::openapi))
        .route("/", get(meta_routes::page))
        .route("/app.js", get(meta_routes::page_js))
        .route("/app.css", get(meta_routes::page_css))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("biomedclip-api: shutting down; finishing requests in flight");
}

fn fail(message: String) -> ! {
    eprintln!("biomedclip-api: {message}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, flag, path] if flag == "--config" => std::path::PathBuf::from(path),
        _ => fail("usage: biomedclip-api --config api.toml".into()),
    };
    let config = config::Config::load(&path).unwrap_or_else(|e| fail(e));
    let verifier = auth::Verifier::from_config(&config.jwt).unwrap_or_else(|e| fail(e));
    let pool = db::pool(&config.database, config.pool_size, config.pool_timeout_ms).unwrap_or_else(|e| fail(e));
    let db = db::Db::open(pool, config.statement_timeout_ms).await.unwrap_or_else(|e| fail(e));
    let app = Arc::new(App { db, verifier, metrics: Default::default() });
    let router = router(app, config.max_body_bytes);
    let tcp = tokio::net::TcpListener::bind(config.listen).await.unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", config.listen)));
    let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    match &config.tls {
        Some(t) => {
            let tls = tls::server_config(&t.cert_file, &t.key_file).unwrap_or_else(|e| fail(e));
            let listener = tls::TlsListener::new(tcp, tls).unwrap_or_else(|e| fail(e.to_string()));
            eprintln!("biomedclip-api: listening on https://{local}/");
            axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await.unwrap_or_else(|e| fail(e.to_string()));
        }
        None => {
            eprintln!("biomedclip-api: listening on http://{local}/");
            // Small JSON answers go out at once (no Nagle delay behind the client's delayed ACK).
            let tcp = tcp.tap_io(|s| {
                let _ = s.set_nodelay(true);
            });
            axum::serve(tcp, router).with_graceful_shutdown(shutdown_signal()).await.unwrap_or_else(|e| fail(e.to_string()));
        }
    }
}
