//! What every role process runs on: configuration, HTTP layers and bounded serving, API
//! keys and their checks (over `tidemark-store`), Kafka client settings, telemetry and
//! retry backoff.

pub mod auth;
pub mod backlog;
pub mod backoff;
pub mod config;
pub mod http;
pub mod kafka;
pub mod serve;
pub mod telemetry;

pub use config::Config;
