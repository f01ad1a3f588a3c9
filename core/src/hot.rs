//! The Redis hot copy: key layout shared by its writer (the aggregator) and its reader
//! (the API). Redis is a cache; Postgres is the truth.
//!
//! - `<prefix>:hot:<hour_ms>:<service>` — hash, field `<metric>|<series_id>`, value a
//!   [`Bucket`](crate::bucket::Bucket) in its byte form: that hour's buckets of the service.
//! - `<prefix>:hot:services` — set of service names seen.
//! - `<prefix>:hot:ready` — present only after an aggregator refilled the recent hours
//!   from Postgres; without it readers must use Postgres (Redis was emptied or restarted).

use std::time::Duration;

pub const HOUR_KEY_TTL: Duration = Duration::from_secs(3 * 3600);

/// Key names for one deployment (one topic prefix).
#[derive(Debug, Clone)]
pub struct HotKeys {
    prefix: String,
}

impl HotKeys {
    pub fn new(topic_prefix: &str) -> Self {
        Self {
            prefix: format!("{topic_prefix}:hot"),
        }
    }

    pub fn hour(&self, hour_ms: i64, service: &str) -> String {
        format!("{}:{hour_ms}:{service}", self.prefix)
    }

    pub fn services(&self) -> String {
        format!("{}:services", self.prefix)
    }

    pub fn ready(&self) -> String {
        format!("{}:ready", self.prefix)
    }
}

/// The hash field of a series within an hour key.
pub fn field(metric: &str, series_id: i64) -> String {
    format!("{metric}|{series_id}")
}

/// The metric part of a hash field (`|` is not allowed in metric names).
pub fn metric_of(field: &str) -> &str {
    field.split('|').next().unwrap_or(field)
}

/// Connects with a manager that reconnects by itself; fails fast with a clear message.
pub async fn connect(url: &crate::config::Secret) -> anyhow::Result<redis::aio::ConnectionManager> {
    let redacted = crate::db::redact_url(url.expose());
    let client = redis::Client::open(url.expose())
        .map_err(|e| anyhow::anyhow!("TIDEMARK_REDIS_URL is not valid ({redacted}): {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2);
    tokio::time::timeout(Duration::from_secs(5), redis::aio::ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to Redis at {redacted} (timed out); start Redis or set TIDEMARK_REDIS_URL"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {redacted} ({e}); start Redis or set TIDEMARK_REDIS_URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_back_into_metrics() {
        let f = field("http.server.duration", -42);
        assert_eq!(f, "http.server.duration|-42");
        assert_eq!(metric_of(&f), "http.server.duration");
        assert_eq!(
            HotKeys::new("tm").hour(3_600_000, "svc"),
            "tm:hot:3600000:svc"
        );
    }
}
