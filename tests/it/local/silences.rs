//! The silence routes of the API in process, on a fresh database whose alerts are
//! written through `tidemark_store::alerts` as the alerter writes them: creation and
//! expiry by role, the list by state with expired silences kept, the preview, and an
//! alert's `silenced_by` (in the API and in the feed row) while a silence is active and
//! not after it is expired.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tidemark_schemas::BreachState;

use crate::local::alerts::{breach, harness, Harness, T0};
use crate::support::api::assert_error;

impl Harness {
    /// Creates a silence as admin; returns its id.
    async fn silence(&self, body: &Value) -> i64 {
        let (status, created) = self
            .call("POST", "/v1/silences", &self.admin, &body.to_string())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_i64().unwrap()
    }

    /// The ids `GET uri` lists under `key` (`silences` or `alerts`), in order.
    async fn ids(&self, uri: &str, key: &str) -> Vec<i64> {
        let (status, body) = self.call("GET", uri, &self.read, "").await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body[key]
            .as_array()
            .unwrap_or_else(|| panic!("{uri}: {body}"))
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect()
    }

    /// Alert `id`'s `silenced_by` in `GET /v1/alerts/{id}` and in the list.
    async fn silenced_by(&self, id: i64) -> Vec<i64> {
        self.shown(id, "silenced_by").await
    }

    /// `silenced_by` in the feed row of alert `id`'s latest change.
    async fn fed_silenced_by(&self, id: i64) -> Vec<i64> {
        let payload: sqlx::types::Json<Value> = sqlx::query_scalar(
            "SELECT payload FROM alert_feed WHERE alert_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        serde_json::from_value(payload.0["alert"]["silenced_by"].clone()).unwrap()
    }
}

/// A silence body with `matchers` (`[name, op, value]`), from `starts_at` (now if
/// `None`) for two hours.
pub(crate) fn silence_body(matchers: &[[&str; 3]], starts_at: Option<&str>) -> Value {
    let matchers: Vec<Value> = matchers
        .iter()
        .map(|[name, op, value]| json!({"name": name, "op": op, "value": value}))
        .collect();
    let start = starts_at.map_or_else(chrono::Utc::now, |t| t.parse().unwrap());
    let mut body = json!({
        "matchers": matchers,
        "ends_at": (start + chrono::Duration::hours(2)).to_rfc3339(),
        "created_by": "alice",
        "comment": "deploy of api",
    });
    if let Some(t) = starts_at {
        body["starts_at"] = t.into();
    }
    body
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_and_expire_silences_and_expired_ones_stay_listed() {
    let h = harness().await;
    let body = silence_body(&[["service", "=", "api"]], None).to_string();
    let (status, refused) = h.call("POST", "/v1/silences", &h.read, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, _) = h.call("POST", "/v1/silences", "tm_unknown", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, created) = h.call("POST", "/v1/silences", &h.admin, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "active");
    assert_eq!(
        created["matchers"],
        json!([{"name": "service", "op": "=", "value": "api"}])
    );
    assert_eq!(
        (&created["created_by"], &created["comment"]),
        (&json!("alice"), &json!("deploy of api"))
    );
    let active = created["id"].as_i64().unwrap();
    let later = in_an_hour();
    let pending = h
        .silence(&silence_body(&[["service", "=~", "db|api"]], Some(&later)))
        .await;

    let bad = silence_body(&[["service", "=", "api"], ["region", "=~", "(eu"]], None);
    let (status, refused) = h
        .call("POST", "/v1/silences", &h.admin, &bad.to_string())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_error(
        &refused,
        "invalid_body",
        "matchers[1].value: invalid regex: ",
    );
    let everything = silence_body(&[["service", "=~", ".*"]], None);
    let (status, refused) = h
        .call("POST", "/v1/silences", &h.admin, &everything.to_string())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_error(&refused, "invalid_body", "matchers: at least one matcher");

    let list = |state: &str| format!("/v1/silences?state={state}");
    assert_eq!(h.ids("/v1/silences", "silences").await, [pending, active]);
    assert_eq!(h.ids(&list("active"), "silences").await, [active]);
    assert_eq!(h.ids(&list("pending"), "silences").await, [pending]);
    assert!(h.ids(&list("expired"), "silences").await.is_empty());
    let (status, refused) = h.call("GET", &list("muted"), &h.read, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_error(&refused, "invalid_query", "state: ");

    let expire = |id: i64| format!("/v1/silences/{id}");
    let (status, _) = h.call("DELETE", &expire(active), &h.read, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for id in [active, pending] {
        let (status, expired) = h.call("DELETE", &expire(id), &h.admin, "").await;
        assert_eq!(status, StatusCode::OK, "{expired}");
        assert_eq!(expired["state"], "expired", "{expired}");
        assert_eq!(expired["comment"], "deploy of api");
    }
    // Again: unchanged.
    let (status, again) = h.call("DELETE", &expire(active), &h.admin, "").await;
    assert_eq!(
        (status, &again["state"]),
        (StatusCode::OK, &json!("expired"))
    );
    // History: both stay, as expired.
    assert_eq!(h.ids(&list("expired"), "silences").await, [pending, active]);
    assert!(h.ids(&list("active"), "silences").await.is_empty());
    let (status, shown) = h.call("GET", &expire(pending), &h.read, "").await;
    assert_eq!(
        (status, &shown["state"]),
        (StatusCode::OK, &json!("expired"))
    );
    assert_eq!(shown["starts_at"], shown["ends_at"], "{shown}");

    for method in ["DELETE", "GET"] {
        let key = if method == "GET" { &h.read } else { &h.admin };
        let (status, body) = h.call(method, "/v1/silences/424242", key, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {body}");
        assert_error(&body, "not_found", "no silence has id 424242");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_silenced_by_active_silences_matching_its_labels() {
    use BreachState::*;
    let mut h = harness().await;
    let api = h
        .apply(breach("latency", "api", "f-api", 1, Firing, "breached", T0))
        .await;
    let db = h
        .apply(breach("latency", "db", "f-db", 1, Pending, "breached", T0))
        .await;
    let gone = h
        .apply(breach("latency", "api", "f-old", 1, Firing, "breached", T0))
        .await;
    h.apply(breach("latency", "api", "f-old", 2, Ok, "recovered", T0))
        .await;

    // Preview: open alerts only, by the labels of `labels::of` (the tag `region`, the
    // rule label `team`); nothing stored.
    let preview = |matchers: &[[&str; 3]]| {
        json!({ "matchers": silence_body(matchers, None)["matchers"] }).to_string()
    };
    let previewed = |body: String| {
        let h = &h;
        async move {
            let (status, found) = h.call("POST", "/v1/silences/preview", &h.read, &body).await;
            assert_eq!(status, StatusCode::OK, "{found}");
            found["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(previewed(preview(&[["service", "=", "api"]])).await, [api]);
    assert_eq!(
        previewed(preview(&[["team", "=", "web"], ["region", "=~", "e."]])).await,
        [db, api]
    );
    assert_eq!(
        previewed(preview(&[
            ["service", "!~", "ap.*"],
            ["rule", "=", "latency"]
        ]))
        .await,
        [db]
    );
    let (status, refused) = h
        .call(
            "POST",
            "/v1/silences/preview",
            &h.read,
            &preview(&[["service", "=~", "a)|(b"]]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_error(&refused, "invalid_body", "matchers[0].value: invalid regex");
    assert!(h.ids("/v1/silences", "silences").await.is_empty());

    // A pending silence silences nothing yet; an active one silences what it matches.
    let later = in_an_hour();
    h.silence(&silence_body(&[["service", "=", "db"]], Some(&later)))
        .await;
    let silence = h
        .silence(&silence_body(
            &[["service", "=~", "api"], ["severity", "=", "warning"]],
            None,
        ))
        .await;
    assert_eq!(h.silenced_by(api).await, [silence]);
    assert!(h.silenced_by(db).await.is_empty());
    assert!(
        h.silenced_by(gone).await.is_empty(),
        "resolved: not silenced"
    );
    let (status, shown) = h
        .call("GET", &format!("/v1/silences/{silence}"), &h.read, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let matched: Vec<i64> = shown["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(matched, [api]);

    // The feed row of a change made while silenced says so.
    h.apply(breach(
        "latency",
        "api",
        "f-api",
        2,
        Firing,
        "escalated",
        T0,
    ))
    .await;
    assert_eq!(h.fed_silenced_by(api).await, [silence]);
    h.apply(breach("latency", "db", "f-db", 2, Firing, "breached", T0))
        .await;
    assert!(h.fed_silenced_by(db).await.is_empty());

    let (status, _) = h
        .call("DELETE", &format!("/v1/silences/{silence}"), &h.admin, "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.silenced_by(api).await.is_empty());
    h.apply(breach("latency", "api", "f-api", 3, Ok, "recovered", T0))
        .await;
    assert!(h.fed_silenced_by(api).await.is_empty());
}
