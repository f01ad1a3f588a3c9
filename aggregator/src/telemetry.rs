//! The aggregator's metrics, and the log events paired with them: each defined once, in
//! the vocabulary of `tidemark_runtime::telemetry::vocabulary`.

use std::fmt::Display;

use metrics::Unit;
use tidemark_runtime::telemetry::vocabulary::{Counter, Gauge, Histogram};

use crate::state::Quarantined;

tidemark_runtime::define_metrics! {
    pub const SAMPLES_FOLDED: Counter = Counter::new(
        "tidemark_aggregator_samples_folded_total",
        &[],
        "Samples folded into hourly buckets, before their flush (a message read again is counted again).",
    );
    pub const SAMPLES_COMMITTED: Counter = Counter::new(
        "tidemark_aggregator_samples_committed_total",
        &[],
        "Observations (a sample counts `count` times) that flushes committed to Postgres with their offsets.",
    );
    pub const FLUSH_DURATION: Histogram = Histogram::new(
        "tidemark_aggregator_flush_duration_seconds",
        &[],
        "Time to commit a flush to Postgres, retries included.",
    )
    .unit(Unit::Seconds);
    pub const FLUSH_ERRORS: Counter = Counter::new(
        "tidemark_aggregator_flush_errors_total",
        &[],
        "Flushes that failed because a dependency did (Postgres down); each is retried.",
    );
    pub const FLUSH_REFUSED: Counter = Counter::new(
        "tidemark_aggregator_flush_refused_total",
        &[],
        "Flushes whose data Postgres refused; the message at fault is then isolated and quarantined.",
    );
    pub const QUARANTINED: Counter<1> = Counter::new(
        "tidemark_aggregator_quarantined_total",
        &["reason"],
        "Messages set aside in the quarantine table, by reason (undecodable, invalid, refused, panicked).",
    );
    pub const FENCED: Counter = Counter::new(
        "tidemark_aggregator_fenced_total",
        &[],
        "Partition flushes dropped because another consumer had advanced the partition.",
    );
    pub const CONSUME_ERRORS: Counter = Counter::new(
        "tidemark_aggregator_consume_errors_total",
        &[],
        "Errors the Kafka consumer reported.",
    );
    pub const CONSUME_RETRIES: Counter = Counter::new(
        "tidemark_aggregator_consume_retries_total",
        &[],
        "Messages whose handling failed and was retried.",
    );
    pub const REFETCHES: Counter = Counter::new(
        "tidemark_aggregator_refetches_total",
        &[],
        "Times a partition was fetched again because a message arrived past its next offset.",
    );
    pub const OFFSET_GAPS: Counter = Counter::new(
        "tidemark_aggregator_offset_gaps_total",
        &[],
        "Offsets consumed past although missing from the log, or expired from Kafka unapplied.",
    );
    pub const PARTITIONS_OWNED: Gauge = Gauge::new(
        "tidemark_aggregator_partitions_owned",
        &[],
        "Partitions whose leases this aggregator holds.",
    );
    pub const PARTITION_IDLE: Gauge<1> = Gauge::new(
        "tidemark_aggregator_partition_idle_seconds",
        &["partition"],
        "Time since a flush last advanced the partition; 0 once it is no longer owned.",
    )
    .unit(Unit::Seconds);
    pub const LEASE_CHANGES: Counter<1> = Counter::new(
        "tidemark_aggregator_lease_changes_total",
        &["change"],
        "Partition leases lost or gained (change: lost, gained).",
    );
    pub const LEASE_ERRORS: Counter = Counter::new(
        "tidemark_aggregator_lease_errors_total",
        &[],
        "Lease rounds that failed (Postgres unreachable); retried on the next round.",
    );
    pub const REDIS_ERRORS: Counter = Counter::new(
        "tidemark_aggregator_redis_errors_total",
        &[],
        "Hot-copy updates that failed; the API serves from Postgres until the copy is refilled.",
    );
    pub const HOT_REFILLS: Counter = Counter::new(
        "tidemark_aggregator_hot_refills_total",
        &[],
        "Times the Redis hot copy was refilled from Postgres.",
    );
    pub const BREACHES_PUBLISHED: Counter = Counter::new(
        "tidemark_aggregator_breaches_published_total",
        &[],
        "Rule transitions (pending, firing, escalated, resolved) the breaches topic acknowledged.",
    );
    pub const BREACH_ERRORS: Counter = Counter::new(
        "tidemark_aggregator_breach_errors_total",
        &[],
        "Evaluations of a partition whose transitions could not be stored (Postgres) or were not acknowledged by the broker; stored ones are sent again, the others decided again.",
    );
    pub const ALERTING_FROZEN: Gauge = Gauge::new(
        "tidemark_aggregator_alerting_frozen_partitions",
        &[],
        "Owned partitions whose rules were not evaluated at the last evaluation: windows still being rebuilt, or the consumer lagging.",
    );
    pub const ALERTING_WINDOW_BYTES: Gauge = Gauge::new(
        "tidemark_aggregator_alerting_window_bytes",
        &[],
        "Memory held by the rolling windows of the series rules watch.",
    )
    .unit(Unit::Bytes);
}

/// The transitions of a partition's evaluation were not stored or not acknowledged;
/// stored ones are sent again, the others decided again.
pub fn breaches_not_published(partition: i32, error: &anyhow::Error) {
    BREACH_ERRORS.increment(1);
    tracing::warn!(
        partition,
        error = format!("{error:#}"),
        "breaches not stored or not acknowledged; retrying at the next evaluation"
    );
}

/// The Kafka consumer reported an error.
pub fn consume_failed(error: &impl Display) {
    CONSUME_ERRORS.increment(1);
    tracing::warn!(error = %error, "consume error");
}

/// A message could not be handled yet (`error` with its causes); it is tried again.
pub fn consume_retried(partition: i32, offset: i64, error: &anyhow::Error, attempts: u32) {
    CONSUME_RETRIES.increment(1);
    tracing::warn!(
        partition,
        offset,
        error = format!("{error:#}"),
        attempts,
        "cannot handle message yet; retrying"
    );
}

/// The broker skipped offsets `expected..got` of `partition` for longer than the grace
/// period; they are consumed past.
pub fn offsets_missing(partition: i32, expected: i64, got: i64) {
    OFFSET_GAPS.increment(1);
    tracing::error!(
        partition,
        expected,
        got,
        "offsets missing from the log; consuming past them"
    );
}

/// The log of `partition` starts past its stored offset: the samples in between expired
/// from Kafka unapplied.
pub fn offsets_expired(partition: i32, stored: i64, log_start: i64) {
    OFFSET_GAPS.increment(1);
    tracing::error!(
        partition,
        stored,
        log_start,
        "samples between the stored offset and the log start are gone from Kafka"
    );
}

/// A flush failed because a dependency did; it is retried.
pub fn flush_failed(error: &impl Display, attempts: u32) {
    FLUSH_ERRORS.increment(1);
    tracing::warn!(error = %error, attempts, "flush failed; retrying");
}

/// Another consumer advanced `partition`: its deltas here are dropped.
pub fn fenced(partition: i32) {
    FENCED.increment(1);
    tracing::warn!(
        partition,
        "another consumer advanced this partition; dropping our deltas"
    );
}

/// A message of `partition` was set aside, in the flush that committed past it.
pub fn quarantined(partition: i32, q: &Quarantined) {
    QUARANTINED.with([q.kind.label()]).increment(1);
    tracing::error!(
        partition,
        offset = q.offset,
        reason = q.kind.label(),
        detail = %q.reason,
        "message quarantined; `tidemark quarantine list` shows it"
    );
}

/// The lease of `partition` passed to another aggregator.
pub fn lease_lost(partition: i32) {
    LEASE_CHANGES.with(["lost"]).increment(1);
    tracing::info!(
        partition,
        "partition lease lost; dropping what is not flushed (the next owner reads it again)"
    );
}

/// This aggregator took the lease of `partition`, at `epoch`.
pub fn lease_gained(partition: i32, epoch: i64) {
    LEASE_CHANGES.with(["gained"]).increment(1);
    tracing::info!(partition, epoch, "partition lease gained");
}

/// A lease round failed; it is tried again on the next tick.
pub fn leases_not_renewed(error: &impl Display) {
    LEASE_ERRORS.increment(1);
    tracing::warn!(error = %error, "cannot renew partition leases; retrying");
}

/// The Redis hot copy could not be updated.
pub fn hot_copy_not_updated(error: &impl Display) {
    REDIS_ERRORS.increment(1);
    tracing::warn!(error = %error, "hot copy not updated; the API serves from Postgres until it is refilled");
}

/// The Redis hot copy was refilled from Postgres with `buckets` buckets.
pub fn hot_copy_refilled(buckets: usize) {
    HOT_REFILLS.increment(1);
    tracing::info!(buckets, "refilled the Redis hot copy from Postgres");
}
