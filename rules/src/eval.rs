//! Evaluation of one rule over one series: the statistic of the series's window, compared
//! with what the rule holds at an instant, moves the series through its alert lifecycle
//! and says which transition that causes. Pure: the caller (the aggregator) supplies the
//! instant, the window summary and the [`SeriesState`] it persists between evaluations.
//!
//! The contract, as on-call people rely on it:
//!
//! - **When.** A rule is evaluated every interval and also exactly at each schedule
//!   boundary ([`next_evaluation`]), so a threshold or severity switches at the boundary,
//!   not at the next evaluation after it. The window of an evaluation at `at` holds the
//!   samples with event time in `[at - window, at)`. Instants of one series never go back.
//! - **Statistic.** `p50`..`p99` are quantiles of the window's sketch (within its relative
//!   accuracy, clamped to the exact min and max); `avg`, `min`, `max` are exact; `count` is
//!   the number of samples; `rate` is that count per second of the window; `error_rate`
//!   is the share of samples flagged as errors, a ratio from 0 to 1 (`0.05` is 5 %).
//! - **No data.** A window without samples counts as `0` for `count`, `rate` and
//!   `error_rate`, evaluated like any value (no traffic means no errors). For `p50`..`p99`,
//!   `avg`, `min` and `max` it gives no verdict: a pending or firing series keeps its
//!   state through [`MISSING_EVALUATIONS`] consecutive evaluations without data (a pending
//!   timer keeps running, but only an evaluation with data can make it fire), and resolves
//!   with reason `missing_series` on the next one.
//! - **`min_count`.** A window with samples, but fewer than `min_count`, gives no verdict:
//!   the state stays as it is, and the series is not missing. A window with no samples
//!   follows the no-data rule above instead.
//! - **Breach.** A series is breached when `value op threshold` holds with the threshold in
//!   force. Once firing it stays breached while `value op resolve_threshold` holds
//!   (hysteresis; the threshold when there is no resolve threshold), so a value swinging
//!   between the two does not flap.
//! - **`for`.** An inactive series that is breached becomes pending, or firing at once when
//!   `for` is 0 (then only the firing transition is emitted). A pending series fires at
//!   the first evaluation at which it is still breached and `for` has passed since it
//!   became pending; one that is no longer breached resolves (`recovered`), dropping the
//!   pending alert.
//! - **`keep_firing_for`.** A firing series whose condition clears keeps firing until
//!   `keep_firing_for` has passed since the last evaluation at which it held, then
//!   resolves (`recovered`). With `keep_firing_for: 0s` it resolves at once.
//! - **Severity.** A firing series whose severity in force changes (a Saturday schedule
//!   starting or ending) is escalated to the new severity, either way, as long as it keeps
//!   firing, even on an evaluation without a verdict.
//! - **`absent`.** An absent rule (a dead man's switch) is `count < 1` over a window of
//!   its absent duration, so the no-data rule above makes silence a breach: a series that
//!   reported before `at` is breached at the first evaluation at `at` with no sample in
//!   `[at - absent, at)` (one that reports until `T` from `T + absent` on; before its
//!   first sample a series is not judged, see [`crate::watch`]), pends for `for`,
//!   fires, and resolves (`recovered`, after `keep_firing_for`) at the first evaluation
//!   whose window holds a sample again. `{{ value }}` is the count (0 while silent).
//!   Schedules may mute it or change its severity, not its threshold.
//!
//!   Only a known series can be missed. The aggregator knows a series that reported
//!   since it last rebuilt its windows from the log (after a start or a rebalance; they
//!   reach back the longest window of any rule) or whose alert with some rule is pending
//!   or firing (that state is stored), and while an absent rule watches a series it
//!   never forgets it ([`crate::watch`]). A series that never reported, or went silent
//!   longer ago than that, is not missed: like Prometheus `absent()`, which needs a
//!   selector naming the series, an absent rule is meant for series that must keep
//!   reporting, named by `service`, `metric` and `tags`, with an absent duration of
//!   several of their reporting intervals. A series that went away for good (`service:
//!   *` over a decommissioned service) fires until it reports again or the rule changes.
//! - **Maintenance.** A maintenance window starting resolves a pending or firing series
//!   (`maintenance`); while it lasts nothing starts; after it, evaluation starts afresh,
//!   with a new `for`.
//! - **Order.** Each evaluation causes at most one transition. Every transition carries the
//!   series's transition count so far, `seq`, starting at 1, so a consumer can drop one it
//!   already applied; and `active_since`, the start of the pending or firing episode it
//!   belongs to (for a resolution, the episode that ended).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tidemark_model::Bucket;

use crate::rule::{Op, Rule, Severity, Stat};
use crate::schedule::InForce;

/// Consecutive evaluations without data that a pending or firing series of a `p50`..`p99`,
/// `avg`, `min` or `max` rule survives; the next one resolves it with `missing_series`.
pub const MISSING_EVALUATIONS: u32 = 3;

/// The statistic of a window summary over `span` (the rule's window); `None` when it has
/// no value: a quantile, `avg`, `min` or `max` of no samples, or a rate over an empty span.
pub fn statistic(stat: Stat, window: &Bucket, span: Duration) -> Option<f64> {
    let quantile = |q| window.quantile(q);
    let present = |v: f64| (!window.is_empty()).then_some(v);
    match stat {
        Stat::P50 => quantile(0.50),
        Stat::P90 => quantile(0.90),
        Stat::P95 => quantile(0.95),
        Stat::P99 => quantile(0.99),
        Stat::Avg => window.avg(),
        Stat::Min => present(window.min),
        Stat::Max => present(window.max),
        Stat::Count => Some(window.count as f64),
        Stat::Rate => (!span.is_zero()).then(|| window.count as f64 / span.as_secs_f64()),
        Stat::ErrorRate => Some(window.error_rate().unwrap_or(0.0)),
    }
}

impl Op {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

/// What the evaluator remembers of one (rule, series) between evaluations; the caller
/// persists it, so that a pending `for` timer survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    #[serde(flatten)]
    pub phase: Phase,
    /// Consecutive evaluations without data, up to the latest.
    pub missing: u32,
    /// Transitions emitted so far: the `seq` of the latest.
    pub seq: u64,
}

/// Where a series is in its alert lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Inactive,
    /// Breached since `since`, waiting for `for`.
    Pending { since: DateTime<Utc> },
    /// Firing in an episode that began (pending, or firing) at `since`.
    Firing {
        since: DateTime<Utc>,
        /// The severity last announced: the one it fired or was escalated with.
        #[serde(serialize_with = "severity_name")]
        severity: Severity,
        /// The latest evaluation at which the condition held, for `keep_firing_for`.
        last_held: DateTime<Utc>,
    },
}

fn severity_name<S: Serializer>(severity: &Severity, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(severity.as_str())
}

/// A change of a series's alert state, caused by one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The series's transitions so far, this one included.
    pub seq: u64,
    pub kind: Kind,
    /// The evaluation instant.
    pub at: DateTime<Utc>,
    /// The statistic at `at`, if it had one.
    pub value: Option<f64>,
    /// What the rule held at `at`: threshold, severity, the schedule in force.
    pub in_force: InForce,
    /// When the episode this transition belongs to began.
    pub active_since: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pending,
    Firing,
    /// The severity in force changed while firing; the new one is in `in_force`.
    Escalated,
    Resolved(Reason),
}

/// Why a pending or firing series went back to inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Recovered,
    MissingSeries,
    Maintenance,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Recovered => "recovered",
            Reason::MissingSeries => "missing_series",
            Reason::Maintenance => "maintenance",
        }
    }
}

/// One evaluation of `rule` for one series at `at`, given the summary of the samples with
/// event time in `[at - rule.window, at)`: updates `state` and returns the transition
/// this causes, if any.
pub fn evaluate(
    rule: &Rule,
    state: &mut SeriesState,
    at: DateTime<Utc>,
    window: &Bucket,
) -> Option<Transition> {
    evaluate_over(rule, state, at, window, rule.window)
}

/// [`evaluate`] over a window summary that covers `span` (the rule's window rounded out to
/// whole sub-windows): `rate` is per second of what the summary covers.
pub fn evaluate_over(
    rule: &Rule,
    state: &mut SeriesState,
    at: DateTime<Utc>,
    window: &Bucket,
    span: Duration,
) -> Option<Transition> {
    let in_force = rule.in_force(at);
    let value = statistic(rule.stat, window, span);
    let (kind, active_since) = step(rule, state, at, window, value, &in_force)?;
    state.seq += 1;
    Some(Transition {
        seq: state.seq,
        kind,
        at,
        value,
        in_force,
        active_since,
    })
}

/// When any of `rules` must next be evaluated after `after` ([`next_evaluation`] of each);
/// `after + interval` when there are none.
pub fn next_evaluation_of(
    rules: &[Rule],
    after: DateTime<Utc>,
    interval: Duration,
) -> DateTime<Utc> {
    rules
        .iter()
        .map(|r| next_evaluation(r, after, interval))
        .min()
        .unwrap_or_else(|| {
            chrono::TimeDelta::from_std(interval)
                .ok()
                .and_then(|d| after.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        })
}

/// When `rule` must next be evaluated after `after`: `after + interval`, or the next
/// change of what is in force if that comes first.
pub fn next_evaluation(rule: &Rule, after: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let regular = chrono::TimeDelta::from_std(interval)
        .ok()
        .and_then(|d| after.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    rule.next_change(after)
        .map_or(regular, |change| change.min(regular))
}

/// The lifecycle step of one evaluation: the transition's kind and episode start.
fn step(
    rule: &Rule,
    state: &mut SeriesState,
    at: DateTime<Utc>,
    window: &Bucket,
    value: Option<f64>,
    in_force: &InForce,
) -> Option<(Kind, DateTime<Utc>)> {
    if in_force.muted {
        return end(state, Reason::Maintenance);
    }
    match value {
        None => {
            state.missing = state.missing.saturating_add(1);
            if state.missing > MISSING_EVALUATIONS {
                return end(state, Reason::MissingSeries);
            }
        }
        Some(value) => {
            state.missing = 0;
            let too_few = !window.is_empty() && rule.min_count.is_some_and(|n| window.count < n);
            if !too_few {
                if let Some(transition) = judge(rule, state, at, value, in_force) {
                    return Some(transition);
                }
            }
        }
    }
    escalate(state, in_force)
}

/// Moves the series by a verdict on `value`.
fn judge(
    rule: &Rule,
    state: &mut SeriesState,
    at: DateTime<Utc>,
    value: f64,
    in_force: &InForce,
) -> Option<(Kind, DateTime<Utc>)> {
    let breached = rule.op.holds(value, in_force.threshold);
    match &mut state.phase {
        Phase::Inactive if breached && rule.for_.is_zero() => fire(state, at, at, in_force),
        Phase::Inactive if breached => {
            state.phase = Phase::Pending { since: at };
            Some((Kind::Pending, at))
        }
        Phase::Inactive => None,
        Phase::Pending { .. } if !breached => end(state, Reason::Recovered),
        &mut Phase::Pending { since } if passed(since, at, rule.for_) => {
            fire(state, since, at, in_force)
        }
        Phase::Pending { .. } => None,
        Phase::Firing { last_held, .. } => {
            let resolve = in_force.resolve_threshold.unwrap_or(in_force.threshold);
            if rule.op.holds(value, resolve) {
                *last_held = at;
                None
            } else if passed(*last_held, at, rule.keep_firing_for) {
                end(state, Reason::Recovered)
            } else {
                None
            }
        }
    }
}

fn fire(
    state: &mut SeriesState,
    since: DateTime<Utc>,
    at: DateTime<Utc>,
    in_force: &InForce,
) -> Option<(Kind, DateTime<Utc>)> {
    state.phase = Phase::Firing {
        since,
        severity: in_force.severity,
        last_held: at,
    };
    Some((Kind::Firing, since))
}

/// Resolves a pending or firing series; nothing for an inactive one.
fn end(state: &mut SeriesState, reason: Reason) -> Option<(Kind, DateTime<Utc>)> {
    let since = match state.phase {
        Phase::Inactive => return None,
        Phase::Pending { since } | Phase::Firing { since, .. } => since,
    };
    state.phase = Phase::Inactive;
    Some((Kind::Resolved(reason), since))
}

/// Announces a firing series's new severity in force.
fn escalate(state: &mut SeriesState, in_force: &InForce) -> Option<(Kind, DateTime<Utc>)> {
    match &mut state.phase {
        Phase::Firing {
            since, severity, ..
        } if *severity != in_force.severity => {
            *severity = in_force.severity;
            Some((Kind::Escalated, *since))
        }
        _ => None,
    }
}

/// Whether `length` has passed from `since` to `at`.
fn passed(since: DateTime<Utc>, at: DateTime<Utc>, length: Duration) -> bool {
    (at - since).to_std().is_ok_and(|elapsed| elapsed >= length)
}

#[cfg(test)]
mod tests;
