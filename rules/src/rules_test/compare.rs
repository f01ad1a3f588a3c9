//! Checks one expectation against what the run found: the expected alerts paired one to
//! one with those found (each expected alert with a found one that has every field it
//! gives), and the fields of what a rule holds; says what differs.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tidemark_schemas::{Breach, BreachState};

use super::harness::Alerts;
use super::read::{local, AlertState, Expectation, ExpectedAlert, ExpectedInForce};
use crate::rule::Severity;
use crate::template::schedule_name;
use crate::Rule;

/// An expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its place in the test's `expect`.
    pub expect: usize,
    /// Its instant, as a local time in the file's time zone with the offset.
    pub at: String,
    /// What differs, one line each.
    pub differences: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expect[{}] at {}:", self.expect, self.at)?;
        for d in &self.differences {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// The failure of `expectation` given the alerts held at its instant, if it fails.
pub(super) fn check(
    expectation: &Expectation,
    alerts: &Alerts,
    rules: &[Rule],
    timezone: Tz,
) -> Option<Failure> {
    let mut differences = Vec::new();
    if let Some(expected) = &expectation.alerts {
        let mut found: Vec<ExpectedAlert> = alerts.iter().map(found).collect();
        found.sort_by(|a, b| {
            (&a.rule, &a.service, &a.metric, &a.tags)
                .cmp(&(&b.rule, &b.service, &b.metric, &b.tags))
        });
        differences.extend(alert_differences(expected, &found, timezone));
    }
    if let Some(expected) = &expectation.in_force {
        // `run` checked that every rule named is there.
        if let Some(rule) = rules.iter().find(|r| r.name == expected.rule) {
            differences.extend(in_force_differences(expected, rule, expectation.at));
        }
    }
    (!differences.is_empty()).then(|| Failure {
        expect: expectation.index,
        at: local(expectation.at, timezone),
        differences,
    })
}

/// An alert held, every field given.
fn found(b: &Breach) -> ExpectedAlert {
    ExpectedAlert {
        rule: Some(b.rule.clone()),
        state: match b.state {
            BreachState::Pending => Some(AlertState::Pending),
            BreachState::Firing => Some(AlertState::Firing),
            BreachState::Ok => None,
        },
        severity: Some(match b.severity {
            tidemark_schemas::Severity::Critical => Severity::Critical,
            tidemark_schemas::Severity::Warning => Severity::Warning,
            tidemark_schemas::Severity::Info => Severity::Info,
        }),
        service: Some(b.series.service.clone()),
        metric: Some(b.series.metric.clone()),
        tags: Some(b.series.tags.clone()),
        schedule: Some(b.schedule.clone().unwrap_or_else(|| DEFAULT.to_owned())),
        since: DateTime::from_timestamp_millis(b.active_since),
        summary: b.annotations.get("summary").cloned(),
        runbook_url: b.annotations.get("runbook_url").cloned(),
    }
}

/// How expectations name the rule's own values, as the `{{ schedule }}` placeholder does.
const DEFAULT: &str = "default";

impl ExpectedAlert {
    /// Whether `found` has every field this one gives.
    fn fits(&self, found: &ExpectedAlert) -> bool {
        fn given<T: PartialEq>(expected: &Option<T>, found: &Option<T>) -> bool {
            expected.is_none() || expected == found
        }
        given(&self.rule, &found.rule)
            && given(&self.state, &found.state)
            && given(&self.severity, &found.severity)
            && given(&self.service, &found.service)
            && given(&self.metric, &found.metric)
            && given(&self.tags, &found.tags)
            && given(&self.schedule, &found.schedule)
            && given(&self.since, &found.since)
            && given(&self.summary, &found.summary)
            && given(&self.runbook_url, &found.runbook_url)
    }

    /// The fields given, as a YAML flow mapping.
    fn show(&self, timezone: Tz) -> String {
        let tags = |tags: &std::collections::BTreeMap<String, String>| {
            let pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", pairs.join(", "))
        };
        let fields = [
            ("rule", self.rule.clone()),
            ("state", self.state.map(|s| s.as_str().to_owned())),
            ("severity", self.severity.map(|s| s.as_str().to_owned())),
            ("service", self.service.clone()),
            ("metric", self.metric.clone()),
            ("tags", self.tags.as_ref().map(tags)),
            ("schedule", self.schedule.clone()),
            ("since", self.since.map(|t| local(t, timezone))),
            ("summary", self.summary.as_ref().map(|s| format!("{s:?}"))),
            ("runbook_url", self.runbook_url.clone()),
        ];
        let given: Vec<String> = fields
            .into_iter()
            .filter_map(|(name, value)| Some(format!("{name}: {}", value?)))
            .collect();
        format!("{{{}}}", given.join(", "))
    }
}

/// The expected alerts no found one pairs with, and the found ones not expected.
fn alert_differences(
    expected: &[ExpectedAlert],
    found: &[ExpectedAlert],
    timezone: Tz,
) -> Vec<String> {
    let fits: Vec<Vec<bool>> = expected
        .iter()
        .map(|e| found.iter().map(|f| e.fits(f)).collect())
        .collect();
    let partner = pair(&fits, found.len());
    let missing = (0..expected.len())
        .filter(|e| !partner.contains(&Some(*e)))
        .map(|e| {
            format!(
                "alerts: expected, not found: {}",
                expected[e].show(timezone)
            )
        });
    let extra = (0..found.len())
        .filter(|f| partner[*f].is_none())
        .map(|f| format!("alerts: found, not expected: {}", found[f].show(timezone)));
    missing.chain(extra).collect()
}

/// A largest pairing of expected alerts with found ones where `fits[e][f]`: for each
/// found alert, the expected one it pairs with (augmenting paths, as in Kuhn's
/// algorithm; a field may fit several alerts, so first come first served could miss).
fn pair(fits: &[Vec<bool>], found: usize) -> Vec<Option<usize>> {
    fn augment(
        e: usize,
        fits: &[Vec<bool>],
        partner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for f in 0..partner.len() {
            if !fits[e][f] || seen[f] {
                continue;
            }
            seen[f] = true;
            let current = partner[f];
            if current.is_none_or(|other| augment(other, fits, partner, seen)) {
                partner[f] = Some(e);
                return true;
            }
        }
        false
    }
    let mut partner = vec![None; found];
    for e in 0..fits.len() {
        augment(e, fits, &mut partner, &mut vec![false; found]);
    }
    partner
}

/// The fields of `expected` that `rule` does not hold at `at`.
fn in_force_differences(expected: &ExpectedInForce, rule: &Rule, at: DateTime<Utc>) -> Vec<String> {
    let held = rule.in_force(at);
    let number = |v: f64| v.to_string();
    let fields = [
        (
            "schedule",
            expected.schedule.clone(),
            schedule_name(rule, &held).unwrap_or_else(|| DEFAULT.to_owned()),
        ),
        (
            "threshold",
            expected.threshold.map(number),
            number(held.threshold),
        ),
        (
            "resolve_threshold",
            expected.resolve_threshold.map(number),
            held.resolve_threshold
                .map_or_else(|| "none".to_owned(), number),
        ),
        (
            "severity",
            expected.severity.map(|s| s.as_str().to_owned()),
            held.severity.as_str().to_owned(),
        ),
        (
            "muted",
            expected.muted.map(|m| m.to_string()),
            held.muted.to_string(),
        ),
    ];
    fields
        .into_iter()
        .filter_map(|(name, want, got)| {
            let want = want?;
            (want != got).then(|| {
                format!(
                    "in_force {:?}: {name}: expected {want}, got {got}",
                    rule.name
                )
            })
        })
        .collect()
}
