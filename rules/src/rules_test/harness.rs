//! Runs a test: feeds its samples at their event time to a [`PartitionWatch`], evaluates
//! it when the aggregator would, keeps every transition as if published, and checks each
//! expectation against the alerts the transitions so far make.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tidemark_schemas::{Breach, BreachState, SampleBatch, WireSample};

use super::compare::{self, Failure};
use super::read::{Error, Test, TestFile, TestId};
use crate::eval;
use crate::watch::PartitionWatch;
use crate::Rule;

/// How one test went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub test: TestId,
    /// The expectations that did not hold, in time order; none when the test passed.
    pub failures: Vec<Failure>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every test of `file` over `rules` (those of its `rule_files`, in order). Fails
/// when the rules do not fit the file: two rules of one name, or an expectation about a
/// rule that is not there.
pub fn run(file: &TestFile, rules: &[Rule]) -> Result<Vec<Outcome>, Vec<Error>> {
    let errors = misfits(file, rules);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(file
        .tests
        .iter()
        .map(|test| Outcome {
            test: test.id.clone(),
            failures: failures(test, rules, file.timezone),
        })
        .collect())
}

/// Every name an expectation gives that no rule has, and every name two rules share.
fn misfits(file: &TestFile, rules: &[Rule]) -> Vec<Error> {
    let mut names = HashSet::new();
    let mut errors: Vec<Error> = rules
        .iter()
        .filter(|r| !names.insert(r.name.as_str()))
        .map(|r| {
            Error::new(
                None,
                "rule_files",
                format!(
                    "two rules are named {:?}: names must be unique across the files",
                    r.name
                ),
            )
        })
        .collect();
    for test in &file.tests {
        for e in &test.expect {
            let alerts = e.alerts.iter().flatten().enumerate();
            let named = alerts
                .filter_map(|(i, a)| Some((format!("alerts[{i}]"), a.rule.as_deref()?)))
                .chain(
                    e.in_force
                        .iter()
                        .map(|f| ("in_force".to_owned(), f.rule.as_str())),
                );
            for (field, name) in named {
                if !names.contains(name) {
                    errors.push(Error::new(
                        Some(&test.id),
                        format!("expect[{}].{field}.rule", e.index),
                        format!("no rule {name:?} in the rule files"),
                    ));
                }
            }
        }
    }
    errors
}

/// The expectations of `test` that do not hold, in time order.
fn failures(test: &Test, rules: &[Rule], timezone: chrono_tz::Tz) -> Vec<Failure> {
    let mut expect: Vec<_> = test.expect.iter().collect();
    expect.sort_by_key(|e| e.at);
    let Some(first) = expect.first() else {
        return Vec::new();
    };
    let start = test.input.first().map_or(first.at.timestamp_millis(), |s| {
        s.timestamp.min(first.at.timestamp_millis())
    });
    let mut replay = Replay::new(rules, test.interval, start, &test.input);
    expect
        .into_iter()
        .filter_map(|e| {
            replay.until(e.at);
            compare::check(e, &replay.alerts, rules, timezone)
        })
        .collect()
}

/// The aggregator's evaluation of one partition, on a simulated clock.
struct Replay<'a> {
    rules: &'a [Rule],
    interval: Duration,
    watch: PartitionWatch,
    /// The samples not fed yet, in order of event time.
    samples: std::iter::Peekable<std::slice::Iter<'a, WireSample>>,
    offset: i64,
    /// The next evaluation instant.
    next: DateTime<Utc>,
    alerts: Alerts,
}

impl<'a> Replay<'a> {
    /// Evaluations from the multiple of `interval` at or before `start_ms`.
    fn new(
        rules: &'a [Rule],
        interval: Duration,
        start_ms: i64,
        samples: &'a [WireSample],
    ) -> Self {
        let step = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let first = start_ms - start_ms.rem_euclid(step);
        Self {
            rules,
            interval,
            watch: PartitionWatch::new(0, 0),
            samples: samples.iter().peekable(),
            offset: 0,
            next: DateTime::from_timestamp_millis(first).unwrap_or(DateTime::<Utc>::MIN_UTC),
            alerts: Alerts::default(),
        }
    }

    /// Runs every evaluation at or before `at`.
    fn until(&mut self, at: DateTime<Utc>) {
        while self.next <= at {
            let now = self.next;
            self.feed_until(now.timestamp_millis());
            let published = self.watch.evaluate(self.rules, now);
            for (breach, _) in &published {
                self.alerts.apply(breach);
            }
            self.watch.keep(self.rules, published);
            self.next = eval::next_evaluation_of(self.rules, now, self.interval);
        }
    }

    /// Feeds the samples with event time up to `now_ms`, each as it arrives: one message
    /// at its event time.
    fn feed_until(&mut self, now_ms: i64) {
        while let Some(sample) = self.samples.next_if(|s| s.timestamp <= now_ms) {
            let batch = SampleBatch {
                batch_id: String::new(),
                produced_at: sample.timestamp,
                samples: vec![sample.clone()],
                chunks: Vec::new(),
            };
            self.watch
                .feed(self.rules, self.offset, &batch.view(), sample.timestamp);
            self.offset += 1;
        }
    }
}

/// The alerts as the alerter holds them: each (rule, series) pending or firing, as its
/// latest transition announced it, by fingerprint.
#[derive(Debug, Default)]
pub(super) struct Alerts(BTreeMap<String, Breach>);

impl Alerts {
    fn apply(&mut self, breach: &Breach) {
        if breach.state == BreachState::Ok {
            self.0.remove(&breach.fingerprint);
        } else {
            self.0.insert(breach.fingerprint.clone(), breach.clone());
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Breach> {
        self.0.values()
    }
}
