//! Every metric the binary's roles export: the lists of the crates that emit metrics, in
//! one. Described to the recorder at start-up (`roles::run`); the integration tests check
//! the README, the Grafana dashboard and a running process's `/metrics` against it.

use tidemark_runtime::telemetry::vocabulary::Metric;

/// The vocabulary of every crate, each metric once.
pub fn all_metrics() -> impl Iterator<Item = &'static Metric> {
    [
        tidemark_runtime::telemetry::serving::METRICS,
        tidemark_ingest::telemetry::METRICS,
        tidemark_aggregator::telemetry::METRICS,
        tidemark_alerter::telemetry::METRICS,
        tidemark_api::telemetry::METRICS,
    ]
    .into_iter()
    .flatten()
}
