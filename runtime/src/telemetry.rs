//! Process telemetry: tracing to stderr, the Prometheus recorder behind `/metrics`, and
//! the vocabulary metrics are defined in ([`vocabulary`]). Installed once per process, so
//! `standalone` and tests can start several roles.

pub mod serving;
pub mod vocabulary;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use vocabulary::Metric;

/// Starts logging with `filter` (e.g. `info`, `tidemark_ingest=debug`); later calls are no-ops.
pub fn init_tracing(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide Prometheus handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), seconds)
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding us); then the
            // handle still renders our own registry.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Installs the recorder (see [`metrics_handle`]) and describes `metrics` to it, so
/// `/metrics` gives each of them its `# HELP` line.
pub fn describe_metrics<'a>(metrics: impl IntoIterator<Item = &'a Metric>) {
    metrics_handle();
    for metric in metrics {
        metric.describe();
    }
}
