//! Per-service health of the current hour: status, throughput, error rate, latency
//! quantiles, the last sample time and the firing alerts. Reads the buckets from the
//! Redis hot copy when it is marked complete, Postgres otherwise, and the firing alerts
//! from Postgres; [`status`] combines the numbers' status with the worst firing alert.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use tidemark_model::bucket::{hour_start, HOUR_MS};
use tidemark_model::time::format_instant;
use tidemark_model::Bucket;
use tidemark_rules::rule::Severity;
use tidemark_runtime::http::ApiError;
use tidemark_store::alerts::{self as stored_alerts, FiringCount};
use tidemark_store::hot;
use tidemark_store::reads::{self, ServiceBucket};

use crate::{params, ApiState};

/// No sample for this long makes a service `stale`.
const STALE_AFTER_MS: i64 = 10 * 60_000;
const DEGRADED_ERROR_RATE: f64 = 0.05;
const DOWN_ERROR_RATE: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Down,
    Stale,
}

impl Status {
    /// The value of the `tidemark_service_health_status` gauge.
    pub fn gauge(self) -> f64 {
        self as u8 as f64
    }
}

/// The status the numbers alone give: from the current hour and the last sample time.
pub fn numbers_status(now_ms: i64, last_sample_ms: Option<i64>, current: &Bucket) -> Status {
    match last_sample_ms {
        Some(last) if now_ms - last <= STALE_AFTER_MS => match current.error_rate() {
            Some(r) if r >= DOWN_ERROR_RATE => Status::Down,
            Some(r) if r >= DEGRADED_ERROR_RATE => Status::Degraded,
            _ => Status::Healthy,
        },
        _ => Status::Stale,
    }
}

/// A service's status: what its numbers say, made worse by its most severe firing
/// alert (`worst`): critical makes it `down`, warning at least `degraded`, info changes
/// nothing. An alert also overrides `stale`, which is only the absence of numbers: a
/// dead man's switch (`absent` rule) firing critical for a silent service shows `down`.
pub fn status(numbers: Status, worst: Option<Severity>) -> Status {
    match (numbers, worst) {
        (_, Some(Severity::Critical)) => Status::Down,
        (Status::Healthy | Status::Stale, Some(Severity::Warning)) => Status::Degraded,
        (numbers, _) => numbers,
    }
}

/// A service's firing alerts by severity: why its status may be worse than its numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FiringAlerts {
    /// Of every severity.
    pub firing: i64,
    pub critical: i64,
    pub warning: i64,
}

impl FiringAlerts {
    /// Each service's firing alerts from the store's counts.
    fn by_service(counts: Vec<FiringCount>) -> BTreeMap<String, FiringAlerts> {
        let mut services = BTreeMap::<String, FiringAlerts>::new();
        for FiringCount {
            service,
            severity,
            count,
        } in counts
        {
            let alerts = services.entry(service).or_default();
            alerts.firing += count;
            match severity.as_str() {
                "critical" => alerts.critical += count,
                "warning" => alerts.warning += count,
                _ => {}
            }
        }
        services
    }

    /// The most severe of them; `None` when none fires.
    fn worst(&self) -> Option<Severity> {
        if self.critical > 0 {
            Some(Severity::Critical)
        } else if self.warning > 0 {
            Some(Severity::Warning)
        } else if self.firing > 0 {
            Some(Severity::Info)
        } else {
            None
        }
    }
}

/// Statistics of one metric (or one service) over the current hour.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub count: u64,
    pub error_count: u64,
    pub throughput_per_s: f64,
    pub error_rate: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Stats {
    fn new(b: &Bucket, elapsed_s: f64) -> Self {
        Self {
            count: b.count,
            error_count: b.error_count,
            throughput_per_s: b.count as f64 / elapsed_s,
            error_rate: b.error_rate(),
            p50: b.quantile(0.5),
            p95: b.quantile(0.95),
            p99: b.quantile(0.99),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceHealth {
    pub service: String,
    /// By [`status`], from the numbers and `alerts`.
    pub status: Status,
    pub alerts: FiringAlerts,
    pub last_sample_at: Option<String>,
    pub hour_start: String,
    /// All of the service's samples this hour; quantiles are those of `latency_metric`.
    pub current_hour: Stats,
    pub latency_metric: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, Stats>>,
    pub source: &'static str,
}

/// The health of every service, computed at most once per [`OVERVIEW_TTL`] and shared by
/// the requests and the `/metrics` gauges meanwhile (they wait for one computation
/// rather than each running their own: an all-services view costs milliseconds of CPU
/// and one query of the firing alerts).
#[derive(Default)]
pub struct Overview {
    slot: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Vec<ServiceHealth>>)>>,
}

pub const OVERVIEW_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl Overview {
    pub async fn get(&self, state: &ApiState) -> anyhow::Result<Arc<Vec<ServiceHealth>>> {
        let mut slot = self.slot.lock().await;
        if let Some((at, services)) = slot.as_ref() {
            if at.elapsed() < OVERVIEW_TTL {
                return Ok(services.clone());
            }
        }
        let services = Arc::new(compute(state, None, false).await?);
        *slot = Some((std::time::Instant::now(), services.clone()));
        Ok(services)
    }
}

/// The rows of the recent `hours` and where they came from: the Redis hot copy when it
/// can answer, Postgres otherwise.
async fn recent(
    state: &ApiState,
    service: Option<&str>,
    hours: [i64; 2],
) -> anyhow::Result<(Vec<ServiceBucket>, &'static str)> {
    match hot::read::recent_buckets(&state.redis, &state.hot_keys, service, hours).await {
        Ok(Some(rows)) => return Ok((rows, "redis")),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "Redis unavailable; reading health from Postgres"),
    }
    let rows = reads::recent_buckets(&state.pool, service, hours).await?;
    Ok((rows, "postgres"))
}

/// Health of every service (or one), with a per-metric breakdown when `detail`: the
/// recent buckets and one query of the firing alerts, read concurrently. Fails when the
/// alerts cannot be read rather than show a status that may hide a firing alert.
pub async fn compute(
    state: &ApiState,
    service: Option<&str>,
    detail: bool,
) -> anyhow::Result<Vec<ServiceHealth>> {
    let now = chrono::Utc::now().timestamp_millis();
    let current = hour_start(now);
    let ((rows, source), firing) = tokio::try_join!(
        recent(state, service, [current - HOUR_MS, current]),
        stored_alerts::firing_by_service(&state.pool, service),
    )?;
    let firing = FiringAlerts::by_service(firing);
    Ok(summarise(
        rows,
        &firing,
        now,
        &state.latency_metric,
        detail,
        source,
    ))
}

/// The health at `now` of each service in `rows` (of `now`'s hour and the one before), in
/// name order, with its `firing` alerts; `source` says where the rows came from.
fn summarise(
    rows: Vec<ServiceBucket>,
    firing: &BTreeMap<String, FiringAlerts>,
    now: i64,
    latency_metric: &str,
    detail: bool,
    source: &'static str,
) -> Vec<ServiceHealth> {
    let current = hour_start(now);
    struct Acc {
        all: Bucket,
        latency: Bucket,
        last: Option<i64>,
        metrics: BTreeMap<String, Bucket>,
    }
    let mut per_service: BTreeMap<String, Acc> = BTreeMap::new();
    for ServiceBucket {
        service,
        metric,
        hour_ms,
        bucket,
    } in rows
    {
        let acc = per_service.entry(service).or_insert_with(|| Acc {
            all: Bucket::default(),
            latency: Bucket::default(),
            last: None,
            metrics: BTreeMap::new(),
        });
        if !bucket.is_empty() {
            acc.last = acc.last.max(Some(bucket.last_at_ms));
        }
        if hour_ms != current || bucket.is_empty() {
            continue;
        }
        acc.all.merge(&bucket);
        if metric == latency_metric {
            acc.latency.merge(&bucket);
        }
        acc.metrics.entry(metric).or_default().merge(&bucket);
    }
    // A service whose samples stopped long ago still shows while an alert fires for it
    // (a dead man's switch is the case in point).
    for service in firing.keys() {
        per_service.entry(service.clone()).or_insert_with(|| Acc {
            all: Bucket::default(),
            latency: Bucket::default(),
            last: None,
            metrics: BTreeMap::new(),
        });
    }
    let elapsed_s = ((now - current) as f64 / 1000.0).max(1.0);
    per_service
        .into_iter()
        .map(|(service, acc)| {
            let mut current_hour = Stats::new(&acc.all, elapsed_s);
            let latency = Stats::new(&acc.latency, elapsed_s);
            (current_hour.p50, current_hour.p95, current_hour.p99) =
                (latency.p50, latency.p95, latency.p99);
            let alerts = firing.get(&service).copied().unwrap_or_default();
            ServiceHealth {
                status: status(numbers_status(now, acc.last, &acc.all), alerts.worst()),
                alerts,
                service,
                last_sample_at: acc.last.map(format_instant),
                hour_start: format_instant(current),
                current_hour,
                latency_metric: latency_metric.to_owned(),
                metrics: detail.then(|| {
                    acc.metrics
                        .iter()
                        .map(|(m, b)| (m.clone(), Stats::new(b, elapsed_s)))
                        .collect()
                }),
                source,
            }
        })
        .collect()
}

pub async fn list_services(
    State(state): State<ApiState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let services = state.overview.get(&state).await?;
    Ok(Json(serde_json::json!({ "services": *services })))
}

/// `GET /v1/health/services/{service}`: `400` for a name no sample could have, `404`
/// for a service that never sent a sample, and the service's health otherwise (`stale`
/// when it has sent nothing lately).
pub async fn one_service(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceHealth>, ApiError> {
    let Path(service) = path.map_err(|_| {
        ApiError::bad_request(
            "invalid_path",
            "service: is not a valid percent-encoded name",
        )
    })?;
    let service = params::service("invalid_path", "service", &service)?;
    compute(&state, Some(service), true)
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no service named {service:?} has sent samples")))
}

/// `GET /v1/health`: the overall status is the worst service status; stale services
/// are listed but do not make the whole system unhealthy (a firing alert makes a
/// service `degraded` or `down`, not `stale`, so it does).
pub async fn overall(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut services = state.overview.get(&state).await?.as_ref().clone();
    let overall = services
        .iter()
        .map(|s| s.status)
        .filter(|s| *s != Status::Stale)
        .max()
        .unwrap_or(Status::Healthy);
    services.sort_by(|a, b| {
        b.status.cmp(&a.status).then(
            b.current_hour
                .error_rate
                .partial_cmp(&a.current_hour.error_rate)
                .unwrap_or(std::cmp::Ordering::Equal),
        )
    });
    services.truncate(5);
    Ok(Json(
        serde_json::json!({ "status": overall, "worst_services": services }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(count: u64, errors: u64) -> Bucket {
        let mut b = Bucket::default();
        b.add(1.0, count - errors, false, 0);
        if errors > 0 {
            b.add(1.0, errors, true, 0);
        }
        b
    }

    fn row(service: &str, metric: &str, hour_ms: i64, bucket: Bucket) -> ServiceBucket {
        ServiceBucket {
            service: service.into(),
            metric: metric.into(),
            hour_ms,
            bucket,
        }
    }

    #[test]
    fn summaries_count_the_current_hour_and_date_the_last_sample() {
        let current = 10 * HOUR_MS;
        let now = current + 100_000;
        let mut latency = Bucket::default();
        for v in 1..=100 {
            latency.add(f64::from(v), 1, false, now - 1);
        }
        let rows = vec![
            row("api", "http.server.duration", current, latency),
            row("api", "jobs", current, bucket(50, 10)),
            row("api", "jobs", current - HOUR_MS, bucket(1000, 0)),
            ServiceBucket::listing("api".into(), current),
            ServiceBucket::listing("idle".into(), current),
        ];
        let firing = FiringAlerts::by_service(vec![
            FiringCount {
                service: "idle".into(),
                severity: "warning".into(),
                count: 2,
            },
            FiringCount {
                service: "idle".into(),
                severity: "info".into(),
                count: 1,
            },
            FiringCount {
                service: "gone".into(),
                severity: "critical".into(),
                count: 1,
            },
        ]);
        let health = summarise(rows, &firing, now, "http.server.duration", true, "redis");
        let names: Vec<&str> = health.iter().map(|h| h.service.as_str()).collect();
        assert_eq!(
            names,
            ["api", "gone", "idle"],
            "a firing alert shows its service"
        );
        let (api, gone, idle) = (&health[0], &health[1], &health[2]);
        assert_eq!(
            (
                gone.status,
                gone.last_sample_at.as_deref(),
                gone.alerts.critical
            ),
            (Status::Down, None, 1)
        );
        assert_eq!(
            (api.current_hour.count, api.current_hour.error_count),
            (150, 10)
        );
        assert_eq!(api.current_hour.throughput_per_s, 1.5);
        assert_eq!(api.status, Status::Degraded);
        assert_eq!(api.alerts, FiringAlerts::default());
        assert_eq!(
            api.last_sample_at.as_deref(),
            Some(format_instant(now - 1).as_str())
        );
        let p50 = api.current_hour.p50.unwrap();
        assert!(
            (p50 - 50.0).abs() / 50.0 <= 0.01,
            "quantiles of the latency metric: {p50}"
        );
        let metrics = api.metrics.as_ref().unwrap();
        assert_eq!(
            metrics.keys().collect::<Vec<_>>(),
            ["http.server.duration", "jobs"]
        );
        assert_eq!(
            (idle.status, idle.last_sample_at.as_deref()),
            (Status::Degraded, None),
            "stale by its numbers, degraded by its warnings"
        );
        assert_eq!(
            idle.alerts,
            FiringAlerts {
                firing: 3,
                critical: 0,
                warning: 2
            }
        );
        assert_eq!(idle.source, "redis");
        let brief = summarise(Vec::new(), &firing, now, "m", false, "postgres");
        let shown: Vec<(&str, Status)> = brief
            .iter()
            .map(|h| (h.service.as_str(), h.status))
            .collect();
        assert_eq!(
            shown,
            [("gone", Status::Down), ("idle", Status::Degraded)],
            "services known only by their firing alerts"
        );
    }

    #[test]
    fn numbers_status_follows_error_rate_and_freshness() {
        let now = 100 * 60_000;
        let status = |last, b: &Bucket| numbers_status(now, last, b);
        assert_eq!(status(Some(now), &bucket(100, 0)), Status::Healthy);
        assert_eq!(status(Some(now), &bucket(100, 5)), Status::Degraded);
        assert_eq!(status(Some(now), &bucket(100, 50)), Status::Down);
        assert_eq!(
            status(Some(now - STALE_AFTER_MS - 1), &bucket(100, 0)),
            Status::Stale
        );
        assert_eq!(status(None, &Bucket::default()), Status::Stale);
        assert!(Status::Down > Status::Degraded && Status::Degraded > Status::Healthy);
    }

    #[test]
    fn the_worst_firing_alert_makes_the_status_worse_never_better() {
        use Severity::{Critical, Info, Warning};
        use Status::{Degraded, Down, Healthy, Stale};
        // Rows: the numbers' status; columns: no alert, info, warning, critical.
        let table = [
            (Healthy, [Healthy, Healthy, Degraded, Down]),
            (Degraded, [Degraded, Degraded, Degraded, Down]),
            (Down, [Down, Down, Down, Down]),
            (Stale, [Stale, Stale, Degraded, Down]),
        ];
        for (numbers, expected) in table {
            for (worst, want) in [None, Some(Info), Some(Warning), Some(Critical)]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(status(numbers, worst), want, "{numbers:?} × {worst:?}");
            }
        }
    }

    #[test]
    fn the_worst_firing_alert_is_the_most_severe_counted() {
        let alerts = |critical, warning, info| FiringAlerts {
            firing: critical + warning + info,
            critical,
            warning,
        };
        assert_eq!(alerts(0, 0, 0).worst(), None);
        assert_eq!(alerts(0, 0, 1).worst(), Some(Severity::Info));
        assert_eq!(alerts(0, 3, 1).worst(), Some(Severity::Warning));
        assert_eq!(alerts(1, 3, 1).worst(), Some(Severity::Critical));
    }
}
