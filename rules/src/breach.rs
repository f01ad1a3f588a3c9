//! A transition of a rule over a series, as a message of the breaches topic.

use crate::eval::{Kind, Transition};
use crate::rule::Severity;
use crate::template::{self, Context};
use crate::Rule;
use chrono::{DateTime, Utc};
use tidemark_schemas::{Breach, BreachState, Series};
use xxhash_rust::xxh3::xxh3_64;

/// The identity of (rule, series): one alert per fingerprint.
pub fn fingerprint(rule: &str, series_id: i64) -> String {
    let mut bytes = rule.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(&series_id.to_le_bytes());
    format!("{:016x}", xxh3_64(&bytes))
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn severity(s: Severity) -> tidemark_schemas::Severity {
    match s {
        Severity::Critical => tidemark_schemas::Severity::Critical,
        Severity::Warning => tidemark_schemas::Severity::Warning,
        Severity::Info => tidemark_schemas::Severity::Info,
    }
}

/// The breach that announces `t`.
pub fn of(rule: &Rule, fingerprint: &str, series: &Series, t: &Transition) -> Breach {
    let (state, reason) = match t.kind {
        Kind::Pending => (BreachState::Pending, "breached"),
        Kind::Firing => (BreachState::Firing, "breached"),
        Kind::Escalated => (BreachState::Firing, "escalated"),
        Kind::Resolved(reason) => (BreachState::Ok, reason.as_str()),
    };
    let ctx = Context::new(rule, &t.in_force, t.value, &series.service, &series.tags);
    let annotations = [
        ("summary", &rule.annotations.summary),
        ("runbook_url", &rule.annotations.runbook_url),
    ]
    .into_iter()
    .filter_map(|(name, text)| Some((name.to_owned(), template::render(text.as_ref()?, &ctx))))
    .collect();
    Breach {
        rule: rule.name.clone(),
        fingerprint: fingerprint.to_owned(),
        series: series.clone(),
        state,
        reason: reason.to_owned(),
        severity: severity(t.in_force.severity),
        value: t.value,
        threshold: t.in_force.threshold,
        op: rule.op.as_str().to_owned(),
        stat: rule.stat.as_str().to_owned(),
        window: i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX),
        at: millis(t.at),
        active_since: millis(t.active_since),
        seq: i64::try_from(t.seq).unwrap_or(i64::MAX),
        schedule: template::schedule_name(rule, &t.in_force),
        labels: rule.labels.clone(),
        annotations,
    }
}
