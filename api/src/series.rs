//! `GET /v1/series`: hourly (or daily) buckets of the series matching a service, metric
//! and tag filter over a time range, read from Postgres. Days merge hourly sketches,
//! never average percentiles.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tidemark_core::bucket::HOUR_MS;
use tidemark_core::db::{bucket_from_row, BUCKET_COLUMNS};
use tidemark_core::http::ApiError;
use tidemark_core::sample::{format_instant, parse_instant};
use tidemark_core::Bucket;

use crate::ApiState;

const DAY_MS: i64 = 24 * HOUR_MS;
const MAX_RANGE_MS: i64 = 400 * DAY_MS;

#[derive(Debug, Deserialize)]
pub struct SeriesQuery {
    service: Option<String>,
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `k=v,k2=v2`: series whose tags include all these pairs.
    tags: Option<String>,
    step: Option<String>,
}

/// Statistics of one bucket as the API shows them.
#[derive(Debug, Serialize)]
pub struct BucketView {
    pub start: String,
    pub start_ms: i64,
    pub count: u64,
    pub error_count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl BucketView {
    pub fn new(start_ms: i64, b: &Bucket) -> Self {
        Self {
            start: format_instant(start_ms),
            start_ms,
            count: b.count,
            error_count: b.error_count,
            sum: b.sum,
            min: b.min,
            max: b.max,
            avg: b.avg(),
            p50: b.quantile(0.5),
            p90: b.quantile(0.9),
            p95: b.quantile(0.95),
            p99: b.quantile(0.99),
        }
    }
}

#[derive(Debug, Serialize)]
struct SeriesView {
    service: String,
    metric: String,
    tags: serde_json::Value,
    buckets: Vec<BucketView>,
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_query", format!("{name}: is required")))
}

fn instant(value: &Option<String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match value.as_deref() {
        None | Some("") => Ok(default),
        Some(text) => parse_instant(text)
            .map_err(|e| ApiError::bad_request("invalid_query", format!("{name}: {e}"))),
    }
}

fn tag_filter(tags: &Option<String>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in tags
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("tags: expected key=value pairs separated by commas, got {pair:?}"),
            )
        })?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

pub async fn get_series(
    State(state): State<ApiState>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let service = required(&q.service, "service")?;
    let metric = required(&q.metric, "metric")?;
    let now = chrono::Utc::now().timestamp_millis();
    let to = instant(&q.to, "to", now)?;
    let from = instant(&q.from, "from", to - DAY_MS)?;
    if from > to || to - from > MAX_RANGE_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from: must not be after to, and the range at most 400 days",
        ));
    }
    let step = match q.step.as_deref() {
        None | Some("1h") => HOUR_MS,
        Some("1d") => DAY_MS,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("step: {other:?} is not supported; use 1h or 1d"),
            ))
        }
    };
    let tags = tag_filter(&q.tags)?;
    let rows = sqlx::query(&format!(
        "SELECT s.id, s.tags::text, (extract(epoch FROM b.hour) * 1000)::bigint, {BUCKET_COLUMNS} \
         FROM series s JOIN buckets b ON b.series_id = s.id \
         WHERE s.service = $1 AND s.metric = $2 AND s.tags @> $3::jsonb \
           AND b.hour >= to_timestamp($4 / 1000.0) AND b.hour < to_timestamp($5 / 1000.0) \
         ORDER BY s.id, b.hour"
    ))
    .bind(service)
    .bind(metric)
    .bind(serde_json::to_string(&tags).expect("string map serialises"))
    .bind(from.div_euclid(step) * step)
    .bind(to)
    .fetch_all(&state.pool)
    .await
    .map_err(anyhow::Error::from)?;

    let mut by_series: Vec<(i64, String, BTreeMap<i64, Bucket>)> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    for r in &rows {
        let id: i64 = r.get(0);
        let slot = *index.entry(id).or_insert_with(|| {
            by_series.push((id, r.get(1), BTreeMap::new()));
            by_series.len() - 1
        });
        let start = r.get::<i64, _>(2).div_euclid(step) * step;
        let bucket = bucket_from_row(r, 3).map_err(anyhow::Error::from)?;
        by_series[slot].2.entry(start).or_default().merge(&bucket);
    }
    let series: Vec<SeriesView> = by_series
        .into_iter()
        .map(|(_, tags, buckets)| SeriesView {
            service: service.to_owned(),
            metric: metric.to_owned(),
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            buckets: buckets
                .iter()
                .map(|(start, b)| BucketView::new(*start, b))
                .collect(),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "from": format_instant(from),
        "to": format_instant(to),
        "step": if step == DAY_MS { "1d" } else { "1h" },
        "series": series,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters_parse_and_reject_garbage() {
        let t = tag_filter(&Some("region=eu,host=a".into())).unwrap();
        assert_eq!(t.get("region").map(String::as_str), Some("eu"));
        assert_eq!(t.len(), 2);
        assert!(tag_filter(&Some("region".into())).is_err());
        assert!(tag_filter(&None).unwrap().is_empty());
    }

    #[test]
    fn bucket_views_report_merged_percentiles() {
        let mut b = Bucket::default();
        for v in 1..=100 {
            b.add(f64::from(v), 1, v % 10 == 0, 0);
        }
        let view = BucketView::new(0, &b);
        assert_eq!(
            (view.count, view.error_count, view.min, view.max),
            (100, 10, 1.0, 100.0)
        );
        let p50 = view.p50.unwrap();
        assert!((p50 - 50.0).abs() / 50.0 <= 0.01, "{p50}");
        assert_eq!(view.start, "1970-01-01T00:00:00.000Z");
    }
}
