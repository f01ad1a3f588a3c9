//! `tidemark replay`: rebuilds the buckets of a range of hours from what Kafka still
//! retains, e.g. after a bad deploy. The rebuilt range replaces the stored one in one
//! transaction that also holds the partitions' offset rows, so the result is exactly
//! "every sample up to the stored offsets": a running aggregator waits at its next
//! flush and then applies only what comes after.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tidemark_model::bucket::{hour_start, HOUR_MS};
use tidemark_model::time::format_instant;
use tidemark_store::buckets::{self, Tx};
use tidemark_store::db::PgPool;

use crate::state::{Fence, PartitionState, SeriesCache};
use crate::store::Written;

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub partitions: usize,
    pub messages: u64,
    pub samples_in_range: u64,
    pub buckets: usize,
    pub hours: i64,
}

/// Told how far the replay got.
pub trait Progress {
    fn start(&self, total_messages: u64);
    fn advance(&self, messages: u64);
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the broker no longer holds all samples from {from}: partition {partition} now starts at offset {low}, and the deleted messages before it may hold samples of the range; replay a later range")]
    Trimmed {
        from: String,
        partition: i32,
        low: i64,
    },
    #[error("the stored offsets belong to Kafka cluster {stored}, not {current}; nothing to replay from this broker")]
    OtherCluster { stored: String, current: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The range `[from, to)` widened to whole hours.
pub fn hour_range(from_ms: i64, to_ms: i64) -> (i64, i64) {
    (hour_start(from_ms), hour_start(to_ms + HOUR_MS - 1))
}

/// Rebuilds the hours in `[from_ms, to_ms)` (widened to whole hours). `max_future` is how
/// far ahead of its message a sample's timestamp may be: messages produced that long
/// before `from_ms` may hold samples of the range, so they must still be retained.
pub async fn replay(
    pool: &PgPool,
    brokers: &str,
    topic: &str,
    from_ms: i64,
    to_ms: i64,
    max_future: Duration,
    progress: &dyn Progress,
) -> Result<ReplaySummary, ReplayError> {
    let (from, to) = hour_range(from_ms, to_ms);
    let consumer: BaseConsumer = tidemark_runtime::kafka::client_config(brokers)
        .set("group.id", format!("{topic}.replay"))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(anyhow::Error::from)?;
    let starts = tokio::task::block_in_place(|| {
        start_offsets(&consumer, topic, from - max_future.as_millis() as i64)
    })?;
    let cluster = tidemark_runtime::kafka::cluster_id(brokers, Duration::from_secs(10))?;

    let mut tx = Tx::begin(pool).await.map_err(anyhow::Error::from)?;
    // Holding these rows keeps aggregators from committing until the range is replaced.
    let rows = buckets::lock_offsets(&mut tx, topic)
        .await
        .map_err(anyhow::Error::from)?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for (partition, stored) in rows {
        if stored.cluster_id != cluster {
            return Err(ReplayError::OtherCluster {
                stored: stored.cluster_id,
                current: cluster,
            });
        }
        ends.insert(partition, stored.next_offset);
    }
    let total: u64 = starts
        .iter()
        .map(|(p, start)| (ends.get(p).copied().unwrap_or(0) - start).max(0) as u64)
        .sum();
    progress.start(total);

    let mut series = SeriesCache::default();
    let mut summary = ReplaySummary {
        partitions: starts.len(),
        hours: (to - from) / HOUR_MS,
        ..Default::default()
    };
    let mut rebuilt: Vec<Written> = Vec::new();
    for (&partition, &start) in &starts {
        let end = ends.get(&partition).copied().unwrap_or(0);
        if end <= start {
            continue;
        }
        let state = tokio::task::block_in_place(|| {
            read_partition(
                &consumer,
                topic,
                partition,
                start,
                end,
                &mut series,
                progress,
            )
        })?;
        summary.messages += (end - start) as u64;
        // As the aggregator did: each idempotent chunk counts at its first occurrence.
        let mut deltas = state.chunk_deltas(|_| true);
        for (key, (meta, bucket)) in state.buckets {
            deltas
                .entry(key)
                .or_insert_with(|| (meta, Default::default()))
                .1
                .merge(&bucket);
        }
        for ((_, hour), (meta, bucket)) in deltas {
            if (from..to).contains(&hour) {
                summary.samples_in_range += bucket.count;
                rebuilt.push(Written { meta, hour, bucket });
            }
        }
    }
    summary.buckets = rebuilt.len();

    let rows: Vec<_> = rebuilt.iter().map(Written::row).collect();
    buckets::replace_hours(&mut tx, from, to, &rows)
        .await
        .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(summary)
}

/// Per partition, where the retained log starts, refusing when messages that may hold
/// samples from `since_ms` on were already deleted: the log was trimmed (its start is
/// past offset 0) and its oldest retained message is not older than `since_ms`.
///
/// Replay reads the whole retained log rather than seeking by timestamp: simpler, and
/// correct whatever order timestamps arrive in.
fn start_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    since_ms: i64,
) -> Result<HashMap<i32, i64>, ReplayError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(anyhow::Error::from)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut starts = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(anyhow::Error::from)?;
        if low > 0 {
            let oldest = if high > low {
                Some(timestamp_at(consumer, topic, p, low)?)
            } else {
                None
            };
            if oldest.is_none_or(|ts| ts >= since_ms) {
                return Err(ReplayError::Trimmed {
                    from: format_instant(since_ms),
                    partition: p,
                    low,
                });
            }
        }
        starts.insert(p, low);
    }
    Ok(starts)
}

/// The timestamp of the message at `offset`.
fn timestamp_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let msg = consumer.poll(Duration::from_secs(10)).ok_or_else(|| {
        anyhow::anyhow!("partition {partition}: no message at offset {offset} within 10s")
    })??;
    msg.timestamp()
        .to_millis()
        .ok_or_else(|| anyhow::anyhow!("partition {partition}: message {offset} has no timestamp"))
}

fn read_partition(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    series: &mut SeriesCache,
    progress: &dyn Progress,
) -> anyhow::Result<PartitionState> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let mut state = PartitionState::new(Fence::Absent, start);
    while state.next_offset < end {
        let Some(msg) = consumer.poll(Duration::from_secs(10)) else {
            anyhow::bail!(
                "partition {partition}: no message at offset {} within 10s",
                state.next_offset
            );
        };
        let msg = msg?;
        if msg.offset() >= end {
            break;
        }
        // The aggregator's own check: what it quarantined, a rebuild leaves out too.
        if let Err(q) = state.apply(
            msg.offset(),
            msg.payload().unwrap_or_default(),
            series,
            None,
        ) {
            tracing::warn!(partition, offset = q.offset, reason = %q.reason, "leaving out a quarantined message");
        }
        progress.advance(1);
    }
    Ok(state)
}
