//! The alert rules (SPEC §3, §6): `GET /v1/rules` (`read`) shows each rule as this
//! process holds it, what is in force now and when that next changes, and its series's
//! alert states; `POST /v1/admin/rules/reload` (`admin`) reads the rules file again and
//! announces the reload, so every process of the deployment (the aggregators, which
//! evaluate the rules, among them) reads its own copy.
//!
//! What the evaluation shows is what is recorded: per rule, the series with a stored
//! state, how many of them are pending and firing, when the latest of those states was
//! written (a state is written only with a transition), and each aggregator's latest
//! evaluation (when, over how many series, how many partitions were frozen, and why its
//! transitions were not published). A reload that fails is shown as
//! `last_reload_error`, with every error naming the rule and field.
//!
//! Error messages name the rules file by its file name, never its directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveTime, Utc};
use serde_json::{json, Value};
use tidemark_model::time::{format_duration, format_instant};
use tidemark_rules::rule::Severity;
use tidemark_rules::template::schedule_name;
use tidemark_rules::{Effect, Rule, Schedule};
use tidemark_runtime::auth::{KeyStore, Role};
use tidemark_runtime::config::Topics;
use tidemark_runtime::http::{needs_role, ApiError};
use tidemark_runtime::rules::{announce_reload, Rules};
use tidemark_store::db::PgPool;
use tidemark_store::rule_states::{self, RuleSummary};

/// What the rule routes need: the process's rules, and the database where rule states
/// are stored and reloads are announced, for the deployment of `topics`.
#[derive(Clone)]
pub struct RulesApi {
    pub pool: PgPool,
    pub rules: Rules,
    pub topics: Topics,
}

/// The rule routes, each behind its role.
pub fn router(state: RulesApi, keys: Arc<KeyStore>) -> Router {
    let read = needs_role(
        Router::new().route("/v1/rules", get(list)),
        &keys,
        Role::Read,
    );
    let admin = needs_role(
        Router::new().route("/v1/admin/rules/reload", post(reload)),
        &keys,
        Role::Admin,
    );
    read.merge(admin).with_state(state)
}

impl RulesApi {
    /// `message` with the rules file's path replaced by its file name.
    fn shown(&self, message: &str) -> String {
        let Some(path) = self.rules.path() else {
            return message.to_owned();
        };
        let name = Path::new(path)
            .file_name()
            .map_or_else(|| path.into(), |n| n.to_string_lossy());
        message.replace(path, &name)
    }
}

/// `GET /v1/rules`: when the rules in force were read, the last reload's errors (`null`
/// when it succeeded), and each rule by [`to_json`] at this instant with its latest
/// evaluation by each aggregator (`evaluations`: when, over how many series, how many
/// owned partitions were frozen, and why its transitions were not published).
pub async fn list(State(state): State<RulesApi>) -> Result<Json<Value>, ApiError> {
    let set = state.rules.current();
    let summaries = rule_states::summaries(&state.pool, &state.topics.samples).await?;
    let by_rule: HashMap<&str, &RuleSummary> =
        summaries.iter().map(|s| (s.rule.as_str(), s)).collect();
    let mut evaluations: HashMap<String, Vec<Value>> = HashMap::new();
    for e in rule_states::evaluations(&state.pool, &state.topics.samples).await? {
        evaluations.entry(e.rule).or_default().push(json!({
            "aggregator": e.owner,
            "at": instant(e.at),
            "series": e.series,
            "frozen_partitions": e.frozen,
            "error": e.error,
        }));
    }
    let now = Utc::now();
    let rules: Vec<Value> = set
        .rules
        .iter()
        .map(|rule| {
            let mut shown = to_json(rule, now, by_rule.get(rule.name.as_str()).copied());
            shown["evaluations"] = evaluations.remove(&rule.name).unwrap_or_default().into();
            shown
        })
        .collect();
    Ok(Json(json!({
        "loaded_at": instant(set.loaded_at),
        "last_reload_error": state.rules.last_error().map(|e| state.shown(&e)),
        "rules": rules,
    })))
}

/// `POST /v1/admin/rules/reload`: reads the rules file again; on success `200
/// {"rules": N, "loaded_at"}` and every process of the deployment is told to reload. An
/// invalid file: `400 invalid_rules` listing every error, and the rules in force stay.
/// No rules file configured: `409 no_rules_file`.
pub async fn reload(State(state): State<RulesApi>) -> Result<Json<Value>, ApiError> {
    if !state.rules.configured() {
        return Err(ApiError::Conflict {
            code: "no_rules_file",
            message: "this process runs without a rules file (TIDEMARK_RULES is not set)".into(),
        });
    }
    let rules = state.rules.clone();
    let outcome = tokio::task::spawn_blocking(move || rules.reload())
        .await
        .map_err(anyhow::Error::from)?;
    let count = outcome.map_err(|e| ApiError::bad_request("invalid_rules", state.shown(&e)))?;
    if let Err(e) = announce_reload(&state.pool, &state.topics.prefix).await {
        tracing::warn!(error = format!("{e:#}"), "rules reload not announced");
        return Err(ApiError::Unavailable {
            message: format!(
                "this process now runs {count} rules, but the other processes could not be told to reload; retry"
            ),
            retry_after_secs: 1,
        });
    }
    Ok(Json(json!({
        "rules": count,
        "loaded_at": instant(state.rules.current().loaded_at),
    })))
}

fn instant(t: DateTime<Utc>) -> String {
    format_instant(t.timestamp_millis())
}

/// One rule as `GET /v1/rules` shows it at `at`: its fields as the rules file writes
/// them (an absent rule's `absent`, `null` for others, beside the `count < 1` over that
/// window it evaluates, as its breaches carry it), what is in force, the next change within [`tidemark_rules::schedule::LOOKAHEAD`]
/// (`null` when none), and what its stored series states say (`states`; none: zeros).
pub fn to_json(rule: &Rule, at: DateTime<Utc>, states: Option<&RuleSummary>) -> Value {
    let in_force = rule.in_force(at);
    let schedules: Vec<Value> = rule.schedules.iter().map(schedule_json).collect();
    json!({
        "name": rule.name,
        "service": rule.service,
        "metric": rule.metric,
        "tags": rule.tags,
        "absent": rule.absent.map(format_duration),
        "stat": rule.stat.as_str(),
        "window": format_duration(rule.window),
        "op": rule.op.as_str(),
        "threshold": rule.threshold,
        "resolve_threshold": rule.resolve_threshold,
        "for": format_duration(rule.for_),
        "keep_firing_for": format_duration(rule.keep_firing_for),
        "severity": rule.severity.as_str(),
        "min_count": rule.min_count,
        "labels": rule.labels,
        "annotations": {
            "summary": rule.annotations.summary,
            "runbook_url": rule.annotations.runbook_url,
        },
        "schedules": schedules,
        "in_force": {
            "threshold": in_force.threshold,
            "resolve_threshold": in_force.resolve_threshold,
            "severity": in_force.severity.as_str(),
            "muted": in_force.muted,
            "schedule": schedule_name(rule, &in_force),
        },
        "next_change": rule.next_change(at).map(instant),
        "series": states.map_or(0, |s| s.series),
        "pending": states.map_or(0, |s| s.pending),
        "firing": states.map_or(0, |s| s.firing),
        "last_transition_at": states.map(|s| instant(s.last_transition_at)),
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A schedule as the rules file writes it; `effect` is `"maintenance"` or the values it
/// overrides (`null` for those it leaves).
fn schedule_json(s: &Schedule) -> Value {
    let days: Vec<&str> = DAYS
        .iter()
        .zip(s.days)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect();
    let end = if s.end == NaiveTime::MIN {
        "24:00".to_owned()
    } else {
        s.end.format("%H:%M").to_string()
    };
    let effect = match s.effect {
        Effect::Maintenance => json!("maintenance"),
        Effect::Override {
            threshold,
            resolve_threshold,
            severity,
        } => json!({
            "threshold": threshold,
            "resolve_threshold": resolve_threshold,
            "severity": severity.map(Severity::as_str),
        }),
    };
    json!({
        "name": s.name,
        "days": days,
        "hours": format!("{}-{end}", s.start.format("%H:%M")),
        "timezone": s.timezone.name(),
        "dates": s.dates.map(|((m1, d1), (m2, d2))| format!("{m1:02}-{d1:02}..{m2:02}-{d2:02}")),
        "effect": effect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
rules:
  - name: checkout-latency
    service: checkout
    metric: http.server.duration_ms
    tags: {route: /api/cart}
    stat: p95
    window: 300s
    op: ">"
    threshold: 800
    resolve_threshold: 700
    for: 2m
    keep_firing_for: 90s
    severity: warning
    min_count: 20
    labels: {team: shop}
    annotations:
      summary: "p95 is {{ value }}"
      runbook_url: https://runbooks.example.com/checkout
    schedules:
      - name: saturday
        days: [sat]
        timezone: Europe/Berlin
        dates: 04-01..10-31
        threshold: 500
        resolve_threshold: 450
        severity: critical
      - hours: "22:00-24:00"
        days: [mon, tue, wed, thu, fri]
        maintenance: true
  - name: errors
    service: "*"
    metric: http.server.duration_ms
    stat: error_rate
    window: 1h
    op: ">="
    threshold: 0.05
    severity: info
  - name: heartbeat
    service: checkout
    metric: heartbeat
    absent: 2m
    severity: critical
    schedules:
      - days: [sat, sun]
        severity: warning
receivers: []
routes: []
"#;

    fn rules() -> Vec<Rule> {
        tidemark_rules::parse(FILE).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_rule_shows_as_written_with_what_is_in_force_and_its_states() {
        let rules = rules();
        let states = RuleSummary {
            rule: "checkout-latency".into(),
            series: 3,
            pending: 1,
            firing: 1,
            last_transition_at: at("2026-06-06T09:59:00.250Z"),
        };
        // Saturday 12:00 in Berlin, in the peak season.
        let shown = to_json(&rules[0], at("2026-06-06T10:00:00Z"), Some(&states));
        assert_eq!(
            shown,
            json!({
                "name": "checkout-latency",
                "service": "checkout",
                "metric": "http.server.duration_ms",
                "tags": {"route": "/api/cart"},
                "absent": null,
                "stat": "p95",
                "window": "5m",
                "op": ">",
                "threshold": 800.0,
                "resolve_threshold": 700.0,
                "for": "2m",
                "keep_firing_for": "90s",
                "severity": "warning",
                "min_count": 20,
                "labels": {"team": "shop"},
                "annotations": {
                    "summary": "p95 is {{ value }}",
                    "runbook_url": "https://runbooks.example.com/checkout",
                },
                "schedules": [
                    {
                        "name": "saturday",
                        "days": ["sat"],
                        "hours": "00:00-24:00",
                        "timezone": "Europe/Berlin",
                        "dates": "04-01..10-31",
                        "effect": {"threshold": 500.0, "resolve_threshold": 450.0, "severity": "critical"},
                    },
                    {
                        "name": null,
                        "days": ["mon", "tue", "wed", "thu", "fri"],
                        "hours": "22:00-24:00",
                        "timezone": "UTC",
                        "dates": null,
                        "effect": "maintenance",
                    },
                ],
                "in_force": {
                    "threshold": 500.0,
                    "resolve_threshold": 450.0,
                    "severity": "critical",
                    "muted": false,
                    "schedule": "saturday",
                },
                // Saturday ends at midnight in Berlin (CEST).
                "next_change": "2026-06-06T22:00:00.000Z",
                "series": 3,
                "pending": 1,
                "firing": 1,
                "last_transition_at": "2026-06-06T09:59:00.250Z",
            })
        );
    }

    #[test]
    fn a_maintenance_window_shows_muted_and_a_rule_without_states_or_schedules_shows_none() {
        let rules = rules();
        // Wednesday 22:30 UTC: the unnamed maintenance window, until midnight.
        let muted = to_json(&rules[0], at("2026-06-03T22:30:00Z"), None);
        assert_eq!(
            muted["in_force"],
            json!({
                "threshold": 800.0,
                "resolve_threshold": 700.0,
                "severity": "warning",
                "muted": true,
                "schedule": "schedules[1]",
            })
        );
        assert_eq!(muted["next_change"], "2026-06-04T00:00:00.000Z");
        assert_eq!(
            (&muted["series"], &muted["pending"], &muted["firing"]),
            (&json!(0), &json!(0), &json!(0))
        );
        assert_eq!(muted["last_transition_at"], Value::Null);

        let plain = to_json(&rules[1], at("2026-06-03T22:30:00Z"), None);
        assert_eq!(plain["service"], "*");
        assert_eq!(plain["window"], "1h");
        assert_eq!(plain["for"], "0s");
        assert_eq!(plain["resolve_threshold"], Value::Null);
        assert_eq!(plain["min_count"], Value::Null);
        assert_eq!(plain["schedules"], json!([]));
        assert_eq!(plain["in_force"]["schedule"], Value::Null);
        assert_eq!(plain["next_change"], Value::Null);
    }

    #[test]
    fn an_absent_rule_shows_its_duration_and_the_count_it_evaluates() {
        // Saturday: the weekend schedule makes it a warning.
        let shown = to_json(&rules()[2], at("2026-06-06T10:00:00Z"), None);
        assert_eq!(shown["absent"], "2m");
        assert_eq!(
            (
                &shown["stat"],
                &shown["op"],
                &shown["threshold"],
                &shown["window"]
            ),
            (&json!("count"), &json!("<"), &json!(1.0), &json!("2m"))
        );
        assert_eq!(shown["min_count"], Value::Null);
        assert_eq!(shown["in_force"]["severity"], "warning");
        assert_eq!(shown["severity"], "critical");
    }
}
