//! The API role: per-service health views, hourly series, and `/metrics` with
//! per-service health gauges for Grafana. It only reads; it never writes buckets.

pub mod health;
pub mod series;

/// Checks of request parameters, made before any of them reaches SQL or Redis: names by
/// the character rules of samples (SPEC §2), so a query can only ask for what a sample
/// could have created, and instants within what Postgres, chrono and RFC 3339 hold.
/// Every refusal is a `400` whose message starts with the parameter's name and never
/// echoes the value (it may hold anything, U+0000 included).
pub mod params {
    use std::collections::BTreeMap;

    use tidemark_model::sample::{self, FieldError, MAX_TAGS, STORABLE_MS};
    use tidemark_model::time::{format_instant, parse_instant};
    use tidemark_runtime::http::ApiError;

    fn bad(code: &'static str, message: String) -> ApiError {
        ApiError::bad_request(code, message)
    }

    /// The refusal of `param`, in the words of the sample rule it breaks (which never
    /// quote the value).
    fn refused(code: &'static str, param: &str, e: FieldError) -> ApiError {
        bad(code, format!("{param}: {}", e.message))
    }

    /// A service name, by the rule of samples.
    pub fn service<'a>(
        code: &'static str,
        param: &str,
        value: &'a str,
    ) -> Result<&'a str, ApiError> {
        sample::check_service(value).map_err(|e| refused(code, param, e))
    }

    /// A metric name, by the rule of samples.
    pub fn metric<'a>(
        code: &'static str,
        param: &str,
        value: &'a str,
    ) -> Result<&'a str, ApiError> {
        sample::check_metric(value).map_err(|e| refused(code, param, e))
    }

    /// A tag filter `k=v,k2=v2`: at most 16 pairs, each by the rule of sample tags; a key
    /// given twice keeps its last value, as in samples.
    pub fn tags(text: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
        let mut out = BTreeMap::new();
        let pairs = text
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty());
        for (i, pair) in pairs.enumerate() {
            if i == MAX_TAGS {
                return Err(bad(
                    "invalid_query",
                    format!("tags: at most {MAX_TAGS} key=value pairs"),
                ));
            }
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                bad(
                    "invalid_query",
                    "tags: expected key=value pairs separated by commas".to_owned(),
                )
            })?;
            sample::check_tag(k, v).map_err(|e| refused("invalid_query", "tags", e))?;
            out.insert(k.to_owned(), v.to_owned());
        }
        Ok(out)
    }

    /// An instant given as RFC 3339 or Unix milliseconds, within
    /// [`STORABLE_MS`]; `default` when absent or empty.
    pub fn instant(value: Option<&str>, param: &str, default: i64) -> Result<i64, ApiError> {
        let ms = match value {
            None | Some("") => default,
            Some(text) => {
                parse_instant(text).map_err(|e| bad("invalid_query", format!("{param}: {e}")))?
            }
        };
        if !STORABLE_MS.contains(&ms) {
            return Err(bad(
                "invalid_query",
                format!(
                    "{param}: must be between {} and {}",
                    format_instant(*STORABLE_MS.start()),
                    format_instant(*STORABLE_MS.end())
                ),
            ));
        }
        Ok(ms)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use tidemark_model::sample::{Sample, SampleFields, TimeBounds};

        /// Whether ingest would accept a sample with these names.
        fn sample_accepts(service: &str, metric: &str, tag_key: &str) -> bool {
            let fields = SampleFields {
                service: Some(service),
                metric: Some(metric),
                value: Some(1.0),
                tags: Some(vec![(tag_key, "v")]),
                ..Default::default()
            };
            let bounds = TimeBounds {
                now_ms: 0,
                max_age: std::time::Duration::ZERO,
                max_future: std::time::Duration::ZERO,
            };
            Sample::parse(fields, bounds).is_ok()
        }

        #[test]
        fn names_are_checked_exactly_as_samples_are() {
            let long = "x".repeat(128);
            let longer = "x".repeat(129);
            let key_long = "k".repeat(64);
            let key_longer = "k".repeat(65);
            let names = [
                "checkout",
                "a.b_c-1",
                "a:b",
                "",
                "a b",
                "a\0",
                "\0",
                "café",
                "a/b",
                "a|b",
                "a,b",
                "a=b",
                &long,
                &longer,
                &key_long,
                &key_longer,
            ];
            for name in names {
                let tags = format!("{name}=v");
                assert_eq!(
                    service("c", "service", name).is_ok(),
                    sample_accepts(name, "m", "k"),
                    "service {name:?}"
                );
                assert_eq!(
                    metric("c", "metric", name).is_ok(),
                    sample_accepts("s", name, "k"),
                    "metric {name:?}"
                );
                // `,` and `=` separate pairs in a filter, so they cannot be in its keys.
                if !name.contains([',', '=']) && !name.is_empty() {
                    assert_eq!(
                        super::tags(Some(&tags)).is_ok(),
                        sample_accepts("s", "m", name),
                        "tag key {name:?}"
                    );
                }
            }
        }

        #[test]
        fn refusals_name_the_parameter_and_never_echo_it() {
            let err = service("invalid_path", "service", "a\0b").unwrap_err();
            assert!(matches!(
                err,
                ApiError::BadRequest {
                    code: "invalid_path",
                    ..
                }
            ));
            let message = err.to_string();
            assert!(
                message.starts_with("service: ") && !message.contains("a\0b"),
                "{message}"
            );
            let message = instant(Some("-9223372036854775808"), "from", 0)
                .unwrap_err()
                .to_string();
            assert_eq!(
                message,
                "from: must be between 1970-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z"
            );
            assert_eq!(instant(None, "to", 5).unwrap(), 5);
            assert_eq!(instant(Some("1970-01-01T00:00:00Z"), "to", 5).unwrap(), 0);
        }
    }
}

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{middleware, Router};
use sqlx::PgPool;
use tidemark_runtime::auth::{KeyStore, Role};
use tidemark_runtime::http::{self, Ops, RequireRole};
use tidemark_runtime::serve::{self, ServeLimits};
use tidemark_runtime::Config;
use tidemark_store::hot::HotKeys;
use tokio_util::sync::CancellationToken;

/// How often the per-service gauges on `/metrics` are recomputed.
const GAUGE_REFRESH: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub redis: tidemark_store::hot::Redis,
    pub hot_keys: HotKeys,
    pub latency_metric: String,
    pub overview: Arc<health::Overview>,
}

/// The read routes, behind the `read` role.
pub fn router(state: ApiState, keys: Arc<KeyStore>) -> Router {
    Router::new()
        .route("/v1/health", get(health::overall))
        .route("/v1/health/services", get(health::list_services))
        .route("/v1/health/services/{service}", get(health::one_service))
        .route("/v1/series", get(series::get_series))
        .with_state(state)
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                keys,
                role: Role::Read,
            },
            http::require_role,
        ))
}

/// Connections the role needs, opened by the caller.
pub struct ApiDeps {
    pub pool: PgPool,
    pub redis: tidemark_store::hot::Redis,
    pub keys: Arc<KeyStore>,
    pub ops: Ops,
    /// The process's serving limits, shared by its listeners.
    pub limits: ServeLimits,
}

pub struct Api {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    state: ApiState,
}

impl Api {
    pub async fn build(config: &Config, deps: ApiDeps) -> anyhow::Result<Self> {
        let state = ApiState {
            pool: deps.pool,
            redis: deps.redis,
            hot_keys: HotKeys::new(&config.topics.prefix),
            latency_metric: config.latency_metric.clone(),
            overview: Arc::new(health::Overview::default()),
        };
        let router = http::with_common_layers(
            router(state.clone(), deps.keys).merge(http::ops_router(deps.ops)),
            Duration::from_secs(30),
        );
        let listener = serve::bind(config.api_addr, "the API").await?;
        Ok(Self {
            listener,
            router,
            limits: deps.limits,
            state,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "api listening");
        let gauges = tokio::spawn(refresh_gauges(self.state, shutdown.clone()));
        serve::serve(self.listener, self.router, self.limits, shutdown).await?;
        gauges.await?;
        Ok(())
    }
}

/// Keeps `tidemark_service_*` gauges current so Prometheus can scrape service health.
async fn refresh_gauges(state: ApiState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(GAUGE_REFRESH);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.overview.get(&state).await {
            Ok(services) => {
                for s in services.iter() {
                    let labels = [("service", s.service.clone())];
                    metrics::gauge!("tidemark_service_health_status", &labels)
                        .set(s.status.gauge());
                    metrics::gauge!("tidemark_service_throughput_per_second", &labels)
                        .set(s.current_hour.throughput_per_s);
                    metrics::gauge!("tidemark_service_error_ratio", &labels)
                        .set(s.current_hour.error_rate.unwrap_or(0.0));
                    for (q, v) in [
                        ("0.5", s.current_hour.p50),
                        ("0.95", s.current_hour.p95),
                        ("0.99", s.current_hour.p99),
                    ] {
                        if let Some(v) = v {
                            metrics::gauge!("tidemark_service_latency", "service" => s.service.clone(), "quantile" => q).set(v);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh service gauges"),
        }
    }
}
