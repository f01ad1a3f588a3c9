//! Shared building blocks of Tidemark's roles: configuration, the validated sample and
//! its series identity, hourly buckets, Postgres and Redis access, Kafka settings, API
//! keys, HTTP plumbing, bounded serving and telemetry.

pub mod auth;
pub mod backlog;
pub mod backoff;
pub mod bucket;
pub mod config;
pub mod db;
pub mod duration;
pub mod hot;
pub mod http;
pub mod kafka;
pub mod sample;
pub mod series;
pub mod serve;
pub mod telemetry;

pub use bucket::Bucket;
pub use config::Config;
pub use sample::Sample;
