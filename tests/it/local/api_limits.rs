//! The read API in process on a fresh database and Redis (no broker): what it refuses
//! before any SQL (instants Postgres cannot hold, names no sample could have), the cap
//! on the rows one `/v1/series` request reads, and `404` for a service that never was
//! (issue 14, point 3). Buckets are written straight into Postgres.

use axum::http::StatusCode;
use serde_json::Value;
use tidemark_api::series::{MAX_BUCKET_ROWS, MAX_RANGE_MS};
use tidemark_model::bucket::{hour_start, HOUR_MS};

use crate::support::api::Api;
use crate::support::redis_url;

/// The helpers of these tests.
impl Api {
    /// Asserts a `400` in SPEC's error shape whose message starts with `param`.
    async fn assert_refused(&self, uri: &str, code: &str, param: &str) -> String {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], code, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(&format!("{param}:")),
            "{uri}: the message names {param}: {message}"
        );
        message
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_reads_at_most_the_row_cap() {
    let h = Api::without_rules().await;
    // Two series of 5,001 hours each: 10,002 rows, two past the cap, in 208 days.
    let hours = (MAX_BUCKET_ROWS / 2 + 1) as i64;
    let first = hour_start(chrono::Utc::now().timestamp_millis()) - (hours + 24) * HOUR_MS;
    let end = first + hours * HOUR_MS;
    h.insert_series(1, "capped", "m", r#"{"host":"a"}"#, first, hours)
        .await;
    h.insert_series(2, "capped", "m", r#"{"host":"b"}"#, first, hours)
        .await;
    let uri = |from: i64, extra: &str| {
        format!("/v1/series?service=capped&metric=m&from={from}&to={end}{extra}")
    };

    for extra in ["", "&step=1d"] {
        let (status, body) = h.get(&uri(first, extra)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "query_too_large", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        for part in ["10000", "shorter range", "tags"] {
            assert!(message.contains(part), "{message}");
        }
    }

    // A tags filter narrows it to one series, which is read whole.
    let (status, body) = h.get(&uri(first, "&tags=host=a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["buckets"].as_array().unwrap().len() as i64, hours);

    // So does a shorter range; exactly the cap is still served.
    let (status, body) = h.get(&uri(first + HOUR_MS, "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows: usize = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["buckets"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows, MAX_BUCKET_ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_parameters_are_refused_before_any_sql() {
    let h = Api::without_rules().await;
    let base = "/v1/series?service=a&metric=m";
    // Issue 14: each of these answered 500 (overflow, timestamp out of range, NUL).
    let m = h
        .assert_refused(
            &format!("{base}&from=-9223372036854775808&to=9223372036854775807"),
            "invalid_query",
            "to",
        )
        .await;
    assert!(m.contains("9999-12-31T23:59:59.999Z"), "{m}");
    h.assert_refused(
        &format!("{base}&from=-9223372036854775808"),
        "invalid_query",
        "from",
    )
    .await;
    h.assert_refused(
        &format!("{base}&to=9223372036854775807"),
        "invalid_query",
        "to",
    )
    .await;
    h.assert_refused(
        "/v1/series?service=%00&metric=m",
        "invalid_query",
        "service",
    )
    .await;
    h.assert_refused("/v1/series?service=a&metric=%00", "invalid_query", "metric")
        .await;
    h.assert_refused(&format!("{base}&tags=k%3D%00"), "invalid_query", "tags")
        .await;
    h.assert_refused(&format!("{base}&tags=%00%3Dv"), "invalid_query", "tags")
        .await;
    let long = "x".repeat(129);
    h.assert_refused(
        &format!("/v1/series?service={long}&metric=m"),
        "invalid_query",
        "service",
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let m = h
        .assert_refused(
            &format!("{base}&from={}&to={now}", now - MAX_RANGE_MS - 1),
            "invalid_query",
            "from",
        )
        .await;
    assert!(m.contains("400 days"), "{m}");
    // A malformed query string gets the same error shape as every other refusal.
    h.assert_refused(&format!("{base}&service=b"), "invalid_query", "query")
        .await;

    // The widest valid query reaches Postgres and answers.
    let (status, body) = h
        .get(&format!(
            "{base}&from=9998-12-01T00:00:00Z&to=9999-12-31T23:59:59.999Z&step=1d"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["to"], "9999-12-31T23:59:59.999Z");
    assert_eq!(body["series"], Value::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_one_service_is_404_unless_it_ever_sent_samples() {
    let h = Api::without_rules().await;
    let days_ago = hour_start(chrono::Utc::now().timestamp_millis()) - 72 * HOUR_MS;
    h.insert_series(1, "old-svc", "m", "{}", days_ago, 1).await;
    h.insert_series(2, "late-svc", "m", "{}", days_ago, 1).await;

    let check = |source: &'static str| {
        let h = &h;
        async move {
            let (status, body) = h.get("/v1/health/services/never-seen").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{source}: {body}");
            assert_eq!(body["error"]["code"], "not_found", "{source}: {body}");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("never-seen"));

            let (status, body) = h.get("/v1/health/services/old-svc").await;
            assert_eq!(status, StatusCode::OK, "{source}: {body}");
            assert_eq!(body["status"], "stale", "{source}: {body}");
            assert_eq!(body["source"], source, "{body}");
            // Known to Postgres, not (yet) to the hot copy's set: Postgres decides.
            let (status, body) = h.get("/v1/health/services/late-svc").await;
            assert_eq!(status, StatusCode::OK, "{source}: {body}");
            assert_eq!(body["status"], "stale", "{source}: {body}");

            h.assert_refused("/v1/health/services/%00", "invalid_path", "service")
                .await;
            h.assert_refused("/v1/health/services/a%00b", "invalid_path", "service")
                .await;
            h.assert_refused(
                &format!("/v1/health/services/{}", "x".repeat(129)),
                "invalid_path",
                "service",
            )
            .await;
            h.assert_refused("/v1/health/services/a%20b", "invalid_path", "service")
                .await;
            h.assert_refused("/v1/health/services/%FF", "invalid_path", "service")
                .await;
        }
    };

    // Redis not marked complete: read from Postgres.
    check("postgres").await;

    // The hot copy marked complete, knowing old-svc only.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (ready, services) = (h.hot_keys.ready(), h.hot_keys.services());
    redis::pipe()
        .set(&ready, 1)
        .ignore()
        .sadd(&services, "old-svc")
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    check("redis").await;
    redis::cmd("DEL")
        .arg(&ready)
        .arg(&services)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}
