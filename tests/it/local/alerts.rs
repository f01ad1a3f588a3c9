//! The alert routes of the API in process, on a fresh database whose alerts are written
//! through `tidemark_store::alerts` as the alerter writes them: the list and its
//! filters, one alert with its transitions, per-rule stats, acknowledgement by role,
//! SPEC's error body for an unknown id or a bad parameter, and an alert's `inhibited_by`
//! (the built-in rule, and a rules file's).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use tidemark_runtime::rules::Rules;
use tidemark_schemas::{Breach, BreachState, Series, Severity};
use tidemark_store::alerts::{apply_breach, Applied, Position};
use tidemark_store::buckets::Tx;

use crate::support::api::{assert_error, Api, TestDir};

/// A breach of rule `rule` over `service`'s latency, fingerprint `fingerprint`, episode
/// started at `active_since`, evaluated `seq` × 10 s later.
pub(crate) fn breach(
    rule: &str,
    service: &str,
    fingerprint: &str,
    seq: i64,
    state: BreachState,
    reason: &str,
    active_since: i64,
) -> Breach {
    Breach {
        rule: rule.into(),
        fingerprint: fingerprint.into(),
        series: Series {
            service: service.into(),
            metric: "http.server.duration".into(),
            tags: BTreeMap::from([("region".into(), "eu".into())]),
        },
        state,
        reason: reason.into(),
        severity: Severity::Warning,
        value: Some(612.5),
        threshold: 500.0,
        op: ">".into(),
        stat: "p95".into(),
        window: 60_000,
        at: active_since + seq * 10_000,
        active_since,
        seq,
        schedule: None,
        labels: BTreeMap::from([("team".into(), "web".into())]),
        annotations: BTreeMap::from([("summary".into(), "p95 over 500".into())]),
    }
}

pub(crate) const T0: i64 = 1_790_000_000_000;

/// The API in process, and the next offset at which a breach is applied.
pub(crate) struct Harness {
    api: Api,
    offset: i64,
}

impl std::ops::Deref for Harness {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub(crate) async fn harness() -> Harness {
    with_rules(Rules::load(None).unwrap()).await
}

async fn with_rules(rules: Rules) -> Harness {
    Harness {
        api: Api::new(rules).await,
        offset: 0,
    }
}

impl Harness {
    /// Applies `b` as the alerter does, at the next offset, inhibiting by the rules in
    /// force; returns the alert it changed.
    pub(crate) async fn apply(&mut self, b: Breach) -> i64 {
        let mut tx = Tx::begin(&self.pool).await.unwrap();
        let pos = Position {
            topic: "it.breaches",
            partition: 0,
            offset: self.offset,
            cluster_id: "c",
        };
        let rules = self.rules.current();
        let applied = apply_breach(&mut tx, &b, &pos, &rules.inhibit)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        self.offset += 1;
        match applied {
            Applied::Changed { alert_id } => alert_id,
            other => panic!("{b:?}: {other:?}"),
        }
    }

    /// The fingerprints `GET uri` lists, in order.
    async fn listed(&self, uri: &str) -> Vec<String> {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["fingerprint"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Alert `id`'s ids under `field` (`silenced_by`, `inhibited_by`) in
    /// `GET /v1/alerts/{id}`, which the list shows alike.
    pub(crate) async fn shown(&self, id: i64, field: &str) -> Vec<i64> {
        let (status, one) = self.get(&format!("/v1/alerts/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        let (_, list) = self.get("/v1/alerts").await;
        let listed = list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap();
        assert_eq!(listed[field], one[field], "{list}");
        serde_json::from_value(one[field].clone()).unwrap()
    }
}

/// Three alerts: `a1` resolved (api, rule latency), `a2` firing (db, latency), `a3`
/// pending (api, rule errors, started a day later). Returns their ids.
async fn three_alerts(h: &mut Harness) -> [i64; 3] {
    use BreachState::*;
    let a1 = h
        .apply(breach("latency", "api", "a1", 1, Pending, "breached", T0))
        .await;
    h.apply(breach("latency", "api", "a1", 2, Firing, "breached", T0))
        .await;
    h.apply(breach("latency", "api", "a1", 3, Ok, "recovered", T0))
        .await;
    let a2 = h
        .apply(breach("latency", "db", "a2", 1, Firing, "breached", T0))
        .await;
    let a3 = h
        .apply(breach(
            "errors",
            "api",
            "a3",
            1,
            Pending,
            "breached",
            T0 + 86_400_000,
        ))
        .await;
    [a1, a2, a3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_by_state_service_rule_and_since() {
    let mut h = harness().await;
    three_alerts(&mut h).await;
    assert_eq!(h.listed("/v1/alerts").await, ["a3", "a2", "a1"]);
    assert_eq!(h.listed("/v1/alerts?state=firing").await, ["a2"]);
    assert_eq!(h.listed("/v1/alerts?state=resolved").await, ["a1"]);
    assert_eq!(h.listed("/v1/alerts?service=api").await, ["a3", "a1"]);
    assert_eq!(
        h.listed("/v1/alerts?rule=latency&service=api").await,
        ["a1"]
    );
    assert_eq!(h.listed("/v1/alerts?limit=2").await, ["a3", "a2"]);
    // a1 resolved 30 s after T0.
    let since = |ms: i64| format!("/v1/alerts?since={ms}");
    assert_eq!(h.listed(&since(T0 + 30_000)).await, ["a3", "a2", "a1"]);
    assert_eq!(h.listed(&since(T0 + 30_001)).await, ["a3", "a2"]);
    assert_eq!(
        h.listed("/v1/alerts?since=2026-09-21T14:13:50.001Z").await,
        ["a3", "a2"]
    );

    for (uri, field) in [
        ("/v1/alerts?state=ok", "state: "),
        ("/v1/alerts?service=a%20b", "service: "),
        ("/v1/alerts?rule=%00", "rule: "),
        ("/v1/alerts?since=yesterday", "since: "),
        ("/v1/alerts?limit=0", "limit: "),
    ] {
        let (status, body) = h.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_error(&body, "invalid_query", field);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_shows_its_transitions_and_stats_count_per_rule() {
    let mut h = harness().await;
    let [a1, ..] = three_alerts(&mut h).await;
    let (status, body) = h.get(&format!("/v1/alerts/{a1}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], a1);
    assert_eq!(body["state"], "resolved");
    assert_eq!(body["resolve_reason"], "recovered");
    assert_eq!(body["tags"]["region"], "eu");
    assert_eq!(body["started_at"], "2026-09-21T14:13:20.000Z");
    assert_eq!(body["fired_at"], "2026-09-21T14:13:40.000Z");
    let transitions: Vec<(i64, &str, &str)> = body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["seq"].as_i64().unwrap(),
                t["state"].as_str().unwrap(),
                t["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            (1, "pending", "breached"),
            (2, "firing", "breached"),
            (3, "resolved", "recovered")
        ]
    );

    let (status, body) = h.get("/v1/alerts/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "not_found", "no alert has id 999999");
    let (status, body) = h.get("/v1/alerts/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_path", "id: ");

    let (status, body) = h.get("/v1/alerts/stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rules = body["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{body}");
    assert_eq!(rules[1]["rule"], "latency");
    assert_eq!(
        (rules[1]["firing"].as_i64(), rules[1]["resolved"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(rules[1]["mean_time_to_resolve_s"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_acknowledge_and_readers_may_not() {
    let mut h = harness().await;
    let [a1, a2, a3] = three_alerts(&mut h).await;
    let ack = |id: i64| format!("/v1/alerts/{id}/ack");

    let (status, body) = h.call("POST", &ack(a2), &h.read, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "forbidden", "");
    let (status, _) = h.call("POST", &ack(a2), "tm_unknown", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = h
        .call("POST", &ack(a2), &h.admin, r#"{"by": "alice"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acknowledged_by"], "alice");
    assert!(body["acknowledged_at"].is_string(), "{body}");
    assert_eq!(body["state"], "firing");
    // Again: unchanged.
    let (status, again) = h.call("POST", &ack(a2), &h.admin, r#"{"by": "bob"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["acknowledged_by"], "alice");
    assert_eq!(again["seq"], body["seq"]);
    let (_, shown) = h.get(&format!("/v1/alerts/{a2}")).await;
    let last = shown["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["reason"].as_str(), last["actor"].as_str()),
        (Some("acknowledged"), Some("alice"))
    );

    // No body: recorded as the key's role.
    let (status, body) = h.call("POST", &ack(a3), &h.admin, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acknowledged_by"], "admin");

    let (status, body) = h.call("POST", &ack(a1), &h.admin, "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "conflict", &format!("alert {a1} is resolved"));
    let (status, body) = h.call("POST", &ack(424242), &h.admin, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "not_found", "no alert has id 424242");
    let (status, body) = h.call("POST", &ack(a2), &h.admin, r#"{"who": "x"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_body", "body: unknown field `who`");
    let (status, body) = h
        .call("POST", &ack(a2), &h.admin, r#"{"by": "a\u0000"}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_body", "by: ");
}

/// `b`, of severity critical.
pub(crate) fn critical(mut b: Breach) -> Breach {
    b.severity = Severity::Critical;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_critical_alert_inhibits_the_warnings_of_its_rule_and_service() {
    use BreachState::*;
    let mut h = harness().await;
    let crit =
        |seq, state, reason| critical(breach("latency", "api", "crit", seq, state, reason, T0));
    let source = h.apply(crit(1, Firing, "breached")).await;
    let mut targets = Vec::new();
    for (fingerprint, service, state) in [
        ("warn", "api", Firing),
        ("slow", "api", Pending),
        ("db", "db", Firing),
    ] {
        let b = breach("latency", service, fingerprint, 1, state, "breached", T0);
        targets.push(h.apply(b).await);
    }
    let [warning, pending, elsewhere] = targets[..] else {
        unreachable!("three targets")
    };
    assert_eq!(h.shown(warning, "inhibited_by").await, [source]);
    assert_eq!(h.shown(pending, "inhibited_by").await, [source]);
    assert!(h.shown(elsewhere, "inhibited_by").await.is_empty());
    assert!(h.shown(source, "inhibited_by").await.is_empty());
    let (status, acked) = h
        .call("POST", &format!("/v1/alerts/{warning}/ack"), &h.admin, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["inhibited_by"], serde_json::json!([source]));

    h.apply(crit(2, Ok, "recovered")).await;
    assert!(h.shown(warning, "inhibited_by").await.is_empty());
    assert!(h.shown(pending, "inhibited_by").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_file_inhibits_by_its_rules_with_equal_labels() {
    use BreachState::*;
    let dir = TestDir::new("inhibit-");
    let file = dir.0.join("rules.yaml");
    std::fs::write(
        &file,
        "rules: []\nreceivers: []\nroutes: []\ninhibit:\n  \
         - source_match: {rule: errors, severity: critical}\n    \
           target_match: {rule: latency}\n    equal: [region]\n",
    )
    .unwrap();
    let mut h = with_rules(Rules::load(Some(file.to_str().unwrap())).unwrap()).await;
    let in_region = |fingerprint: &str, region: &str| {
        let mut b = breach("latency", "web", fingerprint, 1, Firing, "breached", T0);
        b.series.tags.insert("region".into(), region.into());
        b
    };
    let errors = breach("errors", "api", "errors", 1, Firing, "breached", T0);
    let source = h.apply(critical(errors)).await;
    let eu = h.apply(in_region("eu", "eu")).await;
    let us = h.apply(in_region("us", "us")).await;
    assert_eq!(h.shown(eu, "inhibited_by").await, [source]);
    assert!(
        h.shown(us, "inhibited_by").await.is_empty(),
        "another region"
    );
}
