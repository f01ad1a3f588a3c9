//! The on-call feed: every alert change, published to `<prefix>.alerts` as JSON.
//!
//! Each change is written to the `alert_feed` outbox in the transaction that makes it
//! (a breach applied, an acknowledgement through the API); this publisher produces the
//! unpublished rows in the order they were written, with the idempotent producer, and
//! marks them published once the broker acknowledged them. Delivery to the topic is at
//! least once: after a failure or a crash a change may be published again, so consumers
//! drop a message whose `seq` is at or below the last they saw for its `alert_id`. The
//! message key is the alert's fingerprint, so one fingerprint's changes (all its
//! episodes) stay in one partition, in order.
//!
//! A message (instants are RFC 3339, UTC, milliseconds):
//!
//! ```json
//! {
//!   "alert_id": 42,
//!   "seq": 3,
//!   "fingerprint": "00112233aabbccdd",
//!   "transition": {
//!     "seq": 3,
//!     "breach_seq": 7,
//!     "state": "firing",
//!     "reason": "escalated",
//!     "severity": "critical",
//!     "value": 612.5,
//!     "threshold": 400.0,
//!     "at": "2026-09-19T10:00:00.000Z",
//!     "schedule": "saturday",
//!     "actor": null
//!   },
//!   "alert": {
//!     "id": 42,
//!     "fingerprint": "00112233aabbccdd",
//!     "rule": "api-latency",
//!     "service": "api",
//!     "metric": "http.latency_ms",
//!     "tags": {"region": "eu"},
//!     "state": "firing",
//!     "severity": "critical",
//!     "value": 612.5,
//!     "threshold": 400.0,
//!     "op": ">",
//!     "stat": "p95",
//!     "window_ms": 300000,
//!     "labels": {"team": "web"},
//!     "annotations": {"summary": "p95 612.5 > 400"},
//!     "started_at": "2026-09-19T09:58:00.000Z",
//!     "fired_at": "2026-09-19T09:59:00.000Z",
//!     "resolved_at": null,
//!     "resolve_reason": null,
//!     "acknowledged_at": null,
//!     "acknowledged_by": null,
//!     "seq": 3,
//!     "updated_at": "2026-09-19T10:00:00.120Z",
//!     "silenced_by": [5],
//!     "inhibited_by": []
//!   }
//! }
//! ```
//!
//! - `alert_id`, `seq`: the alert (one episode of a fingerprint) and the number of this
//!   change among its changes, from 1: together they identify the message.
//! - `transition`: the change. `state` is the alert's state after it (`pending`,
//!   `firing`, `resolved`); `reason` is the breach's (`breached`, `escalated` for a
//!   severity change while open, `recovered`, `missing_series`, `maintenance`),
//!   `superseded` (the fingerprint began a new episode whose previous one's end was
//!   never seen), or `acknowledged` (then `actor` says who, and `breach_seq` is null).
//!   `schedule` is the rule's schedule in force, null for the rule's own values.
//! - `alert`: the alert after the change, as `GET /v1/alerts/{id}` shows it (without its
//!   transitions). A resolved alert keeps the severity, threshold, labels and
//!   annotations it had while open; `value` is the last one evaluated. `fired_at` is null
//!   for an alert that resolved while pending. `silenced_by` lists the silences active
//!   then that match it, `inhibited_by` the alerts firing then that inhibit it (by the
//!   built-in rules and the rules file's, a pending alert too), by id; both are empty
//!   for a resolved alert. They are as of the change: a silence or an inhibiting alert
//!   that starts or ends later publishes nothing, so `GET /v1/alerts/{id}` is current.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tidemark_runtime::backoff::Backoff;
use tidemark_store::alerts::feed as outbox;
use tidemark_store::db::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// Rows produced per round.
const BATCH: i64 = 500;
/// How often the outbox is looked at without being woken (the API's acknowledgements
/// write it without waking the publisher).
const POLL: Duration = Duration::from_secs(1);
/// How long the broker may take to acknowledge a message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Produces the outbox's rows to the alerts topic.
pub struct Publisher {
    pool: PgPool,
    brokers: String,
    topic: String,
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(pool: PgPool, brokers: &str, topic: &str) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            producer: producer(brokers)?,
        })
    }

    /// Publishes until `stop`, a round at each wake-up and every [`POLL`].
    pub async fn run(mut self, wake: &Notify, stop: CancellationToken) {
        let fresh = || Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let mut backoff = fresh();
        loop {
            let round = tokio::select! {
                // Stopped midway, what is not marked published is published again later.
                () = stop.cancelled() => return,
                round = self.round() => round,
            };
            let pause = match round {
                Ok(n) => {
                    backoff = fresh();
                    if n as i64 == BATCH {
                        continue; // more may wait
                    }
                    POLL
                }
                Err(e) => {
                    telemetry::feed_failed(&e, backoff.attempts());
                    self.replace_failed_producer();
                    backoff.next_delay()
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Produces the oldest unpublished rows and marks published those the broker
    /// acknowledged, up to the first it did not (so that no change is marked published
    /// after one that is not); returns how many.
    async fn round(&mut self) -> anyhow::Result<usize> {
        let rows = outbox::unpublished(&self.pool, BATCH).await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = FutureRecord::to(&self.topic)
                .key(&row.fingerprint)
                .payload(&row.payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => {
                    tracing::debug!(error = %e, "the producer queue refused a feed message");
                    break;
                }
            }
        }
        let mut delivered = 0;
        let mut failure = None;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => delivered += 1,
                Ok(Err((e, _))) => {
                    failure = Some(anyhow::Error::from(e));
                    break;
                }
                Err(_) => {
                    failure = Some(anyhow::anyhow!("the producer dropped a feed message"));
                    break;
                }
            }
        }
        let ids: Vec<i64> = rows[..delivered].iter().map(|r| r.id).collect();
        if !ids.is_empty() {
            outbox::mark_published(&self.pool, &ids).await?;
            telemetry::FEED_PUBLISHED.increment(ids.len() as u64);
        }
        match failure {
            Some(e) => Err(e.context("publishing alert changes")),
            None if delivered < rows.len() => {
                anyhow::bail!("the producer queue is full")
            }
            None => Ok(delivered),
        }
    }

    /// A producer that hit a fatal error (e.g. fenced by the broker) never delivers
    /// again: replace it.
    fn replace_failed_producer(&mut self) {
        if let Some((_, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(%reason, "the feed producer failed fatally; replacing it");
            match producer(&self.brokers) {
                Ok(p) => self.producer = p,
                Err(e) => tracing::warn!(error = %e, "cannot create a feed producer yet"),
            }
        }
    }
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(tidemark_runtime::kafka::producer_config(brokers, DELIVERY_TIMEOUT).create()?)
}
