//! Kafka client settings shared by the roles, and topic creation at start (the brokers
//! Tidemark runs on may have auto-creation off, and tansu has none).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Topics;

/// Base settings for any client of `brokers`.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000")
        // librdkafka logs to stderr itself otherwise; we route through `tracing`.
        .set("log_level", "4");
    cfg
}

/// Most messages a producer puts in one record batch. A consumer resuming at an offset
/// inside a batch may be served nothing until a later batch arrives (tansu 0.6 serves
/// only batches that start at or after the fetch offset), so it starts this many offsets
/// earlier, before any batch holding its offset, and skips what it has applied.
pub const MAX_BATCH_MESSAGES: i64 = 1000;

/// How long librdkafka waits to fill a produce request. Measured against 0, 1, 5 and 10 ms
/// at 64 connections: 2 ms keeps throughput and saves the broker CPU (docs/decisions.md,
/// "The producer keeps `linger.ms=2`").
pub const PRODUCER_LINGER_MS: u32 = 2;

/// A producer that the broker acknowledges only after all in-sync replicas have the
/// data, and that never duplicates or reorders on retry.
pub fn producer_config(brokers: &str, delivery_timeout: Duration) -> ClientConfig {
    let mut cfg = client_config(brokers);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        .set("linger.ms", PRODUCER_LINGER_MS.to_string())
        .set("batch.num.messages", MAX_BATCH_MESSAGES.to_string())
        .set("compression.type", "lz4");
    cfg
}

/// Number of partitions of `topic`, from the brokers' metadata.
pub fn partition_count(brokers: &str, topic: &str, timeout: Duration) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow::anyhow!("topic {topic} not in metadata"))?;
    if let Some(err) = t.error() {
        anyhow::bail!("topic {topic}: {:?}", RDKafkaErrorCode::from(err));
    }
    Ok(t.partitions().len() as i32)
}

/// The cluster id reported by the brokers (a restarted embedded broker has a new one).
pub fn cluster_id(brokers: &str, timeout: Duration) -> anyhow::Result<String> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    consumer
        .client()
        .fetch_cluster_id(timeout)
        .ok_or_else(|| anyhow::anyhow!("Kafka at {brokers} did not report a cluster id"))
}

/// Creates the samples, breaches and alerts topics when they are missing.
pub async fn ensure_topics(brokers: &str, topics: &Topics, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let existing: Vec<String> = {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("cannot reach Kafka at {brokers}: {e}; start the broker or set TIDEMARK_KAFKA_BROKERS"))?;
        metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect()
    };
    let wanted = [&topics.samples, &topics.breaches, &topics.alerts];
    let missing: Vec<NewTopic<'_>> = wanted
        .iter()
        .filter(|name| !existing.contains(name))
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&missing, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}
