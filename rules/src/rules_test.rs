//! Unit tests for alert rules (`tidemark rules test FILE...`), in the spirit of
//! `promtool test rules`: samples at absolute instants, read in a time zone, go through
//! the aggregator's own evaluation ([`crate::watch::PartitionWatch`]), and expectations
//! say which alerts are pending or firing at an instant and what a rule holds then.
//! Pure: the caller reads the files; [`parse`] takes the test file's text and [`run`] the
//! rules its `rule_files` name.
//!
//! # The test file
//!
//! ```yaml
//! rule_files: [example.yaml]     # rules files, relative to the test file
//! timezone: Europe/Berlin        # optional, default UTC: local times below are in it
//! evaluation_interval: 10s       # optional, default 10s, at least 1s
//! tests:
//!   - name: saturday is stricter
//!     evaluation_interval: 10s   # optional, for this test only
//!     input:                     # samples
//!       - {at: "2026-10-24 11:59:00", service: checkout, metric: http.server.duration_ms,
//!          value: 90, tags: {route: /api/cart}}
//!       - {at: "2026-10-24 12:00:00", every: 5s, until: "2026-10-24 12:30:00",
//!          service: checkout, metric: http.server.duration_ms, value: 600,
//!          tags: {route: /api/cart}, count: 1, error: false}
//!     expect:
//!       - at: "2026-10-24 12:10:00"
//!         alerts:                # exactly these are pending or firing
//!           - {rule: checkout-latency, state: firing, severity: critical,
//!              schedule: saturday}
//!         in_force: {rule: checkout-latency, schedule: saturday, threshold: 500,
//!                    severity: critical, muted: false}
//! ```
//!
//! Unknown keys are refused everywhere. Errors name the test and the field, e.g.
//! `tests[0] "saturday is stricter": input[1].every: missing unit: ...`.
//!
//! - **Instants.** `at`, `until` and `since` are a local time in `timezone`
//!   (`2026-10-24 12:00:00`, also with `T`, fractional seconds, or without seconds) or
//!   RFC 3339 with an offset (`2026-10-24T10:00:00Z`, the way to name the second
//!   occurrence of a repeated hour). A local time that a DST change skips is the first
//!   instant after the gap, one that occurs twice its first occurrence, as schedules
//!   read them ([`crate::schedule`]).
//! - **Input.** Each sample has `at`, `service`, `metric`, `value`, and optionally `tags`,
//!   `count` (default 1: a pre-aggregated sample stands for `count` observations whose
//!   values add up to `value`) and `error` (default false, for all `count`
//!   observations). With `every` and `until` it repeats from `at` every `every`
//!   (elapsed time, not local clock time) up to `until`, excluded, like every window in
//!   Tidemark. Samples are checked as ingest checks them.
//! - **Evaluation.** Each test starts from nothing; samples arrive at their event time,
//!   one message each. Rules are evaluated as the aggregator evaluates them: first at the
//!   multiple of `evaluation_interval` (since the Unix epoch) at or before the earliest
//!   sample or expectation, then each time `evaluation_interval` after the previous
//!   evaluation, or at the next schedule boundary of any rule if that comes first
//!   ([`crate::eval::next_evaluation`]), up to the last expectation. Every transition is
//!   kept, as if published. The aggregator's lag freeze and restarts are not simulated.
//! - **`alerts`.** The alerts at `at` as the latest evaluation at or before `at` left
//!   them, one per (rule, series), each as its latest transition announced it: exactly
//!   the listed ones must be pending or firing, every other one inactive (`alerts: []`:
//!   none at all). Each listed alert gives some of `rule`, `state` (`pending|firing`),
//!   `severity`, `service`, `metric`, `tags` (the series's, all of them), `schedule`
//!   (the schedule in force at its latest transition, by name or place as breaches
//!   name it, `default` for the rule's own values), `since` (when its episode began),
//!   `summary` and `runbook_url` (rendered); the fields given are compared, the others
//!   ignored.
//! - **`in_force`.** What `rule` holds at exactly `at` ([`crate::Rule::in_force`]): some
//!   of `schedule` (named as for alerts), `threshold`, `resolve_threshold`, `severity`,
//!   `muted`.
//!
//! An expectation gives `alerts`, `in_force` or both. A test passes when every
//! expectation holds; [`run`] reports each one that does not, with the differences.
//!
//! Silences and inhibition are not in the product yet, so a test cannot input or expect
//! them. They belong to the alerter's lifecycle: once it exists as a pure step, the
//! harness's `Alerts` (the alerts as the alerter holds them) is where kept transitions
//! would pass through it, a test would gain `silences:` and an expected alert
//! `silenced` and `inhibited`.

mod compare;
mod harness;
mod read;

pub use compare::Failure;
pub use harness::{run, Outcome};
pub use read::{
    parse, AlertState, Error, Expectation, ExpectedAlert, ExpectedInForce, Test, TestFile, TestId,
};

#[cfg(test)]
mod tests;
