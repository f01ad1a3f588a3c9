//! The health views of the API in process, on a fresh database whose alerts are written
//! as the alerter writes them (issue 15, point 3): a service is `degraded` while a
//! warning fires and `down` while a critical alert fires, inhibited or silenced alike,
//! and healthy again once they resolve; `GET /v1/health` follows.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tidemark_model::bucket::hour_start;
use tidemark_schemas::BreachState::{Firing, Ok};

use super::alerts::{breach, critical, harness, Harness, T0};
use super::silences::silence_body;

/// `GET /v1/health/services/{service}`: its status and its `alerts`.
async fn health(h: &Harness, service: &str) -> (String, Value) {
    let (status, body) = h.get(&format!("/v1/health/services/{service}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["status"].as_str().unwrap().to_owned(),
        body["alerts"].clone(),
    )
}

fn counts(firing: i64, critical: i64, warning: i64) -> Value {
    json!({"firing": firing, "critical": critical, "warning": warning})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_down_while_a_critical_alert_fires_and_degraded_for_a_warning() {
    let mut h = harness().await;
    let hour = hour_start(chrono::Utc::now().timestamp_millis());
    h.insert_series(1, "api", "http.server.duration", "{}", hour, 1)
        .await;
    h.insert_series(2, "db", "http.server.duration", "{}", hour, 1)
        .await;
    let healthy = ("healthy".to_owned(), counts(0, 0, 0));
    assert_eq!(health(&h, "api").await, healthy);

    let warning = |seq, state, reason| breach("latency", "api", "warn", seq, state, reason, T0);
    let crit =
        |seq, state, reason| critical(breach("latency", "api", "crit", seq, state, reason, T0));
    h.apply(warning(1, Firing, "breached")).await;
    assert_eq!(
        health(&h, "api").await,
        ("degraded".to_owned(), counts(1, 0, 1))
    );

    // The critical alert inhibits the warning, which still fires and still counts.
    let source = h.apply(crit(1, Firing, "breached")).await;
    let down = ("down".to_owned(), counts(2, 1, 1));
    assert_eq!(health(&h, "api").await, down);
    assert_eq!(health(&h, "db").await, healthy, "another service");
    let (status, overall) = h.get("/v1/health").await;
    assert_eq!(status, StatusCode::OK, "{overall}");
    assert_eq!(overall["status"], "down", "{overall}");
    let worst = &overall["worst_services"][0];
    assert_eq!(
        (&worst["service"], &worst["status"], &worst["alerts"]),
        (&json!("api"), &json!("down"), &counts(2, 1, 1)),
        "{overall}"
    );

    // A silence mutes notifications; the alert still fires and the service is down.
    let silence = silence_body(&[["service", "=", "api"]], None).to_string();
    let (status, created) = h.call("POST", "/v1/silences", &h.admin, &silence).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        h.shown(source, "silenced_by").await,
        [created["id"].as_i64().unwrap()]
    );
    assert_eq!(health(&h, "api").await, down);

    h.apply(crit(2, Ok, "recovered")).await;
    assert_eq!(
        health(&h, "api").await,
        ("degraded".to_owned(), counts(1, 0, 1))
    );
    h.apply(warning(2, Ok, "recovered")).await;
    assert_eq!(health(&h, "api").await, healthy);
}
