//! `tidemark standalone`: every role in one process. Without `TIDEMARK_KAFKA_BROKERS` it
//! embeds librdkafka's mock cluster — for trying Tidemark out, not for production: the
//! mock keeps 5 MiB per partition in memory and forgets everything on restart.

mod backlog;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::sync::Arc;

use tidemark_runtime::auth::{self, Role as KeyRole};
use tidemark_runtime::Config;
use tokio_util::sync::CancellationToken;

use crate::roles::{self, Role, Shared};
use backlog::Backlog;

/// The embedded broker's bound per partition: well under the mock's 5 MiB.
const EMBEDDED_LIMIT_BYTES: u64 = 4 * 1024 * 1024;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Kept alive for the whole run: dropping it stops the embedded broker.
    let mut _embedded: Option<MockCluster<'static, DefaultProducerContext>> = None;
    let brokers = match &config.common.kafka_brokers {
        Some(b) => b.clone(),
        None => {
            let mock = MockCluster::new(1)?;
            for topic in [
                &config.common.topics.samples,
                &config.common.topics.breaches,
                &config.common.topics.alerts,
            ] {
                mock.create_topic(topic, config.common.partitions.0, 1)?;
            }
            let servers = mock.bootstrap_servers();
            tracing::warn!(brokers = %servers, "no TIDEMARK_KAFKA_BROKERS: using an embedded in-memory broker (for trying Tidemark out, not for production)");
            _embedded = Some(mock);
            servers
        }
    };
    let mut shared = Shared::connect(&config, &brokers, true).await?;
    if _embedded.is_some() {
        shared.backpressure = Some(Arc::new(Backlog::new(
            config.common.partitions.0,
            EMBEDDED_LIMIT_BYTES,
        )));
    }
    if auth::key_count(&shared.pool).await? == 0 {
        let token = auth::create_key(&shared.pool, KeyRole::Admin, "standalone-admin").await?;
        println!("Created an admin API key (shown only this once):\n\n    {token}\n");
    }
    println!(
        "Tidemark standalone: ingest on http://{} , API on http://{}",
        config.ingest.addr, config.api.addr
    );
    roles::run(
        &config,
        &shared,
        &[Role::Ingest, Role::Aggregator, Role::Alerter, Role::Api],
        false,
        shutdown,
    )
    .await
}
