//! Load generator for benches/api: N clients send the same text searches through the API
//! (POST /v1/search, keep-alive HTTP/1.1) and straight to PostgreSQL (biomedclip_search as the
//! same role, one session per client), in alternating rounds, and report latency percentiles of
//! each side and the error count. Written in Rust so that the client's own cost is the same
//! (and small) on both sides.
//!
//! Usage: api_load URL TOKEN PG_CONNINFO ROLE COLLECTION CLIENTS ROUND_SECONDS ROUNDS

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

const WORDS: [&str; 24] = [
    "pleural", "effusion", "consolidation", "right", "lower", "lobe", "nodule", "fracture", "cardiomegaly", "edema", "atelectasis", "pneumothorax",
    "opacity", "mass", "infiltrate", "calcified", "granuloma", "hilar", "lymphadenopathy", "emphysema", "fibrosis", "bilateral", "small", "large",
];

/// The i-th query text: three words, so that most queries differ (the per-backend text cache
/// sees few repeats) and both sides get the same sequence.
fn query(i: usize) -> String {
    let a = WORDS[i % 24];
    let b = WORDS[(i / 24) % 24];
    let c = WORDS[(i / 576) % 24];
    format!("{a} {b} {c}")
}

/// All clients' latencies and their error count.
async fn join(tasks: Vec<tokio::task::JoinHandle<(Vec<f64>, usize)>>) -> (Vec<f64>, usize) {
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

async fn api_round(url: &str, token: &str, collection: &str, clients: usize, secs: u64, offset: usize) -> (Vec<f64>, usize) {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, token, collection) = (client.clone(), url.to_string(), token.to_string(), collection.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, offset + c * 100_000);
            while Instant::now() < deadline {
                let body = serde_json::json!({"collection": collection, "query": {"text": query(i)}, "k": 10}).to_string();
                let req = hyper::Request::post(format!("{url}/v1/search"))
                    .header("Authorization", format!("Bearer {token}"))
                    .header("Content-Type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                let t = Instant::now();
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    join(tasks).await
}

async fn sql_round(conninfo: &str, role: &str, collection: &str, clients: usize, secs: u64, offset: usize) -> (Vec<f64>, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (conninfo, role, collection) = (conninfo.to_string(), role.to_string(), collection.to_string());
        tasks.push(tokio::spawn(async move {
            let (db, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            db.batch_execute(&format!("SET ROLE \"{role}\"")).await.expect("set role");
            let stmt = db.prepare("SELECT rank, id, distance, display, query_id FROM biomedclip_search($1, $2, 10)").await.expect("prepare");
            let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, offset + c * 100_000);
            while Instant::now() < deadline {
                let q = serde_json::json!({"text": query(i)});
                let t = Instant::now();
                match db.query(&stmt, &[&collection, &q]).await {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    join(tasks).await
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 9 {
        eprintln!("usage: api_load URL TOKEN PG_CONNINFO ROLE COLLECTION CLIENTS ROUND_SECONDS ROUNDS");
        std::process::exit(2);
    }
    let (url, token, conninfo, role, collection) = (&a[1], &a[2], &a[3], &a[4], &a[5]);
    let clients: usize = a[6].parse().expect("CLIENTS");
    let secs: u64 = a[7].parse().expect("ROUND_SECONDS");
    let rounds: usize = a[8].parse().expect("ROUNDS");
    let (mut api, mut sql, mut api_err, mut sql_err) = (Vec::new(), Vec::new(), 0, 0);
    for r in 0..rounds {
        // Alternating rounds, each side starting at the same query offset.
        let (l, e) = api_round(url, token, collection, clients, secs, r * 7919).await;
        api.extend(l);
        api_err += e;
        let (l, e) = sql_round(conninfo, role, collection, clients, secs, r * 7919).await;
        sql.extend(l);
        sql_err += e;
    }
    api.sort_by(f64::total_cmp);
    sql.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "clients": clients, "round_seconds": secs, "rounds": rounds,
        "api": {"requests": api.len(), "errors": api_err, "p50_ms": percentile(&api, 0.5), "p99_ms": percentile(&api, 0.99),
                "throughput_per_s": api.len() as f64 / (secs * rounds as u64) as f64},
        "sql": {"requests": sql.len(), "errors": sql_err, "p50_ms": percentile(&sql, 0.5), "p99_ms": percentile(&sql, 0.99),
                "throughput_per_s": sql.len() as f64 / (secs * rounds as u64) as f64},
        "overhead_p50_ms": percentile(&api, 0.5) - percentile(&sql, 0.5),
        "overhead_p99_ms": percentile(&api, 0.99) - percentile(&sql, 0.99),
    });
    println!("{out}");
}
