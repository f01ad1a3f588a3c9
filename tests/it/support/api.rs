//! The API in process, for the `local` tests of its routes: every route but the ops
//! routes on a fresh database and the test Redis, a `read` and an `admin` key, and a
//! request helper that answers the status and the body as JSON, a check of SPEC's
//! error body, and series with buckets written straight into Postgres. Also a
//! directory of a test's own, for a rules file.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::Value;
use sqlx::PgPool;
use tidemark_api::{health, rules, ApiState};
use tidemark_model::Bucket;
use tidemark_runtime::auth::{create_key, KeyStore, Role};
use tidemark_runtime::config::{Secret, Topics};
use tidemark_runtime::rules::Rules;
use tidemark_store::hot::{HotKeys, Redis};
use tower::ServiceExt;

use super::{fresh_database, redis_url, unique};

/// The latency metric the health views read.
const LATENCY_METRIC: &str = "http.server.duration";

pub struct Api {
    pub router: Router,
    /// A key of the `read` role, and one of `admin`.
    pub read: String,
    pub admin: String,
    pub pool: PgPool,
    pub hot_keys: HotKeys,
    pub topics: Topics,
    /// The rules the API runs with.
    pub rules: Rules,
}

impl Api {
    /// The API over `rules`, on a fresh database.
    pub async fn new(rules: Rules) -> Self {
        let (_, pool) = fresh_database().await;
        let read = create_key(&pool, Role::Read, "reader").await.unwrap();
        let admin = create_key(&pool, Role::Admin, "oncall").await.unwrap();
        let redis = Redis::connect(&Secret::new(redis_url())).await.unwrap();
        let topics = Topics::new(&unique("it"));
        let hot_keys = HotKeys::new(&topics.prefix);
        let keys = Arc::new(KeyStore::new(pool.clone()));
        let rules_api = rules::RulesApi {
            pool: pool.clone(),
            rules: rules.clone(),
            topics: topics.clone(),
        };
        let state = ApiState {
            pool: pool.clone(),
            redis,
            hot_keys: hot_keys.clone(),
            latency_metric: LATENCY_METRIC.into(),
            overview: Arc::new(health::Overview::default()),
            rules: rules.clone(),
        };
        let router =
            tidemark_api::router(state, keys.clone()).merge(rules::router(rules_api, keys));
        Self {
            router,
            read,
            admin,
            pool,
            hot_keys,
            topics,
            rules,
        }
    }

    /// The API with no rules file.
    pub async fn without_rules() -> Self {
        Self::new(Rules::load(None).unwrap()).await
    }

    /// `method uri` with `key` (none when empty) and the JSON `body`: the status and the
    /// body, as JSON or else as a string.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        key: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if !key.is_empty() {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    /// `GET uri` with the `read` key.
    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, &self.read, "").await
    }

    /// A series and one bucket (a single sample of 1.0) in each of `hours` consecutive
    /// hours from `first_hour_ms`, its last sample at the hour's end, or now in the
    /// current hour, as an aggregator's flush leaves them.
    pub async fn insert_series(
        &self,
        id: i64,
        service: &str,
        metric: &str,
        tags: &str,
        first_hour_ms: i64,
        hours: i64,
    ) {
        sqlx::query(
            "INSERT INTO series (id, service, metric, tags) VALUES ($1, $2, $3, $4::jsonb)",
        )
        .bind(id)
        .bind(service)
        .bind(metric)
        .bind(tags)
        .execute(&self.pool)
        .await
        .unwrap();
        let mut one = Bucket::default();
        one.add(1.0, 1, false, first_hour_ms);
        sqlx::query(
            "INSERT INTO buckets (series_id, hour, count, error_count, sum, min, max, last_at, sketch) \
             SELECT $1, h, 1, 0, 1, 1, 1, least(h + interval '1 hour' - interval '1 millisecond', now()), $2 \
             FROM generate_series(to_timestamp($3 / 1000.0), to_timestamp($3 / 1000.0) + ($4 - 1) * interval '1 hour', interval '1 hour') h",
        )
        .bind(id)
        .bind(one.sketch.to_bytes())
        .bind(first_hour_ms)
        .bind(hours)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

/// SPEC's error body with `code`, whose message starts with `start`.
pub fn assert_error(body: &Value, code: &str, start: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(start), "{body}");
}

/// A directory of the test's own under the target directory, removed at the end.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(prefix: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
