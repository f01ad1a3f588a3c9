//! The aggregator role: consumes sample batches, folds them into hourly buckets and
//! periodically applies them to Postgres together with the consumed offsets (one
//! transaction), then refreshes the Redis hot copy.
//!
//! Which partitions an aggregator reads is decided by leases in Postgres (`lease`), not
//! by a Kafka consumer group: the consumer is assigned exactly the partitions whose
//! leases it holds. Offsets live in Postgres too: a partition gained resumes from the
//! offset stored with the buckets, skipping what is already applied. A flush commits a
//! partition only if its stored offset is still the one its deltas started from, which
//! fences off a stale owner. Where each partition is in that lifecycle (resuming,
//! consuming, isolating a refused range, fenced) is the state machine in `partition`.

pub mod alerting;
pub mod hot;
pub mod lease;
pub mod partition;
pub mod progress;
pub mod quarantine;
pub mod replay;
pub mod state;
pub mod store;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tidemark_runtime::backoff::Backoff;
use tidemark_runtime::backpressure::Backpressure;
use tidemark_runtime::rules::{RuleSet, Rules};
use tidemark_runtime::Config;
use tidemark_store::db::PgPool;
use tidemark_store::hot::HotKeys;
use tokio_util::sync::CancellationToken;

use crate::alerting::Alerting;
use crate::hot::HotWriter;
use crate::lease::{LeaseConfig, Owned};
use crate::partition::{LeaseChange, Partitions};
use crate::progress::Progress;
use crate::state::{Fence, OnGap, PartitionState, QuarantineKind, SeriesCache};

/// Flush early when this many samples wait in memory: about 3 s (the default flush
/// interval) at 650k samples/s.
const MAX_PENDING_SAMPLES: u64 = 2_000_000;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait before fetching again from an offset the consumer jumped past.
const REFETCH_PAUSE: Duration = Duration::from_millis(10);
/// How often applied idempotency chunks older than the retention are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);

/// How long a metadata request or a seek may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the role needs, opened by the caller.
pub struct AggregatorDeps {
    pub brokers: String,
    pub pool: PgPool,
    pub redis: tidemark_store::hot::Redis,
    /// A bound on the broker's backlog (`standalone` sets its embedded broker's),
    /// released as samples commit.
    pub backpressure: Option<Arc<dyn Backpressure>>,
    /// The alert rules to evaluate, reloaded while the aggregator runs.
    pub rules: Rules,
}

pub struct Aggregator {
    consumer: Arc<StreamConsumer>,
    pool: PgPool,
    hot: HotWriter,
    topic: String,
    cluster_id: String,
    flush_interval: Duration,
    idempotency_retention: Duration,
    /// The leases this loop acts on, each partition in its phase (see `partition`).
    partitions: Partitions,
    series: SeriesCache,
    backpressure: Option<Arc<dyn Backpressure>>,
    lease: LeaseConfig,
    progress: Arc<Progress>,
    /// Rule evaluation; `None` without a rules file.
    alerting: Option<Alerting>,
    /// Announces each reload of the rules.
    rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
}

/// How long a fetch may wait for data. Apache Kafka answers a fetch as soon as it has
/// data, or after this wait; tansu 0.6 sleeps it out on every fetch (half of it from
/// 250 ms up) and sends at most 5 MiB, so librdkafka's 500 ms held an aggregator there
/// to about 20 MiB/s (docs/decisions.md).
const FETCH_WAIT_MAX_MS: u32 = 100;

impl Aggregator {
    pub async fn build(config: &Config, deps: AggregatorDeps) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = tidemark_runtime::kafka::client_config(&deps.brokers)
            .set(
                "group.id",
                format!("{}.aggregator", config.common.topics.prefix),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string())
            .create()?;
        let brokers = deps.brokers.clone();
        let cluster_id = tokio::task::spawn_blocking(move || {
            tidemark_runtime::kafka::cluster_id(&brokers, Duration::from_secs(10))
        })
        .await??;
        let owner = config
            .aggregator
            .instance_id
            .clone()
            .unwrap_or_else(|| default_instance_id(config.aggregator.addr));
        let alerting = Alerting::new(
            &deps.rules,
            config.aggregator.eval_interval.0,
            &config.common.topics.samples,
            &config.common.topics.breaches,
            &deps.brokers,
            deps.pool.clone(),
            &owner,
        )?;
        let hot = HotWriter::new(
            deps.redis,
            HotKeys::new(&config.common.topics.prefix),
            deps.pool.clone(),
        );
        Ok(Self {
            consumer: Arc::new(consumer),
            pool: deps.pool,
            hot,
            topic: config.common.topics.samples.clone(),
            cluster_id,
            flush_interval: config.aggregator.flush_interval,
            idempotency_retention: config.aggregator.idempotency_retention,
            partitions: Partitions::default(),
            series: SeriesCache::default(),
            backpressure: deps.backpressure,
            lease: LeaseConfig {
                topic: config.common.topics.samples.clone(),
                owner,
                ttl: config.aggregator.lease_ttl.0,
            },
            progress: Arc::default(),
            alerting,
            rules: deps.rules.subscribe(),
        })
    }

    /// What `/readyz` reads to tell a stalled aggregator.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Consumes until `shutdown`, then flushes what it holds.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.topic, cluster_id = %self.cluster_id, owner = %self.lease.owner, "aggregator consuming");
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer = self.consumer.clone();
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        let leases_stop = shutdown.child_token();
        let (mut owned, leases) = self.spawn_leases(leases_stop.clone());
        let mut next_eval = self
            .alerting
            .as_ref()
            .map(|a| a.next_evaluation(Utc::now()));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Ok(()) = owned.changed() => {
                    let now = owned.borrow_and_update().clone();
                    self.take_ownership(now).await;
                }
                _ = tick.tick() => {
                    self.resume_pending().await;
                    self.flush(&shutdown).await;
                    self.export_idle();
                }
                _ = prune.tick() => self.prune_chunks().await,
                Ok(()) = self.rules.changed() => {
                    let set = self.rules.borrow_and_update().clone();
                    if let Some(a) = &mut self.alerting {
                        a.reload(&set, Utc::now());
                        next_eval = Some(a.next_evaluation(Utc::now()));
                    }
                }
                () = until(next_eval) => {
                    if let Some(at) = next_eval {
                        self.evaluate(at).await;
                        next_eval = self.alerting.as_ref().map(|a| a.next_evaluation(at.max(Utc::now())));
                    }
                }
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        let partition = msg.partition();
                        self.consume_with_retry(partition, msg.offset(), msg.payload().unwrap_or_default(), &shutdown).await;
                        drop(msg);
                        if self.partitions.holds_whole_range(partition) {
                            self.isolate(partition, &shutdown).await;
                        }
                        if self.pending_samples() >= MAX_PENDING_SAMPLES {
                            self.flush(&shutdown).await;
                        }
                    }
                    Err(e) => {
                        telemetry::consume_failed(&e);
                    }
                },
            }
        }
        leases_stop.cancel();
        let _ = leases.await;
        self.flush(&shutdown).await;
        if let Err(e) = lease::release_all(&self.pool, &self.lease).await {
            tracing::warn!(error = %e, "cannot release the partition leases; they pass to another aggregator once they expire");
        }
        tracing::info!("aggregator drained");
        Ok(())
    }

    /// Renews and claims leases every third of the lease time, on a task of its own so
    /// that a long flush never lets them lapse, and publishes what is held.
    fn spawn_leases(
        &self,
        stop: CancellationToken,
    ) -> (
        tokio::sync::watch::Receiver<Owned>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(Owned::new());
        let (pool, config, consumer) =
            (self.pool.clone(), self.lease.clone(), self.consumer.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval());
            let mut partitions = 0;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (c, topic) = (consumer.clone(), config.topic.clone());
                match tokio::task::spawn_blocking(move || {
                    c.fetch_metadata(Some(&topic), KAFKA_TIMEOUT).map(|m| {
                        m.topics()
                            .first()
                            .map_or(0, |t| t.partitions().len() as i32)
                    })
                })
                .await
                {
                    Ok(Ok(n)) if n > 0 => partitions = n,
                    _ => tracing::debug!("partition count not refreshed; keeping {partitions}"),
                }
                if partitions == 0 {
                    continue;
                }
                match lease::round(&pool, &config, partitions).await {
                    Ok(owned) => {
                        tx.send_if_modified(|held| {
                            let changed = *held != owned;
                            *held = owned;
                            changed
                        });
                    }
                    Err(e) => {
                        telemetry::leases_not_renewed(&e);
                    }
                }
            }
        });
        (rx, task)
    }

    /// Exports how long each owned partition has gone without a flush advancing it.
    fn export_idle(&self) {
        for (p, _, idle) in self.progress.snapshot(Instant::now()) {
            idle_gauge(p).set(idle.as_secs_f64());
        }
    }

    /// Acts on a change of the leases held: drops the partitions lost (their unflushed
    /// deltas are re-read by the next owner), resumes those gained, and assigns the
    /// consumer exactly the partitions held.
    async fn take_ownership(&mut self, owned: Owned) {
        let LeaseChange { lost, gained } = self.partitions.lease(owned);
        if let Some(a) = &mut self.alerting {
            // A partition lost, even if gained back at once, is watched afresh: its
            // other owner may have moved its states on meanwhile.
            let held = self.partitions.owned();
            a.retain(|p| held.contains_key(&p) && !lost.contains(&p));
        }
        for p in &lost {
            idle_gauge(*p).set(0.0);
            telemetry::lease_lost(*p);
        }
        for p in &gained {
            telemetry::lease_gained(*p, self.partitions.owned()[p]);
        }
        telemetry::PARTITIONS_OWNED.set(self.partitions.owned().len() as f64);
        let resumed = self.resume_pending().await;
        if !resumed && !lost.is_empty() {
            self.assign();
        }
    }

    async fn prune_chunks(&self) {
        match store::prune_chunks(&self.pool, self.idempotency_retention).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "forgot old idempotency chunks"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune idempotency chunks; will retry"),
        }
    }

    fn pending_samples(&self) -> u64 {
        self.partitions
            .states()
            .values()
            .fold(0, |n, s| s.samples.saturating_add(n))
    }

    /// Resumes the owned partitions waiting for it, each from its stored offset, and
    /// when any was, assigns the consumer the partitions held; returns whether it did.
    /// One that cannot be resumed yet (Postgres or the broker down) is tried again on
    /// the next tick.
    async fn resume_pending(&mut self) -> bool {
        let mut resumed = false;
        for partition in self.partitions.resuming() {
            match self.resume_point(partition).await {
                Ok(st) => {
                    if let Err(e) = self.watch(partition, st.next_offset).await {
                        tracing::warn!(
                            partition,
                            error = format!("{e:#}"),
                            "cannot load the partition's rule states yet; retrying"
                        );
                        continue;
                    }
                    self.partitions.resumed(partition, st);
                    resumed = true;
                }
                Err(e) => {
                    tracing::warn!(
                        partition,
                        error = format!("{e:#}"),
                        "cannot resume partition yet; retrying"
                    );
                }
            }
        }
        if resumed {
            self.assign();
        }
        resumed
    }

    /// Assigns the consumer every resumed partition, each fetched from before any record
    /// batch that could hold its next offset (offsets already applied are skipped as they
    /// arrive). Waiting for the first message instead could wait forever: the consumer
    /// would start at Kafka's committed offset, which may lie inside a record batch, and
    /// tansu then serves nothing until a later batch arrives.
    fn assign(&mut self) {
        let partitions: Vec<(i32, i64)> = self
            .partitions
            .loaded()
            .map(|(p, st)| (p, st.next_offset))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for (p, next_offset) in partitions {
            let first = self
                .alerting
                .as_ref()
                .and_then(|a| a.rebuilding_from(p))
                .map_or(next_offset, |f| f.min(next_offset));
            let from = first - tidemark_runtime::kafka::MAX_BATCH_MESSAGES;
            match self.fetch_start(p, from) {
                Ok(from) => {
                    let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(from));
                }
                Err(e) => {
                    tracing::warn!(
                        partition = p,
                        error = format!("{e:#}"),
                        "cannot place the partition's fetch yet; retrying"
                    );
                    self.partitions.unloaded(p);
                }
            }
        }
        if let Err(e) = self.consumer.assign(&tpl) {
            tracing::warn!(error = %e, "cannot assign partitions; retrying");
            let loaded: Vec<i32> = self.partitions.loaded().map(|(p, _)| p).collect();
            for p in loaded {
                self.partitions.unloaded(p);
            }
        }
        self.progress.own(
            self.partitions.loaded().map(|(p, st)| (p, st.next_offset)),
            Instant::now(),
        );
    }

    /// Folds the message at `offset` of `partition`, in order: one already applied is
    /// skipped, one past the next offset to apply makes the consumer fetch again.
    async fn consume(&mut self, partition: i32, offset: i64, payload: &[u8]) -> anyhow::Result<()> {
        let Some((st, isolation)) = self.partitions.loaded_mut(partition) else {
            return Ok(()); // fetched before the partition was lost, fenced or unloaded
        };
        if offset < st.next_offset {
            feed(&mut self.alerting, partition, offset, payload); // rebuilding windows
            return Ok(()); // already applied
        }
        if offset > st.next_offset {
            match st.on_gap(std::time::Instant::now()) {
                OnGap::Refetch(from) => return self.refetch(partition, offset, from).await,
                OnGap::Accept => {
                    telemetry::offsets_missing(partition, st.next_offset, offset);
                }
            }
        }
        if let Some(isolation) = isolation {
            isolation.hold(st, offset, payload);
            return Ok(());
        }
        // A set-aside message is logged and counted once its flush commits.
        match st.apply_guarded(
            offset,
            payload,
            &mut self.series,
            self.backpressure.as_deref(),
        ) {
            Ok(folded) => {
                telemetry::SAMPLES_FOLDED.increment(folded as u64);
                feed(&mut self.alerting, partition, offset, payload);
            }
            Err(panic) => {
                tracing::error!(partition, offset, panic, "folding a message panicked; reading the partition again from its stored offset to set it aside");
                self.start_isolation(partition, offset + 1)?;
            }
        }
        Ok(())
    }

    /// Applies a refused flush's messages of `partition` in ranges, halving a range that
    /// Postgres refuses until the single message at fault is found; that one is
    /// quarantined and the rest applied. A handful of flushes per bad message, instead
    /// of one per message.
    async fn isolate(&mut self, partition: i32, shutdown: &CancellationToken) {
        let held = self.partitions.take_range(partition);
        tracing::warn!(
            partition,
            messages = held.len(),
            "applying the refused flush's messages in ranges to find the one at fault"
        );
        let mut ranges = vec![&held[..]];
        while let Some(range) = ranges.pop() {
            let Some(st) = self.partitions.consuming_mut(partition) else {
                return; // fenced meanwhile: the next owner reads the range again
            };
            let panicked = range.iter().find_map(|(offset, payload)| {
                st.apply_guarded(
                    *offset,
                    payload,
                    &mut self.series,
                    self.backpressure.as_deref(),
                )
                .err()
            });
            let (kind, reason) = match panicked {
                Some(panic) => (QuarantineKind::Panicked, panic),
                None => match self.flush_with_retry(Some(partition), shutdown).await {
                    Flush::Done => continue,
                    Flush::Stopped => return,
                    Flush::Refused(e) => (QuarantineKind::Refused, e.to_string()),
                },
            };
            let st = self
                .partitions
                .consuming_mut(partition)
                .expect("held while flushing");
            match range {
                [] => {
                    // Only the quarantine record was left to write.
                    tracing::error!(partition, error = %reason, "Postgres refused to record a quarantined message; retrying");
                    tokio::time::sleep(MAX_BACKOFF / 10).await;
                    ranges.push(range);
                }
                [(offset, payload)] => {
                    *st = st.reset();
                    st.quarantine_applied(
                        *offset,
                        payload,
                        kind,
                        reason,
                        self.backpressure.as_deref(),
                    );
                    ranges.push(&[]);
                }
                _ => {
                    *st = st.reset();
                    let (left, right) = range.split_at(range.len() / 2);
                    ranges.extend([right, left]);
                }
            }
        }
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
        telemetry::REFETCHES.increment(1);
        tokio::time::sleep(REFETCH_PAUSE).await;
        tracing::info!(
            partition,
            seen,
            expected = self.partitions.state(partition).map(|st| st.next_offset),
            from,
            "fetching again from before the next offset to apply"
        );
        self.seek_back(partition, from)
    }

    /// Makes the consumer fetch `partition` again from `from` (see [`Self::fetch_start`]).
    fn seek_back(&mut self, partition: i32, from: i64) -> anyhow::Result<()> {
        let from = self.fetch_start(partition, from)?;
        self.consumer
            .seek(&self.topic, partition, Offset::Offset(from), KAFKA_TIMEOUT)?;
        Ok(())
    }

    /// Where to fetch `partition` from: `from` (at or before its next offset to apply),
    /// or the log start if that is later. A next offset below the log start means
    /// samples expired from Kafka unapplied: logged, and consumed past.
    fn fetch_start(&mut self, partition: i32, from: i64) -> anyhow::Result<i64> {
        let low = tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&self.topic, partition, KAFKA_TIMEOUT)
        })?
        .0;
        let (st, _) = self.partitions.loaded_mut(partition).expect("present");
        if st.next_offset < low {
            telemetry::offsets_expired(partition, st.next_offset, low);
            st.next_offset = low;
        }
        Ok(from.max(low))
    }

    /// Starts watching a partition resumed at `resume_at` for its rules, unless it is
    /// watched already: its stored rule states, and its windows fed from the offset of the
    /// first message of the longest window (from `resume_at` when the broker cannot say).
    async fn watch(&mut self, partition: i32, resume_at: i64) -> anyhow::Result<()> {
        let Some(a) = &self.alerting else {
            return Ok(());
        };
        if a.watches(partition) {
            return Ok(());
        }
        let since = Utc::now() - a.span();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            partition,
            Offset::Offset(since.timestamp_millis()),
        )?;
        let found =
            tokio::task::block_in_place(|| self.consumer.offsets_for_times(tpl, KAFKA_TIMEOUT))
                .map_err(anyhow::Error::from)
                .and_then(|found| {
                    let entry = found
                        .find_partition(&self.topic, partition)
                        .ok_or_else(|| anyhow::anyhow!("no answer for the partition"))?;
                    entry.error()?;
                    Ok(entry.offset())
                });
        // `None`: the windows cannot be rebuilt, and fill from now on.
        let from = match found {
            Ok(Offset::Offset(o)) => Some(o.min(resume_at)),
            Ok(_) => Some(resume_at), // nothing newer than `since`
            Err(e) => {
                tracing::warn!(partition, error = format!("{e:#}"), "cannot find where the rule windows start; they fill from now on, and rules wait for them");
                None
            }
        };
        let a = self.alerting.as_mut().expect("checked above");
        a.gained(partition, from, resume_at).await
    }

    /// Evaluates the rules at `at`, except over partitions whose consumer lags: a
    /// partition lags by the age of the newest message consumed while more wait.
    async fn evaluate(&mut self, at: DateTime<Utc>) {
        if self.alerting.is_none() {
            return;
        }
        let positions: Vec<(i32, i64)> = self
            .partitions
            .loaded()
            .map(|(p, st)| (p, st.next_offset))
            .collect();
        let unread: std::collections::HashSet<i32> = tokio::task::block_in_place(|| {
            positions
                .iter()
                .filter(|(p, next)| {
                    self.consumer
                        .fetch_watermarks(&self.topic, *p, KAFKA_TIMEOUT)
                        .is_ok_and(|(_, high)| high > *next)
                })
                .map(|(p, _)| *p)
                .collect()
        });
        let now_ms = Utc::now().timestamp_millis();
        let loaded: std::collections::HashSet<i32> = positions.iter().map(|(p, _)| *p).collect();
        if let Some(a) = &mut self.alerting {
            a.evaluate(at, &loaded, |p, newest| {
                // Nothing consumed yet (`newest` 0): its windows are still rebuilding.
                let behind = u64::try_from(now_ms - newest).unwrap_or(0);
                match unread.contains(&p) && newest > 0 {
                    true => Duration::from_millis(behind),
                    false => Duration::ZERO,
                }
            })
            .await;
        }
    }

    /// Handles one message, retrying (the broker may be unreachable when the partition
    /// must be fetched again) until it succeeds or shutdown begins.
    async fn consume_with_retry(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        while let Err(e) = self.consume(partition, offset, payload).await {
            telemetry::consume_retried(partition, offset, &e, backoff.attempts());
            if shutdown.is_cancelled() {
                return; // unapplied: re-read from the stored offset after restart
            }
            backoff.wait().await;
        }
    }

    /// Applies everything pending; retries with backoff while Postgres is unavailable,
    /// consuming nothing meanwhile, so no offset advances without its data. When
    /// Postgres refuses the data itself, the partitions are flushed one by one, and each
    /// refused one re-reads its messages from the fence to isolate the one at fault.
    async fn flush(&mut self, shutdown: &CancellationToken) {
        if !self
            .partitions
            .states()
            .values()
            .any(PartitionState::is_flushable)
        {
            return;
        }
        let Flush::Refused(e) = self.flush_with_retry(None, shutdown).await else {
            return;
        };
        tracing::warn!(error = %e, "Postgres refused a flush's data; flushing partitions one at a time");
        let mut partitions: Vec<i32> = self
            .partitions
            .states()
            .iter()
            .filter(|(_, st)| st.is_flushable())
            .map(|(p, _)| *p)
            .collect();
        partitions.sort_unstable();
        for partition in partitions {
            match self.flush_with_retry(Some(partition), shutdown).await {
                Flush::Done => {}
                Flush::Stopped => return,
                Flush::Refused(_) => {
                    let until = self.partitions.states()[&partition].next_offset;
                    if let Err(e) = self.start_isolation(partition, until) {
                        // Not fetched again: drop the partition's deltas, so it resumes
                        // from its stored offset as after a rebalance.
                        tracing::warn!(
                            partition,
                            error = format!("{e:#}"),
                            "cannot fetch the refused range again; resuming from the stored offset"
                        );
                        self.partitions.unloaded(partition);
                    }
                }
            }
        }
    }

    /// Drops the partition's deltas and fetches its messages again from the fence,
    /// holding those before `until` (where the refused flush reached, or past the message
    /// whose folding panicked).
    fn start_isolation(&mut self, partition: i32, until: i64) -> anyhow::Result<()> {
        let from = self.partitions.isolated(partition, until);
        self.seek_back(
            partition,
            from - tidemark_runtime::kafka::MAX_BATCH_MESSAGES,
        )
    }

    /// One flush of the flushable partitions (all, or `only` one), retried while the
    /// failure is a dependency's.
    async fn flush_with_retry(&mut self, only: Option<i32>, shutdown: &CancellationToken) -> Flush {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let started = std::time::Instant::now();
        loop {
            match store::flush(
                &self.pool,
                &self.topic,
                &self.cluster_id,
                self.partitions.states(),
                only,
            )
            .await
            {
                Ok(out) => {
                    telemetry::FLUSH_DURATION.record(started.elapsed().as_secs_f64());
                    self.after_commit(out).await;
                    return Flush::Done;
                }
                Err(e) if e.is_data() => {
                    telemetry::FLUSH_REFUSED.increment(1);
                    return Flush::Refused(e);
                }
                Err(e) => {
                    telemetry::flush_failed(&e, backoff.attempts());
                    if shutdown.is_cancelled() && backoff.attempts() >= 5 {
                        tracing::warn!(
                            "giving up at shutdown; unflushed samples will be re-read from Kafka"
                        );
                        return Flush::Stopped;
                    }
                    backoff.wait().await;
                }
            }
        }
    }

    async fn after_commit(&mut self, out: store::Flushed) {
        for p in &out.fenced {
            telemetry::fenced(*p);
            self.partitions.fenced(*p);
        }
        let hot: Vec<_> = out.buckets.iter().map(store::Written::row).collect();
        self.hot.publish(&hot).await;
        drop(hot);
        let mut tpl = TopicPartitionList::new();
        let mut folded = 0;
        for p in &out.committed {
            let st = self.partitions.committed(*p, &self.cluster_id);
            folded = st.samples.saturating_add(folded);
            for q in &st.quarantined {
                telemetry::quarantined(*p, q);
            }
            if let Some(backpressure) = &self.backpressure {
                backpressure.release(*p, st.cost);
            }
            self.progress.advanced(*p, st.next_offset, Instant::now());
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(st.next_offset));
        }
        telemetry::SAMPLES_COMMITTED.increment(folded);
        if tpl.count() > 0 {
            // For lag monitoring only; the truth is in Postgres.
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "kafka offset commit failed");
            }
        }
    }
}

/// Seconds since a flush last advanced the partition; 0 once it is no longer owned
/// ([`telemetry::PARTITIONS_OWNED`] says how many are).
fn idle_gauge(partition: i32) -> metrics::Gauge {
    telemetry::PARTITION_IDLE.with([partition.to_string()])
}

/// How a flush ended.
enum Flush {
    Done,
    /// Postgres refused the data; nothing of the flush was applied.
    Refused(store::FlushError),
    /// Shutdown began while a dependency was down; the deltas are re-read after restart.
    Stopped,
}

/// An identity that survives a restart on the same host and address, so a restarted
/// aggregator resumes its own leases at once.
/// Feeds a consumed message to the rule windows, when there are rules and it is new to them.
fn feed(alerting: &mut Option<Alerting>, partition: i32, offset: i64, payload: &[u8]) {
    if let Some(a) = alerting.as_mut().filter(|a| a.wants(partition, offset)) {
        let _ =
            tidemark_schemas::with_sample_batch(payload, |batch| a.feed(partition, offset, batch));
    }
}

/// Waits until `at`; forever when there is nothing to wait for.
async fn until(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await,
        None => std::future::pending().await,
    }
}

fn default_instance_id(addr: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}/{addr}")
}
