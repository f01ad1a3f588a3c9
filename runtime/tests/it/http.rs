//! The HTTP layers of [`tidemark_runtime::http`] around small routers, answered in
//! process: every error answer has SPEC's body and the security headers, the metrics
//! token, request ids in log lines, and a client presenting too many unknown keys (the
//! keys in the test Postgres).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::middleware;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tidemark_model::secret::Secret;
use tidemark_runtime::auth::{create_key, KeyStore, Role};
use tidemark_runtime::http::{
    ops_router, require_role, with_common_layers, ApiError, Ops, RequireRole, REQUEST_ID,
};
use tidemark_runtime::test_support::assert_spec_error;

/// The status, headers and body of `request` answered by `router`.
async fn answer(
    router: &Router,
    request: axum::http::Request<axum::body::Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, headers, json)
}

fn get_request(uri: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap()
}

#[tokio::test]
async fn metrics_token_is_checked_whatever_the_scheme_case() {
    let ops = Ops {
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        metrics_token: Some(Secret::new("s3cret".to_owned())),
        checks: Vec::new(),
        details: Vec::new(),
    };
    let router = with_common_layers(ops_router(ops), Duration::from_secs(5));
    let request = |auth: &str| {
        axum::http::Request::get("/metrics")
            .header(header::AUTHORIZATION, auth)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    use tower::ServiceExt;
    for auth in ["Bearer s3cret", "bearer s3cret"] {
        let response = router.clone().oneshot(request(auth)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{auth}");
    }
    for auth in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret"] {
        let (status, headers, body) = answer(&router, request(auth)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}");
        assert_spec_error(auth, &headers, &body, "unauthorized");
    }
}

/// Answers made outside handlers (no route, wrong method, timeout, extractor
/// rejections) carry the SPEC body, keep their status and headers, and quote little
/// of the input.
#[tokio::test]
async fn every_error_answer_has_the_spec_body() {
    use axum::extract::{Path, Query};
    use axum::routing::post;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        #[allow(dead_code)]
        n: u32,
    }
    let router = Router::new()
        .route("/q", get(|Query(_): Query<Q>| async { "ok" }))
        .route("/p/{name}", get(|Path(name): Path<String>| async { name }))
        .route(
            "/j",
            post(|Json(v): Json<serde_json::Value>| async move { v.to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        );
    let router = with_common_layers(router, Duration::from_millis(100));
    let long = "z".repeat(20_000);
    let json = |body: &str, content_type: Option<&str>| {
        let mut request = axum::http::Request::post("/j");
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        request
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap()
    };
    let cases = [
        (
            "no route",
            get_request("/nope"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            axum::http::Request::delete("/q")
                .body(axum::body::Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "repeated query parameter",
            get_request("/q?n=1&n=2"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "bad query",
            get_request("/q?n=abc"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "long bad query",
            get_request(&format!("/q?n={long}")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "long unknown query field",
            get_request(&format!("/q?n=1&{long}=1")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "bad UTF-8 in a path parameter",
            get_request("/p/%FF%FE"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "bad JSON",
            json("{", Some("application/json")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "JSON without its content type",
            json("{}", None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "timeout",
            get_request("/slow"),
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
        ),
    ];
    for (what, request, status, code) in cases {
        let (got, headers, body) = answer(&router, request).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_spec_error(what, &headers, &body, code);
        if status == StatusCode::METHOD_NOT_ALLOWED {
            let allow = headers.get(header::ALLOW).expect("Allow kept");
            assert!(allow.to_str().unwrap().contains("GET"), "{allow:?}");
        }
    }
}

/// Log lines written while serving a request carry its request id.
#[tokio::test]
async fn log_lines_carry_the_request_id() {
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = with_common_layers(
        Router::new().route(
            "/boom",
            get(|| async {
                Err::<(), _>(ApiError::Internal(anyhow::anyhow!("the disk caught fire")))
            }),
        ),
        Duration::from_secs(5),
    );
    let (status, headers, _) = answer(&router, get_request("/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let id = headers.get(REQUEST_ID).unwrap().to_str().unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("the disk caught fire"))
        .unwrap_or_else(|| panic!("no error line in {logs:?}"));
    assert!(line.contains(&format!("request{{id={id}")), "{line}");
}

/// Unknown keys past the limit get 429 with Retry-After and the SPEC body; the
/// bearer scheme may be any case.
#[tokio::test]
async fn too_many_unknown_keys_from_one_address_get_429() {
    let pool = tidemark_store::db::fresh_test_database().await.1;
    let token = create_key(&pool, Role::Read, "r").await.unwrap();
    let keys = Arc::new(KeyStore::new(pool).with_failure_limit(2, Duration::from_secs(10)));
    let router = with_common_layers(
        Router::new()
            .route("/guarded", get(|| async { Json(json!({"ok": true})) }))
            .route_layer(middleware::from_fn_with_state(
                RequireRole {
                    keys,
                    role: Role::Read,
                },
                require_role,
            )),
        Duration::from_secs(5),
    );
    let from = |auth: String, addr: &str| {
        let mut request = axum::http::Request::get("/guarded")
            .header(header::AUTHORIZATION, auth)
            .body(axum::body::Body::empty())
            .unwrap();
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        request
    };
    let (status, _, _) = answer(&router, from(format!("bearer {token}"), "192.0.2.1:1")).await;
    assert_eq!(status, StatusCode::OK, "lower-case scheme");
    for i in 0..2 {
        let (status, headers, body) =
            answer(&router, from(format!("Bearer tm_bad{i}"), "192.0.2.1:2")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_spec_error("unknown key", &headers, &body, "unauthorized");
    }
    let (status, headers, body) =
        answer(&router, from("Bearer tm_bad".into(), "192.0.2.1:3")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_spec_error("limited", &headers, &body, "rate_limited");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(headers["ratelimit-limit"], "2");
    // Another address, and a known key from the limited one, are unaffected.
    let (status, _, _) = answer(&router, from("Bearer tm_bad".into(), "192.0.2.2:1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = answer(&router, from(format!("Bearer {token}"), "192.0.2.1:4")).await;
    assert_eq!(status, StatusCode::OK);
}
