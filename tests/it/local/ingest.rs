//! Ingest in process on librdkafka's mock cluster: validation (400 naming index and
//! field), limits (413), access (401/403), batching (≤100 per message) and broker
//! failure (503, never 202).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{json, Value};
use tidemark_ingest::{Cardinality, IngestState};
use tidemark_runtime::auth::{create_key, KeyStore, Role};
use tidemark_runtime::backpressure::Backpressure;
use tower::ServiceExt;

use crate::support::{fresh_database, read_topic, redis_url, unique};
use backlog::{sample_size, Backlog};

// `standalone`'s bound, from the binary, which has no library to import it from.
#[path = "../../../src/standalone/backlog.rs"]
mod backlog;

const TOPIC: &str = "t.samples";

struct Harness {
    mock: MockCluster<'static, DefaultProducerContext>,
    router: Router,
    ingest_key: String,
    read_key: String,
}

async fn harness(ack_timeout: Duration) -> Harness {
    harness_with(ack_timeout, 1000, None, 200_000).await
}

async fn harness_with(
    ack_timeout: Duration,
    max_series: u32,
    backpressure: Option<Arc<dyn Backpressure>>,
    inflight: usize,
) -> Harness {
    let (mock, batcher) =
        tidemark_ingest::test_support::mock_batcher(TOPIC, 3, ack_timeout, backpressure);
    let (_, pool) = fresh_database().await;
    let ingest_key = create_key(&pool, Role::Ingest, "ingest").await.unwrap();
    let read_key = create_key(&pool, Role::Read, "read").await.unwrap();
    let redis =
        tidemark_store::hot::Redis::connect(&tidemark_runtime::config::Secret::new(redis_url()))
            .await
            .unwrap();
    let state = IngestState {
        batcher: Arc::new(batcher),
        cardinality: Arc::new(Cardinality::new(max_series, &unique("it"), redis)),
        inflight: Arc::new(tidemark_ingest::Inflight::new(inflight)),
        max_body_bytes: 64 * 1024,
        max_decompressed_bytes: 256 * 1024,
        max_sample_age: Duration::from_secs(7 * 86_400),
        max_sample_future: Duration::from_secs(300),
        retry_after_secs: 1,
    };
    let router = tidemark_ingest::router(state, Arc::new(KeyStore::new(pool)));
    Harness {
        mock,
        router,
        ingest_key,
        read_key,
    }
}

async fn post(
    router: &Router,
    key: Option<&str>,
    body: Vec<u8>,
    encoding: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::post("/v1/samples").header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
    )
}

fn good(i: usize) -> Value {
    json!({"service": "checkout", "metric": "http.server.duration", "value": i as f64, "tags": {"route": "/pay"}})
}

fn total_messages(mock: &MockCluster<'static, DefaultProducerContext>) -> usize {
    read_topic(&mock.bootstrap_servers(), TOPIC).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_sample_is_refused_naming_index_and_field() {
    let h = harness(Duration::from_secs(5)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let long = "x".repeat(129);
    let many_tags: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"metric": "m", "value": 1}), "service"),
        (json!({"service": "", "metric": "m", "value": 1}), "service"),
        (
            json!({"service": "bad service", "metric": "m", "value": 1}),
            "service",
        ),
        (
            json!({"service": long, "metric": "m", "value": 1}),
            "service",
        ),
        (json!({"service": "s", "value": 1}), "metric"),
        (
            json!({"service": "s", "metric": "a/b", "value": 1}),
            "metric",
        ),
        (json!({"service": "s", "metric": "m"}), "value"),
        (
            json!({"service": "s", "metric": "m", "value": "fast"}),
            "value",
        ),
        (
            json!({"service": "s", "metric": "m", "value": null}),
            "value",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "count": 0}),
            "count",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "count": 1.5}),
            "count",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "error": "yes"}),
            "error",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "timestamp": now - 8 * 86_400_000}),
            "timestamp",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "timestamp": now + 3_600_000}),
            "timestamp",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "timestamp": "last tuesday"}),
            "timestamp",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "tags": many_tags}),
            "tags",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "tags": {"bad key": "v"}}),
            "tags",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "tags": {"k": "v".repeat(257)}}),
            "tags",
        ),
        (
            json!({"service": "s", "metric": "m", "value": 1, "tags": {"k": 1}}),
            "tags",
        ),
    ];
    for (bad, field) in cases {
        // One good sample before the bad one: nothing of the request may be accepted.
        let body = serde_json::to_vec(&json!([good(0), bad])).unwrap();
        let (status, json, _) = post(&h.router, Some(&h.ingest_key), body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("samples[1].{field}")),
            "{bad} → {message}"
        );
        assert!(json["error"]["code"].is_string());
    }
    // A value beyond f64 range is not a finite number either.
    let body = br#"[{"service":"s","metric":"m","value":1e999}]"#.to_vec();
    let (status, json, _) = post(&h.router, Some(&h.ingest_key), body, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("samples[0].value"),
        "{json}"
    );
    assert_eq!(
        total_messages(&h.mock),
        0,
        "a refused request produced nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_needs_an_ingest_or_admin_key() {
    let h = harness(Duration::from_secs(5)).await;
    let body = || serde_json::to_vec(&json!([good(1)])).unwrap();
    assert_eq!(
        post(&h.router, None, body(), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&h.router, Some("tm_unknown"), body(), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&h.router, Some(&h.read_key), body(), None).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, json, _) = post(&h.router, Some(&h.ingest_key), body(), None).await;
    assert_eq!(
        (status, json),
        (StatusCode::ACCEPTED, json!({"accepted": 1}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_compressed_or_not() {
    let h = harness(Duration::from_secs(5)).await;
    let big: Vec<Value> = (0..2000).map(good).collect();
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() > 64 * 1024);
    assert_eq!(
        post(&h.router, Some(&h.ingest_key), body.clone(), None)
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Small on the wire, too large once decompressed.
    let bomb = zstd::encode_all(&vec![b' '; 1 << 20][..], 3).unwrap();
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(
        post(&h.router, Some(&h.ingest_key), bomb, Some("zstd"))
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Within limits, gzip is accepted.
    let small = serde_json::to_vec(&json!([good(1), good(2)])).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &small).unwrap();
    let (status, json, _) = post(
        &h.router,
        Some(&h.ingest_key),
        gz.finish().unwrap(),
        Some("gzip"),
    )
    .await;
    assert_eq!(
        (status, json),
        (StatusCode::ACCEPTED, json!({"accepted": 2}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_at_most_100_samples_and_all_acknowledged_ones() {
    let h = harness(Duration::from_secs(5)).await;
    let mut accepted = 0;
    for round in 0..3 {
        let samples: Vec<Value> = (0..450).map(|i| json!({"service": format!("s{}", i % 7), "metric": "m", "value": (round * 1000 + i) as f64})).collect();
        let (status, json, _) = post(
            &h.router,
            Some(&h.ingest_key),
            serde_json::to_vec(&samples).unwrap(),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        accepted += json["accepted"].as_u64().unwrap();
    }
    let batches = read_topic(&h.mock.bootstrap_servers(), TOPIC);
    assert!(
        batches
            .iter()
            .all(|(_, b)| !b.samples.is_empty() && b.samples.len() <= 100),
        "sizes {:?}",
        batches
            .iter()
            .map(|(_, b)| b.samples.len())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        batches
            .iter()
            .map(|(_, b)| b.samples.len() as u64)
            .sum::<u64>(),
        accepted
    );
    assert!(
        batches.iter().any(|(_, b)| b.samples.len() == 100),
        "full batches are formed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_503_never_202_then_recovery() {
    let h = harness(Duration::from_secs(2)).await;
    let body = || serde_json::to_vec(&json!([good(1), good(2), good(3)])).unwrap();
    assert_eq!(
        post(&h.router, Some(&h.ingest_key), body(), None).await.0,
        StatusCode::ACCEPTED
    );
    h.mock.broker_down(1).unwrap();
    for _ in 0..3 {
        let (status, json, retry_after) = post(&h.router, Some(&h.ingest_key), body(), None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(json["error"]["code"], "unavailable");
        assert!(retry_after.is_some(), "503 carries Retry-After");
    }
    h.mock.broker_up(1).unwrap();
    let mut recovered = false;
    for _ in 0..20 {
        if post(&h.router, Some(&h.ingest_key), body(), None).await.0 == StatusCode::ACCEPTED {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "ingest accepts again once the broker is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_opening_a_series_past_the_limit_is_refused() {
    let h = harness_with(Duration::from_secs(5), 3, None, 200_000).await;
    let series = |svc: &str, route: &str| json!({"service": svc, "metric": "m", "value": 1.0, "tags": {"route": route}});
    let body = |v: Value| serde_json::to_vec(&v).unwrap();
    let (status, _, _) = post(
        &h.router,
        Some(&h.ingest_key),
        body(json!([
            series("a", "1"),
            series("a", "2"),
            series("a", "3")
        ])),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Known series stay welcome; another service has its own bound.
    let (status, _, _) = post(
        &h.router,
        Some(&h.ingest_key),
        body(json!([series("a", "2"), series("b", "1")])),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, json, _) = post(
        &h.router,
        Some(&h.ingest_key),
        body(json!([series("a", "1"), series("a", "4")])),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("samples[1].series: service \"a\" has reached its limit of 3 series"),
        "{message}"
    );
    assert_eq!(json["error"]["code"], "series_limit");
    let produced: usize = read_topic(&h.mock.bootstrap_servers(), TOPIC)
        .iter()
        .map(|(_, b)| b.samples.len())
        .sum();
    assert_eq!(produced, 5, "the refused request produced nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_embedded_backlog_means_503_until_the_aggregator_catches_up() {
    let backlog = Arc::new(Backlog::new(3, 4_000));
    let h = harness_with(Duration::from_secs(5), 1000, Some(backlog.clone()), 200_000).await;
    let body = serde_json::to_vec(&(0..20).map(good).collect::<Vec<_>>()).unwrap();
    let mut accepted = 0;
    let refused = loop {
        let (status, json, retry_after) =
            post(&h.router, Some(&h.ingest_key), body.clone(), None).await;
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => break (json, retry_after),
            other => panic!("unexpected {other}: {json}"),
        }
        assert!(accepted < 100, "the backlog bound never refused");
    };
    assert!(
        refused.0["error"]["message"]
            .as_str()
            .unwrap()
            .contains("aggregator is behind"),
        "{}",
        refused.0
    );
    assert!(refused.1.is_some(), "Retry-After on 503");
    assert!((0..3).all(|p| backlog.pending(p) <= 4_000));
    // What the aggregator commits is released; then ingest accepts again.
    for p in 0..3 {
        backlog.release(p, backlog.pending(p));
    }
    assert_eq!(
        post(&h.router, Some(&h.ingest_key), body, None).await.0,
        StatusCode::ACCEPTED
    );
}

#[test]
fn the_backlog_size_estimate_bounds_the_avro_encoding() {
    use std::collections::BTreeMap;
    use tidemark_schemas::{encode_sample_batch, SampleBatch, WireSample};
    let batch = |samples: Vec<WireSample>| SampleBatch {
        batch_id: uuid::Uuid::new_v4().to_string(),
        produced_at: i64::MAX,
        samples,
        chunks: vec![],
    };
    let empty = encode_sample_batch(&batch(vec![])).unwrap().len() as u64;
    let tag_sets: Vec<BTreeMap<String, String>> = vec![
        BTreeMap::new(),
        [("region".to_owned(), "eu".to_owned())].into(),
        (0..16)
            .map(|i| (format!("key{i:02}").repeat(5), "v".repeat(256)))
            .collect(),
    ];
    for tags in tag_sets {
        let s = WireSample {
            service: "s".repeat(128),
            metric: "m".into(),
            value: f64::MAX,
            count: i64::MAX,
            error: true,
            timestamp: i64::MIN,
            tags,
        };
        let estimate = sample_size(&s.service, &s.metric, &s.tags);
        let actual = encode_sample_batch(&batch(vec![s])).unwrap().len() as u64 - empty;
        assert!(
            actual <= estimate,
            "encoded {actual} bytes > estimate {estimate}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_awaiting_the_broker_are_bounded() {
    let h = harness_with(Duration::from_secs(3), 1000, None, 150).await;
    let body = || serde_json::to_vec(&(0..100).map(good).collect::<Vec<_>>()).unwrap();
    h.mock.broker_down(1).unwrap();
    // The first 100 samples wait for the absent broker, holding their permits...
    let router = h.router.clone();
    let key = h.ingest_key.clone();
    let waiting = tokio::spawn(async move { post(&router, Some(&key), body(), None).await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so 100 more do not fit and are refused at once, without waiting.
    let (status, json, retry_after) = post(&h.router, Some(&h.ingest_key), body(), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("awaiting the broker"),
        "{json}"
    );
    assert!(retry_after.is_some());
    assert!(
        !waiting.is_finished(),
        "refused while the first request still waits: no waiting for the broker"
    );
    assert_eq!(
        waiting.await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the broker never acknowledged"
    );
    // Permits come back with the answer.
    h.mock.broker_up(1).unwrap();
    let mut accepted = false;
    for _ in 0..20 {
        if post(&h.router, Some(&h.ingest_key), body(), None).await.0 == StatusCode::ACCEPTED {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(accepted, "capacity returns once requests complete");
}
