//! The Redis hot copy: key layout shared by its writer (the aggregator) and its reader
//! (the API). Redis is a cache; Postgres is the truth.
//!
//! - `<prefix>:hot:<hour_ms>:<service>` — hash, field `<metric>|<series_id>`, value a
//!   [`Bucket`](crate::bucket::Bucket) in its byte form: that hour's buckets of the service.
//! - `<prefix>:hot:services` — set of service names seen.
//! - `<prefix>:hot:ready` — present only after an aggregator refilled the recent hours
//!   from Postgres; without it readers must use Postgres (Redis was emptied or restarted).

pub mod publish;
pub mod read;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use tidemark_model::secret::{redact_url, Secret};

pub const HOUR_KEY_TTL: Duration = Duration::from_secs(3 * 3600);

/// How long any Redis operation may take before the caller falls back (to Postgres, or
/// to a per-process view): a dead or restarting Redis must not stall a request.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A shared Redis connection that every caller uses through [`Redis::run`]: each
/// operation is bounded by [`REDIS_TIMEOUT`], and after any error or timeout the
/// connection is dropped, so the next operation reconnects (and fails fast while Redis is
/// down). redis-rs's `ConnectionManager` does not reconnect after timeouts, which is why
/// this exists.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: Arc<Mutex<Option<MultiplexedConnection>>>,
    redacted_url: String,
}

impl Redis {
    /// Connects once, failing with a message that names the URL (password hidden).
    pub async fn connect(url: &Secret) -> anyhow::Result<Self> {
        let redacted_url = redact_url(url.expose());
        let client = redis::Client::open(url.expose()).map_err(|e| {
            anyhow::anyhow!("TIDEMARK_REDIS_URL is not valid ({redacted_url}): {e}")
        })?;
        let redis = Self {
            client,
            conn: Arc::new(Mutex::new(None)),
            redacted_url,
        };
        redis.connection().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to Redis at {} ({e}); start Redis or set TIDEMARK_REDIS_URL",
                redis.redacted_url
            )
        })?;
        Ok(redis)
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(
            REDIS_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `op` on the connection within [`REDIS_TIMEOUT`].
    pub async fn run<T, F, Fut>(&self, op: F) -> anyhow::Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let outcome = async {
            let conn = self.connection().await?;
            match tokio::time::timeout(REDIS_TIMEOUT, op(conn)).await {
                Ok(result) => result.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!(
                    "Redis did not answer within {}ms",
                    REDIS_TIMEOUT.as_millis()
                )),
            }
        }
        .await;
        if outcome.is_err() {
            *self.conn.lock().await = None;
        }
        outcome
    }
}

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
