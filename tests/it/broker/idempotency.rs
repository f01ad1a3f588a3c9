//! `Idempotency-Key`: a client that retries (after a timeout, an error, or just twice)
//! is acknowledged every time and counted once, across aggregator restarts.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::total;
use crate::support::{assert_api_matches, generate, stored_count, wait_stored, Pipeline};

async fn post(
    client: &reqwest::Client,
    p: &Pipeline,
    key: Option<&str>,
    body: &Value,
) -> Result<u16, reqwest::Error> {
    let mut req = client
        .post(format!("http://{}/v1/samples", p.ingest))
        .bearer_auth(&p.token)
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    Ok(req.send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_the_same_key_are_counted_once() {
    let p = Pipeline::new(&[]).await;
    let _ingest = p.start("ingest").await;
    let mut aggregator = p.start("aggregator").await;
    let _api = p.start("api").await;
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();

    // 250 samples of one request, so each partition's share spans several chunks.
    let (bodies, tally) = generate(51, 250, 3, now);
    let body = Value::Array(
        bodies
            .iter()
            .flat_map(|b| b.as_array().unwrap().clone())
            .collect(),
    );
    let once: u64 = total(&tally);

    // A client whose first attempt times out (the request may or may not have gone
    // through), then retries with the same key until acknowledged.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let _ = post(&impatient, &p, Some("order-1"), &body).await;
    assert_eq!(
        post(&client, &p, Some("order-1"), &body).await.unwrap(),
        202
    );
    assert_eq!(
        post(&client, &p, Some("order-1"), &body).await.unwrap(),
        202
    );
    wait_stored(&p.pool, once as i64).await;

    // The dedup is in Postgres: it survives the aggregator's restart.
    aggregator.sigkill();
    let _aggregator = p.start("aggregator").await;
    assert_eq!(
        post(&client, &p, Some("order-1"), &body).await.unwrap(),
        202
    );

    // The same key with another body is another request; no key: always counted.
    let other = json!([{"service": "svc-other", "metric": "m", "value": 7, "timestamp": now}]);
    assert_eq!(
        post(&client, &p, Some("order-1"), &other).await.unwrap(),
        202
    );
    assert_eq!(post(&client, &p, None, &other).await.unwrap(), 202);
    assert_eq!(post(&client, &p, None, &other).await.unwrap(), 202);
    let expected = once as i64 + 3;
    wait_stored(&p.pool, expected).await;
    // Let any late duplicate surface before concluding.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stored_count(&p.pool).await,
        expected,
        "each retry counted once"
    );
    assert_eq!(assert_api_matches(p.api, &p.token, &tally).await, once);

    let bad = client
        .post(format!("http://{}/v1/samples", p.ingest))
        .bearer_auth(&p.token)
        .header("Idempotency-Key", "")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
