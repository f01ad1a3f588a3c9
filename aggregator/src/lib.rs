//! The aggregator role: consumes sample batches, folds them into hourly buckets and
//! periodically applies them to Postgres together with the consumed offsets (one
//! transaction), then refreshes the Redis hot copy.
//!
//! Offsets live in Postgres, not in Kafka: on (re)assignment a partition resumes from the
//! offset stored with the buckets, skipping what is already applied. A flush commits a
//! partition only if its stored offset is still the one its deltas started from, which
//! fences off a stale owner after a rebalance.

pub mod hot;
pub mod replay;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use tidemark_core::backlog::Backlog;
use tidemark_core::backoff::Backoff;
use tidemark_core::hot::HotKeys;
use tidemark_core::Config;
use tokio_util::sync::CancellationToken;

use crate::hot::{HotBucket, HotWriter};
use crate::state::{Fence, OnGap, PartitionState, SeriesCache};

/// Flush early when this many samples wait in memory: about 3 s (the default flush
/// interval) at 650k samples/s.
const MAX_PENDING_SAMPLES: u64 = 2_000_000;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait before fetching again from an offset the consumer jumped past.
const REFETCH_PAUSE: Duration = Duration::from_millis(10);
/// How often applied idempotency chunks older than the retention are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);

/// Records partitions a rebalance took away or handed over, for the consume loop to
/// drop or resume.
#[derive(Default)]
pub struct RebalanceContext {
    revoked: PartitionList,
    assigned: PartitionList,
}

/// Partitions handed from librdkafka's rebalance callbacks to the consume loop.
#[derive(Default)]
struct PartitionList(Mutex<Vec<i32>>);

impl PartitionList {
    fn add(&self, partitions: impl IntoIterator<Item = i32>) {
        self.0
            .lock()
            .expect("partition list lock")
            .extend(partitions);
    }

    fn take(&self) -> Vec<i32> {
        std::mem::take(&mut *self.0.lock().expect("partition list lock"))
    }

    fn remove(&self, partitions: &[i32]) {
        self.0
            .lock()
            .expect("partition list lock")
            .retain(|p| !partitions.contains(p));
    }
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            // A partition still waiting to be resumed (Postgres was down) is no longer
            // ours: seeking it would fail for good, and every retry costs the consume
            // loop a round trip to the broker.
            self.assigned.remove(&partitions);
            self.revoked.add(partitions);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assigned
                .add(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

type Consumer_ = StreamConsumer<RebalanceContext>;

/// Connections the role needs, opened by the caller.
pub struct AggregatorDeps {
    pub brokers: String,
    pub pool: PgPool,
    pub redis: tidemark_core::hot::Redis,
    /// The embedded broker's bound (`standalone` only), released as samples commit.
    pub backlog: Option<Arc<Backlog>>,
}

pub struct Aggregator {
    consumer: Arc<Consumer_>,
    pool: PgPool,
    hot: HotWriter,
    topic: String,
    cluster_id: String,
    flush_interval: Duration,
    idempotency_retention: Duration,
    states: HashMap<i32, PartitionState>,
    series: SeriesCache,
    backlog: Option<Arc<Backlog>>,
}

impl Aggregator {
    pub async fn build(config: &Config, deps: AggregatorDeps) -> anyhow::Result<Self> {
        let consumer: Consumer_ = tidemark_core::kafka::client_config(&deps.brokers)
            .set("group.id", format!("{}.aggregator", config.topics.prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Apache Kafka answers a fetch as soon as it has data, or after this wait.
            // tansu 0.6 sleeps it out on every fetch (half of it from 250 ms up) and
            // sends at most 5 MiB, so librdkafka's 500 ms held an aggregator there to
            // about 20 MiB/s (docs/decisions.md).
            .set("fetch.wait.max.ms", "100")
            .set(
                "session.timeout.ms",
                config.consumer_session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.consumer_session_timeout.as_millis() / 3)
                    .max(100)
                    .to_string(),
            )
            .create_with_context(RebalanceContext::default())?;
        let brokers = deps.brokers.clone();
        let cluster_id = tokio::task::spawn_blocking(move || {
            tidemark_core::kafka::cluster_id(&brokers, Duration::from_secs(10))
        })
        .await??;
        consumer.subscribe(&[&config.topics.samples])?;
        let hot = HotWriter::new(
            deps.redis,
            HotKeys::new(&config.topics.prefix),
            deps.pool.clone(),
        );
        Ok(Self {
            consumer: Arc::new(consumer),
            pool: deps.pool,
            hot,
            topic: config.topics.samples.clone(),
            cluster_id,
            flush_interval: config.flush_interval,
            idempotency_retention: config.idempotency_retention,
            states: HashMap::new(),
            series: SeriesCache::default(),
            backlog: deps.backlog,
        })
    }

    /// Consumes until `shutdown`, then flushes what it holds.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.topic, cluster_id = %self.cluster_id, "aggregator consuming");
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer = self.consumer.clone();
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    self.resume_assigned().await;
                    self.flush(&shutdown).await;
                }
                _ = prune.tick() => self.prune_chunks().await,
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        self.drop_revoked();
                        self.resume_assigned().await;
                        self.consume_with_retry(msg.partition(), msg.offset(), msg.payload().unwrap_or_default(), &shutdown).await;
                        if self.pending_samples() >= MAX_PENDING_SAMPLES {
                            self.flush(&shutdown).await;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("tidemark_aggregator_consume_errors_total").increment(1);
                        tracing::warn!(error = %e, "consume error");
                    }
                },
            }
        }
        self.drop_revoked();
        self.flush(&shutdown).await;
        tracing::info!("aggregator drained");
        Ok(())
    }

    async fn prune_chunks(&self) {
        match store::prune_chunks(&self.pool, self.idempotency_retention).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "forgot old idempotency chunks"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune idempotency chunks; will retry"),
        }
    }

    fn pending_samples(&self) -> u64 {
        self.states.values().map(|s| s.samples).sum()
    }

    fn drop_revoked(&mut self) {
        for p in self.consumer.context().revoked.take() {
            // Unflushed deltas are dropped: the next owner re-reads them from the stored offset.
            self.states.remove(&p);
        }
    }

    /// Resumes each newly assigned partition from its stored offset at once, rather than
    /// on its first message: the consumer starts at Kafka's committed offset, which may
    /// lie inside a record batch, and tansu then serves nothing until a later batch
    /// arrives (so acknowledged samples would wait, unapplied, for more traffic). A
    /// partition that cannot be resumed yet (Postgres or the broker down) is tried again
    /// on the next tick.
    async fn resume_assigned(&mut self) {
        let mut retry = Vec::new();
        for partition in self.consumer.context().assigned.take() {
            if let Err(e) = self.resume(partition).await {
                tracing::warn!(
                    partition,
                    error = format!("{e:#}"),
                    "cannot resume assigned partition yet; retrying"
                );
                retry.push(partition);
            }
        }
        self.consumer.context().assigned.add(retry);
    }

    /// Loads `partition`'s stored offset and fetches from before any record batch that
    /// could hold it; offsets already applied are skipped as they arrive.
    async fn resume(&mut self, partition: i32) -> anyhow::Result<()> {
        self.load_state(partition).await?;
        let next = self.states[&partition].next_offset;
        self.seek_back(partition, next - tidemark_core::kafka::MAX_BATCH_MESSAGES)
    }

    /// Loads `partition`'s state from its stored offset unless it is held already.
    async fn load_state(&mut self, partition: i32) -> anyhow::Result<()> {
        if !self.states.contains_key(&partition) {
            let st = self.resume_point(partition).await?;
            self.states.insert(partition, st);
        }
        Ok(())
    }

    async fn consume(&mut self, partition: i32, offset: i64, payload: &[u8]) -> anyhow::Result<()> {
        self.load_state(partition).await?;
        let st = self.states.get_mut(&partition).expect("loaded above");
        if offset < st.next_offset {
            return Ok(()); // already applied
        }
        if offset > st.next_offset {
            match st.on_gap(std::time::Instant::now()) {
                OnGap::Refetch(from) => return self.refetch(partition, offset, from).await,
                OnGap::Accept => {
                    metrics::counter!("tidemark_aggregator_offset_gaps_total").increment(1);
                    tracing::error!(
                        partition,
                        expected = st.next_offset,
                        got = offset,
                        "offsets missing from the log; consuming past them"
                    );
                }
            }
        }
        let series = &mut self.series;
        match tidemark_schemas::with_sample_batch(payload, |batch| {
            st.fold(offset, batch, series);
            batch.samples.len()
        }) {
            Ok(folded) => {
                metrics::counter!("tidemark_aggregator_samples_folded_total")
                    .increment(folded as u64);
            }
            Err(e) => {
                metrics::counter!("tidemark_aggregator_decode_errors_total").increment(1);
                tracing::error!(partition, offset, error = %e, "skipping undecodable message");
                st.skip(offset);
            }
        }
        Ok(())
    }

    /// Where a newly seen partition resumes: the stored offset, or the start of the log
    /// when nothing is stored for this cluster.
    async fn resume_point(&self, partition: i32) -> anyhow::Result<PartitionState> {
        let fence = store::load_fence(&self.pool, &self.topic, partition).await?;
        let next = match &fence {
            Fence::Row(offset, cluster) if *cluster == self.cluster_id => *offset,
            other => {
                if let Fence::Row(_, cluster) = other {
                    tracing::warn!(partition, old = %cluster, new = %self.cluster_id, "the broker cluster changed; reading this partition from its start");
                }
                let (low, _) = tokio::task::block_in_place(|| {
                    self.consumer
                        .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
                })?;
                low
            }
        };
        Ok(PartitionState::new(fence, next))
    }

    /// The consumer delivered `seen`, past the next offset to apply: it started past the
    /// stored offset (Kafka's committed offset is only for lag monitoring), or the broker
    /// skipped offsets (see [`state::GAP_GRACE`]). After a short pause, fetch again from
    /// `from` (at or before the next offset to apply).
    async fn refetch(&mut self, partition: i32, seen: i64, from: i64) -> anyhow::Result<()> {
        metrics::counter!("tidemark_aggregator_refetches_total").increment(1);
        tokio::time::sleep(REFETCH_PAUSE).await;
        tracing::info!(
            partition,
            seen,
            expected = self.states[&partition].next_offset,
            from,
            "fetching again from before the next offset to apply"
        );
        self.seek_back(partition, from)
    }

    /// Makes the consumer fetch `partition` from `from` (at or before its next offset to
    /// apply), or from the log start if that is later. A next offset below the log start
    /// means samples expired from Kafka unapplied: logged, and consumed past.
    fn seek_back(&mut self, partition: i32, from: i64) -> anyhow::Result<()> {
        let low = tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
        })?
        .0;
        let st = self.states.get_mut(&partition).expect("present");
        if st.next_offset < low {
            metrics::counter!("tidemark_aggregator_offset_gaps_total").increment(1);
            tracing::error!(
                partition,
                stored = st.next_offset,
                log_start = low,
                "samples between the stored offset and the log start are gone from Kafka"
            );
            st.next_offset = low;
        }
        self.consumer.seek(
            &self.topic,
            partition,
            Offset::Offset(from.max(low)),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Handles one message, retrying (Postgres or Kafka may be down while a partition's
    /// stored offset is read) until it succeeds or shutdown begins.
    async fn consume_with_retry(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        while let Err(e) = self.consume(partition, offset, payload).await {
            metrics::counter!("tidemark_aggregator_consume_retries_total").increment(1);
            tracing::warn!(
                partition,
                offset,
                error = format!("{e:#}"),
                attempts = backoff.attempts(),
                "cannot handle message yet; retrying"
            );
            if shutdown.is_cancelled() {
                return; // unapplied: re-read from the stored offset after restart
            }
            backoff.wait().await;
        }
    }

    /// Applies everything pending; retries with backoff while Postgres fails, consuming
    /// nothing meanwhile, so no offset advances without its data.
    async fn flush(&mut self, shutdown: &CancellationToken) {
        if !self.states.values().any(PartitionState::is_dirty) {
            return;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let started = std::time::Instant::now();
        loop {
            match store::flush(&self.pool, &self.topic, &self.cluster_id, &self.states).await {
                Ok(out) => {
                    metrics::histogram!("tidemark_aggregator_flush_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    self.after_commit(out).await;
                    return;
                }
                Err(e) => {
                    metrics::counter!("tidemark_aggregator_flush_errors_total").increment(1);
                    tracing::warn!(error = %e, attempts = backoff.attempts(), "flush failed; retrying");
                    if shutdown.is_cancelled() && backoff.attempts() >= 5 {
                        tracing::warn!(
                            "giving up at shutdown; unflushed samples will be re-read from Kafka"
                        );
                        return;
                    }
                    backoff.wait().await;
                }
            }
        }
    }

    async fn after_commit(&mut self, out: store::Flushed) {
        for p in &out.fenced {
            metrics::counter!("tidemark_aggregator_fenced_total").increment(1);
            tracing::warn!(
                partition = p,
                "another consumer advanced this partition; dropping our deltas"
            );
            self.states.remove(p);
        }
        let hot: Vec<HotBucket<'_>> = out
            .buckets
            .iter()
            .map(|w| {
                (
                    w.meta.service.as_str(),
                    w.meta.metric.as_str(),
                    w.meta.id,
                    w.hour,
                    &w.bucket,
                )
            })
            .collect();
        self.hot.publish(&hot).await;
        drop(hot);
        let mut tpl = TopicPartitionList::new();
        let mut folded = 0;
        for p in &out.committed {
            let st = self
                .states
                .get_mut(p)
                .expect("committed partitions are held");
            folded += st.samples;
            if let Some(backlog) = &self.backlog {
                backlog.release(*p, st.bytes);
            }
            *st = st.committed(&self.cluster_id);
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(st.next_offset));
        }
        metrics::counter!("tidemark_aggregator_samples_committed_total").increment(folded);
        if tpl.count() > 0 {
            // For lag monitoring only; the truth is in Postgres.
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "kafka offset commit failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::ClientConfig;

    fn partitions(ps: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &p in ps {
            tpl.add_partition("samples", p);
        }
        tpl
    }

    #[test]
    fn a_revoked_partition_is_no_longer_waiting_to_be_resumed() {
        let consumer: BaseConsumer<RebalanceContext> = ClientConfig::new()
            .set("group.id", "rebalance-test")
            .create_with_context(RebalanceContext::default())
            .unwrap();
        let ctx = consumer.context();
        ctx.post_rebalance(&consumer, &Rebalance::Assign(&partitions(&[0, 1, 2])));
        // The consume loop could not resume 1 and 2 (Postgres down) and keeps them.
        let assigned = ctx.assigned.take();
        assert_eq!(assigned, vec![0, 1, 2]);
        ctx.assigned.add([1, 2]);

        ctx.pre_rebalance(&consumer, &Rebalance::Revoke(&partitions(&[0, 1])));
        ctx.post_rebalance(&consumer, &Rebalance::Assign(&partitions(&[3])));

        assert_eq!(ctx.revoked.take(), vec![0, 1]);
        assert_eq!(ctx.assigned.take(), vec![2, 3]);
    }
}
