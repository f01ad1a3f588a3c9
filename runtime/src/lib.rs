//! What every role process runs on: configuration, HTTP layers and bounded serving, API
//! keys and their checks (over `tidemark-store`), Kafka client settings, telemetry,
//! retry backoff, and the backpressure seam between ingest and the aggregator.

pub mod auth;
pub mod backoff;
pub mod backpressure;
pub mod config;
pub mod http;
pub mod kafka;
pub mod rules;
pub mod serve;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use config::Config;
