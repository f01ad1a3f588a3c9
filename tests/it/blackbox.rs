//! Black-box tests: ingest, aggregator and API as separate processes against the
//! external broker (tansu), real Postgres and real Redis.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::{
    assert_api_matches, generate, push, read_topic, stored_count, wait_stored, Pipeline,
};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_travel_end_to_end_exactly() {
    let p = Pipeline::new(&[]).await;
    let _ingest = p.start("ingest").await;
    let _aggregator = p.start("aggregator").await;
    let _api = p.start("api").await;

    let (bodies, tally) = generate(7, 12_000, 5, now_ms());
    let sent: u64 = tally.values().map(|e| e.count()).sum();
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
            let id = tidemark_core::series::series_id(&s.service, &s.metric, &s.tags);
            assert_eq!(
                tidemark_core::series::partition_of(id, 6),
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
    let sent: u64 = tally.values().map(|e| e.count()).sum();
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
