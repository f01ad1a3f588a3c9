//! Poison messages on the external broker: a message that cannot be decoded, one whose
//! sample breaks the rules (a U+0000 in a tag value, written by a raw producer), and one
//! that Postgres refuses (a CHECK constraint the test adds) are each quarantined whole,
//! the messages around them are applied, the pipeline goes on, and
//! `tidemark quarantine replay` applies the refused one once the constraint is gone.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use tidemark_runtime::config::Topics;
use tidemark_schemas::{encode_sample_batch, SampleBatch, WireSample};

use crate::support::{stored_count, wait_stored, Pipeline};

pub fn batch(metric: &str, value: f64, tags: &[(&str, &str)]) -> Vec<u8> {
    encode_sample_batch(&SampleBatch {
        batch_id: format!("q-{metric}-{value}"),
        produced_at: 0,
        samples: vec![WireSample {
            service: "quarantine".into(),
            metric: metric.into(),
            value,
            count: 1,
            error: false,
            timestamp: chrono::Utc::now().timestamp_millis(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }],
        chunks: vec![],
    })
    .unwrap()
}

/// Produces `payload` to partition 0 and returns its offset.
pub async fn produce(producer: &FutureProducer, topic: &str, payload: &[u8]) -> i64 {
    let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).partition(0).payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap()
        .offset
}

async fn quarantined(pool: &sqlx::PgPool) -> Vec<(i64, i64, Vec<u8>, String)> {
    sqlx::query("SELECT id, \"offset\", payload, reason FROM quarantine ORDER BY \"offset\"")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn stored_sum(pool: &sqlx::PgPool) -> f64 {
    sqlx::query_scalar("SELECT coalesce(sum(sum), 0) FROM buckets")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn tidemark(p: &Pipeline, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("TIDEMARK_KAFKA_BROKERS")
        .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_quarantined_and_the_rest_applied() {
    let p = Pipeline::new(&[]).await;
    let topics = Topics::new(&p.prefix);
    tidemark_runtime::kafka::ensure_topics(&p.brokers, &topics, 1)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE series ADD CONSTRAINT refuse_poison CHECK (metric <> 'poison')")
        .execute(&p.pool)
        .await
        .unwrap();
    let producer: FutureProducer =
        tidemark_runtime::kafka::producer_config(&p.brokers, Duration::from_secs(10))
            .create()
            .unwrap();
    let nul = batch("m", 10.0, &[("k", "a\0b")]);
    let garbage = b"\xC3\x01 not a sample batch".to_vec();
    let poison = batch("poison", 4.0, &[]);
    let mut offsets = Vec::new();
    for payload in [
        batch("m", 1.0, &[]),
        nul.clone(),
        garbage.clone(),
        batch("m", 2.0, &[]),
        poison.clone(),
        batch("m", 3.0, &[("k", "é\u{1F600}")]),
    ] {
        offsets.push(produce(&producer, &topics.samples, &payload).await);
    }
    let base = offsets[0];
    assert_eq!(offsets, (base..base + 6).collect::<Vec<_>>());

    let _aggregator = p.start("aggregator").await;
    wait_stored(&p.pool, 3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while quarantined(&p.pool).await.len() < 3 {
        assert!(Instant::now() < deadline, "three messages quarantined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_sum(&p.pool).await,
        6.0,
        "the valid messages 1, 2 and 3"
    );
    let q = quarantined(&p.pool).await;
    let found: Vec<(i64, &[u8])> = q.iter().map(|r| (r.1, r.2.as_slice())).collect();
    assert_eq!(
        found,
        [
            (base + 1, nul.as_slice()),
            (base + 2, garbage.as_slice()),
            (base + 4, poison.as_slice())
        ],
        "each bad message kept whole at its offset"
    );
    assert!(
        q[0].3.starts_with("invalid: samples[0].tags.k") && q[0].3.contains("U+0000"),
        "{}",
        q[0].3
    );
    assert!(q[1].3.starts_with("undecodable: "), "{}", q[1].3);
    assert!(
        q[2].3.starts_with("refused: ") && q[2].3.contains("refuse_poison"),
        "{}",
        q[2].3
    );
    let next: i64 = sqlx::query_scalar("SELECT next_offset FROM consumer_offsets")
        .fetch_one(&p.pool)
        .await
        .unwrap();
    assert_eq!(next, base + 6, "the offset advanced past every message");

    // The operator sees it in /readyz (still ready) and /metrics.
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{}/readyz", p.aggregator))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "quarantine does not make the aggregator unready"
    );
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["details"]["quarantine"]["waiting"], 3, "{ready}");
    let metrics = get_json_text(&format!("http://{}/metrics", p.aggregator)).await;
    for reason in ["invalid", "undecodable", "refused"] {
        assert!(
            metrics.contains(&format!(
                "tidemark_aggregator_quarantined_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} counted once"
        );
    }

    assert!(
        metrics.contains("tidemark_aggregator_partitions_owned 1")
            && metrics.contains("tidemark_aggregator_partition_idle_seconds{partition=\"0\"}"),
        "lease and progress metrics"
    );

    // The pipeline goes on.
    produce(&producer, &topics.samples, &batch("m", 5.0, &[])).await;
    wait_stored(&p.pool, 4).await;

    // Once the cause is fixed, a replay applies the refused message, once; the two
    // that are bad in themselves stay.
    sqlx::query("ALTER TABLE series DROP CONSTRAINT refuse_poison")
        .execute(&p.pool)
        .await
        .unwrap();
    let (ok, out) = tidemark(&p, &["quarantine", "replay", "--all"]);
    assert!(!ok, "two messages are still refused: {out}");
    assert!(
        out.contains(&format!("{}: applied 1 samples", q[2].0)),
        "{out}"
    );
    assert_eq!(
        out.matches("still refused, left in quarantine").count(),
        2,
        "{out}"
    );
    assert_eq!(stored_count(&p.pool).await, 5);
    assert_eq!(stored_sum(&p.pool).await, 15.0);
    let (ok, out) = tidemark(&p, &["quarantine", "replay", "--id", &q[2].0.to_string()]);
    assert!(!ok && out.contains("no quarantined message"), "{out}");
    assert_eq!(
        stored_count(&p.pool).await,
        5,
        "a replay applies a message once"
    );
    let (ok, out) = tidemark(&p, &["quarantine", "list"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().count(),
        3,
        "a header and the two still waiting: {out}"
    );
}

async fn get_json_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}
