//! `GET /v1/series`: hourly (or daily) buckets of the series matching a service, metric
//! and tag filter over a time range, read from Postgres. Days merge hourly sketches,
//! never average percentiles.

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tidemark_model::bucket::HOUR_MS;
use tidemark_model::sample::STORABLE_MS;
use tidemark_model::time::format_instant;
use tidemark_model::Bucket;
use tidemark_runtime::http::{self, ApiError};
use tidemark_store::reads::{self, SeriesBucket, SeriesFilter};

use crate::params;
use crate::ApiState;

const DAY_MS: i64 = 24 * HOUR_MS;

/// The longest range (`to - from`) one request may span: 400 days, so a year with room
/// to spare, and one series over it (9,600 hours) fits in [`MAX_BUCKET_ROWS`].
pub const MAX_RANGE_MS: i64 = 400 * DAY_MS;
const MAX_RANGE_DAYS: i64 = MAX_RANGE_MS / DAY_MS;

/// The most hourly bucket rows one request reads from Postgres (and decodes, sketch and
/// all). The query asks for one row more (`LIMIT`, unordered so Postgres stops there),
/// so finding out costs nothing; a request that would read more is refused with `400`,
/// never truncated silently. `step=1d` does not lower the count: days are merged from
/// the same hourly rows.
pub const MAX_BUCKET_ROWS: usize = 10_000;

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

/// The validated parameters of a series query: nothing here can make SQL fail.
#[derive(Debug, PartialEq)]
struct Params<'a> {
    service: &'a str,
    metric: &'a str,
    from: i64,
    to: i64,
    step: i64,
    tags: BTreeMap<String, String>,
}

fn validate(q: &SeriesQuery, now: i64) -> Result<Params<'_>, ApiError> {
    let service = params::service("invalid_query", "service", required(&q.service, "service")?)?;
    let metric = params::metric("invalid_query", "metric", required(&q.metric, "metric")?)?;
    let to = params::instant(
        q.to.as_deref(),
        "to",
        now.clamp(*STORABLE_MS.start(), *STORABLE_MS.end()),
    )?;
    let from = params::instant(
        q.from.as_deref(),
        "from",
        (to - DAY_MS).max(*STORABLE_MS.start()),
    )?;
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from: must not be after to",
        ));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("from: the range from..to may span at most {MAX_RANGE_DAYS} days"),
        ));
    }
    let step = match q.step.as_deref() {
        None | Some("1h") => HOUR_MS,
        Some("1d") => DAY_MS,
        Some(_) => return Err(ApiError::bad_request("invalid_query", "step: use 1h or 1d")),
    };
    let tags = params::tags(q.tags.as_deref())?;
    Ok(Params {
        service,
        metric,
        from,
        to,
        step,
        tags,
    })
}

fn too_many_rows() -> ApiError {
    ApiError::bad_request(
        "query_too_large",
        format!(
            "the query matches more than {MAX_BUCKET_ROWS} hourly buckets, the most one request \
             reads; narrow it with a shorter range (from/to) or a tags filter (tags=key=value) \
             that matches fewer series (step=1d merges the same hourly buckets, so it does not \
             help)"
        ),
    )
}

/// `GET /v1/series`: `400` for a query that asks for what no sample could have stored or
/// that matches more than [`MAX_BUCKET_ROWS`] hourly buckets.
pub async fn get_series(
    State(state): State<ApiState>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("query: {}", http::quote_within(&e.body_text())),
        )
    })?;
    let p = validate(&q, chrono::Utc::now().timestamp_millis())?;
    let filter = SeriesFilter {
        service: p.service,
        metric: p.metric,
        tags: &p.tags,
        from_ms: p.from.div_euclid(p.step) * p.step,
        to_ms: p.to,
    };
    let rows = reads::series_buckets(&state.pool, &filter, MAX_BUCKET_ROWS)
        .await?
        .ok_or_else(too_many_rows)?;
    Ok(Json(render(&p, fold(rows, p.step))))
}

/// One series' buckets, merged into steps.
#[derive(Debug)]
struct Folded {
    /// The series' tags, a JSON object.
    tags_json: String,
    /// Buckets by the start of their step.
    steps: BTreeMap<i64, Bucket>,
}

/// Merges the hourly rows of each series into steps of `step` ms; series come out in id
/// order, steps in time order.
fn fold(rows: Vec<SeriesBucket>, step: i64) -> Vec<Folded> {
    let mut by_series: Vec<(i64, Folded)> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    for row in rows {
        let slot = *index.entry(row.series_id).or_insert_with(|| {
            let folded = Folded {
                tags_json: row.tags_json,
                steps: BTreeMap::new(),
            };
            by_series.push((row.series_id, folded));
            by_series.len() - 1
        });
        let start = row.hour_ms.div_euclid(step) * step;
        by_series[slot]
            .1
            .steps
            .entry(start)
            .or_default()
            .merge(&row.bucket);
    }
    // Ordered here rather than in SQL, so that Postgres can stop at the limit instead of
    // sorting every matching row first (hours are ordered by each series' map).
    by_series.sort_unstable_by_key(|(id, _)| *id);
    by_series.into_iter().map(|(_, folded)| folded).collect()
}

/// The response body: the folded series of the query `params`.
fn render(params: &Params<'_>, series: Vec<Folded>) -> serde_json::Value {
    let series: Vec<SeriesView> = series
        .into_iter()
        .map(|folded| SeriesView {
            service: params.service.to_owned(),
            metric: params.metric.to_owned(),
            tags: serde_json::from_str(&folded.tags_json).unwrap_or_default(),
            buckets: folded
                .steps
                .iter()
                .map(|(start, b)| BucketView::new(*start, b))
                .collect(),
        })
        .collect();
    serde_json::json!({
        "from": format_instant(params.from),
        "to": format_instant(params.to),
        "step": if params.step == DAY_MS { "1d" } else { "1h" },
        "series": series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> SeriesQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        };
        SeriesQuery {
            service: get("service"),
            metric: get("metric"),
            from: get("from"),
            to: get("to"),
            tags: get("tags"),
            step: get("step"),
        }
    }

    const NOW: i64 = 1_790_000_000_000;

    /// The message of the 400 that `pairs` (added to a valid query) get.
    fn refusal(pairs: &[(&str, &str)]) -> String {
        let mut all = vec![("service", "checkout"), ("metric", "http.server.duration")];
        all.extend_from_slice(pairs);
        let mut unique: Vec<(&str, &str)> = Vec::new();
        for (k, v) in all.into_iter().rev() {
            if !unique.iter().any(|(seen, _)| *seen == k) {
                unique.push((k, v));
            }
        }
        match validate(&query(&unique), NOW) {
            Err(ApiError::BadRequest { code, message }) => {
                assert_eq!(code, "invalid_query");
                message
            }
            other => panic!("{pairs:?}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn defaults_cover_the_last_day() {
        let q = query(&[("service", "checkout"), ("metric", "m:x")]);
        let p = validate(&q, NOW).unwrap();
        assert_eq!((p.from, p.to, p.step), (NOW - DAY_MS, NOW, HOUR_MS));
        // A `to` near the epoch does not push the default `from` before it.
        let q = query(&[("service", "a"), ("metric", "m"), ("to", "1000")]);
        assert_eq!(validate(&q, NOW).unwrap().from, 0);
    }

    #[test]
    fn instants_outside_what_the_stores_hold_name_their_parameter() {
        // Issue 14: these answered 500 (overflow, Postgres "timestamp out of range").
        let min = i64::MIN.to_string();
        let max = i64::MAX.to_string();
        for (k, v) in [("from", min.as_str()), ("to", max.as_str()), ("from", "-1")] {
            let m = refusal(&[(k, v)]);
            assert!(m.starts_with(&format!("{k}: must be between")), "{m}");
        }
        let m = refusal(&[("from", &min), ("to", &max)]);
        assert!(m.starts_with("to: "), "{m}");
        let m = refusal(&[("to", &(STORABLE_MS.end() + 1).to_string())]);
        assert!(m.contains("9999-12-31T23:59:59.999Z"), "{m}");
        assert!(refusal(&[("to", "tomorrow")]).starts_with("to: "));
        let edge = query(&[
            ("service", "a"),
            ("metric", "m"),
            ("from", "9999-12-01T00:00:00Z"),
            ("to", "9999-12-31T23:59:59.999Z"),
            ("step", "1d"),
        ]);
        assert_eq!(validate(&edge, NOW).unwrap().to, *STORABLE_MS.end());
    }

    #[test]
    fn the_range_is_bounded() {
        let to = NOW.to_string();
        let at_max = (NOW - MAX_RANGE_MS).to_string();
        let past_max = (NOW - MAX_RANGE_MS - 1).to_string();
        let q = query(&[
            ("service", "a"),
            ("metric", "m"),
            ("from", &at_max),
            ("to", &to),
        ]);
        assert!(validate(&q, NOW).is_ok());
        let m = refusal(&[("from", &past_max), ("to", &to)]);
        assert!(m.contains("at most 400 days"), "{m}");
        let m = refusal(&[("from", &to), ("to", &at_max)]);
        assert_eq!(m, "from: must not be after to");
        assert!(refusal(&[("step", "5m")]).starts_with("step: "));
    }

    #[test]
    fn names_follow_the_sample_rules() {
        let long = "x".repeat(129);
        for (k, v) in [
            ("service", "\0"),
            ("service", "a b"),
            ("service", "a:b"),
            ("service", long.as_str()),
            ("metric", "a\0"),
            ("metric", "a/b"),
            ("metric", "café"),
        ] {
            let m = refusal(&[(k, v)]);
            assert!(
                m.starts_with(&format!("{k}: must be 1-128 characters"))
                    || m.starts_with(&format!("{k}: may contain only [A-Za-z0-9._")),
                "{m}"
            );
            assert!(!m.contains('\0'));
        }
        assert_eq!(refusal(&[("service", "")]), "service: is required");
        let ok = query(&[("service", &"s".repeat(128)), ("metric", "a.b:c_d-1")]);
        assert!(validate(&ok, NOW).is_ok());
    }

    #[test]
    fn tag_filters_parse_and_reject_garbage() {
        let q = query(&[
            ("service", "a"),
            ("metric", "m"),
            ("tags", "region=eu,host=a"),
        ]);
        let t = validate(&q, NOW).unwrap().tags;
        assert_eq!(t.get("region").map(String::as_str), Some("eu"));
        assert_eq!(t.len(), 2);
        let long_value = format!("k={}", "é".repeat(257));
        let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
        let many = many.join(",");
        for tags in ["region", "k=a\0b", "bad key=v", "=v", &long_value, &many] {
            let m = refusal(&[("tags", tags)]);
            assert!(m.starts_with("tags: "), "{tags:?}: {m}");
        }
        let wide = format!("k={}", "é".repeat(256));
        let q = query(&[("service", "a"), ("metric", "m"), ("tags", &wide)]);
        assert!(validate(&q, NOW).is_ok());
    }

    #[test]
    fn the_row_cap_message_says_the_cap_and_how_to_narrow() {
        let m = too_many_rows().to_string();
        for part in ["10000", "shorter range", "tags"] {
            assert!(m.contains(part), "{m}");
        }
    }

    fn row(series_id: i64, hour_ms: i64, value: f64) -> SeriesBucket {
        let mut bucket = Bucket::default();
        bucket.add(value, 1, false, hour_ms);
        SeriesBucket {
            series_id,
            tags_json: format!(r#"{{"n": "{series_id}"}}"#),
            hour_ms,
            bucket,
        }
    }

    #[test]
    fn rows_fold_into_steps_per_series_in_id_order() {
        let day = 3 * DAY_MS;
        let rows = vec![
            row(9, day + 5 * HOUR_MS, 1.0),
            row(-4, day, 2.0),
            row(9, day + 2 * HOUR_MS, 3.0),
            row(-4, day + DAY_MS, 4.0),
        ];
        let hourly = fold(rows.clone(), HOUR_MS);
        let ids: Vec<&str> = hourly.iter().map(|f| f.tags_json.as_str()).collect();
        assert_eq!(ids, [r#"{"n": "-4"}"#, r#"{"n": "9"}"#]);
        let starts: Vec<i64> = hourly[1].steps.keys().copied().collect();
        assert_eq!(starts, [day + 2 * HOUR_MS, day + 5 * HOUR_MS]);

        let daily = fold(rows, DAY_MS);
        let merged = &daily[1].steps[&day];
        assert_eq!((merged.count, merged.sum), (2, 4.0));
        let starts: Vec<i64> = daily[0].steps.keys().copied().collect();
        assert_eq!(starts, [day, day + DAY_MS]);
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
