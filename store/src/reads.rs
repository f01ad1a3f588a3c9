//! Reads of the stored buckets (tables `buckets` and `series`): the recent buckets of
//! services (the hot copy's refill and the API's health views) and the hourly buckets of
//! the series a query matches (`/v1/series`).

use std::collections::BTreeMap;

use sqlx::{PgPool, Row};
use tidemark_model::Bucket;

use crate::db::{bucket_from_row, BUCKET_COLUMNS};

/// One metric's bucket of a service in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBucket {
    pub service: String,
    /// Empty in a [`ServiceBucket::listing`].
    pub metric: String,
    pub hour_ms: i64,
    pub bucket: Bucket,
}

impl ServiceBucket {
    /// A row with no metric and an empty bucket: it only says that `service` exists.
    pub fn listing(service: String, hour_ms: i64) -> Self {
        Self {
            service,
            metric: String::new(),
            hour_ms,
            bucket: Bucket::default(),
        }
    }
}

/// A stored bucket with its series.
#[derive(Debug, Clone)]
pub struct StoredBucket {
    pub service: String,
    pub metric: String,
    pub series_id: i64,
    pub hour: i64,
    pub bucket: Bucket,
}

/// What [`recent`] reads.
#[derive(Debug)]
pub struct Recent {
    /// The stored buckets from the hour asked for on.
    pub buckets: Vec<StoredBucket>,
    /// The services that have a series, recent buckets or not.
    pub services: Vec<String>,
}

/// The stored buckets of every service (or of `service`) from hour `since` on, and those
/// services: what the hot copy is refilled from, and what the health views read when it
/// cannot answer ([`recent_buckets`]).
pub async fn recent(pool: &PgPool, service: Option<&str>, since: i64) -> anyhow::Result<Recent> {
    let rows = sqlx::query(&format!(
        "SELECT s.service, s.metric, s.id, (extract(epoch FROM b.hour) * 1000)::bigint, {BUCKET_COLUMNS} \
         FROM series s JOIN buckets b ON b.series_id = s.id \
         WHERE b.hour >= to_timestamp($1 / 1000.0) AND ($2::text IS NULL OR s.service = $2)"
    ))
    .bind(since)
    .bind(service)
    .fetch_all(pool)
    .await?;
    let buckets = rows
        .iter()
        .map(|r| {
            Ok(StoredBucket {
                service: r.get(0),
                metric: r.get(1),
                series_id: r.get(2),
                hour: r.get(3),
                bucket: bucket_from_row(r, 4)?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    let services = sqlx::query_scalar(
        "SELECT DISTINCT service FROM series WHERE ($1::text IS NULL OR service = $1)",
    )
    .bind(service)
    .fetch_all(pool)
    .await?;
    Ok(Recent { buckets, services })
}

/// [`recent`] from hour `hours[0]` on as the health views take it: a [`ServiceBucket`] per
/// stored bucket, and a [`ServiceBucket::listing`] in hour `hours[1]` for each service, so
/// that services without recent data still appear.
pub async fn recent_buckets(
    pool: &PgPool,
    service: Option<&str>,
    hours: [i64; 2],
) -> anyhow::Result<Vec<ServiceBucket>> {
    let Recent { buckets, services } = recent(pool, service, hours[0]).await?;
    let rows = buckets.into_iter().map(|b| ServiceBucket {
        service: b.service,
        metric: b.metric,
        hour_ms: b.hour,
        bucket: b.bucket,
    });
    let listings = services
        .into_iter()
        .map(|s| ServiceBucket::listing(s, hours[1]));
    Ok(rows.chain(listings).collect())
}

/// The series and hours [`series_buckets`] reads.
#[derive(Debug)]
pub struct SeriesFilter<'a> {
    pub service: &'a str,
    pub metric: &'a str,
    /// Series whose tags include all these pairs.
    pub tags: &'a BTreeMap<String, String>,
    /// Hours from this instant on…
    pub from_ms: i64,
    /// …and before this one.
    pub to_ms: i64,
}

/// An hourly bucket of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBucket {
    pub series_id: i64,
    /// The series' tags, a JSON object.
    pub tags_json: String,
    pub hour_ms: i64,
    pub bucket: Bucket,
}

/// The hourly buckets `filter` matches, in no order, or `None` when more than
/// `max_rows` match. The query asks for one row more (`LIMIT`, unordered so Postgres
/// stops there), so finding out costs nothing.
pub async fn series_buckets(
    pool: &PgPool,
    filter: &SeriesFilter<'_>,
    max_rows: usize,
) -> anyhow::Result<Option<Vec<SeriesBucket>>> {
    let rows = sqlx::query(&format!(
        "SELECT s.id, s.tags::text, (extract(epoch FROM b.hour) * 1000)::bigint, {BUCKET_COLUMNS} \
         FROM series s JOIN buckets b ON b.series_id = s.id \
         WHERE s.service = $1 AND s.metric = $2 AND s.tags @> $3::jsonb \
           AND b.hour >= $4 AND b.hour < $5 \
         LIMIT $6"
    ))
    .bind(filter.service)
    .bind(filter.metric)
    .bind(serde_json::to_string(filter.tags).expect("string map serialises"))
    .bind(instant_of(filter.from_ms)?)
    .bind(instant_of(filter.to_ms)?)
    .bind(max_rows as i64 + 1)
    .fetch_all(pool)
    .await?;
    if rows.len() > max_rows {
        return Ok(None);
    }
    let buckets = rows
        .iter()
        .map(|r| {
            Ok(SeriesBucket {
                series_id: r.get(0),
                tags_json: r.get(1),
                hour_ms: r.get(2),
                bucket: bucket_from_row(r, 3)?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    Ok(Some(buckets))
}

/// The instant of `ms` Unix milliseconds; an error when it is out of range.
fn instant_of(ms: i64) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| anyhow::anyhow!("instant {ms} ms is out of range"))
}
