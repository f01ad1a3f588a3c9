//! The aggregator's flush, over `tidemark_store::buckets`: reading a partition's stored
//! offset (its fence), and committing the deltas of the flushable partitions together
//! with their offsets, idempotent chunks and set-aside messages in one transaction, so a
//! crash at any point neither loses nor double-counts a sample.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_model::Bucket;
use tidemark_store::buckets::{self, BucketRow, SeriesRow, Tx};
use tidemark_store::db::PgPool;
use tidemark_store::quarantine::{self, NewEntry};

use crate::state::{Deltas, Fence, PartitionState, Quarantined, SeriesMeta};

pub use tidemark_store::buckets::{prune_chunks, FlushError};

/// The stored offset row of a partition.
pub async fn load_fence(pool: &PgPool, topic: &str, partition: i32) -> anyhow::Result<Fence> {
    Ok(match buckets::load_offset(pool, topic, partition).await? {
        Some(row) => Fence::Row(row.next_offset, row.cluster_id),
        None => Fence::Absent,
    })
}

impl SeriesMeta {
    /// The series as stored.
    pub fn row(&self) -> SeriesRow<'_> {
        SeriesRow {
            id: self.id,
            service: &self.service,
            metric: &self.metric,
            tags_json: &self.tags_json,
        }
    }
}

/// A bucket as written: its series, hour and full (merged) value.
#[derive(Debug, Clone)]
pub struct Written {
    pub meta: Arc<SeriesMeta>,
    pub hour: i64,
    pub bucket: Bucket,
}

impl Written {
    /// The bucket as the store and the hot copy take it.
    pub fn row(&self) -> BucketRow<'_> {
        BucketRow {
            series: self.meta.row(),
            hour: self.hour,
            bucket: &self.bucket,
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
    let mut tx = Tx::begin(pool).await?;
    let mut out = Flushed::default();
    let selected = states
        .iter()
        .filter(|(p, st)| st.is_flushable() && only.is_none_or(|o| o == **p));
    for (&partition, st) in selected {
        let read = match &st.fence {
            Fence::Absent => None,
            Fence::Row(offset, cluster) => Some((*offset, cluster.as_str())),
        };
        if buckets::advance_offset(&mut tx, topic, partition, read, st.next_offset, cluster_id)
            .await?
        {
            set_aside(&mut tx, topic, partition, cluster_id, &st.quarantined).await?;
            out.committed.push(partition);
        } else {
            out.fenced.push(partition);
        }
    }
    let mut chunk_deltas: Vec<Deltas> = Vec::new();
    for &p in &out.committed {
        let ids = states[&p].chunk_ids();
        if !ids.is_empty() {
            let new = buckets::record_chunks(&mut tx, topic, p, &ids).await?;
            chunk_deltas.push(states[&p].chunk_deltas(|id| new.contains(id)));
        }
    }
    let deltas: Vec<&Deltas> = out
        .committed
        .iter()
        .map(|p| &states[p].buckets)
        .chain(chunk_deltas.iter())
        .collect();
    out.buckets = apply_deltas(&mut tx, &deltas).await?;
    tx.commit().await?;
    Ok(out)
}

/// Merges deltas into the stored buckets (creating series and rows as needed) and
/// returns the buckets as written.
pub(crate) async fn apply_deltas(
    tx: &mut Tx,
    deltas: &[&Deltas],
) -> Result<Vec<Written>, FlushError> {
    let rows: Vec<BucketRow<'_>> = deltas
        .iter()
        .flat_map(|d| d.iter())
        .map(|(&(_, hour), (meta, bucket))| BucketRow {
            series: meta.row(),
            hour,
            bucket,
        })
        .collect();
    let mut merged = buckets::apply_deltas(tx, &rows).await?;
    let mut written = Vec::with_capacity(merged.len());
    for d in deltas {
        for (&key, (meta, _)) in d.iter() {
            if let Some(bucket) = merged.remove(&key) {
                written.push(Written {
                    meta: meta.clone(),
                    hour: key.1,
                    bucket,
                });
            }
        }
    }
    Ok(written)
}

/// Writes the messages a partition set aside, each with its kind in its reason.
async fn set_aside(
    tx: &mut Tx,
    topic: &str,
    partition: i32,
    cluster_id: &str,
    messages: &[Quarantined],
) -> Result<(), FlushError> {
    let entries: Vec<NewEntry<'_>> = messages
        .iter()
        .map(|q| NewEntry {
            offset: q.offset,
            payload: &q.payload,
            reason: format!("{}: {}", q.kind.label(), q.reason),
        })
        .collect();
    quarantine::insert(tx, topic, partition, cluster_id, &entries).await
}
