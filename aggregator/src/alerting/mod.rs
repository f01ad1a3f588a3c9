//! Rule evaluation in the aggregator (SPEC §6): the series of its partitions that some
//! rule watches keep rolling windows of 10 s sub-windows (`tidemark_rules::watch`); every
//! evaluation interval, and at every schedule boundary, each rule is evaluated over each
//! of its series by event time, and each transition goes to the breaches topic.
//!
//! Order of effects per evaluation: the states a transition leads to are written to
//! `rule_states` together with the breach announcing it (`unsent`), then kept in memory,
//! then the breach is produced (acks=all, idempotent) and, once acknowledged, marked
//! sent. A breach not acknowledged stays queued and is produced again at the next
//! evaluation; one left unsent by a crash is produced by the partition's next owner
//! before it evaluates. So every transition decided is announced, always with the same
//! content for its `seq`, and the alerter drops the repeats. Postgres down: nothing is
//! decided (the states stay), and the next evaluation decides again.
//!
//! A partition gained loads its states from `rule_states` and feeds its windows from the
//! offset whose messages are as old as the longest window (ListOffsets by timestamp),
//! so windows are rebuilt from the log before its rules are evaluated again. A partition
//! whose consumer lags (unconsumed messages, and the newest consumed produced more than
//! [`LAG_FREEZE`] ago) is not evaluated: its alert states freeze rather than resolve on
//! data that has not been read yet, and `tidemark_aggregator_alerting_frozen` says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tidemark_model::series::series_id;
use tidemark_rules::eval::{self, Phase, SeriesState};
use tidemark_rules::Rule;
use tidemark_runtime::rules::{RuleSet, Rules};
use tidemark_schemas::{Breach, SampleBatchView, Series};
use tidemark_store::db::PgPool;
use tidemark_store::rule_states::{self, Evaluation, Stored};

use crate::telemetry;
use tidemark_rules::watch::{PartitionWatch, SUB_WINDOW};

use self::lag::Lag;
pub use self::lag::LAG_FREEZE;

mod lag;

/// Sub-windows are kept this long past the longest window.
const SUB_WINDOW_MS: i64 = SUB_WINDOW.as_millis() as i64;
/// How long a breach may wait for the broker's acknowledgement.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest window of any rule (a sub-window without rules).
fn span_of(rules: &[Rule]) -> Duration {
    rules
        .iter()
        .map(|r| r.window)
        .max()
        .unwrap_or(SUB_WINDOW)
        .max(SUB_WINDOW)
}

/// The rules, the watched series of every partition held, and the breaches producer.
pub struct Alerting {
    rules: Arc<RuleSet>,
    /// The longest window of any rule: how far back windows reach.
    span: Duration,
    interval: Duration,
    /// The samples topic, whose partitions own the series.
    samples_topic: String,
    breaches_topic: String,
    producer: FutureProducer,
    pool: PgPool,
    partitions: HashMap<i32, PartitionWatch>,
    /// This aggregator's instance id, which its recorded evaluations carry.
    owner: String,
    /// The built-in lag rule's state per partition.
    lag: Lag,
    /// Per partition, the breaches stored but not acknowledged yet, in the order decided:
    /// (rule, fingerprint, encoded breach).
    unsent: HashMap<i32, Vec<(String, String, Vec<u8>)>>,
    /// The newest `produced_at` consumed per partition, for the lag freeze.
    newest: HashMap<i32, i64>,
}

impl Alerting {
    /// `None` without a rules file: the aggregator then pays nothing per sample.
    pub fn new(
        rules: &Rules,
        interval: Duration,
        samples_topic: &str,
        breaches_topic: &str,
        brokers: &str,
        pool: PgPool,
        owner: &str,
    ) -> anyhow::Result<Option<Self>> {
        if !rules.configured() {
            return Ok(None);
        }
        let rules = rules.current();
        let producer = tidemark_runtime::kafka::producer_config(brokers, PRODUCE_TIMEOUT)
            .set("linger.ms", "0")
            .create()?;
        Ok(Some(Self {
            span: span_of(&rules.rules),
            rules,
            interval,
            samples_topic: samples_topic.to_owned(),
            breaches_topic: breaches_topic.to_owned(),
            producer,
            pool,
            partitions: HashMap::new(),
            owner: owner.to_owned(),
            lag: Lag::default(),
            unsent: HashMap::new(),
            newest: HashMap::new(),
        }))
    }

    /// Moves every watched series to the reloaded `set` (see `PartitionWatch::reload`).
    pub fn reload(&mut self, set: &Arc<RuleSet>, at: DateTime<Utc>) {
        for watch in self.partitions.values_mut() {
            watch.reload(&self.rules.rules, &set.rules, at.timestamp_millis());
        }
        self.rules = set.clone();
        self.span = span_of(&set.rules);
    }

    /// How far back a gained partition's windows reach, in event time.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Starts watching `partition`, whose buckets resume at `resume_at`, with its windows
    /// fed from `from` (≤ `resume_at`; `None` when they cannot be rebuilt: each rule then
    /// waits until its window has filled from now), and its stored states. A firing
    /// series' `keep_firing_for` counts from now, as if its condition held until the
    /// gain. Fails when Postgres does.
    pub async fn gained(
        &mut self,
        partition: i32,
        from: Option<i64>,
        resume_at: i64,
    ) -> anyhow::Result<()> {
        let stored = rule_states::load(&self.pool, &self.samples_topic, partition).await?;
        let now = Utc::now();
        let mut watch = PartitionWatch::new(from.unwrap_or(resume_at), resume_at);
        if from.is_none() {
            watch.complete_from(now.timestamp_millis());
        }
        let mut unsent = Vec::new();
        for s in stored {
            if let Some(payload) = s.unsent {
                unsent.push((s.rule.clone(), s.fingerprint.clone(), payload));
            }
            let (Ok(series), Ok(mut state)) = (
                serde_json::from_value::<Series>(s.series),
                serde_json::from_value::<SeriesState>(s.state),
            ) else {
                tracing::warn!(partition, fingerprint = %s.fingerprint, "unreadable stored rule state; starting that series afresh");
                continue;
            };
            if let Phase::Firing { last_held, .. } = &mut state.phase {
                *last_held = (*last_held).max(now);
            }
            if s.rule == lag::RULE {
                self.lag.restore(partition, state);
                continue;
            }
            let Some(rule) = self.rules.rules.iter().position(|r| r.name == s.rule) else {
                continue; // a rule no longer in the file
            };
            let id = series_id(&series.service, &series.metric, series.tags.iter());
            watch.restore(&self.rules.rules, id, &series, rule, state);
        }
        self.partitions.insert(partition, watch);
        self.unsent.insert(partition, unsent);
        Ok(())
    }

    pub fn watches(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Where a partition whose windows are being rebuilt must be fetched from.
    pub fn rebuilding_from(&self, partition: i32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .filter(|w| !w.is_ready())
            .map(|w| w.fed_next())
    }

    /// Stops watching the partitions not in `held`.
    pub fn retain(&mut self, held: impl Fn(i32) -> bool) {
        self.partitions.retain(|p, _| held(*p));
        self.lag.retain(&held);
        self.unsent.retain(|p, _| held(*p));
        self.newest.retain(|p, _| held(*p));
    }

    /// Whether the message at `offset` of `partition` is still to be fed.
    pub fn wants(&self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|w| w.wants(offset))
    }

    /// Feeds a consumed message to the windows (idempotent by offset).
    pub fn feed(&mut self, partition: i32, offset: i64, batch: &SampleBatchView<'_>) {
        let Some(watch) = self.partitions.get_mut(&partition) else {
            return;
        };
        watch.feed(
            &self.rules.rules,
            offset,
            batch,
            Utc::now().timestamp_millis(),
        );
        // A message read while rebuilding is old by design, not a sign of lag.
        if watch.is_ready() {
            let newest = self.newest.entry(partition).or_default();
            *newest = (*newest).max(batch.produced_at);
        }
    }

    /// When the next evaluation is due after `after`.
    pub fn next_evaluation(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        eval::next_evaluation_of(&self.rules.rules, after, self.interval)
    }

    /// Evaluates every rule over every watched series of the `loaded` (consumed)
    /// partitions that are ready and not lagging, and the lag rule over every loaded
    /// partition, publishing the transitions. `lag` says how far a partition lags, given the `produced_at` of the
    /// newest message consumed from it.
    pub async fn evaluate(
        &mut self,
        at: DateTime<Utc>,
        loaded: &std::collections::HashSet<i32>,
        lag: impl Fn(i32, i64) -> Duration,
    ) {
        let at_ms = at.timestamp_millis();
        let mut frozen = 0;
        let mut bytes = 0;
        let mut series = vec![0; self.rules.rules.len()];
        let mut outcomes = Vec::new();
        for (&partition, watch) in &mut self.partitions {
            bytes += watch.approx_bytes();
            if !loaded.contains(&partition) {
                continue; // resuming or fenced: not consumed, so not evaluated
            }
            let newest = self.newest.get(&partition).copied().unwrap_or(0);
            let lag = lag(partition, newest);
            let lagged = self.lag.evaluate(&self.samples_topic, partition, lag, at);
            if !watch.is_ready() || lag > LAG_FREEZE {
                frozen += 1;
                outcomes.push((partition, lagged.into_iter().collect()));
                continue;
            }
            let mut breaches = watch.evaluate(&self.rules.rules, at);
            breaches.extend(lagged);
            for (r, _) in watch.watched().flat_map(|w| &w.rules) {
                series[*r] += 1;
            }
            outcomes.push((partition, breaches));
        }
        telemetry::ALERTING_FROZEN.set(frozen as f64);
        telemetry::ALERTING_WINDOW_BYTES.set(bytes as f64);
        let mut errors: HashMap<String, String> = HashMap::new();
        for (partition, breaches) in outcomes {
            if breaches.is_empty() {
                continue;
            }
            if let Err(e) = self.record(partition, breaches).await {
                telemetry::breaches_not_published(partition, &e);
                errors.extend(
                    self.rules
                        .rules
                        .iter()
                        .map(|r| (r.name.clone(), format!("partition {partition}: {e:#}"))),
                );
            }
        }
        let queued: Vec<i32> = self
            .unsent
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(p, _)| *p)
            .collect();
        for partition in queued {
            for (rule, error) in self.send(partition).await {
                errors.insert(rule, error);
            }
        }
        // Only now: a series whose transition was just kept is no longer inactive.
        let horizon =
            at_ms - i64::try_from(self.span.as_millis()).unwrap_or(i64::MAX) - SUB_WINDOW_MS;
        for watch in self.partitions.values_mut() {
            watch.prune(horizon);
        }
        let evaluations: Vec<Evaluation> = self
            .rules
            .rules
            .iter()
            .zip(series)
            .map(|(rule, series)| Evaluation {
                rule: rule.name.clone(),
                owner: self.owner.clone(),
                at,
                series,
                frozen,
                error: errors.remove(&rule.name),
            })
            .collect();
        if let Err(e) = rule_states::record_evaluations(
            &self.pool,
            &self.samples_topic,
            &self.owner,
            &evaluations,
        )
        .await
        {
            tracing::debug!(error = %e, "rule evaluations not recorded");
        }
    }

    /// Stores the states that `breaches` lead to with the breaches announcing them, then
    /// keeps the states and queues the breaches. Fails (deciding nothing) when Postgres
    /// does.
    async fn record(
        &mut self,
        partition: i32,
        breaches: Vec<(Breach, SeriesState)>,
    ) -> anyhow::Result<()> {
        let mut stored = Vec::with_capacity(breaches.len());
        for (b, state) in &breaches {
            stored.push(Stored {
                rule: b.rule.clone(),
                fingerprint: b.fingerprint.clone(),
                series: serde_json::to_value(&b.series)?,
                state: serde_json::to_value(state)?,
                unsent: Some(tidemark_schemas::encode_breach(b)?),
            });
        }
        rule_states::save(&self.pool, &self.samples_topic, partition, &stored).await?;
        let queue = self.unsent.entry(partition).or_default();
        queue.extend(
            stored
                .into_iter()
                .map(|s| (s.rule, s.fingerprint, s.unsent.unwrap_or_default())),
        );
        self.keep(partition, breaches);
        Ok(())
    }

    /// Produces the partition's queued breaches, in order, and marks those acknowledged
    /// as sent; the rest stay queued. Returns the rules whose breaches failed, with why.
    async fn send(&mut self, partition: i32) -> Vec<(String, String)> {
        let queue = self.unsent.remove(&partition).unwrap_or_default();
        let deliveries = queue.iter().map(|(_, fingerprint, payload)| {
            let record = FutureRecord::to(&self.breaches_topic)
                .key(fingerprint.as_bytes())
                .payload(payload);
            self.producer.send(record, PRODUCE_TIMEOUT)
        });
        let outcomes = futures::future::join_all(deliveries).await;
        let (mut sent, mut failed, mut left) = (Vec::new(), Vec::new(), Vec::new());
        for ((rule, fingerprint, payload), outcome) in queue.into_iter().zip(outcomes) {
            match outcome {
                Ok(_) => sent.push((fingerprint, payload)),
                Err((e, _)) => {
                    failed.push((
                        rule.clone(),
                        format!("partition {partition}: breach not acknowledged: {e}"),
                    ));
                    left.push((rule, fingerprint, payload));
                }
            }
        }
        telemetry::BREACHES_PUBLISHED.increment(sent.len() as u64);
        if !failed.is_empty() {
            telemetry::breaches_not_published(partition, &anyhow::anyhow!("{}", failed[0].1));
        }
        if let Err(e) =
            rule_states::mark_sent(&self.pool, &self.samples_topic, partition, &sent).await
        {
            tracing::debug!(partition, error = %e, "breaches not marked sent; a next owner would send them again");
        }
        self.unsent.insert(partition, left);
        failed
    }

    /// Keeps the states of published transitions in memory.
    fn keep(&mut self, partition: i32, breaches: Vec<(Breach, SeriesState)>) {
        let (lagged, rules): (Vec<_>, Vec<_>) =
            breaches.into_iter().partition(|(b, _)| b.rule == lag::RULE);
        for (_, state) in lagged {
            self.lag.keep(partition, state);
        }
        if let Some(watch) = self.partitions.get_mut(&partition) {
            watch.keep(&self.rules.rules, rules);
        }
    }
}
