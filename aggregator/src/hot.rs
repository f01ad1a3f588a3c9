//! Writes the Redis hot copy after each committed flush and refills it from Postgres when
//! Redis lost it. Failures here are logged and counted, never fatal: Redis is a cache.

use sqlx::{PgPool, Row};
use tidemark_model::bucket::HOUR_MS;
use tidemark_model::Bucket;
use tidemark_store::db::{bucket_from_row, BUCKET_COLUMNS};
use tidemark_store::hot::{field, HotKeys, Redis, HOUR_KEY_TTL};

/// How many recent hours the hot copy holds (the current one and the one before).
const HOT_HOURS: i64 = 2;

pub struct HotWriter {
    redis: Redis,
    keys: HotKeys,
    pool: PgPool,
}

/// One bucket to publish: `(service, metric, series_id, hour_ms, bucket)`.
pub type HotBucket<'a> = (&'a str, &'a str, i64, i64, &'a Bucket);

impl HotWriter {
    pub fn new(redis: Redis, keys: HotKeys, pool: PgPool) -> Self {
        Self { redis, keys, pool }
    }

    /// Publishes freshly committed buckets of recent hours, refilling first if the hot
    /// copy is not marked complete.
    pub async fn publish(&mut self, buckets: &[HotBucket<'_>]) {
        if let Err(e) = self.try_publish(buckets).await {
            metrics::counter!("tidemark_aggregator_redis_errors_total").increment(1);
            tracing::warn!(error = %e, "hot copy not updated; the API serves from Postgres until it is refilled");
        }
    }

    async fn try_publish(&mut self, buckets: &[HotBucket<'_>]) -> anyhow::Result<()> {
        let ready_key = self.keys.ready();
        let ready: bool = self
            .redis
            .run(|mut c| async move {
                redis::cmd("EXISTS")
                    .arg(ready_key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if !ready {
            self.refill().await?;
        }
        let oldest = recent_hours_start();
        let mut pipe = redis::pipe();
        for &(service, metric, series, hour, bucket) in buckets.iter().filter(|b| b.3 >= oldest) {
            let key = self.keys.hour(hour, service);
            pipe.hset(&key, field(metric, series), bucket.to_bytes())
                .ignore();
            pipe.expire(&key, HOUR_KEY_TTL.as_secs() as i64).ignore();
            pipe.sadd(self.keys.services(), service).ignore();
        }
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        Ok(())
    }

    /// Copies the recent hours from Postgres without overwriting fresher values written
    /// meanwhile (HSETNX), then marks the hot copy complete.
    async fn refill(&mut self) -> anyhow::Result<()> {
        let rows = sqlx::query(&format!(
            "SELECT s.service, s.metric, b.series_id, (extract(epoch FROM b.hour) * 1000)::bigint, {BUCKET_COLUMNS} \
             FROM buckets b JOIN series s ON s.id = b.series_id WHERE b.hour >= to_timestamp($1 / 1000.0)"
        ))
        .bind(recent_hours_start())
        .fetch_all(&self.pool)
        .await?;
        let mut pipe = redis::pipe();
        for r in &rows {
            let (service, metric): (String, String) = (r.get(0), r.get(1));
            let key = self.keys.hour(r.get(3), &service);
            pipe.hset_nx(
                &key,
                field(&metric, r.get(2)),
                bucket_from_row(r, 4)?.to_bytes(),
            )
            .ignore();
            pipe.expire(&key, HOUR_KEY_TTL.as_secs() as i64).ignore();
            pipe.sadd(self.keys.services(), &service).ignore();
        }
        for service in sqlx::query_scalar::<_, String>("SELECT DISTINCT service FROM series")
            .fetch_all(&self.pool)
            .await?
        {
            pipe.sadd(self.keys.services(), service).ignore();
        }
        pipe.set(self.keys.ready(), 1).ignore();
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        metrics::counter!("tidemark_aggregator_hot_refills_total").increment(1);
        tracing::info!(
            buckets = rows.len(),
            "refilled the Redis hot copy from Postgres"
        );
        Ok(())
    }
}

fn recent_hours_start() -> i64 {
    tidemark_model::bucket::hour_start(chrono::Utc::now().timestamp_millis())
        - (HOT_HOURS - 1) * HOUR_MS
}
