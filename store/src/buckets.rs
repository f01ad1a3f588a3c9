//! The buckets' write side and the aggregator's exactly-once commit: in one [`Tx`], bucket
//! deltas merge into the stored buckets (creating series and rows as needed), a
//! partition's offset row advances only from the row its deltas started from (the
//! fence), and idempotent request chunks are recorded, so a crash at any point neither
//! loses nor double-counts a sample. Also reads offsets back, replaces whole hours
//! (`tidemark replay`) and forgets old idempotency chunks. Tables: `buckets`, `series`,
//! `consumer_offsets`, `idempotency_chunks`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use sqlx::{PgPool, Postgres, Row, Transaction};
use tidemark_model::Bucket;

use crate::db::{bucket_from_row, BUCKET_COLUMNS};

/// A series as the `series` table holds it.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRow<'a> {
    pub id: i64,
    pub service: &'a str,
    pub metric: &'a str,
    /// Its tags as a JSON object.
    pub tags_json: &'a str,
}

/// A bucket of one series and hour: a delta to merge, or a full value to write.
#[derive(Debug, Clone, Copy)]
pub struct BucketRow<'a> {
    pub series: SeriesRow<'a>,
    pub hour: i64,
    pub bucket: &'a Bucket,
}

/// A partition's stored offset row: where its next message starts, in which Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub next_offset: i64,
    pub cluster_id: String,
}

/// Why a commit did not happen; nothing of it was applied, so it can be retried as is.
#[derive(Debug)]
pub enum FlushError {
    /// Postgres failed a statement, or the connection.
    Db(sqlx::Error),
    /// Bucket rows this flush found absent were created by another flush before it
    /// could insert them (a series that moved partition); a retry merges into them.
    Raced(usize),
}

impl FlushError {
    /// Whether Postgres refused the data itself, so that retrying the same flush can
    /// never succeed: a data exception (SQLSTATE class 22, e.g. U+0000 in text or a
    /// timestamp out of range), an integrity violation (23), a program limit (54), or a
    /// stored value that no longer decodes. Anything else (connection lost, pool
    /// exhausted, serialization failure) is a dependency's fault and worth retrying.
    pub fn is_data(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| ["22", "23", "54"].iter().any(|class| c.starts_with(class))),
            Self::Db(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => true,
            _ => false,
        }
    }
}

impl fmt::Display for FlushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Db(e) => e.fmt(f),
            Self::Raced(n) => write!(f, "{n} bucket rows were created by another flush meanwhile"),
        }
    }
}

impl std::error::Error for FlushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Db(e) => e.source(),
            Self::Raced(_) => None,
        }
    }
}

impl From<sqlx::Error> for FlushError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

/// One transaction of the commit: buckets, offsets, idempotency chunks and quarantine
/// entries change together or not at all. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx(pub(crate) Transaction<'static, Postgres>);

impl Tx {
    /// Begins a transaction on `pool`.
    pub async fn begin(pool: &PgPool) -> Result<Self, FlushError> {
        Ok(Self(pool.begin().await?))
    }

    /// Commits everything done in the transaction.
    pub async fn commit(self) -> Result<(), FlushError> {
        Ok(self.0.commit().await?)
    }
}

/// The stored offset row of a partition, if it has one.
pub async fn load_offset(
    pool: &PgPool,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Option<StoredOffset>> {
    let row = sqlx::query(
        "SELECT next_offset, cluster_id FROM consumer_offsets WHERE topic = $1 AND partition = $2",
    )
    .bind(topic)
    .bind(partition)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| StoredOffset {
        next_offset: r.get(0),
        cluster_id: r.get(1),
    }))
}

/// Row-locks every stored offset row of `topic`, so that no flush commits until `tx`
/// ends, and returns them by partition.
pub async fn lock_offsets(
    tx: &mut Tx,
    topic: &str,
) -> Result<Vec<(i32, StoredOffset)>, FlushError> {
    let rows = sqlx::query("SELECT partition, next_offset, cluster_id FROM consumer_offsets WHERE topic = $1 ORDER BY partition FOR UPDATE")
        .bind(topic)
        .fetch_all(&mut *tx.0)
        .await?;
    Ok(rows.iter().map(partition_offset).collect())
}

/// A `(partition, next_offset, cluster_id)` row.
pub(crate) fn partition_offset(r: &sqlx::postgres::PgRow) -> (i32, StoredOffset) {
    let offset = StoredOffset {
        next_offset: r.get(1),
        cluster_id: r.get(2),
    };
    (r.get(0), offset)
}

/// Compare-and-set of the partition's offset row, from the row as read (`read`:
/// `(next_offset, cluster_id)`, `None` when there was none) to `next_offset` in
/// `cluster_id`; false when the row is no longer the one read (fenced).
pub async fn advance_offset(
    tx: &mut Tx,
    topic: &str,
    partition: i32,
    read: Option<(i64, &str)>,
    next_offset: i64,
    cluster_id: &str,
) -> Result<bool, FlushError> {
    let result = match read {
        None => {
            sqlx::query("INSERT INTO consumer_offsets (topic, partition, next_offset, cluster_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                .bind(topic)
                .bind(partition)
                .bind(next_offset)
                .bind(cluster_id)
                .execute(&mut *tx.0)
                .await?
        }
        Some((offset, old_cluster)) => {
            sqlx::query(
                "UPDATE consumer_offsets SET next_offset = $3, cluster_id = $4, updated_at = now() \
                 WHERE topic = $1 AND partition = $2 AND next_offset = $5 AND cluster_id = $6",
            )
            .bind(topic)
            .bind(partition)
            .bind(next_offset)
            .bind(cluster_id)
            .bind(offset)
            .bind(old_cluster)
            .execute(&mut *tx.0)
            .await?
        }
    };
    Ok(result.rows_affected() == 1)
}

/// Records chunk ids as applied for the partition; returns those that were new.
pub async fn record_chunks(
    tx: &mut Tx,
    topic: &str,
    partition: i32,
    ids: &[&str],
) -> Result<HashSet<String>, FlushError> {
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_chunks (topic, partition, id) SELECT $1, $2, unnest($3::text[]) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(topic)
    .bind(partition)
    .bind(ids)
    .fetch_all(&mut *tx.0)
    .await?;
    Ok(new.into_iter().collect())
}

/// Forgets chunk ids older than `retention`; returns how many.
pub async fn prune_chunks(pool: &PgPool, retention: std::time::Duration) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM idempotency_chunks WHERE seen_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Merges deltas (several may be of the same series and hour) into the stored buckets,
/// creating series and rows as needed; returns the buckets as written, by
/// `(series_id, hour)`.
pub async fn apply_deltas(
    tx: &mut Tx,
    deltas: &[BucketRow<'_>],
) -> Result<HashMap<(i64, i64), Bucket>, FlushError> {
    let keys: Vec<(i64, i64)> = deltas.iter().map(|d| (d.series.id, d.hour)).collect();
    let stored = lock_stored(tx, &keys).await?;
    let mut merged: HashMap<(i64, i64), (SeriesRow<'_>, Bucket)> = HashMap::new();
    for d in deltas {
        let key = (d.series.id, d.hour);
        merged
            .entry(key)
            .or_insert_with(|| (d.series, stored.get(&key).cloned().unwrap_or_default()))
            .1
            .merge(d.bucket);
    }
    let rows = |existing: bool| -> Vec<BucketRow<'_>> {
        merged
            .iter()
            .filter(|(key, _)| stored.contains_key(key) == existing)
            .map(|(&(_, hour), (series, bucket))| BucketRow {
                series: *series,
                hour,
                bucket,
            })
            .collect()
    };
    let (existing, new) = (rows(true), rows(false));
    let series: Vec<SeriesRow<'_>> = new.iter().map(|b| b.series).collect();
    upsert_series(tx, &series).await?;
    write_buckets(tx, &existing, OnConflict::Overwrite).await?;
    // A row absent when locked had nothing to lock: if another flush has created it
    // since, overwriting it would lose that flush's samples.
    let inserted = write_buckets(tx, &new, OnConflict::Skip).await?;
    if inserted < new.len() as u64 {
        return Err(FlushError::Raced(new.len() - inserted as usize));
    }
    Ok(merged
        .into_iter()
        .map(|(key, (_, bucket))| (key, bucket))
        .collect())
}

/// Replaces the stored buckets of the hours in `[from, to)` by `buckets` (full values).
pub async fn replace_hours(
    tx: &mut Tx,
    from: i64,
    to: i64,
    buckets: &[BucketRow<'_>],
) -> Result<(), FlushError> {
    sqlx::query("DELETE FROM buckets WHERE hour >= to_timestamp($1 / 1000.0) AND hour < to_timestamp($2 / 1000.0)")
        .bind(from)
        .bind(to)
        .execute(&mut *tx.0)
        .await?;
    let series: Vec<SeriesRow<'_>> = buckets.iter().map(|b| b.series).collect();
    upsert_series(tx, &series).await?;
    write_buckets(tx, buckets, OnConflict::Overwrite).await?;
    Ok(())
}

/// Inserts the series not yet known.
async fn upsert_series(tx: &mut Tx, series: &[SeriesRow<'_>]) -> sqlx::Result<()> {
    let mut seen = HashSet::new();
    let (mut ids, mut services, mut metrics, mut tags) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in series {
        if seen.insert(s.id) {
            ids.push(s.id);
            services.push(s.service);
            metrics.push(s.metric);
            tags.push(s.tags_json);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO series (id, service, metric, tags) \
         SELECT id, service, metric, tags::jsonb FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, service, metric, tags) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&services)
    .bind(&metrics)
    .bind(&tags)
    .execute(&mut *tx.0)
    .await?;
    Ok(())
}

/// Reads and row-locks the stored buckets of `keys` (`(series_id, hour)`).
async fn lock_stored(
    tx: &mut Tx,
    keys: &[(i64, i64)],
) -> sqlx::Result<HashMap<(i64, i64), Bucket>> {
    let series: Vec<i64> = keys.iter().map(|k| k.0).collect();
    let hours: Vec<i64> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query(&format!(
        "SELECT b.series_id, (extract(epoch FROM b.hour) * 1000)::bigint, {BUCKET_COLUMNS} \
         FROM buckets b JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(series_id, hour_ms) \
           ON b.series_id = k.series_id AND b.hour = to_timestamp(k.hour_ms / 1000.0) \
         ORDER BY b.series_id, b.hour FOR UPDATE OF b"
    ))
    .bind(&series)
    .bind(&hours)
    .fetch_all(&mut *tx.0)
    .await?;
    rows.into_iter()
        .map(|r| Ok(((r.get(0), r.get(1)), bucket_from_row(&r, 2)?)))
        .collect()
}

/// What [`write_buckets`] does with a row that exists already.
enum OnConflict {
    /// Replace it: the value written was merged with it under its row lock.
    Overwrite,
    /// Leave it.
    Skip,
}

/// Writes full bucket values (already merged with what was stored); returns how many
/// rows were written.
async fn write_buckets(
    tx: &mut Tx,
    buckets: &[BucketRow<'_>],
    on_conflict: OnConflict,
) -> sqlx::Result<u64> {
    if buckets.is_empty() {
        return Ok(0);
    }
    let on_conflict = match on_conflict {
        OnConflict::Overwrite => {
            "DO UPDATE SET count = EXCLUDED.count, error_count = EXCLUDED.error_count, \
             sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max, last_at = EXCLUDED.last_at, \
             sketch = EXCLUDED.sketch, updated_at = now()"
        }
        OnConflict::Skip => "DO NOTHING",
    };
    let col = |f: fn(&Bucket) -> i64| buckets.iter().map(|w| f(w.bucket)).collect::<Vec<i64>>();
    let fcol = |f: fn(&Bucket) -> f64| buckets.iter().map(|w| f(w.bucket)).collect::<Vec<f64>>();
    let series: Vec<i64> = buckets.iter().map(|w| w.series.id).collect();
    let hours: Vec<i64> = buckets.iter().map(|w| w.hour).collect();
    let sketches: Vec<Vec<u8>> = buckets.iter().map(|w| w.bucket.sketch.to_bytes()).collect();
    let written = sqlx::query(&format!(
        "INSERT INTO buckets (series_id, hour, count, error_count, sum, min, max, last_at, sketch) \
         SELECT s, to_timestamp(h / 1000.0), c, e, su, mi, ma, to_timestamp(l / 1000.0), sk \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::float8[], $6::float8[], $7::float8[], $8::bigint[], $9::bytea[]) \
           AS u(s, h, c, e, su, mi, ma, l, sk) \
         ON CONFLICT (series_id, hour) {on_conflict}",
    ))
    .bind(&series)
    .bind(&hours)
    .bind(col(|b| b.count as i64))
    .bind(col(|b| b.error_count as i64))
    .bind(fcol(|b| b.sum))
    .bind(fcol(|b| b.min))
    .bind(fcol(|b| b.max))
    .bind(col(|b| b.last_at_ms))
    .bind(&sketches)
    .execute(&mut *tx.0)
    .await?;
    Ok(written.rows_affected())
}
