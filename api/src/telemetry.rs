//! The API's metrics: per-service health gauges for Grafana, defined once in the
//! vocabulary of `tidemark_runtime::telemetry::vocabulary`.

use tidemark_runtime::telemetry::vocabulary::Gauge;

tidemark_runtime::define_metrics! {
    pub const SERVICE_HEALTH_STATUS: Gauge<1> = Gauge::new(
        "tidemark_service_health_status",
        &["service"],
        "Health of the service as `GET /v1/health/services` shows it (the current hour and its firing alerts): 0 healthy, 1 degraded, 2 down, 3 stale.",
    );
    pub const SERVICE_THROUGHPUT: Gauge<1> = Gauge::new(
        "tidemark_service_throughput_per_second",
        &["service"],
        "Observations per second the service sent over the current hour (a sample counts `count` times).",
    );
    pub const SERVICE_ERROR_RATIO: Gauge<1> = Gauge::new(
        "tidemark_service_error_ratio",
        &["service"],
        "Share of the service's samples this hour that were errors (0 to 1).",
    );
    pub const SERVICE_LATENCY: Gauge<2> = Gauge::new(
        "tidemark_service_latency",
        &["service", "quantile"],
        "Quantile (0.5, 0.95, 0.99) of the service's TIDEMARK_LATENCY_METRIC over the current hour, in the unit its samples carry.",
    );
}
