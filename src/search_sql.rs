//! `biomedclip_search` and `biomedclip_thumbnail`: top-k of a registered collection, run as the
//! caller through SPI (table privileges and row-level security apply, the ivf index serves the
//! ORDER BY ... LIMIT), with every name taken from the registry and quoted, every value a
//! parameter, every function and operator schema-qualified and `search_path` pinned.

use crate::extension_owner::extension_info;
use crate::model_cache::{self, raise};
use crate::pinned_search_path::with_pinned_search_path;
use crate::query_log_sql::{self, LoggedSearch};
use crate::settings;
use base64::Engine;
use biomedclip_core::query_log::{keyed_hash, normalize_query_text};
use pgrx::prelude::*;
use pgrx::JsonB;
use pgrx::PgSqlErrorCode::*;
use serde_json::Value;

/// Most results one search returns.
const MAX_K: i32 = 1000;

/// A collection as the registry holds it, with names already quoted for SQL.
struct Collection {
    table_sql: String,
    id_sql: String,
    id_type: String,
    embedding_sql: String,
    display: Vec<(String, String, String)>, // (name, quoted name, type)
    thumbnail_sql: Option<String>,
}

fn load_collection(name: &str) -> Collection {
    let row = with_pinned_search_path(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT k.oid::pg_catalog.regclass::pg_catalog.text, pg_catalog.quote_ident(c.id_column::pg_catalog.text), \
                        (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
                         WHERE a.attrelid OPERATOR(pg_catalog.=) c.table_oid AND a.attname OPERATOR(pg_catalog.=) c.id_column), \
                        pg_catalog.quote_ident(c.embedding_column::pg_catalog.text), \
                        c.display_columns::pg_catalog.text[], \
                        (SELECT pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY u.ord) \
                         FROM pg_catalog.unnest(c.display_columns) WITH ORDINALITY AS u(col, ord) \
                         JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.table_oid AND a.attname OPERATOR(pg_catalog.=) u.col), \
                        c.thumbnail, \
                        EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.table_oid \
                                AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) c.thumbnail AND a.attnum OPERATOR(pg_catalog.>) 0) \
                 FROM biomedclip.collections c LEFT JOIN pg_catalog.pg_class k ON k.oid OPERATOR(pg_catalog.=) c.table_oid \
                 WHERE c.name OPERATOR(pg_catalog.=) $1",
                None,
                &[name.into()],
            )?;
            let mut out = None;
            for r in rows {
                out = Some((
                    r.get::<String>(1)?,
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                    r.get::<String>(4)?.unwrap_or_default(),
                    r.get::<Vec<String>>(5)?.unwrap_or_default(),
                    r.get::<Vec<String>>(6)?.unwrap_or_default(),
                    r.get::<String>(7)?,
                    r.get::<bool>(8)?.unwrap_or(false),
                ));
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_else(|e| error!("cannot read biomedclip.collections: {e}"));
    let Some((table, id_sql, id_type, embedding_sql, names, types, thumbnail, thumbnail_is_column)) = row else {
        raise(ERRCODE_UNDEFINED_OBJECT, format!("collection \"{name}\" does not exist"));
    };
    let Some(table_sql) = table else {
        raise(ERRCODE_UNDEFINED_TABLE, format!("the table of collection \"{name}\" no longer exists"));
    };
    if names.len() != types.len() {
        raise(ERRCODE_UNDEFINED_COLUMN, format!("a display column of collection \"{name}\" no longer exists"));
    }
    let display = names.into_iter().zip(types).map(|(n, t)| (quote_ident(&n), n, t)).map(|(q, n, t)| (n, q, t)).collect();
    let thumbnail_sql = thumbnail.map(|t| if thumbnail_is_column { format!("t.{}", quote_ident(&t)) } else { format!("({t})") });
    Collection { table_sql, id_sql, id_type, embedding_sql, display, thumbnail_sql }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the query asks for, as the SQL that embeds it and the bytes its log hash covers.
struct Query {
    kind: &'static str,
    hashed: Vec<u8>,
    /// The SQL expression of the query's embedding, over the parameters `args`.
    embed_expr: String,
    args: Vec<QueryArg>,
    /// The residual adapter applied to the query's embedding (its tower's), if named.
    adapter: Option<String>,
}

enum QueryArg {
    Text(String),
    Bytes(Vec<u8>),
    Int(i32),
}

fn bad_query(message: String) -> ! {
    raise(ERRCODE_INVALID_PARAMETER_VALUE, message)
}

fn base64_field(value: &Value, key: &str) -> Vec<u8> {
    let Some(s) = value.as_str() else { bad_query(format!("query \"{key}\" must be a base64 string")) };
    base64::engine::general_purpose::STANDARD.decode(s.trim()).unwrap_or_else(|e| bad_query(format!("query \"{key}\" is not valid base64: {e}")))
}

fn parse_query(query: &Value, ext: &str) -> Query {
    let Some(obj) = query.as_object() else { bad_query("query must be a JSON object such as {\"text\": \"...\"}".into()) };
    for key in obj.keys() {
        if !["text", "image", "dicom", "embedding", "window", "frame", "adapter"].contains(&key.as_str()) {
            bad_query(format!("unknown query key \"{key}\" (text, image, dicom with window and frame, or embedding; optionally adapter)"));
        }
    }
    let adapter = obj.get("adapter").map(|a| match a.as_str() {
        Some(name) if !name.trim().is_empty() => name.to_string(),
        _ => bad_query("query \"adapter\" must be the name of an adapter".into()),
    });
    let mut q = parse_input(obj, ext);
    if let Some(name) = &adapter {
        // The adapter of the query's tower, run as the caller like the embedding itself.
        let tower = match q.kind {
            "text" => "text",
            "image" | "dicom" => "image",
            _ => bad_query("an \"embedding\" query is used as given: apply biomedclip_adapt_image or biomedclip_adapt_text to it first".into()),
        };
        q.embed_expr = format!("{ext}.biomedclip_adapt_{tower}(${}, {})", q.args.len() + 1, q.embed_expr);
        q.args.push(QueryArg::Text(name.clone()));
    }
    q.adapter = adapter;
    q
}

/// The query's input (without its adapter).
fn parse_input(obj: &serde_json::Map<String, Value>, ext: &str) -> Query {
    let kinds: Vec<&str> = ["text", "image", "dicom", "embedding"].into_iter().filter(|k| obj.contains_key(*k)).collect();
    if kinds.len() != 1 {
        bad_query("query needs exactly one of \"text\", \"image\", \"dicom\" or \"embedding\"".into());
    }
    if kinds[0] != "dicom" && (obj.contains_key("window") || obj.contains_key("frame")) {
        bad_query("\"window\" and \"frame\" go with a \"dicom\" query".into());
    }
    match kinds[0] {
        "text" => {
            let Some(text) = obj["text"].as_str() else { bad_query("query \"text\" must be a string".into()) };
            Query {
                kind: "text",
                hashed: normalize_query_text(text).into_bytes(),
                embed_expr: format!("{ext}.biomedclip_embed_text($1)"),
                args: vec![QueryArg::Text(text.to_string())],
                adapter: None,
            }
        }
        "image" => {
            let bytes = base64_field(&obj["image"], "image");
            Query {
                kind: "image",
                hashed: bytes.clone(),
                embed_expr: format!("{ext}.biomedclip_embed_image($1)"),
                args: vec![QueryArg::Bytes(bytes)],
                adapter: None,
            }
        }
        "dicom" => {
            let bytes = base64_field(&obj["dicom"], "dicom");
            let window = match obj.get("window") {
                None => "auto".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => bad_query("query \"window\" must be a string such as \"auto\", a preset or \"C/W\"".into()),
            };
            let frame = match obj.get("frame") {
                None => 0,
                Some(v) => v.as_i64().and_then(|f| i32::try_from(f).ok()).unwrap_or_else(|| bad_query("query \"frame\" must be an integer".into())),
            };
            Query {
                kind: "dicom",
                hashed: bytes.clone(),
                embed_expr: format!("{ext}.biomedclip_embed_dicom($1, $2, $3)"),
                args: vec![QueryArg::Bytes(bytes), QueryArg::Text(window), QueryArg::Int(frame)],
                adapter: None,
            }
        }
        _ => {
            let Some(items) = obj["embedding"].as_array() else { bad_query("query \"embedding\" must be an array of numbers".into()) };
            let values: Vec<f32> = items
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32).filter(|x| x.is_finite()).unwrap_or_else(|| bad_query("query \"embedding\" must hold finite numbers only".into())))
                .collect();
            if values.is_empty() || values.len() > 16000 {
                bad_query(format!("query \"embedding\" has {} elements (1 to 16000)", values.len()));
            }
            let text = format!("[{}]", values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
            let hashed = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Query { kind: "embedding", hashed, embed_expr: "$1".into(), args: vec![QueryArg::Text(text)], adapter: None }
        }
    }
}

/// The query's embedding as text, computed as the caller (EXECUTE on the model functions needed).
fn embed_query(q: &Query) -> String {
    let args: Vec<pgrx::datum::DatumWithOid> = q
        .args
        .iter()
        .map(|a| match a {
            QueryArg::Text(s) => s.as_str().into(),
            QueryArg::Bytes(b) => b.as_slice().into(),
            QueryArg::Int(i) => (*i).into(),
        })
        .collect();
    let sql = format!("SELECT ({})::pg_catalog.text", q.embed_expr);
    crate::pinned_search_path::first_value::<String>(&sql, &args).unwrap_or_else(|| bad_query(format!("the {} query could not be embedded (biomedclip.on_error = null returned NULL)", q.kind)))
}

/// `WHERE` conditions on display columns, with their values as text parameters from `$first`.
fn filter_sql(filters: &Value, c: &Collection, first: usize) -> (Vec<String>, Vec<String>, Vec<String>) {
    let Some(obj) = filters.as_object() else { bad_query("filters must be a JSON object such as {\"modality\": \"CT\"}".into()) };
    let (mut conds, mut values, mut columns) = (Vec::new(), Vec::new(), Vec::new());
    let scalar = |v: &Value, col: &str| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => bad_query(format!("filter on \"{col}\": a value must be a string, number or boolean")),
        }
    };
    for (col, cond) in obj {
        let Some((_, quoted, ty)) = c.display.iter().find(|(n, _, _)| n == col) else {
            bad_query(format!("\"{col}\" is not a display column of this collection; filters may name display columns only"));
        };
        columns.push(col.clone());
        let mut push = |op: &str, v: &Value| {
            values.push(scalar(v, col));
            conds.push(format!("t.{quoted} OPERATOR(pg_catalog.{op}) ${}::{ty}", first + values.len() - 1));
        };
        match cond {
            Value::Null => conds.push(format!("t.{quoted} IS NULL")),
            Value::Object(range) => {
                if range.is_empty() {
                    bad_query(format!("filter on \"{col}\": an empty range"));
                }
                for (op, v) in range {
                    let sql_op = match op.as_str() {
                        "eq" => "=",
                        "gt" => ">",
                        "gte" => ">=",
                        "lt" => "<",
                        "lte" => "<=",
                        _ => bad_query(format!("filter on \"{col}\": unknown condition \"{op}\" (eq, gt, gte, lt, lte)")),
                    };
                    push(sql_op, v);
                }
            }
            v => push("=", v),
        }
    }
    (conds, values, columns)
}

type SearchRow = (i32, Option<String>, f64, JsonB, Option<i64>);

#[pg_extern(sql = false)]
fn biomedclip_search(
    collection: Option<&str>,
    query: Option<JsonB>,
    k: Option<i32>,
    filters: Option<JsonB>,
) -> TableIterator<'static, (name!(rank, i32), name!(id, Option<String>), name!(distance, f64), name!(display, JsonB), name!(query_id, Option<i64>))> {
    let started = std::time::Instant::now();
    let (Some(collection), Some(JsonB(query))) = (collection, query) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "collection and query are required".into());
    };
    let k = k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        bad_query(format!("k must be between 1 and {MAX_K}, not {k}"));
    }
    let filters = filters.map(|f| f.0).unwrap_or(Value::Object(Default::default()));
    let ext = extension_info();
    let c = load_collection(collection);
    let q = parse_query(&query, &ext.schema_sql);
    let (conds, filter_values, filter_columns) = filter_sql(&filters, &c, 3 + c.display.len());
    let embedding = embed_query(&q);

    let display_pairs: Vec<String> = c.display.iter().enumerate().map(|(i, (_, quoted, _))| format!("${}::pg_catalog.text, t.{quoted}", 3 + i)).collect();
    let distance = format!("t.{} OPERATOR({}.<=>) $1::{}.embedding", c.embedding_sql, ext.schema_sql, ext.schema_sql);
    let mut where_sql = format!("t.{} IS NOT NULL", c.embedding_sql);
    for cond in &conds {
        where_sql.push_str(" AND ");
        where_sql.push_str(cond);
    }
    let sql = format!(
        "SELECT (t.{id})::pg_catalog.text, ({distance})::pg_catalog.float8, pg_catalog.jsonb_build_object({pairs}) \
         FROM {table} AS t WHERE {where_sql} ORDER BY {distance} LIMIT $2",
        id = c.id_sql,
        pairs = display_pairs.join(", "),
        table = c.table_sql,
    );
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![embedding.as_str().into(), (k as i64).into()];
    args.extend(c.display.iter().map(|(n, _, _)| n.as_str().into()));
    args.extend(filter_values.iter().map(|v| v.as_str().into()));
    let rows: Vec<(Option<String>, f64, JsonB)> = with_pinned_search_path(|| {
        Spi::connect(|client| {
            let table = client.select(sql.as_str(), None, &args)?;
            let mut out = Vec::with_capacity(k as usize);
            for r in table {
                out.push((r.get::<String>(1)?, r.get::<f64>(2)?.unwrap_or(f64::NAN), r.get::<JsonB>(3)?.unwrap_or(JsonB(Value::Null))));
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_else(|e| error!("{e}"));

    let query_id = settings::QUERY_LOG.get().then(|| {
        let key = query_log_sql::key();
        query_log_sql::write(LoggedSearch {
            collection,
            model_sha256: if q.kind == "embedding" { None } else { model_cache::active_manifest_sha256() },
            adapter: q.adapter.clone(),
            query_kind: q.kind,
            query_hmac: keyed_hash(&key, q.kind, &q.hashed),
            k,
            filter_columns,
            result_ids: rows.iter().map(|r| r.0.clone().unwrap_or_default()).collect(),
            distances: rows.iter().map(|r| r.1).collect(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    });
    let out: Vec<SearchRow> = rows.into_iter().enumerate().map(|(i, (id, d, display))| (i as i32 + 1, id, d, display, query_id)).collect();
    TableIterator::new(out)
}

#[pg_extern(sql = false)]
fn biomedclip_thumbnail(collection: &str, id: &str) -> Option<Vec<u8>> {
    let c = load_collection(collection);
    let thumbnail = c.thumbnail_sql.as_ref()?;
    let sql = format!(
        "SELECT ({thumbnail})::pg_catalog.bytea FROM {table} AS t WHERE t.{id_col} OPERATOR(pg_catalog.=) $1::{id_type} LIMIT 1",
        table = c.table_sql,
        id_col = c.id_sql,
        id_type = c.id_type,
    );
    crate::pinned_search_path::first_value::<Vec<u8>>(&sql, &[id.into()])
}
