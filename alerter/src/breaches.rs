//! Reading the breaches topic: every partition assigned by hand (no consumer group), each
//! fetched from the offset stored in Postgres with the alerts, or from the log start when
//! none is stored for this Kafka cluster. Offsets already applied are skipped as they
//! arrive; a message past the next offset makes the partition be fetched again, until the
//! missing offsets arrive or [`GAP_GRACE`] says they never will.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tidemark_runtime::kafka::MAX_BATCH_MESSAGES;
use tidemark_store::alerts;
use tidemark_store::db::PgPool;

use crate::telemetry;

/// How long a metadata request or a seek may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long offsets a partition jumped over are looked for before the jump is believed.
/// Kafka leaves no gaps in a topic that is neither compacted nor transactional, but
/// tansu's in-memory engine reserves offsets before the batch holding them is readable.
pub const GAP_GRACE: Duration = Duration::from_secs(2);

/// What to do with a message the consumer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Apply it: it is the partition's next offset (or the gap before it was believed).
    Apply,
    /// Applied before.
    Skip,
    /// It lies past the next offset: fetch the partition again from this offset.
    Refetch(i64),
}

/// The next offset to apply of one partition, and the gap before a message past it.
#[derive(Debug, Clone, Copy)]
struct Partition {
    next: i64,
    /// Since when a message past `next` has been seen.
    gap_since: Option<Instant>,
}

impl Partition {
    fn admit(&mut self, offset: i64, now: Instant) -> Admit {
        if offset < self.next {
            return Admit::Skip;
        }
        if offset == self.next {
            self.gap_since = None;
            return Admit::Apply;
        }
        let since = *self.gap_since.get_or_insert(now);
        if now.duration_since(since) < GAP_GRACE {
            return Admit::Refetch(self.next - MAX_BATCH_MESSAGES);
        }
        self.gap_since = None;
        Admit::Apply
    }
}

/// The consumer of the breaches topic and where each of its partitions stands.
pub struct Reader {
    consumer: Arc<StreamConsumer>,
    pub topic: String,
    pub cluster_id: String,
    partitions: HashMap<i32, Partition>,
}

impl Reader {
    pub fn new(consumer: StreamConsumer, topic: String, cluster_id: String) -> Self {
        Self {
            consumer: Arc::new(consumer),
            topic,
            cluster_id,
            partitions: HashMap::new(),
        }
    }

    pub fn consumer(&self) -> Arc<StreamConsumer> {
        self.consumer.clone()
    }

    /// How many partitions are assigned.
    pub fn assigned(&self) -> usize {
        self.partitions.len()
    }

    /// How many partitions the topic has now.
    pub async fn partition_count(&self) -> anyhow::Result<usize> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), KAFKA_TIMEOUT)?;
            Ok(metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len()))
        })
        .await?
    }

    /// Assigns every partition of the topic, each fetched from before any record batch
    /// that could hold its stored next offset.
    pub async fn assign(&mut self, pool: &PgPool) -> anyhow::Result<()> {
        let count = self.partition_count().await?;
        anyhow::ensure!(count > 0, "topic {} has no partitions yet", self.topic);
        let stored = alerts::load_offsets(pool, &self.topic).await?;
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let lows = tokio::task::spawn_blocking(move || {
            (0..count as i32)
                .map(|p| Ok((p, consumer.fetch_watermarks(&topic, p, KAFKA_TIMEOUT)?.0)))
                .collect::<anyhow::Result<Vec<(i32, i64)>>>()
        })
        .await??;
        let mut tpl = TopicPartitionList::new();
        self.partitions.clear();
        for (p, low) in lows {
            let stored = stored
                .get(&p)
                .filter(|s| s.cluster_id == self.cluster_id)
                .map(|s| s.next_offset);
            if let Some(offset) = stored.filter(|offset| *offset < low) {
                telemetry::offsets_expired(p, offset, low);
            }
            let next = stored.unwrap_or(low).max(low);
            let from = (next - MAX_BATCH_MESSAGES).max(low);
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(from))?;
            let partition = Partition {
                next,
                gap_since: None,
            };
            self.partitions.insert(p, partition);
        }
        self.consumer.assign(&tpl)?;
        tracing::info!(topic = %self.topic, partitions = count, "alerter consuming breaches");
        Ok(())
    }

    /// Stops fetching (on standby).
    pub fn unassign(&mut self) {
        self.partitions.clear();
        if let Err(e) = self.consumer.unassign() {
            tracing::warn!(error = %e, "cannot unassign the breaches topic");
        }
    }

    /// What to do with the message at `offset` of `partition`.
    pub fn admit(&mut self, partition: i32, offset: i64, now: Instant) -> Admit {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return Admit::Skip; // fetched before an unassign
        };
        let next = p.next;
        let admit = p.admit(offset, now);
        if admit == Admit::Apply && offset > next {
            telemetry::offsets_missing(partition, next, offset);
        }
        admit
    }

    /// Fetches `partition` again from `from` (or the log start, if later).
    pub async fn refetch(&self, partition: i32, from: i64) -> anyhow::Result<()> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let low = consumer
                .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)?
                .0;
            consumer.seek(
                &topic,
                partition,
                Offset::Offset(from.max(low)),
                KAFKA_TIMEOUT,
            )?;
            Ok(())
        })
        .await?
    }

    /// The message at `offset` of `partition` is committed to Postgres.
    pub fn applied(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.next = offset + 1;
        }
        // For lag monitoring only; the truth is in Postgres.
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&self.topic, partition, Offset::Offset(offset + 1))
            .is_ok()
        {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "kafka offset commit failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_applied_in_order_and_gaps_are_looked_for_before_being_believed() {
        let t0 = Instant::now();
        let mut p = Partition {
            next: 5_000,
            gap_since: None,
        };
        assert_eq!(p.admit(4_999, t0), Admit::Skip);
        assert_eq!(p.admit(5_002, t0), Admit::Refetch(4_000));
        let later = t0 + GAP_GRACE - Duration::from_millis(1);
        assert_eq!(
            p.admit(5_002, later),
            Admit::Refetch(4_000),
            "still within the grace"
        );
        assert_eq!(
            p.admit(5_000, later),
            Admit::Apply,
            "the missing offset arrived"
        );
        assert_eq!(p.gap_since, None, "and the gap is forgotten");
        p.next = 5_001;
        assert_eq!(p.admit(5_002, later), Admit::Refetch(4_001));
        assert_eq!(
            p.admit(5_002, later + GAP_GRACE),
            Admit::Apply,
            "believed after the grace"
        );
        assert_eq!(p.gap_since, None);
    }
}
