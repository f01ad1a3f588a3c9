//! Ingest's metrics, and the log events paired with them: each defined once, in the
//! vocabulary of `tidemark_runtime::telemetry::vocabulary`.

use std::fmt::{Debug, Display};

use metrics::Unit;
use tidemark_runtime::telemetry::vocabulary::{Counter, Histogram};

tidemark_runtime::define_metrics! {
    pub const SAMPLES_ACCEPTED: Counter = Counter::new(
        "tidemark_ingest_samples_accepted_total",
        &[],
        "Samples acknowledged to clients (202), every batch holding them acknowledged by the broker.",
    );
    pub const OVERLOADED: Counter = Counter::new(
        "tidemark_ingest_overloaded_total",
        &[],
        "Requests answered 503 at once because TIDEMARK_MAX_INFLIGHT_SAMPLES samples await the broker.",
    );
    pub const SERIES_REFUSED: Counter = Counter::new(
        "tidemark_ingest_series_refused_total",
        &[],
        "Requests refused because a sample would take its service past TIDEMARK_MAX_SERIES_PER_SERVICE series.",
    );
    pub const CARDINALITY_FALLBACKS: Counter = Counter::new(
        "tidemark_ingest_cardinality_fallbacks_total",
        &[],
        "Series-limit checks made per process because Redis was unavailable.",
    );
    pub const BATCHES_PRODUCED: Counter = Counter::new(
        "tidemark_ingest_batches_produced_total",
        &[],
        "Batches the broker acknowledged.",
    );
    pub const SAMPLES_PRODUCED: Counter = Counter::new(
        "tidemark_ingest_samples_produced_total",
        &[],
        "Samples in batches the broker acknowledged.",
    );
    pub const BATCH_SAMPLES: Histogram = Histogram::new(
        "tidemark_ingest_batch_samples",
        &[],
        "Samples per batch the broker acknowledged.",
    )
    .unit(Unit::Count);
    pub const BROKER_ACK: Histogram = Histogram::new(
        "tidemark_ingest_broker_ack_seconds",
        &[],
        "Time from producing a batch to the broker's acknowledgement.",
    )
    .unit(Unit::Seconds);
    pub const PRODUCE_ERRORS: Counter = Counter::new(
        "tidemark_ingest_produce_errors_total",
        &[],
        "Batches the broker did not acknowledge; their requests are answered 503.",
    );
    pub const PRODUCER_RECREATED: Counter = Counter::new(
        "tidemark_ingest_producer_recreated_total",
        &[],
        "Kafka producers replaced by a fresh one after becoming unusable.",
    );
}

/// A batch the broker did not acknowledge.
pub fn batch_not_acknowledged(reason: &str) {
    tracing::warn!(%reason, "batch not acknowledged by the broker");
    PRODUCE_ERRORS.increment(1);
}

/// An unusable Kafka producer (librdkafka's `fatal` error, if it reported one) was
/// replaced.
pub fn producer_replaced(fatal: &impl Debug) {
    PRODUCER_RECREATED.increment(1);
    tracing::warn!(fatal = ?fatal, "replaced an unusable Kafka producer");
}

/// No new Kafka producer could be created; the unusable one is kept until the next try.
pub fn producer_not_replaced(error: &impl Display) {
    tracing::error!(error = %error, "cannot create a new Kafka producer; keeping the old one");
}

/// Redis could not check the series limit, so this process checked it alone.
pub fn series_checked_per_process(error: &impl Display) {
    CARDINALITY_FALLBACKS.increment(1);
    tracing::warn!(error = %error, "series limit checked per process: Redis unavailable");
}
