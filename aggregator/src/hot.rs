//! Writes the Redis hot copy after each committed flush, refilling it from Postgres first
//! when Redis lost it (`tidemark_store::hot::publish`). Failures here are logged and
//! counted, never fatal: Redis is a cache.

use tidemark_store::buckets::BucketRow;
use tidemark_store::db::PgPool;
use tidemark_store::hot::publish::{publish, refill};
use tidemark_store::hot::{is_ready, HotKeys, Redis};

use crate::telemetry;

/// The writer of one process: its Redis, its deployment's keys, and Postgres to refill from.
pub struct HotWriter {
    redis: Redis,
    keys: HotKeys,
    pool: PgPool,
}

impl HotWriter {
    /// A writer of the hot copy under `keys`.
    pub fn new(redis: Redis, keys: HotKeys, pool: PgPool) -> Self {
        Self { redis, keys, pool }
    }

    /// Publishes freshly committed buckets of recent hours, refilling first if the hot
    /// copy is not marked complete.
    pub async fn publish(&mut self, buckets: &[BucketRow<'_>]) {
        if let Err(e) = self.try_publish(buckets).await {
            telemetry::hot_copy_not_updated(&e);
        }
    }

    async fn try_publish(&mut self, buckets: &[BucketRow<'_>]) -> anyhow::Result<()> {
        if !is_ready(&self.redis, &self.keys).await? {
            let copied = refill(&self.redis, &self.keys, &self.pool).await?;
            telemetry::hot_copy_refilled(copied);
        }
        publish(&self.redis, &self.keys, buckets).await
    }
}
