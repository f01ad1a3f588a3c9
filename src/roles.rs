//! Wiring of the roles: opening the connections a role needs, its readiness checks, and
//! running several roles under one cancellation tree (any failure stops them all).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tidemark_aggregator::progress::{stalled, Progress};
use tidemark_aggregator::{Aggregator, AggregatorDeps};
use tidemark_alerter::{Alerter, AlerterDeps};
use tidemark_api::{Api, ApiDeps};
use tidemark_ingest::{Ingest, IngestDeps};
use tidemark_runtime::auth::KeyStore;
use tidemark_runtime::backpressure::Backpressure;
use tidemark_runtime::http::{Ops, ReadyCheck, ReadyDetail};
use tidemark_runtime::rules::Rules;
use tidemark_runtime::serve::ServeLimits;
use tidemark_runtime::{kafka, telemetry, Config};
use tidemark_store::db::{self, PgPool};
use tidemark_store::hot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connections shared by the roles of one process.
#[derive(Clone)]
pub struct Shared {
    pub brokers: String,
    pub pool: PgPool,
    pub redis: hot::Redis,
    pub keys: Arc<KeyStore>,
    /// A bound on the broker's backlog: set when the broker is `standalone`'s embedded
    /// one.
    pub backpressure: Option<Arc<dyn Backpressure>>,
    /// Timeouts and the connection budget every listener of the process shares.
    pub limits: ServeLimits,
    /// The alert rules in force (`TIDEMARK_RULES`), reloaded while the process runs.
    pub rules: Rules,
    metadata_client: Arc<BaseConsumer>,
}

impl Shared {
    /// Connects to Postgres (applying migrations), Redis and Kafka (creating topics).
    pub async fn connect(
        config: &Config,
        brokers: &str,
        create_database: bool,
    ) -> anyhow::Result<Self> {
        let rules = Rules::load(config.common.rules.as_deref())?;
        let pool = db::connect(
            &config.common.database_url,
            config.common.db_max_connections,
            create_database,
        )
        .await?;
        db::migrate(&pool).await?;
        let redis = hot::Redis::connect(&config.common.redis_url).await?;
        kafka::ensure_topics(brokers, &config.common.topics, config.common.partitions.0).await?;
        Ok(Self {
            brokers: brokers.to_owned(),
            keys: Arc::new(KeyStore::new(pool.clone())),
            backpressure: None,
            limits: ServeLimits::from_settings(&config.serving),
            rules,
            metadata_client: Arc::new(kafka::client_config(brokers).create()?),
            pool,
            redis,
        })
    }

    /// Ops routes whose `/readyz` checks Postgres, Redis and Kafka.
    pub fn ops(&self, config: &Config) -> Ops {
        let pool = self.pool.clone();
        let postgres: ReadyCheck = Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { db::ping(&pool).await.map_err(|_| "unreachable".to_owned()) })
        });
        let conn = self.redis.clone();
        let redis_check: ReadyCheck = Arc::new(move || {
            let conn = conn.clone();
            Box::pin(async move { conn.ping().await.map_err(|_| "unreachable".to_owned()) })
        });
        let client = self.metadata_client.clone();
        let topic = config.common.topics.samples.clone();
        let kafka_check: ReadyCheck = Arc::new(move || {
            let (client, topic) = (client.clone(), topic.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    client
                        .fetch_metadata(Some(&topic), Duration::from_secs(1))
                        .map(drop)
                        .map_err(|_| "unreachable".to_owned())
                })
                .await
                .unwrap_or_else(|_| Err("check failed".to_owned()))
            })
        });
        Ops {
            metrics: telemetry::metrics_handle(),
            metrics_token: config.common.metrics_token.clone(),
            checks: vec![
                ("postgres", postgres),
                ("redis", redis_check),
                ("kafka", kafka_check),
            ],
            details: Vec::new(),
        }
    }

    /// The aggregator's ops routes: `/readyz` also fails when a partition it owns applied
    /// nothing for a while although messages wait, and shows the quarantined messages
    /// that wait for a replay.
    fn aggregator_ops(&self, config: &Config, progress: Arc<Progress>) -> Ops {
        let pool = self.pool.clone();
        let quarantine: ReadyDetail = Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                match tidemark_aggregator::quarantine::pending(&pool).await {
                    Ok((waiting, newest)) => serde_json::json!({
                        "waiting": waiting,
                        "newest_reason": newest,
                        "see": "tidemark quarantine list",
                    }),
                    Err(_) => "unknown: Postgres unreachable".into(),
                }
            })
        });
        let (client, topic) = (
            self.metadata_client.clone(),
            config.common.topics.samples.clone(),
        );
        let applying: ReadyCheck = Arc::new(move || {
            let (client, topic, progress) = (client.clone(), topic.clone(), progress.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    let snapshot = progress.snapshot(std::time::Instant::now());
                    let stalled = stalled(&snapshot, |p| {
                        client
                            .fetch_watermarks(&topic, p, Duration::from_secs(1))
                            .ok()
                            .map(|w| w.1)
                    });
                    if stalled.is_empty() {
                        Ok(())
                    } else {
                        Err(stalled.join("; "))
                    }
                })
                .await
                .unwrap_or_else(|_| Err("check failed".to_owned()))
            })
        });
        let mut ops = self.ops(config);
        ops.checks.push(("applying", applying));
        ops.details.push(("quarantine", quarantine));
        ops
    }
}

/// A role of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Aggregator,
    Alerter,
    Api,
}

/// Runs `roles` until `shutdown` or until one fails. With `own_ops`, the aggregator and
/// alerter serve their ops endpoints on their own addresses (separate processes); in
/// `standalone` the ingest and API listeners already expose the process's ops routes.
pub async fn run(
    config: &Config,
    shared: &Shared,
    roles: &[Role],
    own_ops: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    telemetry::describe_metrics(crate::vocabulary::all_metrics());
    shared.rules.spawn_reloader(
        shared.pool.clone(),
        config.common.topics.prefix.clone(),
        shutdown.clone(),
    );
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    for role in roles {
        let token = shutdown.clone();
        match role {
            Role::Ingest => {
                let deps = IngestDeps {
                    brokers: shared.brokers.clone(),
                    keys: shared.keys.clone(),
                    redis: shared.redis.clone(),
                    ops: shared.ops(config),
                    backpressure: shared.backpressure.clone(),
                    limits: shared.limits.clone(),
                };
                let ingest = Ingest::build(config, deps).await?;
                tasks.spawn(ingest.run(token));
            }
            Role::Api => {
                let deps = ApiDeps {
                    pool: shared.pool.clone(),
                    redis: shared.redis.clone(),
                    keys: shared.keys.clone(),
                    ops: shared.ops(config),
                    limits: shared.limits.clone(),
                    rules: shared.rules.clone(),
                };
                let api = Api::build(config, deps).await?;
                tasks.spawn(api.run(token));
            }
            Role::Aggregator => {
                let deps = AggregatorDeps {
                    brokers: shared.brokers.clone(),
                    pool: shared.pool.clone(),
                    redis: shared.redis.clone(),
                    backpressure: shared.backpressure.clone(),
                    rules: shared.rules.clone(),
                };
                let aggregator = Aggregator::build(config, deps).await?;
                let progress = aggregator.progress();
                tasks.spawn(aggregator.run(token));
                if own_ops {
                    tasks.spawn(serve_ops(
                        config.aggregator.addr,
                        "the aggregator",
                        shared.aggregator_ops(config, progress),
                        shared.limits.clone(),
                        shutdown.clone(),
                    ));
                }
            }
            Role::Alerter => {
                let deps = AlerterDeps {
                    brokers: shared.brokers.clone(),
                    pool: shared.pool.clone(),
                    ops: own_ops.then(|| shared.ops(config)),
                    limits: shared.limits.clone(),
                    rules: shared.rules.clone(),
                };
                let alerter = Alerter::build(config, deps).await?;
                tasks.spawn(alerter.run(token));
            }
        }
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(
                error = format!("{e:#}"),
                "a role failed; stopping the others"
            );
            first_error.get_or_insert(e);
        }
        shutdown.cancel();
    }
    first_error.map_or(Ok(()), Err)
}

/// How long an ops request (`/livez`, `/readyz`, `/metrics`) may take: the readiness
/// checks are bounded at 2 s each, so this leaves room for all of them.
const OPS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_ops(
    addr: std::net::SocketAddr,
    what: &str,
    ops: Ops,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tidemark_runtime::serve::bind(addr, what).await?;
    let router = tidemark_runtime::http::with_common_layers(
        tidemark_runtime::http::ops_router(ops),
        OPS_REQUEST_TIMEOUT,
    );
    tidemark_runtime::serve::serve(listener, router, limits, shutdown).await
}
