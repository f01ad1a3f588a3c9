//! Postgres side of the aggregator: reading a partition's stored offset (its fence) and
//! the flush transaction that applies bucket deltas and advances offsets together, so a
//! crash at any point neither loses nor double-counts a sample.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{PgPool, Postgres, Row, Transaction};
use tidemark_model::Bucket;
use tidemark_store::db::{bucket_from_row, BUCKET_COLUMNS};

use crate::state::{Deltas, Fence, PartitionState, Quarantined, SeriesMeta};

/// The stored offset row of a partition.
pub async fn load_fence(pool: &PgPool, topic: &str, partition: i32) -> sqlx::Result<Fence> {
    let row = sqlx::query(
        "SELECT next_offset, cluster_id FROM consumer_offsets WHERE topic = $1 AND partition = $2",
    )
    .bind(topic)
    .bind(partition)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => Fence::Row(r.get(0), r.get(1)),
        None => Fence::Absent,
    })
}

/// A bucket as written: its partition, series, hour and full (merged) value.
#[derive(Debug, Clone)]
pub struct Written {
    pub partition: i32,
    pub meta: Arc<SeriesMeta>,
    pub hour: i64,
    pub bucket: Bucket,
}

impl Written {
    /// The bucket as the hot copy takes it.
    pub fn hot(&self) -> crate::hot::HotBucket<'_> {
        (
            self.meta.service.as_str(),
            self.meta.metric.as_str(),
            self.meta.id,
            self.hour,
            &self.bucket,
        )
    }
}

/// Why a flush did not commit; nothing of it was applied, so it can be retried as is.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Bucket rows this flush found absent were created by another flush before it
    /// could insert them (a series that moved partition); a retry merges into them.
    #[error("{0} bucket rows were created by another flush meanwhile")]
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

/// Outcome of a flush: which partitions committed and which were fenced off.
#[derive(Debug, Default)]
pub struct Flushed {
    pub committed: Vec<i32>,
    pub fenced: Vec<i32>,
    pub buckets: Vec<Written>,
}

/// Applies the deltas of the flushable partitions (all, or `only` one) in one
/// transaction. A partition whose stored offset no longer equals its fence (another
/// consumer advanced it) is left out; its deltas are dropped by the caller and re-read
/// from the stored offset. Chunks of idempotent requests are applied only if their id
/// is new for the partition, and recorded in the same transaction, as are the messages
/// the partition set aside.
pub async fn flush(
    pool: &PgPool,
    topic: &str,
    cluster_id: &str,
    states: &HashMap<i32, PartitionState>,
    only: Option<i32>,
) -> Result<Flushed, FlushError> {
    let mut tx = pool.begin().await?;
    let mut out = Flushed::default();
    let selected = states
        .iter()
        .filter(|(p, st)| st.is_flushable() && only.is_none_or(|o| o == **p));
    for (&partition, st) in selected {
        if advance_offset(&mut tx, topic, partition, cluster_id, st).await? {
            quarantine(&mut tx, topic, partition, cluster_id, &st.quarantined).await?;
            out.committed.push(partition);
        } else {
            out.fenced.push(partition);
        }
    }
    let mut chunk_deltas: Vec<(i32, Deltas)> = Vec::new();
    for &p in &out.committed {
        let ids = states[&p].chunk_ids();
        if !ids.is_empty() {
            let new = record_chunks(&mut tx, topic, p, &ids).await?;
            chunk_deltas.push((p, states[&p].chunk_deltas(|id| new.contains(id))));
        }
    }
    let deltas: Vec<(i32, &Deltas)> = out
        .committed
        .iter()
        .map(|p| (*p, &states[p].buckets))
        .chain(chunk_deltas.iter().map(|(p, d)| (*p, d)))
        .collect();
    out.buckets = apply_deltas(&mut tx, deltas).await?;
    tx.commit().await?;
    Ok(out)
}

/// Merges deltas into the stored buckets (creating series and rows as needed) and
/// returns the buckets as written.
pub(crate) async fn apply_deltas(
    tx: &mut Transaction<'_, Postgres>,
    deltas: Vec<(i32, &Deltas)>,
) -> Result<Vec<Written>, FlushError> {
    let keys: Vec<(i64, i64)> = deltas.iter().flat_map(|(_, d)| d.keys().copied()).collect();
    let stored = lock_stored(tx, &keys).await?;
    let mut merged: HashMap<(i64, i64), Written> = HashMap::new();
    for (partition, d) in deltas {
        for (&key, (meta, delta)) in d {
            merged
                .entry(key)
                .or_insert_with(|| Written {
                    partition,
                    meta: meta.clone(),
                    hour: key.1,
                    bucket: stored.get(&key).cloned().unwrap_or_default(),
                })
                .bucket
                .merge(delta);
        }
    }
    let (existing, new): (Vec<Written>, Vec<Written>) = merged
        .into_values()
        .partition(|w| stored.contains_key(&(w.meta.id, w.hour)));
    let series: Vec<&SeriesMeta> = new.iter().map(|w| w.meta.as_ref()).collect();
    upsert_series(tx, &series).await?;
    write_buckets(tx, &existing, OnConflict::Overwrite).await?;
    // A row absent when locked had nothing to lock: if another flush has created it
    // since, overwriting it would lose that flush's samples.
    let inserted = write_buckets(tx, &new, OnConflict::Skip).await?;
    if inserted < new.len() as u64 {
        return Err(FlushError::Raced(new.len() - inserted as usize));
    }
    Ok(existing.into_iter().chain(new).collect())
}

/// Writes the messages a partition set aside. Only the flush that advances the offset
/// past a message writes it, so each is written once; `ON CONFLICT` is a guard.
async fn quarantine(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    partition: i32,
    cluster_id: &str,
    messages: &[Quarantined],
) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let offsets: Vec<i64> = messages.iter().map(|q| q.offset).collect();
    let payloads: Vec<&[u8]> = messages.iter().map(|q| q.payload.as_slice()).collect();
    let reasons: Vec<String> = messages
        .iter()
        .map(|q| format!("{}: {}", q.kind.label(), q.reason))
        .collect();
    sqlx::query(
        "INSERT INTO quarantine (topic, partition, cluster_id, \"offset\", payload, reason) \
         SELECT $1, $2, $3, o, p, r FROM UNNEST($4::bigint[], $5::bytea[], $6::text[]) AS u(o, p, r) \
         ON CONFLICT DO NOTHING",
    )
    .bind(topic)
    .bind(partition)
    .bind(cluster_id)
    .bind(&offsets)
    .bind(&payloads)
    .bind(&reasons)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records chunk ids as applied for the partition; returns those that were new.
pub(crate) async fn record_chunks(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    partition: i32,
    ids: &[&str],
) -> sqlx::Result<HashSet<String>> {
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_chunks (topic, partition, id) SELECT $1, $2, unnest($3::text[]) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(topic)
    .bind(partition)
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(new.into_iter().collect())
}

/// Forgets chunk ids older than `retention`; returns how many.
pub async fn prune_chunks(pool: &PgPool, retention: std::time::Duration) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM idempotency_chunks WHERE seen_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Compare-and-set of the partition's offset row; false when fenced.
async fn advance_offset(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    partition: i32,
    cluster_id: &str,
    st: &PartitionState,
) -> sqlx::Result<bool> {
    let result = match &st.fence {
        Fence::Absent => {
            sqlx::query("INSERT INTO consumer_offsets (topic, partition, next_offset, cluster_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                .bind(topic)
                .bind(partition)
                .bind(st.next_offset)
                .bind(cluster_id)
                .execute(&mut **tx)
                .await?
        }
        Fence::Row(offset, old_cluster) => {
            sqlx::query(
                "UPDATE consumer_offsets SET next_offset = $3, cluster_id = $4, updated_at = now() \
                 WHERE topic = $1 AND partition = $2 AND next_offset = $5 AND cluster_id = $6",
            )
            .bind(topic)
            .bind(partition)
            .bind(st.next_offset)
            .bind(cluster_id)
            .bind(offset)
            .bind(old_cluster)
            .execute(&mut **tx)
            .await?
        }
    };
    Ok(result.rows_affected() == 1)
}

/// Inserts the series not yet known.
pub(crate) async fn upsert_series(
    tx: &mut Transaction<'_, Postgres>,
    series: &[&SeriesMeta],
) -> sqlx::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let (mut ids, mut services, mut metrics, mut tags) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for meta in series.iter().copied() {
        if seen.insert(meta.id) {
            ids.push(meta.id);
            services.push(meta.service.as_str());
            metrics.push(meta.metric.as_str());
            tags.push(meta.tags_json.as_str());
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reads and row-locks the stored buckets that the deltas touch.
async fn lock_stored(
    tx: &mut Transaction<'_, Postgres>,
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
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|r| Ok(((r.get(0), r.get(1)), bucket_from_row(&r, 2)?)))
        .collect()
}

/// What [`write_buckets`] does with a row that exists already.
pub(crate) enum OnConflict {
    /// Replace it: the value written was merged with it under its row lock.
    Overwrite,
    /// Leave it.
    Skip,
}

/// Writes full bucket values (already merged with what was stored); returns how many
/// rows were written.
pub(crate) async fn write_buckets(
    tx: &mut Transaction<'_, Postgres>,
    buckets: &[Written],
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
    let col = |f: fn(&Bucket) -> i64| buckets.iter().map(|w| f(&w.bucket)).collect::<Vec<i64>>();
    let fcol = |f: fn(&Bucket) -> f64| buckets.iter().map(|w| f(&w.bucket)).collect::<Vec<f64>>();
    let series: Vec<i64> = buckets.iter().map(|w| w.meta.id).collect();
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
    .execute(&mut **tx)
    .await?;
    Ok(written.rows_affected())
}
