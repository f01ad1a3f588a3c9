//! The write side of the hot copy. A writer publishes the buckets it committed to
//! Postgres; when the copy is not marked ready (Redis was emptied or restarted, or
//! [`invalidate`]d) it first refills the recent hours from Postgres, which marks it ready.

use sqlx::PgPool;
use tidemark_model::bucket::{hour_start, HOUR_MS};

use super::{field, HotKeys, Redis, HOUR_KEY_TTL};
use crate::buckets::BucketRow;
use crate::reads;

/// How many recent hours the hot copy holds (the current one and the one before).
const HOT_HOURS: i64 = 2;

/// Writes the buckets of the recent hours among `buckets` (full values, as committed).
pub async fn publish(
    redis: &Redis,
    keys: &HotKeys,
    buckets: &[BucketRow<'_>],
) -> anyhow::Result<()> {
    let oldest = recent_hours_start();
    let mut pipe = redis::pipe();
    for b in buckets.iter().filter(|b| b.hour >= oldest) {
        let key = keys.hour(b.hour, b.series.service);
        pipe.hset(
            &key,
            field(b.series.metric, b.series.id),
            b.bucket.to_bytes(),
        )
        .ignore();
        pipe.expire(&key, HOUR_KEY_TTL.as_secs() as i64).ignore();
        pipe.sadd(keys.services(), b.series.service).ignore();
    }
    redis
        .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
        .await
}

/// Copies the recent hours from Postgres without overwriting fresher values written
/// meanwhile (HSETNX), then marks the copy ready; returns how many buckets it copied.
pub async fn refill(redis: &Redis, keys: &HotKeys, pool: &PgPool) -> anyhow::Result<usize> {
    let stored = reads::recent(pool, None, recent_hours_start()).await?;
    let mut pipe = redis::pipe();
    for b in &stored.buckets {
        let key = keys.hour(b.hour, &b.service);
        pipe.hset_nx(&key, field(&b.metric, b.series_id), b.bucket.to_bytes())
            .ignore();
        pipe.expire(&key, HOUR_KEY_TTL.as_secs() as i64).ignore();
        pipe.sadd(keys.services(), &b.service).ignore();
    }
    for service in &stored.services {
        pipe.sadd(keys.services(), service).ignore();
    }
    pipe.set(keys.ready(), 1).ignore();
    redis
        .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
        .await?;
    Ok(stored.buckets.len())
}

/// Removes the ready marker, so that readers use Postgres until a writer refills the
/// copy: after the stored buckets changed behind the writers' backs.
pub async fn invalidate(redis: &Redis, keys: &HotKeys) -> anyhow::Result<()> {
    let ready_key = keys.ready();
    redis
        .run(|mut c| async move {
            redis::cmd("DEL")
                .arg(ready_key)
                .query_async::<()>(&mut c)
                .await
        })
        .await
}

/// The start of the oldest hour the copy holds.
fn recent_hours_start() -> i64 {
    hour_start(chrono::Utc::now().timestamp_millis()) - (HOT_HOURS - 1) * HOUR_MS
}
