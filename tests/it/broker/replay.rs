//! `tidemark replay`: rebuilding a range from Kafka while the pipeline keeps running,
//! and refusing when the broker no longer holds the start of the range.

use std::process::Command;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use tidemark_aggregator::replay::{self, Progress, ReplayError};

use crate::support::merge;
use crate::support::total;
use crate::support::{assert_api_matches, fresh_database, generate, push, wait_stored, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_corrupted_buckets_while_samples_keep_flowing() {
    let p = Pipeline::new(&[]).await;
    let _ingest = p.start("ingest").await;
    let _aggregator = p.start("aggregator").await;
    let _api = p.start("api").await;
    let now = chrono::Utc::now().timestamp_millis();
    let (first, mut tally) = generate(41, 6_000, 3, now);
    let first_total: u64 = total(&tally);
    assert!(push(p.ingest, &p.token, first, 8)
        .await
        .iter()
        .all(|r| r.1 == 202));
    wait_stored(&p.pool, first_total as i64).await;

    // A bad deploy garbles every stored bucket.
    sqlx::query("UPDATE buckets SET count = count * 2, sum = -1, min = 0")
        .execute(&p.pool)
        .await
        .unwrap();

    let (second, tally2) = generate(42, 3_000, 3, now);
    let (ingest, token) = (p.ingest, p.token.clone());
    let load = tokio::spawn(async move { push(ingest, &token, second, 2).await });
    let from = tally.keys().map(|k| k.1).min().unwrap().to_string();
    let env = p.env.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["replay", "--from", &from])
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("replayed"), "{stdout}");
    println!("{stdout}");

    assert!(load.await.unwrap().iter().all(|r| r.1 == 202));
    merge(&mut tally, tally2);
    let expected: u64 = total(&tally);
    wait_stored(&p.pool, expected as i64).await;
    assert_eq!(assert_api_matches(p.api, &p.token, &tally).await, expected);
}

struct Silent;

impl Progress for Silent {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_when_the_broker_dropped_the_start_of_the_range() {
    let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
    mock.create_topic("r.samples", 1, 1).unwrap();
    let producer: FutureProducer = tidemark_runtime::kafka::producer_config(
        &mock.bootstrap_servers(),
        Duration::from_secs(10),
    )
    .create()
    .unwrap();
    let started = chrono::Utc::now().timestamp_millis();
    // The mock keeps 5 MiB per partition; 7 MiB pushes the oldest out.
    // Random bytes, so compression cannot shrink them.
    let payload: Vec<u8> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        (0..64 * 1024).map(|_| rng.gen()).collect()
    };
    for _ in 0..112 {
        let record: FutureRecord<'_, (), [u8]> =
            FutureRecord::to("r.samples").payload(&payload[..]);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let consumer: rdkafka::consumer::BaseConsumer =
        tidemark_runtime::kafka::client_config(&mock.bootstrap_servers())
            .create()
            .unwrap();
    let (low, _) = rdkafka::consumer::Consumer::fetch_watermarks(
        &consumer,
        "r.samples",
        0,
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(low > 0, "the mock trimmed its log");

    let (_, pool) = fresh_database().await;
    let err = replay::replay(
        &pool,
        &mock.bootstrap_servers(),
        "r.samples",
        started,
        started + 3_600_000,
        Duration::from_secs(300),
        &Silent,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ReplayError::Trimmed { partition: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no longer holds"), "{err}");
}
