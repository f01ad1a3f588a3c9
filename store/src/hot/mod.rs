//! The Redis hot copy of the recent hours' buckets: the connection, the key layout, the
//! ready marker's check used by both sides, and (in its submodules) the whole protocol of its writers ([`publish`]: the aggregator,
//! `tidemark quarantine replay` and `tidemark replay`) and of its reader ([`read`]: the
//! API). Redis is a cache; Postgres is the truth.
//!
//! - `<prefix>:hot:<hour_ms>:<service>` — hash, field `<metric>|<series_id>`, value a
//!   [`Bucket`](tidemark_model::Bucket) in its byte form: that hour's buckets of the
//!   service.
//! - `<prefix>:hot:services` — set of service names seen.
//! - `<prefix>:hot:ready` — present only after a writer refilled the recent hours from
//!   Postgres; without it readers must use Postgres (Redis was emptied or restarted, or
//!   the copy was invalidated).

pub mod publish;
pub mod read;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use tidemark_model::secret::{redact_url, Secret};

/// How long an hour key lives after its last write: past the hours the copy holds.
pub(crate) const HOUR_KEY_TTL: Duration = Duration::from_secs(3 * 3600);

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
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> anyhow::Result<T>
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

    /// Whether Redis answers a `PING` (readiness checks).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }
}

/// Key names for one deployment (one topic prefix).
#[derive(Debug, Clone)]
pub struct HotKeys {
    prefix: String,
}

impl HotKeys {
    /// The keys of the deployment whose topics start with `topic_prefix`.
    pub fn new(topic_prefix: &str) -> Self {
        Self {
            prefix: format!("{topic_prefix}:hot"),
        }
    }

    /// The hash of `service`'s buckets in the hour starting at `hour_ms`.
    pub fn hour(&self, hour_ms: i64, service: &str) -> String {
        format!("{}:{hour_ms}:{service}", self.prefix)
    }

    /// The set of service names seen.
    pub fn services(&self) -> String {
        format!("{}:services", self.prefix)
    }

    /// The marker of a complete copy.
    pub fn ready(&self) -> String {
        format!("{}:ready", self.prefix)
    }
}

/// Whether the copy is marked ready (complete for the recent hours): writers refill it
/// otherwise, and readers use Postgres.
pub async fn is_ready(redis: &Redis, keys: &HotKeys) -> anyhow::Result<bool> {
    let ready_key = keys.ready();
    redis
        .run(|mut c| async move {
            redis::cmd("EXISTS")
                .arg(ready_key)
                .query_async(&mut c)
                .await
        })
        .await
}

/// The hash field of a series within an hour key.
pub fn field(metric: &str, series_id: i64) -> String {
    format!("{metric}|{series_id}")
}

/// The metric part of a hash field (`|` is not allowed in metric names).
pub(crate) fn metric_of(field: &str) -> &str {
    field.split('|').next().unwrap_or(field)
}

/// The test Redis's URL: `TIDEMARK_TEST_REDIS_URL`, default the local one.
#[cfg(feature = "test-support")]
fn test_redis_url() -> String {
    std::env::var("TIDEMARK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The test Redis and a key prefix of the test's own (`it…`, which `scripts/test.sh`
/// sweeps before each run).
#[cfg(feature = "test-support")]
pub async fn test_redis() -> (Redis, String) {
    let redis = Redis::connect(&Secret::new(test_redis_url()))
        .await
        .unwrap();
    let prefix = format!("it{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    (redis, prefix)
}

/// A plain connection to the test Redis, for a test to set up and inspect keys itself.
#[cfg(feature = "test-support")]
pub async fn test_connection() -> MultiplexedConnection {
    redis::Client::open(test_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

/// Deletes a test's `keys`.
#[cfg(feature = "test-support")]
pub async fn delete_test_keys(redis: &Redis, keys: &[String]) {
    let keys = keys.to_vec();
    redis
        .run(|mut c| async move { redis::AsyncCommands::del::<_, ()>(&mut c, keys).await })
        .await
        .unwrap();
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
