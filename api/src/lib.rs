//! The API role: per-service health views, hourly series, alerts (listing and
//! acknowledging), the alert rules (showing and reloading), and `/metrics` with
//! per-service health gauges for Grafana. It never writes buckets; its only write is an
//! acknowledgement.

pub mod alerts;
pub mod health;
pub mod params;
pub mod rules;
pub mod series;
pub mod silences;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tidemark_runtime::auth::{KeyStore, Role};
use tidemark_runtime::http::{self, needs_role, Ops};
use tidemark_runtime::rules::Rules;
use tidemark_runtime::serve::{self, ServeLimits};
use tidemark_runtime::Config;
use tidemark_store::db::PgPool;
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
    /// The process's alert rules, whose inhibit rules the shown alerts are marked by.
    pub rules: Rules,
}

/// The read routes, behind the `read` role, and the alert routes ([`alerts::router`]).
pub fn router(state: ApiState, keys: Arc<KeyStore>) -> Router {
    let alerts = alerts::router(state.clone(), keys.clone())
        .merge(silences::router(state.clone(), keys.clone()));
    let reads = Router::new()
        .route("/v1/health", get(health::overall))
        .route("/v1/health/services", get(health::list_services))
        .route("/v1/health/services/{service}", get(health::one_service))
        .route("/v1/series", get(series::get_series))
        .with_state(state);
    needs_role(reads, &keys, Role::Read).merge(alerts)
}

/// Connections the role needs, opened by the caller.
pub struct ApiDeps {
    pub pool: PgPool,
    pub redis: tidemark_store::hot::Redis,
    pub keys: Arc<KeyStore>,
    pub ops: Ops,
    /// The process's serving limits, shared by its listeners.
    pub limits: ServeLimits,
    /// The process's alert rules, which `GET /v1/rules` shows and the reload route
    /// reloads, and whose inhibit rules mark the alerts shown.
    pub rules: Rules,
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
            hot_keys: HotKeys::new(&config.common.topics.prefix),
            latency_metric: config.api.latency_metric.clone(),
            overview: Arc::new(health::Overview::default()),
            rules: deps.rules.clone(),
        };
        let rules = rules::router(
            rules::RulesApi {
                pool: state.pool.clone(),
                rules: deps.rules,
                topics: config.common.topics.clone(),
            },
            deps.keys.clone(),
        );
        let router = http::with_common_layers(
            router(state.clone(), deps.keys)
                .merge(rules)
                .merge(http::ops_router(deps.ops)),
            config.api.request_timeout,
        );
        let listener = serve::bind(config.api.addr, "the API").await?;
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
                    telemetry::SERVICE_HEALTH_STATUS
                        .with([s.service.clone()])
                        .set(s.status.gauge());
                    telemetry::SERVICE_THROUGHPUT
                        .with([s.service.clone()])
                        .set(s.current_hour.throughput_per_s);
                    telemetry::SERVICE_ERROR_RATIO
                        .with([s.service.clone()])
                        .set(s.current_hour.error_rate.unwrap_or(0.0));
                    for (q, v) in [
                        ("0.5", s.current_hour.p50),
                        ("0.95", s.current_hour.p95),
                        ("0.99", s.current_hour.p99),
                    ] {
                        if let Some(v) = v {
                            telemetry::SERVICE_LATENCY
                                .with([s.service.clone(), q.to_owned()])
                                .set(v);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh service gauges"),
        }
    }
}
