//! `tidemark standalone` with its embedded broker, as a process: the whole pipeline in
//! one, and a restart that meets a new, empty broker (a new cluster id) without losing
//! or double-counting anything.

use crate::support::merge;
use crate::support::total;
use crate::support::{assert_api_matches, generate, push, wait_stored, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_survives_a_restart_onto_a_new_embedded_broker() {
    let p = Pipeline::embedded().await;
    let now = chrono::Utc::now().timestamp_millis();
    let (first, mut tally) = generate(21, 3_000, 3, now);
    let (second, tally2) = generate(22, 2_000, 3, now);
    merge(&mut tally, tally2);
    let expected: u64 = total(&tally);

    let mut standalone = p.start("standalone").await;
    assert!(push(p.ingest, &p.token, first, 8)
        .await
        .iter()
        .all(|r| r.1 == 202));
    let first_total: u64 = generate(21, 3_000, 3, now)
        .1
        .values()
        .map(|e| e.count())
        .sum();
    wait_stored(&p.pool, first_total as i64).await;
    assert!(
        standalone.sigterm().success(),
        "standalone exits cleanly on SIGTERM"
    );

    // The new embedded broker starts empty, at offset 0, under a new cluster id.
    let _standalone = p.start("standalone").await;
    assert!(push(p.ingest, &p.token, second, 8)
        .await
        .iter()
        .all(|r| r.1 == 202));
    wait_stored(&p.pool, expected as i64).await;
    assert_eq!(assert_api_matches(p.api, &p.token, &tally).await, expected);
}
