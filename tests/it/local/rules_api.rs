//! The rule routes of the API in process, on a fresh database and a rules file of the
//! test's own: `GET /v1/rules` with what is in force and the stored series states,
//! reloading by role, a rewritten file taking effect, a broken one refused with the old
//! rules kept, no rules file, and the announcement reaching another process's rules.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};
use tidemark_runtime::rules::{announce_reload, Rules};
use tidemark_store::rule_states::{self, Stored};
use tokio_util::sync::CancellationToken;

use crate::support::api::{Api, TestDir};

/// A rules file: `latency` at `threshold`, stricter in the UTC morning, and `errors`.
fn rules_file(threshold: &str) -> String {
    format!(
        r#"rules:
  - name: latency
    service: checkout
    metric: http.server.duration_ms
    stat: p95
    window: 5m
    op: ">"
    threshold: {threshold}
    for: 1m
    severity: warning
    schedules:
      - name: morning
        hours: "00:00-12:00"
        threshold: 300
  - name: errors
    service: "*"
    metric: http.server.duration_ms
    stat: error_rate
    window: 1h
    op: ">="
    threshold: 0.05
    severity: info
receivers: []
routes: []
"#
    )
}

/// The API over `rules.yaml` in a directory of the test's own.
struct Harness {
    api: Api,
    file: PathBuf,
    _dir: TestDir,
}

/// The API over `rules.yaml` written with `text`, or over no rules file.
async fn harness(text: Option<&str>) -> Harness {
    let dir = TestDir::new("rules-api-");
    let file = dir.0.join("rules.yaml");
    if let Some(text) = text {
        std::fs::write(&file, text).unwrap();
    }
    let rules = Rules::load(text.map(|_| file.to_str().unwrap())).unwrap();
    Harness {
        api: Api::new(rules).await,
        file,
        _dir: dir,
    }
}

impl Harness {
    /// `method uri` with `key` (none when `None`).
    async fn call(&self, method: &str, uri: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.api
            .call(method, uri, key.unwrap_or_default(), "")
            .await
    }

    async fn rules(&self) -> Value {
        let (status, body) = self.api.get("/v1/rules").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn reload(&self) -> (StatusCode, Value) {
        self.call("POST", "/v1/admin/rules/reload", Some(&self.api.admin))
            .await
    }

    /// The threshold of rule `latency` as `GET /v1/rules` shows it.
    async fn latency_threshold(&self) -> Value {
        self.rules().await["rules"][0]["threshold"].clone()
    }

    /// Stores a state of `rule` over one series, in `phase`, as the aggregator does.
    async fn store_state(&self, topic: &str, rule: &str, fingerprint: &str, phase: &str) {
        let stored = Stored {
            rule: rule.into(),
            fingerprint: fingerprint.into(),
            series: json!({"service": "checkout", "metric": "http.server.duration_ms", "tags": {}}),
            state: json!({"phase": phase, "since": "2026-06-06T10:00:00Z", "missing": 0, "seq": 1}),
            unsent: None,
        };
        rule_states::save(&self.api.pool, topic, 0, &[stored])
            .await
            .unwrap();
    }
}

fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not an instant: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn each_rule_shows_what_is_in_force_its_next_change_and_its_series_states() {
    let h = harness(Some(&rules_file("800"))).await;
    let samples = h.api.topics.samples.clone();
    h.store_state(&samples, "latency", "a", "pending").await;
    h.store_state(&samples, "latency", "b", "firing").await;
    h.store_state(&samples, "latency", "c", "inactive").await;
    // Another deployment's series, and a rule no longer in the file, are not counted.
    h.store_state("other.samples", "latency", "d", "firing")
        .await;
    h.store_state(&samples, "gone", "e", "firing").await;
    let evaluated = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let evaluation = |owner: &str, error: Option<&str>| rule_states::Evaluation {
        rule: "latency".into(),
        owner: owner.into(),
        at: evaluated,
        series: 3,
        frozen: 1,
        error: error.map(str::to_owned),
    };
    rule_states::record_evaluations(&h.api.pool, &samples, "agg-a", &[evaluation("agg-a", None)])
        .await
        .unwrap();
    let refused = evaluation("agg-b", Some("partition 2: breach not acknowledged"));
    rule_states::record_evaluations(&h.api.pool, &samples, "agg-b", &[refused])
        .await
        .unwrap();

    let before = Utc::now();
    let body = h.rules().await;
    let after = Utc::now();
    let loaded_at = instant(&body["loaded_at"]);
    assert!(loaded_at <= before, "{body}");
    assert_eq!(body["last_reload_error"], Value::Null);
    let rules = body["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{body}");

    let latency = &rules[0];
    assert_eq!(latency["name"], "latency");
    assert_eq!(latency["window"], "5m");
    assert_eq!(latency["for"], "1m");
    assert_eq!(latency["keep_firing_for"], "0s");
    assert_eq!(
        latency["schedules"],
        json!([{
            "name": "morning",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "hours": "00:00-12:00",
            "timezone": "UTC",
            "dates": null,
            "effect": {"threshold": 300.0, "resolve_threshold": null, "severity": null},
        }])
    );
    // In force at the instant of the request: the morning's threshold before 12:00 UTC,
    // the rule's own after, and the next change at the next of 00:00 and 12:00 UTC.
    let in_force = &latency["in_force"];
    let morning = in_force["schedule"] == "morning";
    assert!(morning || in_force["schedule"].is_null(), "{in_force}");
    assert_eq!(in_force["threshold"], if morning { 300.0 } else { 800.0 });
    assert_eq!(in_force["muted"], false);
    let next = instant(&latency["next_change"]);
    assert!(
        next > before && next <= after + chrono::TimeDelta::hours(12),
        "{next}"
    );
    assert_eq!(
        (next.hour(), next.minute(), next.second()),
        (if morning { 12 } else { 0 }, 0, 0),
        "{next}"
    );
    assert_eq!(
        (&latency["series"], &latency["pending"], &latency["firing"]),
        (&json!(3), &json!(1), &json!(1)),
        "{latency}"
    );
    let transition = instant(&latency["last_transition_at"]);
    assert!(transition <= after, "{transition}");
    assert_eq!(
        latency["evaluations"],
        json!([
            {"aggregator": "agg-a", "at": "2026-09-21T14:13:20.000Z", "series": 3, "frozen_partitions": 1, "error": null},
            {"aggregator": "agg-b", "at": "2026-09-21T14:13:20.000Z", "series": 3, "frozen_partitions": 1,
             "error": "partition 2: breach not acknowledged"},
        ])
    );

    let errors = &rules[1];
    assert_eq!(errors["name"], "errors");
    assert_eq!(errors["in_force"]["schedule"], Value::Null);
    assert_eq!(errors["next_change"], Value::Null);
    assert_eq!(errors["series"], 0);
    assert_eq!(errors["last_transition_at"], Value::Null);
    assert_eq!(errors["evaluations"], json!([]), "never evaluated");
}

#[tokio::test]
async fn reading_rules_needs_read_and_reloading_needs_admin() {
    let h = harness(Some(&rules_file("800"))).await;
    let (status, body) = h.call("GET", "/v1/rules", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = h.call("GET", "/v1/rules", Some(&h.api.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call("POST", "/v1/admin/rules/reload", Some(&h.api.read))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = h.call("POST", "/v1/admin/rules/reload", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_reload_applies_the_rewritten_file_here_and_in_every_process_that_listens() {
    let h = harness(Some(&rules_file("800"))).await;
    // Another process of the deployment, such as an aggregator, with its own copy.
    let other = Rules::load(Some(h.file.to_str().unwrap())).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    other.spawn_reloader(h.api.pool.clone(), h.api.topics.prefix.clone(), shutdown);
    let mut changes = other.subscribe();
    // Its listener starts on its own: announce until it has heard one.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            announce_reload(&h.api.pool, &h.api.topics.prefix)
                .await
                .unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(200), changes.changed());
            if heard.await.is_ok() {
                return;
            }
        }
    })
    .await
    .expect("the other process listens for reloads");

    let before = h.rules().await;
    std::fs::write(&h.file, rules_file("650")).unwrap();
    // Until reloaded, the rules in force stay, whatever the file says now.
    assert_eq!(h.latency_threshold().await, 800.0);
    let (status, body) = h.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rules"], 2);
    let loaded_at = instant(&body["loaded_at"]);
    assert!(loaded_at > instant(&before["loaded_at"]), "{body}");
    let after = h.rules().await;
    assert_eq!(after["rules"][0]["threshold"], 650.0);
    assert_eq!(after["loaded_at"], body["loaded_at"]);

    tokio::time::timeout(
        Duration::from_secs(2),
        changes.wait_for(|set| set.rules[0].threshold == 650.0),
    )
    .await
    .expect("the other process reloads within 2 s of the announcement")
    .unwrap();
}

#[tokio::test]
async fn a_broken_file_is_refused_naming_rule_and_field_and_the_old_rules_stay() {
    let h = harness(Some(&rules_file("800"))).await;
    let broken = rules_file("800")
        .replace("window: 5m", "window: 5 minutes")
        .replace("stat: error_rate", "stat: p42");
    std::fs::write(&h.file, broken).unwrap();
    let (status, body) = h.reload().await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rules");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#"rules[0] "latency": window:"#),
        "{message}"
    );
    assert!(message.contains(r#"rules[1] "errors": stat:"#), "{message}");
    // The file by its name, not where it lies.
    assert!(message.starts_with("rules.yaml is invalid"), "{message}");
    let dir = h.file.parent().unwrap().to_str().unwrap();
    assert!(!message.contains(dir), "{message}");

    let shown = h.rules().await;
    assert_eq!(shown["rules"].as_array().unwrap().len(), 2);
    assert_eq!(shown["rules"][0]["window"], "5m");
    assert_eq!(shown["rules"][1]["stat"], "error_rate");
    assert_eq!(shown["last_reload_error"], message);

    std::fs::write(&h.file, rules_file("700")).unwrap();
    let (status, body) = h.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = h.rules().await;
    assert_eq!(shown["last_reload_error"], Value::Null);
    assert_eq!(shown["rules"][0]["threshold"], 700.0);
}

#[tokio::test]
async fn without_a_rules_file_there_is_nothing_to_reload() {
    let h = harness(None).await;
    let (status, body) = h.reload().await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "no_rules_file");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TIDEMARK_RULES"),
        "{body}"
    );
    let shown = h.rules().await;
    assert_eq!(shown["rules"], json!([]));
    assert_eq!(shown["last_reload_error"], Value::Null);
}
