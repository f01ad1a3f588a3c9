//! The read side of the hot copy: the recent hours' buckets of services, answered only
//! while the ready marker says the copy is complete (Postgres answers otherwise).

use redis::AsyncCommands;
use tidemark_model::Bucket;

use super::{is_ready, metric_of, HotKeys, Redis};
use crate::reads::ServiceBucket;

/// The buckets of every service (or of `service`) in `hours`, with a
/// [`ServiceBucket::listing`] for each service and hour without any; `None` when the hot
/// copy cannot answer and Postgres must: it is not marked ready, or `service` is not in
/// its set of services.
pub async fn recent_buckets(
    redis: &Redis,
    keys: &HotKeys,
    service: Option<&str>,
    hours: [i64; 2],
) -> anyhow::Result<Option<Vec<ServiceBucket>>> {
    // A service missing from the hot set may still exist (the set is written after
    // Postgres commits): Postgres, the truth, decides between stale and unknown.
    if !answers_for(redis, keys, service).await? {
        return Ok(None);
    }
    let services = match service {
        Some(s) => vec![s.to_owned()],
        None => services(redis, keys).await?,
    };
    hour_buckets(redis, keys, &services, hours).await.map(Some)
}

/// Whether the copy is marked ready and, for one service, holds it.
async fn answers_for(redis: &Redis, keys: &HotKeys, service: Option<&str>) -> anyhow::Result<bool> {
    let (ready, known): (bool, bool) = match service {
        Some(s) => {
            let mut pipe = redis::pipe();
            pipe.exists(keys.ready()).sismember(keys.services(), s);
            redis
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await?
        }
        None => (is_ready(redis, keys).await?, true),
    };
    Ok(ready && known)
}

/// The services seen.
async fn services(redis: &Redis, keys: &HotKeys) -> anyhow::Result<Vec<String>> {
    let key = keys.services();
    redis
        .run(|mut c| async move { c.smembers(key).await })
        .await
}

/// The buckets of `services` in `hours`, in one round trip.
async fn hour_buckets(
    redis: &Redis,
    keys: &HotKeys,
    services: &[String],
    hours: [i64; 2],
) -> anyhow::Result<Vec<ServiceBucket>> {
    let mut pipe = redis::pipe();
    for s in services {
        for h in hours {
            pipe.hgetall(keys.hour(h, s));
        }
    }
    let maps: Vec<Vec<(String, Vec<u8>)>> = redis
        .run(|mut c| async move { pipe.query_async(&mut c).await })
        .await?;
    let mut rows = Vec::new();
    let hour_keys = services
        .iter()
        .flat_map(|s| hours.iter().map(move |h| (s, *h)));
    for ((service, hour), fields) in hour_keys.zip(maps) {
        if fields.is_empty() {
            rows.push(ServiceBucket::listing(service.clone(), hour));
        }
        for (field, bytes) in fields {
            rows.push(ServiceBucket {
                service: service.clone(),
                metric: metric_of(&field).to_owned(),
                hour_ms: hour,
                bucket: Bucket::from_bytes(&bytes).map_err(anyhow::Error::msg)?,
            });
        }
    }
    Ok(rows)
}
