//! The alerter's metrics, and the log events paired with them: each defined once, in the
//! vocabulary of `tidemark_runtime::telemetry::vocabulary`.

use std::fmt::Display;

use tidemark_runtime::telemetry::vocabulary::{Counter, Gauge};
use tidemark_store::alerts::Position;

tidemark_runtime::define_metrics! {
    pub const BREACHES: Counter<1> = Counter::new(
        "tidemark_alerter_breaches_total",
        &["outcome"],
        "Messages of the breaches topic committed with their offsets, by outcome (applied, repeat, already_applied, no_alert, undecodable, refused).",
    );
    pub const APPLY_ERRORS: Counter = Counter::new(
        "tidemark_alerter_apply_errors_total",
        &[],
        "Transactions applying a breach that failed because a dependency did (Postgres down); each is retried.",
    );
    pub const CONSUME_ERRORS: Counter = Counter::new(
        "tidemark_alerter_consume_errors_total",
        &[],
        "Errors the Kafka consumer of the breaches topic reported.",
    );
    pub const OFFSET_GAPS: Counter = Counter::new(
        "tidemark_alerter_offset_gaps_total",
        &[],
        "Offsets of the breaches topic consumed past although missing from the log, or expired from Kafka unapplied.",
    );
    pub const ACTIVE: Gauge = Gauge::new(
        "tidemark_alerter_active",
        &[],
        "1 while this alerter holds the alerter lock and applies breaches, 0 while it waits as a standby.",
    );
    pub const FEED_PUBLISHED: Counter = Counter::new(
        "tidemark_alerter_feed_published_total",
        &[],
        "Alert changes the broker acknowledged on the alerts topic (one published again after a failure counts again).",
    );
    pub const FEED_ERRORS: Counter = Counter::new(
        "tidemark_alerter_feed_errors_total",
        &[],
        "Rounds of the feed publisher that failed (broker or Postgres unavailable); each is retried.",
    );
}

/// A message that is not a breach of any registered schema; its offset is passed.
pub fn undecodable(pos: &Position<'_>, error: &impl Display) {
    tracing::error!(
        partition = pos.partition,
        offset = pos.offset,
        error = %error,
        "a message of the breaches topic does not decode; skipping it"
    );
}

/// Postgres refused a breach's data (e.g. U+0000 in a name); its offset is passed.
pub fn refused(pos: &Position<'_>, error: &impl Display) {
    tracing::error!(
        partition = pos.partition,
        offset = pos.offset,
        error = %error,
        "Postgres refused a breach's data; skipping it"
    );
}

/// Applying a message failed because a dependency did; it is retried.
pub fn apply_failed(error: &impl Display, attempts: u32) {
    APPLY_ERRORS.increment(1);
    tracing::warn!(error = %error, attempts, "cannot apply a breach yet; retrying");
}

/// The Kafka consumer reported an error.
pub fn consume_failed(error: &impl Display) {
    CONSUME_ERRORS.increment(1);
    tracing::warn!(error = %error, "consume error on the breaches topic");
}

/// Offsets `expected..got` of `partition` never arrived; they are consumed past.
pub fn offsets_missing(partition: i32, expected: i64, got: i64) {
    OFFSET_GAPS.increment(1);
    tracing::error!(
        partition,
        expected,
        got,
        "breaches missing from the log; consuming past them"
    );
}

/// The log of `partition` starts past its stored offset: breaches expired unapplied.
pub fn offsets_expired(partition: i32, stored: i64, log_start: i64) {
    OFFSET_GAPS.increment(1);
    tracing::error!(
        partition,
        stored,
        log_start,
        "breaches between the stored offset and the log start are gone from Kafka"
    );
}

/// A round of the feed publisher failed; it is retried.
pub fn feed_failed(error: &anyhow::Error, attempts: u32) {
    FEED_ERRORS.increment(1);
    tracing::warn!(
        error = format!("{error:#}"),
        attempts,
        "cannot publish alert changes yet; retrying"
    );
}
