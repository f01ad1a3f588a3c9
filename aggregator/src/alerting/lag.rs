//! The aggregator's alert about itself: a partition whose consumer lags more than
//! [`LAG_FREEZE`] has its rules frozen, and once that has lasted [`LAG_FREEZE`] too (a
//! single reading can catch a message produced after a quiet spell but not read yet)
//! the built-in rule [`RULE`] fires for it, on
//! the breaches topic like any rule, so the alerts people watch say why theirs stopped
//! moving. Its series is `(tidemark, aggregator.lag_seconds, {topic, partition})`; its
//! state is stored and restored like every other rule's.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tidemark_model::series::series_id;
use tidemark_model::Bucket;
use tidemark_rules::eval::{self, SeriesState};
use tidemark_rules::{breach, Rule};
use tidemark_schemas::{Breach, Series};

/// A partition lagging more than this is not evaluated, and [`RULE`] fires for it.
pub const LAG_FREEZE: Duration = Duration::from_secs(30);

/// The name of the built-in rule.
pub const RULE: &str = "tidemark-aggregator-lagging";

static LAG_RULE: LazyLock<Rule> = LazyLock::new(|| {
    let text = format!(
        "rules:
  - name: {RULE}
    service: tidemark
    metric: aggregator.lag_seconds
    stat: max
    window: 10s
    op: '>'
    threshold: {0}
    for: {0}s
    severity: critical
    annotations:
      summary: 'partition {{{{ tags.partition }}}} of {{{{ tags.topic }}}} lags {{{{ value }}}} s behind the log: its alert rules are frozen until it catches up'
receivers: []
routes: []
",
        LAG_FREEZE.as_secs()
    );
    tidemark_rules::parse(&text)
        .expect("the built-in lag rule is valid")
        .remove(0)
});

/// The lag rule's state for every partition held.
#[derive(Debug, Default)]
pub struct Lag {
    states: HashMap<i32, SeriesState>,
}

fn series(topic: &str, partition: i32) -> Series {
    Series {
        service: "tidemark".into(),
        metric: "aggregator.lag_seconds".into(),
        tags: [
            ("partition".to_owned(), partition.to_string()),
            ("topic".to_owned(), topic.to_owned()),
        ]
        .into(),
    }
}

impl Lag {
    pub fn restore(&mut self, partition: i32, state: SeriesState) {
        self.states.insert(partition, state);
    }

    pub fn retain(&mut self, held: impl Fn(i32) -> bool) {
        self.states.retain(|p, _| held(*p));
    }

    /// Evaluates the lag rule for `partition` of `topic`, lagging `lag` at `at`: the
    /// transition's breach with the state to keep once it is published.
    pub fn evaluate(
        &mut self,
        topic: &str,
        partition: i32,
        lag: Duration,
        at: DateTime<Utc>,
    ) -> Option<(Breach, SeriesState)> {
        let mut window = Bucket::default();
        window.add(lag.as_secs_f64(), 1, false, at.timestamp_millis());
        let mut state = self.states.get(&partition).cloned().unwrap_or_default();
        let t = eval::evaluate(&LAG_RULE, &mut state, at, &window)?;
        let series = series(topic, partition);
        let id = series_id(&series.service, &series.metric, series.tags.iter());
        let fingerprint = breach::fingerprint(RULE, id);
        Some((breach::of(&LAG_RULE, &fingerprint, &series, &t), state))
    }

    /// Keeps the state of a published lag transition of `partition`.
    pub fn keep(&mut self, partition: i32, state: SeriesState) {
        self.states.insert(partition, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::BreachState;

    #[test]
    fn a_partition_lagging_past_the_freeze_for_as_long_fires_and_recovers() {
        let mut lag = Lag::default();
        let at = |s: i64| DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap();
        let mut step = |lag_s: u64, s: i64, publish: bool| {
            let out = lag.evaluate("t.samples", 3, Duration::from_secs(lag_s), at(s));
            if let (Some((_, state)), true) = (&out, publish) {
                lag.keep(3, state.clone());
            }
            out.map(|(b, _)| b)
        };
        assert!(step(29, 0, true).is_none());
        // One reading past the freeze is only pending: it may be a message produced
        // after a quiet spell and not read yet.
        let pending = step(45, 10, true).unwrap();
        assert_eq!((pending.state, pending.seq), (BreachState::Pending, 1));
        assert_eq!(step(3, 20, true).unwrap().state, BreachState::Ok);
        assert_eq!(step(45, 30, true).unwrap().state, BreachState::Pending);
        assert!(step(50, 50, true).is_none());
        let fired = step(60, 60, false).unwrap();
        assert_eq!(
            (fired.state, fired.seq, fired.value),
            (BreachState::Firing, 4, Some(60.0))
        );
        assert_eq!(fired.rule, RULE);
        assert_eq!(
            fired.annotations["summary"],
            "partition 3 of t.samples lags 60 s behind the log: its alert rules are frozen until it catches up"
        );
        // Unpublished: announced again, with the same seq.
        assert_eq!(step(61, 70, true).unwrap().seq, 4);
        assert!(step(62, 80, true).is_none());
        let ok = step(0, 90, true).unwrap();
        assert_eq!(
            (ok.state, ok.seq, ok.reason.as_str()),
            (BreachState::Ok, 5, "recovered")
        );
    }
}
