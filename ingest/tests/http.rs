//! The ingest and API routers in process, as `Ingest::build` and `Api::build` assemble
//! them (with `with_common_layers` and the ops routes), on librdkafka's mock cluster and
//! the test Postgres and Redis: every error answer has SPEC's body and the security
//! headers, a request larger than the in-flight bound gets 413, and a 400 quotes only a
//! prefix of a huge input.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{json, Value};
use tidemark_ingest::{Cardinality, IngestState};
use tidemark_runtime::auth::{create_key, KeyStore, Role};
use tidemark_runtime::http::{self, Ops};
use tower::ServiceExt;

const TOPIC: &str = "t.samples";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

async fn redis() -> tidemark_store::hot::Redis {
    tidemark_store::hot::test_redis().await.0
}

fn ops() -> Ops {
    Ops {
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        metrics_token: None,
        checks: Vec::new(),
        details: Vec::new(),
    }
}

struct Harness {
    _mock: MockCluster<'static, DefaultProducerContext>,
    ingest: Router,
    api: Router,
    /// An admin key: every route takes it.
    key: String,
}

async fn harness(inflight: usize) -> Harness {
    let ack_timeout = Duration::from_secs(5);
    let (mock, batcher) = tidemark_ingest::test_support::mock_batcher(TOPIC, 1, ack_timeout, None);
    let pool = tidemark_store::db::fresh_test_database().await.1;
    let key = create_key(&pool, Role::Admin, "admin").await.unwrap();
    let keys = Arc::new(KeyStore::new(pool.clone()));
    let redis = redis().await;
    let state = IngestState {
        batcher: Arc::new(batcher),
        cardinality: Arc::new(Cardinality::new(1000, &unique("it"), redis.clone())),
        inflight: Arc::new(tidemark_ingest::Inflight::new(inflight)),
        max_body_bytes: 64 * 1024,
        max_decompressed_bytes: 32 << 20,
        max_sample_age: Duration::from_secs(7 * 86_400),
        max_sample_future: Duration::from_secs(300),
        retry_after_secs: 1,
    };
    let ingest = http::with_common_layers(
        tidemark_ingest::router(state, keys.clone()).merge(http::ops_router(ops())),
        ack_timeout + Duration::from_secs(5),
    );
    let prefix = unique("it");
    let api_state = tidemark_api::ApiState {
        pool,
        redis,
        hot_keys: tidemark_store::hot::HotKeys::new(&prefix),
        latency_metric: "http.server.duration".into(),
        overview: Arc::new(tidemark_api::health::Overview::default()),
        rules: tidemark_runtime::rules::Rules::load(None).unwrap(),
    };
    let api = http::with_common_layers(
        tidemark_api::router(api_state, keys).merge(http::ops_router(ops())),
        Duration::from_secs(30),
    );
    Harness {
        _mock: mock,
        ingest,
        api,
        key,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn request(method: Method, uri: &str, key: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// SPEC's error body with `code` and the status.
fn assert_spec_error(what: &str, answer: &Answer, status: StatusCode, code: &str) {
    let body = answer.json();
    assert_eq!(answer.status, status, "{what}: {body}");
    tidemark_runtime::test_support::assert_spec_error(what, &answer.headers, &body, code);
}

fn sample(i: usize) -> Value {
    json!({"service": "checkout", "metric": "http.server.duration", "value": i as f64})
}

/// Each route with a method it does not take, unknown paths beside the routes, and bad
/// queries and path parameters: SPEC's body, the status, the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_errors_with_the_spec_body() {
    let h = harness(1000).await;
    let ops = [
        (Method::GET, "/metrics"),
        (Method::GET, "/livez"),
        (Method::GET, "/readyz"),
    ];
    let ingest_routes = [(Method::POST, "/v1/samples")];
    let api_routes = [
        (Method::GET, "/v1/health"),
        (Method::GET, "/v1/health/services"),
        (Method::GET, "/v1/health/services/checkout"),
        (Method::GET, "/v1/series?service=s&metric=m"),
    ];
    let routers = [
        ("ingest", &h.ingest, ingest_routes.iter().chain(&ops)),
        ("api", &h.api, api_routes.iter().chain(&ops)),
    ];
    for (name, router, routes) in routers {
        for (method, uri) in routes {
            let wrong = if *method == Method::GET {
                Method::DELETE
            } else {
                Method::PUT
            };
            let what = format!("{name}: {wrong} {uri}");
            let answer = send(router, request(wrong, uri, &h.key, Vec::new())).await;
            assert_spec_error(
                &what,
                &answer,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            );
            assert!(answer.headers.contains_key(header::ALLOW), "{what}: Allow");
        }
        for uri in ["/v1", "/v1/nope", "/v1/samples/x", "/v2/health", "/livez/x"] {
            for method in [Method::GET, Method::POST] {
                let what = format!("{name}: {method} {uri}");
                let answer = send(router, request(method, uri, &h.key, Vec::new())).await;
                assert_spec_error(&what, &answer, StatusCode::NOT_FOUND, "not_found");
            }
        }
    }
    let long = "q".repeat(8_000);
    let bad_queries = [
        "/v1/series?service=a&service=b&metric=m".to_owned(),
        "/v1/series?service=s&metric=m&from=1&from=2".to_owned(),
        format!("/v1/series?service=s&metric=m&from={long}"),
        "/v1/series?service=%FF&metric=m".to_owned(),
        "/v1/health/services/%FF%FE".to_owned(),
    ];
    for uri in bad_queries {
        let answer = send(&h.api, request(Method::GET, &uri, &h.key, Vec::new())).await;
        let code = answer.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{uri:.60}: {} {:?}", answer.status, answer.json()))
            .to_owned();
        assert_spec_error(
            &uri[..40.min(uri.len())],
            &answer,
            StatusCode::BAD_REQUEST,
            &code,
        );
        assert!(!answer
            .body
            .windows(100)
            .any(|w| w == &long.as_bytes()[..100]));
    }
    // Ingest's own refusals keep their body too.
    let answer = send(
        &h.ingest,
        request(Method::POST, "/v1/samples", &h.key, b"[{}] xyz".to_vec()),
    )
    .await;
    assert_spec_error("trailing", &answer, StatusCode::BAD_REQUEST, "invalid_json");
    let answer = send(
        &h.ingest,
        request(Method::POST, "/v1/samples", "tm_unknown", b"[]".to_vec()),
    )
    .await;
    assert_spec_error(
        "unknown key",
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

/// A request with more samples than ingest may ever hold awaiting the broker gets 413
/// (retrying cannot help), one within the bound is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_samples_than_the_inflight_bound_get_413() {
    let h = harness(2).await;
    let body = |n: usize| serde_json::to_vec(&(0..n).map(sample).collect::<Vec<_>>()).unwrap();
    let answer = send(
        &h.ingest,
        request(Method::POST, "/v1/samples", &h.key, body(3)),
    )
    .await;
    assert_spec_error(
        "3 samples",
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_samples",
    );
    let message = answer.json()["error"]["message"].to_string();
    assert!(
        message.contains("at most 2 samples") && message.contains("split"),
        "{message}"
    );
    let answer = send(
        &h.ingest,
        request(Method::POST, "/v1/samples", &h.key, body(2)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.json());
}

/// A gzip body of some 16 KB that inflates to a 16 MiB unknown field name gets a 400 of
/// a few hundred bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_field_name_gets_a_short_400() {
    let h = harness(1000).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(br#"[{"service":"s","metric":"m","value":1,""#)
        .unwrap();
    for _ in 0..16 {
        gz.write_all(&vec![b'a'; 1 << 20]).unwrap();
    }
    gz.write_all(br#"":1}]"#).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 64 * 1024, "{}", gz.len());
    let mut req = request(Method::POST, "/v1/samples", &h.key, gz);
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let answer = send(&h.ingest, req).await;
    assert_spec_error(
        "huge field",
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert!(answer.body.len() < 512, "{} bytes", answer.body.len());
    let message = answer.json()["error"]["message"].to_string();
    assert!(message.contains("unknown field `aaaa"), "{message}");
}
