//! The alerter role: turns the breaches topic (`<prefix>.breaches`, rule transitions
//! from the aggregators) into alerts in Postgres and publishes every alert change to the
//! on-call feed (`<prefix>.alerts`, see [`feed`]).
//!
//! One alerter is active at a time ([`standby`]); it reads every partition of the
//! breaches topic from the offsets stored with the alerts ([`breaches`]) and applies
//! each message in one transaction with its offset ([`apply`]), so the alert state is
//! exactly once across any crash. A separate task publishes the outbox the transactions
//! write ([`feed`]). On its own address (a process of its own) it serves `/metrics`,
//! `/livez` and `/readyz`.
//!
//! Each change's feed message says whether silences and inhibition (by the rules file
//! in force, [`AlerterDeps::rules`]) suppress the alert; grouping and delivery to
//! receivers are later slices.

pub mod apply;
pub mod breaches;
pub mod feed;
pub mod standby;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use tidemark_runtime::backoff::Backoff;
use tidemark_runtime::http::{self, Ops};
use tidemark_runtime::rules::Rules;
use tidemark_runtime::serve::{self, ServeLimits};
use tidemark_runtime::Config;
use tidemark_store::alerts::lock::AlerterLock;
use tidemark_store::alerts::{Applied, Position};
use tidemark_store::db::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apply::Outcome;
use crate::breaches::{Admit, Reader};
use crate::feed::Publisher;

/// How long a fetch may wait for data: tansu 0.6 sleeps out the whole wait on every
/// fetch, so librdkafka's default (500 ms) would delay each breach (as in the
/// aggregator, docs/decisions.md).
const FETCH_WAIT_MAX_MS: u32 = 100;
/// How often the active alerter checks that its lock's connection is alive and whether
/// the breaches topic gained partitions.
const LOCK_CHECK: Duration = Duration::from_secs(5);
/// How long to wait before fetching again from an offset the consumer jumped past.
const REFETCH_PAUSE: Duration = Duration::from_millis(10);
/// How long an ops request may take.
const OPS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the role needs, opened by the caller.
pub struct AlerterDeps {
    pub brokers: String,
    pub pool: PgPool,
    /// Ops routes to serve on `TIDEMARK_ALERTER_ADDR` (a process of its own); `None` in
    /// `standalone`, whose other listeners serve them.
    pub ops: Option<Ops>,
    /// The process's serving limits, shared by its listeners.
    pub limits: ServeLimits,
    /// The process's alert rules, whose inhibit rules each applied breach is marked by.
    pub rules: Rules,
}

pub struct Alerter {
    ops: Option<(tokio::net::TcpListener, Ops)>,
    limits: ServeLimits,
    pool: PgPool,
    rules: Rules,
    brokers: String,
    alerts_topic: String,
    reader: Reader,
}

/// Why an active alerter stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    /// The lock's connection failed: the lock may be another alerter's now.
    LockLost,
}

impl Alerter {
    /// Binds `config.alerter.addr` when it serves ops routes, and reads the Kafka
    /// cluster's id (offsets are stored per cluster).
    pub async fn build(config: &Config, deps: AlerterDeps) -> anyhow::Result<Self> {
        let ops = match deps.ops {
            Some(ops) => Some((serve::bind(config.alerter.addr, "the alerter").await?, ops)),
            None => None,
        };
        let topics = &config.common.topics;
        let consumer: StreamConsumer = tidemark_runtime::kafka::client_config(&deps.brokers)
            .set("group.id", format!("{}.alerter", topics.prefix))
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
        Ok(Self {
            ops,
            limits: deps.limits,
            pool: deps.pool,
            rules: deps.rules,
            brokers: deps.brokers,
            alerts_topic: topics.alerts.clone(),
            reader: Reader::new(consumer, topics.breaches.clone(), cluster_id),
        })
    }

    /// The ops listener's address, when it has one.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.ops.as_ref().map(|(listener, _)| {
            listener
                .local_addr()
                .expect("bound listener has an address")
        })
    }

    /// Applies breaches while active, waits as a standby otherwise, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let serving = shutdown.child_token();
        let server = self.ops.take().map(|(listener, ops)| {
            tracing::info!(addr = %listener.local_addr().expect("bound"), "alerter serving ops endpoints");
            let router = http::with_common_layers(http::ops_router(ops), OPS_REQUEST_TIMEOUT);
            tokio::spawn(serve::serve(
                listener,
                router,
                self.limits.clone(),
                serving.clone(),
            ))
        });
        let lifecycle = self.lifecycle(&shutdown).await;
        serving.cancel();
        if let Some(server) = server {
            server.await??;
        }
        lifecycle
    }

    async fn lifecycle(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let topic = self.reader.topic.clone();
        telemetry::ACTIVE.set(0.0);
        while let Some(lock) = standby::wait_for_lock(&self.pool, &topic, shutdown).await {
            telemetry::ACTIVE.set(1.0);
            let stop = self.active(lock, shutdown).await;
            telemetry::ACTIVE.set(0.0);
            match stop? {
                Stop::Shutdown => break,
                Stop::LockLost => {}
            }
        }
        tracing::info!("alerter stopped");
        Ok(())
    }

    /// Consumes and publishes while holding `lock`.
    async fn active(
        &mut self,
        mut lock: AlerterLock,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Stop> {
        let wake = Arc::new(Notify::new());
        let publishing = shutdown.child_token();
        let publisher = Publisher::new(self.pool.clone(), &self.brokers, &self.alerts_topic)?;
        let publisher = {
            let (wake, stop) = (wake.clone(), publishing.clone());
            tokio::spawn(async move { publisher.run(&wake, stop).await })
        };
        let stop = self.consume(&mut lock, &wake, shutdown).await;
        publishing.cancel();
        let _ = publisher.await;
        self.reader.unassign();
        if let Err(e) = lock.release().await {
            tracing::debug!(error = %e, "closing the alerter lock's connection failed");
        }
        Ok(stop)
    }

    async fn consume(
        &mut self,
        lock: &mut AlerterLock,
        wake: &Notify,
        shutdown: &CancellationToken,
    ) -> Stop {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        while let Err(e) = self.reader.assign(&self.pool).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot assign the breaches topic yet; retrying"
            );
            tokio::select! {
                () = shutdown.cancelled() => return Stop::Shutdown,
                () = backoff.wait() => {}
            }
        }
        let consumer = self.reader.consumer();
        let mut check = tokio::time::interval(LOCK_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Stop::Shutdown,
                _ = check.tick() => {
                    if let Err(e) = lock.check().await {
                        tracing::warn!(error = %e, "the alerter lock's connection failed; back to standby");
                        return Stop::LockLost;
                    }
                    self.follow_partitions().await;
                }
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        let payload = msg.payload().unwrap_or_default();
                        if !self.handle(msg.partition(), msg.offset(), payload, wake, shutdown).await {
                            return Stop::Shutdown;
                        }
                    }
                    Err(e) => telemetry::consume_failed(&e),
                },
            }
        }
    }

    /// Assigns again, from the stored offsets, when the topic gained partitions.
    async fn follow_partitions(&mut self) {
        let grew =
            matches!(self.reader.partition_count().await, Ok(n) if n > self.reader.assigned());
        if grew {
            if let Err(e) = self.reader.assign(&self.pool).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot assign the new partitions of the breaches topic yet; retrying"
                );
            }
        }
    }

    /// Handles one message; false when shutdown began before it could be committed.
    async fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        wake: &Notify,
        shutdown: &CancellationToken,
    ) -> bool {
        match self.reader.admit(partition, offset, Instant::now()) {
            Admit::Skip => true,
            Admit::Refetch(from) => {
                tokio::time::sleep(REFETCH_PAUSE).await;
                if let Err(e) = self.reader.refetch(partition, from).await {
                    tracing::warn!(
                        partition,
                        error = format!("{e:#}"),
                        "cannot fetch the partition again yet"
                    );
                }
                true
            }
            Admit::Apply => {
                let pos = Position {
                    topic: &self.reader.topic,
                    partition,
                    offset,
                    cluster_id: &self.reader.cluster_id,
                };
                let rules = self.rules.current();
                let outcome = apply::commit(&self.pool, &pos, payload, &rules.inhibit, shutdown);
                let Some(outcome) = outcome.await else {
                    return false;
                };
                telemetry::BREACHES.with([outcome.label()]).increment(1);
                if let Outcome::Applied(Applied::Changed { .. }) = outcome {
                    wake.notify_one();
                }
                self.reader.applied(partition, offset);
                true
            }
        }
    }
}
