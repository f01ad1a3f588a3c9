//! The aggregator resuming inside a batch of several messages, on the external broker.
//! Kafka serves such a fetch from the start of the batch and the client drops what lies
//! before the fetch offset; tansu 0.6 serves only batches starting at or after it, as if
//! the rest of the batch were missing. Either way the aggregator must apply exactly the
//! messages from its stored offset on, without waiting for a later batch.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tidemark_runtime::config::Topics;
use tidemark_schemas::{encode_sample_batch, SampleBatch, WireSample};

use crate::support::{wait_stored, Pipeline};

fn one_sample(value: f64) -> Vec<u8> {
    encode_sample_batch(&SampleBatch {
        batch_id: format!("gap-{value}"),
        produced_at: 0,
        samples: vec![WireSample {
            service: "gaps".into(),
            metric: "m".into(),
            value,
            count: 1,
            error: false,
            timestamp: chrono::Utc::now().timestamp_millis(),
            tags: BTreeMap::new(),
        }],
        chunks: vec![],
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_inside_a_batch_applies_exactly_its_rest() {
    let p = Pipeline::new(&[]).await;
    let topics = Topics::new(&p.prefix);
    tidemark_runtime::kafka::ensure_topics(&p.brokers, &topics, 6)
        .await
        .unwrap();
    // A long linger puts the ten messages into one batch.
    let producer: FutureProducer =
        tidemark_runtime::kafka::producer_config(&p.brokers, Duration::from_secs(10))
            .set("linger.ms", "200")
            .create()
            .unwrap();
    let sends = (0..10).map(|i| {
        let (producer, topic) = (producer.clone(), topics.samples.clone());
        async move {
            let payload = one_sample(f64::from(i));
            let record: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(&topic).partition(0).payload(&payload);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap()
                .offset
        }
    });
    let offsets = futures::future::join_all(sends).await;
    let base = offsets[0];
    assert_eq!(
        offsets,
        (base..base + 10).collect::<Vec<_>>(),
        "in order, contiguous"
    );

    // Samples 0..4 count as applied: the stored offset points at sample 4, and so does
    // the group's committed offset in Kafka, where the consumer starts.
    let group: BaseConsumer = tidemark_runtime::kafka::client_config(&p.brokers)
        .set("group.id", format!("{}.aggregator", p.prefix))
        .create()
        .unwrap();
    let mut committed = TopicPartitionList::new();
    committed
        .add_partition_offset(&topics.samples, 0, Offset::Offset(base + 4))
        .unwrap();
    group.commit(&committed, CommitMode::Sync).unwrap();
    let brokers = p.brokers.clone();
    let cluster_id = tokio::task::spawn_blocking(move || {
        tidemark_runtime::kafka::cluster_id(&brokers, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .unwrap();
    sqlx::query(
        "INSERT INTO consumer_offsets (topic, partition, next_offset, cluster_id) VALUES ($1, 0, $2, $3)",
    )
    .bind(&topics.samples)
    .bind(base + 4)
    .bind(&cluster_id)
    .execute(&p.pool)
    .await
    .unwrap();

    let _aggregator = p.start("aggregator").await;
    // The rest of the batch is applied with nothing produced after it: a consumer that
    // waited for a later batch (all tansu serves from inside a batch) would leave these
    // acknowledged samples unapplied for as long as the partition stays quiet.
    wait_stored(&p.pool, 6).await;
    assert_eq!(
        stored_sum(&p.pool).await,
        (4..=9).map(f64::from).sum::<f64>(),
        "samples 4..=9"
    );

    let payload = one_sample(10.0);
    let last = producer
        .send(
            FutureRecord::<'_, (), [u8]>::to(&topics.samples)
                .partition(0)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .offset;
    assert_eq!(last, base + 10);
    wait_stored(&p.pool, 7).await;
    assert_eq!(
        stored_sum(&p.pool).await,
        (4..=10).map(f64::from).sum::<f64>(),
        "samples 4..=10"
    );
    let next: i64 = sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = 0",
    )
    .bind(&topics.samples)
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert_eq!(next, base + 11);
}

async fn stored_sum(pool: &sqlx::PgPool) -> f64 {
    sqlx::query_scalar("SELECT sum(sum) FROM buckets")
        .fetch_one(pool)
        .await
        .unwrap()
}
