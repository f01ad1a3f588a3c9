//! Black-box tests: ingest, aggregator and API as separate processes against the
//! external broker (tansu), real Postgres and real Redis.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::{
    assert_api_matches, generate, push, read_topic, stored_count, wait_stored, Pipeline, Tally,
};
use crate::support::{get_json, total, SEVERAL_PARTITIONS};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_travel_end_to_end_exactly() {
    // The health views speak of the current hour: keep the test inside one.
    let into_hour = now_ms().rem_euclid(tidemark_model::bucket::HOUR_MS);
    if into_hour > tidemark_model::bucket::HOUR_MS - 30_000 {
        tokio::time::sleep(Duration::from_millis(
            (tidemark_model::bucket::HOUR_MS - into_hour) as u64 + 1_000,
        ))
        .await;
    }
    // Several partitions, so that routing is put to the test.
    let p = Pipeline::new(&[SEVERAL_PARTITIONS]).await;
    let _ingest = p.start("ingest").await;
    let _aggregator = p.start("aggregator").await;
    let _api = p.start("api").await;

    let (bodies, tally) = generate(7, 12_000, 5, now_ms());
    let sent: u64 = total(&tally);
    let started = Instant::now();
    let results = push(p.ingest, &p.token, bodies, 16).await;
    assert!(
        results.iter().all(|(_, s)| *s == 202),
        "every request acknowledged: {:?}",
        results
            .iter()
            .filter(|r| r.1 != 202)
            .take(3)
            .collect::<Vec<_>>()
    );
    let acked = started.elapsed();
    wait_stored(&p.pool, sent as i64).await;
    let stored = started.elapsed();
    println!(
        "end-to-end: 12000 samples ({sent} weighted) acknowledged in {:.2}s ({:.0} samples/s), stored in {:.2}s ({:.0} samples/s)",
        acked.as_secs_f64(),
        12_000.0 / acked.as_secs_f64(),
        stored.as_secs_f64(),
        12_000.0 / stored.as_secs_f64()
    );

    assert_eq!(assert_api_matches(p.api, &p.token, &tally).await, sent);
    assert_health_matches(&p, &tally).await;
    assert_metrics(&p, 12_000).await;

    let batches = read_topic(&p.brokers, &format!("{}.samples", p.prefix));
    let largest = batches.iter().map(|(_, b)| b.samples.len()).max().unwrap();
    assert!(largest <= 100, "a Kafka message held {largest} samples");
    assert_eq!(
        batches.iter().map(|(_, b)| b.samples.len()).sum::<usize>(),
        12_000,
        "the topic holds exactly the acknowledged samples"
    );
    for (partition, batch) in &batches {
        for s in &batch.samples {
            let id = tidemark_model::series::series_id(&s.service, &s.metric, &s.tags);
            assert_eq!(
                tidemark_model::series::partition_of(id, SEVERAL_PARTITIONS.1.parse().unwrap()),
                *partition,
                "series routed to its partition"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_aggregator_loses_and_duplicates_nothing() {
    let p = Pipeline::new(&[]).await;
    let _ingest = p.start("ingest").await;
    let _api = p.start("api").await;
    let mut aggregator = p.start("aggregator").await;

    let seed = 11;
    println!("sigkill test seed {seed}");
    let (bodies, tally) = generate(seed, 20_000, 4, now_ms());
    let sent: u64 = total(&tally);
    let (ingest, token) = (p.ingest, p.token.clone());
    // Paced so the load spans every aggregator restart below.
    let load = tokio::spawn(async move {
        let mut results = Vec::new();
        for chunk in bodies.chunks(2) {
            results.extend(push(ingest, &token, chunk.to_vec(), 2).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        results
    });

    // Each kill lands while the aggregator is making progress: after a restart, wait
    // until it has stored something new, then kill at a random moment shortly after.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let kills = 5;
    for kill in 1..=kills {
        let before = stored_count(&p.pool).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored_count(&p.pool).await == before {
            assert!(
                Instant::now() < deadline,
                "the aggregator made no progress after restart {kill}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        aggregator.sigkill();
        println!(
            "kill {kill}: {} samples stored when the aggregator died, load still running: {}",
            stored_count(&p.pool).await,
            !load.is_finished()
        );
        aggregator = p.start("aggregator").await;
    }
    let results = load.await.unwrap();
    assert!(
        results.iter().all(|(_, s)| *s == 202),
        "ingest acknowledged every request"
    );
    wait_stored(&p.pool, sent as i64).await;
    assert_eq!(assert_api_matches(p.api, &p.token, &tally).await, sent);
    println!("after {kills} SIGKILLs: acknowledged {sent}, stored {sent}, lost 0, duplicated 0");
}

/// The current hour's counts per service and per metric, from the hot copy and — once
/// the hot copy is marked incomplete — from Postgres.
async fn assert_health_matches(p: &Pipeline, tally: &Tally) {
    let current = tidemark_model::bucket::hour_start(chrono::Utc::now().timestamp_millis());
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for ((key, hour), e) in tally {
        if *hour == current {
            let slot = expected
                .entry((key.service.clone(), key.metric.clone()))
                .or_default();
            slot.0 += e.count();
            slot.1 += e.errors();
        }
    }
    let mut redis = redis::Client::open(crate::support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for source in ["redis", "postgres"] {
        if source == "postgres" {
            let _: () = redis::cmd("DEL")
                .arg(format!("{}:hot:ready", p.prefix))
                .query_async(&mut redis)
                .await
                .unwrap();
            // The all-services view may be shared for up to OVERVIEW_TTL.
            tokio::time::sleep(tidemark_api::health::OVERVIEW_TTL).await;
        }
        let list = get_json(&format!("http://{}/v1/health/services", p.api), &p.token).await;
        let services = list["services"].as_array().unwrap();
        for s in services {
            let name = s["service"].as_str().unwrap();
            let (count, errors) = expected
                .iter()
                .filter(|((svc, _), _)| svc == name)
                .fold((0, 0), |acc, (_, c)| (acc.0 + c.0, acc.1 + c.1));
            assert_eq!(
                s["current_hour"]["count"].as_u64().unwrap(),
                count,
                "{name} from {source}"
            );
            assert_eq!(
                s["current_hour"]["error_count"].as_u64().unwrap(),
                errors,
                "{name} from {source}"
            );
            assert_eq!(s["source"], source);
            let rate = errors as f64 / count as f64;
            let status = if rate >= 0.5 {
                "down"
            } else if rate >= 0.05 {
                "degraded"
            } else {
                "healthy"
            };
            assert_eq!(s["status"], status, "error rate {rate}: {s}");
        }
        let one = get_json(
            &format!("http://{}/v1/health/services/svc-0", p.api),
            &p.token,
        )
        .await;
        for (metric, stats) in one["metrics"].as_object().unwrap() {
            let (count, errors) = expected[&("svc-0".to_owned(), metric.clone())];
            assert_eq!(
                (
                    stats["count"].as_u64().unwrap(),
                    stats["error_count"].as_u64().unwrap()
                ),
                (count, errors),
                "svc-0 {metric} from {source}"
            );
        }
    }
    let missing = reqwest::Client::new()
        .get(format!("http://{}/v1/health/services/nope", p.api))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Each role's `/metrics` speaks Prometheus text and counts what happened.
async fn assert_metrics(p: &Pipeline, samples: u64) {
    let text = |addr: std::net::SocketAddr| async move {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let ingest = text(p.ingest).await;
    assert!(
        ingest.contains(&format!("tidemark_ingest_samples_accepted_total {samples}")),
        "{ingest}"
    );
    let aggregator = text(p.aggregator).await;
    assert!(
        aggregator.contains("tidemark_aggregator_flush_duration_seconds_bucket"),
        "{aggregator}"
    );
    let api = text(p.api).await;
    assert!(
        api.contains(
            r#"tidemark_http_requests_total{route="/v1/series",method="GET",status="200"}"#
        ),
        "{api}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_samples_fold_into_their_long_flushed_hour() {
    let p = Pipeline::new(&[]).await;
    let _ingest = p.start("ingest").await;
    let _aggregator = p.start("aggregator").await;
    let _api = p.start("api").await;

    let now = now_ms();
    let (recent, mut tally) = generate(31, 2_000, 2, now);
    let mut sent: u64 = total(&tally);
    assert!(push(p.ingest, &p.token, recent, 8)
        .await
        .iter()
        .all(|r| r.1 == 202));
    wait_stored(&p.pool, sent as i64).await;

    // Six days ago, in two rounds: the second lands on an hour already in Postgres.
    for (round, seed) in [(0, 32), (1, 33)] {
        let six_days_ago = now - 6 * 86_400_000 + round * 1_000;
        let (late, late_tally) = generate(seed, 1_000, 2, six_days_ago);
        assert!(push(p.ingest, &p.token, late, 8)
            .await
            .iter()
            .all(|r| r.1 == 202));
        for (k, e) in late_tally {
            sent += e.count();
            tally
                .entry(k)
                .or_default()
                .observations
                .extend(e.observations);
        }
        wait_stored(&p.pool, sent as i64).await;
    }
    assert_eq!(assert_api_matches(p.api, &p.token, &tally).await, sent);
    // Too late (beyond 7 days) is refused at the door.
    let too_old = serde_json::json!([{"service": "svc-0", "metric": "m", "value": 1, "timestamp": now - 8 * 86_400_000}]);
    let status = push(p.ingest, &p.token, vec![too_old], 1).await[0].1;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_batches_of_requests_in_flight() {
    // A long linger keeps batches in the batcher when the signal arrives.
    let p = Pipeline::new(&[("TIDEMARK_LINGER", "300ms")]).await;
    let mut ingest = p.start("ingest").await;
    let (bodies, _) = generate(61, 3_000, 3, now_ms());
    let (addr, token) = (p.ingest, p.token.clone());
    let load = tokio::spawn(async move { push(addr, &token, bodies, 30).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        ingest.sigterm().success(),
        "ingest exits cleanly on SIGTERM"
    );
    let results = load.await.unwrap();
    let acked: usize = results.iter().filter(|r| r.1 == 202).map(|r| r.0).sum();
    assert!(
        acked > 0,
        "requests in flight at the signal were completed, not dropped"
    );
    assert!(
        results.iter().all(|r| r.1 == 202 || r.1 == 0),
        "the rest were refused a connection: {results:?}"
    );
    let batches = read_topic(&p.brokers, &format!("{}.samples", p.prefix));
    let in_topic: usize = batches.iter().map(|(_, b)| b.samples.len()).sum();
    assert_eq!(
        in_topic, acked,
        "every acknowledged sample reached the broker, and nothing else"
    );
}

/// A flood of unknown keys from one client address is refused with `429` once past the
/// per-address budget (20 per 10 s), through the real server, which hands handlers the
/// client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_from_one_address_are_limited() {
    let p = Pipeline::new(&[]).await;
    let _api = p.start("api").await;
    let client = reqwest::Client::new();
    let health = |token: String| {
        let request = client
            .get(format!("http://{}/v1/health/services", p.api))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(health(p.token.clone()).await, 200, "a key in use");
    let mut statuses = Vec::new();
    for i in 0..25 {
        statuses.push(health(format!("tm_unknown{i}")).await);
    }
    assert_eq!(&statuses[..20], &[401; 20], "{statuses:?}");
    assert_eq!(&statuses[20..], &[429; 5], "{statuses:?}");
    assert_eq!(
        health(p.token.clone()).await,
        200,
        "a key in use still works from that address"
    );
}
