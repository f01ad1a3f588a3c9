//! The alerter as processes on the external broker: breaches produced to the breaches
//! topic become alerts in Postgres and JSON messages on the alerts topic; an undecodable
//! message and a repeated breach are passed; a standby takes over from a killed alerter,
//! and neither that nor a restart applies anything twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use sqlx::PgPool;
use tidemark_runtime::config::Topics;
use tidemark_schemas::{encode_breach, BreachState};

use crate::local::alerts::breach;
use crate::support::{free_addr, read_messages, Pipeline};

const T0: i64 = 1_790_000_000_000;

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The breach `seq` of fingerprint `fp`'s episode that began at `since`.
async fn produce_breach(
    producer: &FutureProducer,
    topic: &str,
    fp: &str,
    seq: i64,
    state: BreachState,
    reason: &str,
    since: i64,
) {
    let b = breach("latency", "checkout", fp, seq, state, reason, since);
    produce(producer, topic, fp, &encode_breach(&b).unwrap()).await;
}

/// `(state, transitions)` of each alert of `fingerprint`, oldest first.
async fn alerts_of(pool: &PgPool, fingerprint: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT a.state, (SELECT count(*) FROM alert_transitions t WHERE t.alert_id = a.id) \
         FROM alerts a WHERE fingerprint = $1 ORDER BY id",
    )
    .bind(fingerprint)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until `fingerprint`'s alerts are `want`.
async fn wait_alerts(pool: &PgPool, fingerprint: &str, want: &[(&str, i64)]) {
    let want: Vec<(String, i64)> = want.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = alerts_of(pool, fingerprint).await;
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{fingerprint}: alerts {seen:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `(alert_id, seq, state)` of every message on the alerts topic, once each, once
/// it holds `count` distinct ones (a change may be published more than once).
async fn wait_feed(brokers: &str, topic: &str, count: usize) -> BTreeSet<(i64, i64, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
        let messages = tokio::task::spawn_blocking(move || read_messages(&brokers, &topic))
            .await
            .unwrap();
        let seen: BTreeSet<(i64, i64, String)> = messages
            .iter()
            .map(|(_, _, payload)| {
                let v: Value = serde_json::from_slice(payload).unwrap();
                assert_eq!(v["alert_id"], v["alert"]["id"], "{v}");
                assert_eq!(v["seq"], v["transition"]["seq"], "{v}");
                (
                    v["alert_id"].as_i64().unwrap(),
                    v["seq"].as_i64().unwrap(),
                    v["alert"]["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if seen.len() >= count {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the feed holds {seen:?}, expected {count} changes"
        );
    }
}

/// Waits until the alerter on `addr` exports `tidemark_alerter_active` as `want`.
async fn wait_active(addr: std::net::SocketAddr, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let active = page.lines().find_map(|l| {
            l.strip_prefix("tidemark_alerter_active ")?
                .parse::<f64>()
                .ok()
        });
        if active == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: tidemark_alerter_active is {active:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_become_alerts_once_across_failover_and_restart() {
    let p = Pipeline::new(&[]).await;
    let topics = Topics::new(&p.prefix);
    tidemark_runtime::kafka::ensure_topics(&p.brokers, &topics, 1)
        .await
        .unwrap();
    let producer: FutureProducer =
        tidemark_runtime::kafka::producer_config(&p.brokers, Duration::from_secs(10))
            .create()
            .unwrap();
    let t = &topics.breaches;

    // Offsets 0-3: pending, firing, a message that is no breach, the firing again (the
    // aggregator published it twice).
    use BreachState::*;
    produce_breach(&producer, t, "fp-a", 1, Pending, "breached", T0).await;
    produce_breach(&producer, t, "fp-a", 2, Firing, "breached", T0).await;
    produce(&producer, t, "junk", b"not avro").await;
    produce_breach(&producer, t, "fp-a", 2, Firing, "breached", T0).await;

    let first_addr = free_addr();
    let mut first = p.start_at("alerter", first_addr).await;
    wait_alerts(&p.pool, "fp-a", &[("firing", 2)]).await;
    let feed = wait_feed(&p.brokers, &topics.alerts, 2).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM alerts WHERE fingerprint = 'fp-a'")
        .fetch_one(&p.pool)
        .await
        .unwrap();
    assert_eq!(
        feed,
        BTreeSet::from([(id, 1, "pending".to_owned()), (id, 2, "firing".to_owned())])
    );

    // A second alerter waits as a standby, and takes over once the first is killed.
    let second_addr = free_addr();
    let mut second = p.start_at("alerter", second_addr).await;
    wait_active(first_addr, 1.0).await;
    wait_active(second_addr, 0.0).await;
    first.sigkill();
    let mut escalated = breach("latency", "checkout", "fp-a", 3, Firing, "escalated", T0);
    escalated.severity = tidemark_schemas::Severity::Critical;
    produce(&producer, t, "fp-a", &encode_breach(&escalated).unwrap()).await;
    produce_breach(&producer, t, "fp-a", 4, Ok, "recovered", T0).await;
    wait_alerts(&p.pool, "fp-a", &[("resolved", 4)]).await;
    wait_active(second_addr, 1.0).await;

    // A graceful restart, then a new episode: applied in order after everything before,
    // so once it shows, anything applied again would show too.
    assert!(second.sigterm().success());
    let _third = p.start_at("alerter", free_addr()).await;
    produce_breach(&producer, t, "fp-a", 5, Firing, "breached", T0 + 3_600_000).await;
    wait_alerts(&p.pool, "fp-a", &[("resolved", 4), ("firing", 1)]).await;

    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM alert_transitions), (SELECT count(*) FROM alert_feed), \
           (SELECT next_offset FROM alerter_offsets WHERE topic = $1 AND partition = 0)",
    )
    .bind(t)
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert_eq!(counts, (5, 5, 7), "(transitions, feed rows, next offset)");
    let feed = wait_feed(&p.brokers, &topics.alerts, 5).await;
    let states: Vec<(i64, String)> = feed.iter().map(|(_, seq, s)| (*seq, s.clone())).collect();
    assert_eq!(feed.len(), 5, "{feed:?}");
    assert_eq!(
        states,
        [
            (1, "pending".to_owned()),
            (2, "firing".to_owned()),
            (3, "firing".to_owned()),
            (4, "resolved".to_owned()),
            (1, "firing".to_owned()),
        ]
    );
}
