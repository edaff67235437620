//! `biomedclip_drift_report`: per collection and UTC day, how the search log's distances,
//! clicks and corrections move against a baseline period. Reads the log as the caller (a
//! monitoring role needs SELECT on biomedclip.query_log and biomedclip.query_feedback); the
//! statistics are biomedclip_core::drift's (numpy-compatible quantiles, PSI at baseline deciles).

use crate::pinned_search_path::with_pinned_search_path;
use biomedclip_core::drift::{psi, quantile_sorted, sorted_finite, PSI_MAJOR, PSI_MODERATE};
use pgrx::datum::{Interval, Range, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A day's correction rate is flagged when it is above this and twice the baseline's.
const CORRECTION_FLOOR: f64 = 0.05;

struct LogRow {
    collection: String,
    day: String,
    in_window: bool,
    distances: Vec<f64>,
    clicked_ranks: Vec<i32>,
    corrected: bool,
}

#[derive(Default)]
struct Group {
    top1: Vec<f64>,
    topk: Vec<f64>,
    queries: usize,
    corrected: usize,
    clicks_by_rank: BTreeMap<i32, usize>,
    max_k: usize,
}

impl Group {
    fn add(&mut self, r: &LogRow) {
        self.queries += 1;
        if let Some(&d) = r.distances.first() {
            self.top1.push(d);
        }
        self.topk.extend(&r.distances);
        self.max_k = self.max_k.max(r.distances.len());
        self.corrected += r.corrected as usize;
        for &rank in &r.clicked_ranks {
            *self.clicks_by_rank.entry(rank).or_default() += 1;
        }
    }

    fn correction_rate(&self) -> f64 {
        self.corrected as f64 / self.queries.max(1) as f64
    }
}

fn quantiles(values: &[f64]) -> Value {
    let s = sorted_finite(values);
    json!({
        "n": s.len(),
        "p10": quantile_sorted(&s, 0.1),
        "p50": quantile_sorted(&s, 0.5),
        "p90": quantile_sorted(&s, 0.9),
    })
}

fn read_log(window: Interval, baseline: Option<Range<TimestampWithTimeZone>>) -> (Vec<LogRow>, String) {
    with_pinned_search_path(|| {
        Spi::connect(|client| {
            let bounds = client.select(
                "SELECT COALESCE($2, pg_catalog.tstzrange(pg_catalog.now() OPERATOR(pg_catalog.-) ($1 OPERATOR(pg_catalog.*) 2::pg_catalog.float8), \
                                                         pg_catalog.now() OPERATOR(pg_catalog.-) $1))::pg_catalog.text",
                None,
                &[window.into(), baseline.clone().into()],
            )?;
            let baseline_text = bounds.first().get_one::<String>()?.unwrap_or_default();
            let rows = client.select(
                "WITH b AS (SELECT COALESCE($2, pg_catalog.tstzrange(pg_catalog.now() OPERATOR(pg_catalog.-) ($1 OPERATOR(pg_catalog.*) 2::pg_catalog.float8), \
                                                                    pg_catalog.now() OPERATOR(pg_catalog.-) $1)) AS r) \
                 SELECT l.collection, pg_catalog.timezone('UTC', l.at)::pg_catalog.date::pg_catalog.text, \
                        l.at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) $1), l.distances, \
                        ARRAY(SELECT DISTINCT f.result_rank FROM biomedclip.query_feedback f WHERE f.query_id OPERATOR(pg_catalog.=) l.query_id \
                              AND f.action OPERATOR(pg_catalog.=) ANY (ARRAY['click', 'relevant']) AND f.result_rank IS NOT NULL), \
                        EXISTS (SELECT 1 FROM biomedclip.query_feedback f WHERE f.query_id OPERATOR(pg_catalog.=) l.query_id \
                                AND f.action OPERATOR(pg_catalog.=) ANY (ARRAY['wrong', 'correction'])) \
                 FROM biomedclip.query_log l, b \
                 WHERE l.at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) $1) OR l.at OPERATOR(pg_catalog.<@) b.r \
                 ORDER BY l.collection, l.at",
                None,
                &[window.into(), baseline.into()],
            )?;
            let mut out = Vec::new();
            for r in rows {
                out.push(LogRow {
                    collection: r.get::<String>(1)?.unwrap_or_default(),
                    day: r.get::<String>(2)?.unwrap_or_default(),
                    in_window: r.get::<bool>(3)?.unwrap_or(false),
                    distances: r.get::<Vec<f64>>(4)?.unwrap_or_default(),
                    clicked_ranks: r.get::<Vec<i32>>(5)?.unwrap_or_default(),
                    corrected: r.get::<bool>(6)?.unwrap_or(false),
                });
            }
            Ok::<_, pgrx::spi::Error>((out, baseline_text))
        })
    })
    .unwrap_or_else(|e| error!("{e}"))
}

#[pg_extern(sql = false)]
fn biomedclip_drift_report(window: Option<Interval>, baseline: Option<Range<TimestampWithTimeZone>>) -> JsonB {
    let window = window.unwrap_or_else(|| error!("window is required"));
    let (rows, baseline_text) = read_log(window, baseline);
    let mut baselines: BTreeMap<&str, Group> = BTreeMap::new();
    let mut days: BTreeMap<&str, BTreeMap<&str, Group>> = BTreeMap::new();
    for r in &rows {
        if r.in_window {
            days.entry(&r.collection).or_default().entry(&r.day).or_default().add(r);
        } else {
            baselines.entry(&r.collection).or_default().add(r);
        }
    }
    let mut collections = Map::new();
    for (name, by_day) in &days {
        let empty = Group::default();
        let base = baselines.get(name).unwrap_or(&empty);
        let base_rate = base.correction_rate();
        let mut out_days = Vec::new();
        for (day, g) in by_day {
            let p = psi(&base.top1, &g.top1);
            let rate = g.correction_rate();
            let mut flags = Vec::new();
            match p {
                None => flags.push("no_baseline"),
                Some(v) if v >= PSI_MAJOR => flags.push("top1_distance_shift"),
                Some(v) if v >= PSI_MODERATE => flags.push("top1_distance_moderate_shift"),
                _ => {}
            }
            if rate > CORRECTION_FLOOR && (base.queries == 0 || rate > 2.0 * base_rate) {
                flags.push("corrections_up");
            }
            let ctr: Vec<f64> = (1..=g.max_k as i32).map(|rank| *g.clicks_by_rank.get(&rank).unwrap_or(&0) as f64 / g.queries as f64).collect();
            out_days.push(json!({
                "day": day,
                "queries": g.queries,
                "top1_distance": quantiles(&g.top1),
                "topk_distance": quantiles(&g.topk),
                "click_through_by_rank": ctr,
                "correction_rate": rate,
                "psi_top1": p,
                "flags": flags,
            }));
        }
        collections.insert(
            name.to_string(),
            json!({
                "baseline": {"queries": base.queries, "top1_distance": quantiles(&base.top1), "correction_rate": base_rate},
                "days": out_days,
            }),
        );
    }
    JsonB(json!({
        "baseline": baseline_text,
        "thresholds": {"psi_moderate": PSI_MODERATE, "psi_major": PSI_MAJOR, "correction_rate_floor": CORRECTION_FLOOR},
        "collections": collections,
    }))
}
