//! The series of one partition that some rule watches, each with its rolling window and
//! the state of every rule over it, and how consumed messages feed them.
//!
//! Feeding is idempotent by offset: a message at an offset already fed (read again after
//! a resume or a refetch) is skipped, and so is a chunk of an idempotent request fed
//! before (a client's retry). A partition gained starts feeding from an earlier offset
//! than its buckets (see `Alerting::rebuild_from`): until the feed reaches the offset its
//! buckets resumed at, its windows are incomplete and its rules are not evaluated, so a
//! restart never invents a transition.
//!
//! An `absent` rule judges a series only from the first evaluation after it is known:
//! after the event time of the first sample its window took, or at once when restored
//! pending or firing with some rule. Before that its window is empty only because the
//! series has not started (its first sample at or after the evaluation instant), which
//! is not silence.
//!
//! A series is forgotten ([`PartitionWatch::prune`]) once its window is empty and none
//! of its rules is pending or firing, except a known one that an `absent` rule watches.
//! Its silence is what that rule waits for, and the pending state silence causes is kept
//! only once its transition is published ([`PartitionWatch::keep`]): a failed publish,
//! or a sweep in the same evaluation, would otherwise forget the series before it could
//! fire. Such a series is kept until a reload leaves it no absent rule.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::eval::{self, Phase, SeriesState};
use crate::{breach, Rule};
use chrono::{DateTime, Utc};
use tidemark_model::series::series_id;
use tidemark_model::window::RollingWindow;
use tidemark_schemas::{Breach, SampleBatchView, Series};

/// Width of a window's sub-windows: windows are exact to this.
pub const SUB_WINDOW: Duration = Duration::from_secs(10);

/// One series some rule matches.
#[derive(Debug)]
pub struct Watched {
    pub id: i64,
    pub series: Series,
    pub window: RollingWindow,
    /// Each matching rule (its index in the rules) and where the series stands with it.
    pub rules: Vec<(usize, SeriesState)>,
    /// An `absent` rule watches it: once known, it is never pruned.
    absent: bool,
    /// The event time from which the series is known to report: of the first sample its
    /// window took, or the earliest instant when restored pending or firing.
    known_since: Option<i64>,
    /// The window holds every sample with event time from here on: a rule whose window
    /// reaches further back is not evaluated yet (after a reload, see
    /// [`PartitionWatch::reload`]).
    complete_from: i64,
}

impl Watched {
    /// The series watched by the rules that match it, each from the start; `None` when
    /// no rule does. Its window spans the longest window of those rules.
    fn of(
        rules: &[Rule],
        id: i64,
        service: &str,
        metric: &str,
        tags: &[(&str, &str)],
        complete_from: i64,
    ) -> Option<Self> {
        let matching: Vec<(usize, SeriesState)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches(r, service, metric, tags))
            .map(|(i, _)| (i, SeriesState::default()))
            .collect();
        let span = matching.iter().map(|(r, _)| rules[*r].window).max()?;
        let absent = matching.iter().any(|(r, _)| rules[*r].absent.is_some());
        Some(Watched {
            id,
            series: Series {
                service: service.to_owned(),
                metric: metric.to_owned(),
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            },
            window: RollingWindow::new(span, SUB_WINDOW),
            rules: matching,
            absent,
            known_since: None,
            complete_from,
        })
    }
}

/// The watched series of one partition and how far its messages have been fed.
#[derive(Debug)]
pub struct PartitionWatch {
    /// The next offset to feed.
    fed_next: i64,
    /// Until the feed reaches this offset, the windows are being rebuilt.
    ready_at: i64,
    /// Every series seen, by id: `None` when no rule matches it.
    series: HashMap<i64, Option<Watched>>,
    /// Chunk ids fed, with the newest event time of the chunk's message.
    chunks: HashMap<String, i64>,
    /// What a series first watched from now on has complete: everything until the last
    /// reload, which may have made it watched although it had samples before.
    complete_from: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `rule` watches the series.
pub fn matches(rule: &Rule, service: &str, metric: &str, tags: &[(&str, &str)]) -> bool {
    (rule.service == "*" || rule.service == service)
        && rule.metric == metric
        && rule
            .tags
            .iter()
            .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v))
}

impl PartitionWatch {
    /// A partition whose feed starts at `from` and is complete once it reaches `ready_at`.
    pub fn new(from: i64, ready_at: i64) -> Self {
        Self {
            fed_next: from,
            ready_at,
            series: HashMap::new(),
            chunks: HashMap::new(),
            complete_from: i64::MIN,
        }
    }

    /// Whether the windows hold everything since the longest window began.
    pub fn is_ready(&self) -> bool {
        self.fed_next >= self.ready_at
    }

    /// The windows hold only what is fed from now on (`at_ms`): a rule waits until its
    /// window lies wholly after it.
    pub fn complete_from(&mut self, at_ms: i64) {
        self.complete_from = at_ms;
    }

    /// The next offset to feed.
    pub fn fed_next(&self) -> i64 {
        self.fed_next
    }

    /// Whether the message at `offset` is still to be fed.
    pub fn wants(&self, offset: i64) -> bool {
        offset >= self.fed_next
    }

    /// Feeds the samples of the message at `offset` to the windows of the series the
    /// `rules` watch; each window spans the longest window of the rules watching it.
    pub fn feed(&mut self, rules: &[Rule], offset: i64, batch: &SampleBatchView<'_>, now_ms: i64) {
        if !self.wants(offset) {
            return;
        }
        self.fed_next = offset + 1;
        // A message with a bad sample is set aside whole by the fold: not fed either.
        if batch.samples.iter().any(|s| {
            tidemark_model::sample::check_wire_values(s.value, s.count, s.timestamp).is_err()
        }) {
            return;
        }
        let mut skipped = vec![false; batch.samples.len()];
        for chunk in &batch.chunks {
            if self.chunks.contains_key(chunk.id) {
                let first = chunk.first.max(0) as usize;
                let end = (first + chunk.count.max(0) as usize).min(skipped.len());
                skipped[first.min(end)..end].fill(true);
            } else {
                self.chunks.insert(chunk.id.to_owned(), now_ms);
            }
        }
        for (s, skip) in batch.samples.iter().zip(skipped) {
            if skip {
                continue;
            }
            let id = series_id(s.service, s.metric, s.tags.iter().copied());
            let watched = self.series.entry(id).or_insert_with(|| {
                Watched::of(rules, id, s.service, s.metric, &s.tags, self.complete_from)
            });
            if let Some(w) = watched {
                let taken =
                    w.window
                        .add(s.value, s.count.max(1) as u64, s.error, s.timestamp, now_ms);
                if taken {
                    w.known_since = Some(w.known_since.map_or(s.timestamp, |k| k.min(s.timestamp)));
                }
            }
        }
    }

    /// Sets the state of a series and rule known from stored state (the series may have
    /// no samples any more: its rules must still see it, to resolve for missing data).
    /// A series the rule no longer watches (its match changed) is left alone.
    pub fn restore(
        &mut self,
        rules: &[Rule],
        id: i64,
        series: &Series,
        rule: usize,
        state: SeriesState,
    ) {
        let tags: Vec<(&str, &str)> = series
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let watched = self.series.entry(id).or_insert_with(|| {
            Watched::of(
                rules,
                id,
                &series.service,
                &series.metric,
                &tags,
                self.complete_from,
            )
        });
        let Some(w) = watched.as_mut() else { return };
        if let Some((_, s)) = w.rules.iter_mut().find(|(r, _)| *r == rule) {
            if state.phase != Phase::Inactive {
                w.known_since = Some(i64::MIN);
            }
            *s = state;
        }
    }

    pub fn watched(&self) -> impl Iterator<Item = &Watched> {
        self.series.values().flatten()
    }

    pub fn watched_mut(&mut self) -> impl Iterator<Item = &mut Watched> {
        self.series.values_mut().flatten()
    }

    /// Evaluates every rule over every watched series at `at`, each over the samples with
    /// event time in `[at - window, at)` rounded out to whole sub-windows (`at` need not
    /// lie on a sub-window boundary: the window then covers up to one sub-window more,
    /// never less, and `rate` divides by what it covers). States without a transition
    /// change here; a transition comes back as its breach and the state that caused it.
    pub fn evaluate(&mut self, rules: &[Rule], at: DateTime<Utc>) -> Vec<(Breach, SeriesState)> {
        let at_ms = at.timestamp_millis();
        let mut out = Vec::new();
        for w in self.watched_mut() {
            for (r, state) in &mut w.rules {
                let rule = &rules[*r];
                let from = at_ms.saturating_sub(millis(rule.window));
                if from < w.complete_from {
                    continue; // its window is not complete yet
                }
                if rule.absent.is_some() && w.known_since.is_none_or(|k| k >= at_ms) {
                    continue; // it has not started reporting yet
                }
                let start = from - from.rem_euclid(millis(SUB_WINDOW));
                let span = Duration::from_millis(u64::try_from(at_ms - start).unwrap_or(0));
                let summary = w.window.summary(start, at_ms);
                let mut next = state.clone();
                match eval::evaluate_over(rule, &mut next, at, &summary, span) {
                    None => *state = next,
                    Some(t) => {
                        let fp = breach::fingerprint(&rule.name, w.id);
                        out.push((breach::of(rule, &fp, &w.series, &t), next));
                    }
                }
            }
        }
        out
    }

    /// Moves to `new` rules, matched to `old` ones by name: a series keeps its state
    /// with each rule that still watches it. A series that a reload makes watched, or
    /// whose window grows, has only the samples fed since it was last watched: its rules
    /// whose windows reach before `at_ms` (the reload) wait until they no longer do, so a
    /// reload never invents a transition. Series no rule watches any more are
    /// forgotten, with their states (their open alerts stay as they are).
    pub fn reload(&mut self, old: &[Rule], new: &[Rule], at_ms: i64) {
        self.complete_from = at_ms;
        self.series.retain(|_, watched| watched.is_some());
        for (_, slot) in self.series.iter_mut() {
            let Some(w) = slot.take() else { continue };
            let tags: Vec<(&str, &str)> = w
                .series
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let Some(mut moved) = Watched::of(
                new,
                w.id,
                &w.series.service,
                &w.series.metric,
                &tags,
                w.complete_from,
            ) else {
                continue;
            };
            for (r, state) in &mut moved.rules {
                if let Some((_, kept)) = w.rules.iter().find(|(o, _)| old[*o].name == new[*r].name)
                {
                    *state = kept.clone();
                }
            }
            let held = w.window.span();
            let wanted = moved.window.span();
            moved.window = w.window;
            moved.known_since = w.known_since;
            if wanted > held {
                moved.window.set_span(wanted);
                moved.complete_from = moved.complete_from.max(at_ms.saturating_sub(millis(held)));
            }
            *slot = Some(moved);
        }
        self.series.retain(|_, watched| watched.is_some());
    }

    /// Keeps the states of transitions that were published.
    pub fn keep(&mut self, rules: &[Rule], published: Vec<(Breach, SeriesState)>) {
        let mut by_fingerprint: HashMap<String, SeriesState> = published
            .into_iter()
            .map(|(b, s)| (b.fingerprint, s))
            .collect();
        for w in self.watched_mut() {
            for (r, state) in &mut w.rules {
                if let Some(s) = by_fingerprint.remove(&breach::fingerprint(&rules[*r].name, w.id))
                {
                    *state = s;
                }
            }
        }
    }

    /// Forgets what lies before `before_ms`: sub-windows, chunk ids, and watched series
    /// left with no samples and no rule in a pending or firing state, unless an absent
    /// rule watches them and they are known.
    pub fn prune(&mut self, before_ms: i64) {
        self.chunks.retain(|_, seen| *seen >= before_ms);
        self.series.retain(|_, watched| match watched {
            None => true,
            Some(w) => {
                w.window.prune(before_ms);
                (w.absent && w.known_since.is_some())
                    || !w.window.is_empty()
                    || w.rules.iter().any(|(_, s)| s.phase != Phase::Inactive)
            }
        });
    }

    /// Bytes held by the windows (for the memory gauge).
    pub fn approx_bytes(&self) -> usize {
        self.series
            .values()
            .flatten()
            .map(|w| w.window.approx_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::{Chunk, SampleBatch, WireSample};

    const NOW: i64 = 1_790_000_000_000;

    fn rules() -> Vec<Rule> {
        crate::parse(
            "rules:
  - {name: eu, service: api, metric: lat, tags: {region: eu}, stat: count, window: 1m, op: '>', threshold: 1, severity: warning}
  - {name: any, service: '*', metric: lat, stat: max, window: 5m, op: '>', threshold: 1, severity: warning}
receivers: []
routes: []
",
        )
        .unwrap()
    }

    fn batch(samples: &[(&str, &str, &str)], chunks: Vec<Chunk>) -> SampleBatch {
        SampleBatch {
            batch_id: "b".into(),
            produced_at: NOW,
            samples: samples
                .iter()
                .map(|(service, metric, region)| WireSample {
                    service: (*service).into(),
                    metric: (*metric).into(),
                    value: 7.0,
                    count: 1,
                    error: false,
                    timestamp: NOW - 1_000,
                    tags: [("region".to_owned(), (*region).to_owned())].into(),
                })
                .collect(),
            chunks,
        }
    }

    /// Watched series as (service, region, rule names, samples in the window).
    fn watched(w: &mut PartitionWatch, rules: &[Rule]) -> Vec<(String, String, Vec<String>, u64)> {
        let mut out: Vec<_> = w
            .watched_mut()
            .map(|w| {
                (
                    w.series.service.clone(),
                    w.series.tags["region"].clone(),
                    w.rules
                        .iter()
                        .map(|(r, _)| rules[*r].name.clone())
                        .collect(),
                    w.window.summary(NOW - 60_000, NOW + 10_000).count,
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn only_matching_series_are_watched_each_by_its_rules() {
        let rules = rules();
        let mut w = PartitionWatch::new(0, 0);
        let b = batch(
            &[
                ("api", "lat", "eu"),
                ("web", "lat", "us"),
                ("api", "other", "eu"),
            ],
            vec![],
        );
        w.feed(&rules, 0, &b.view(), NOW);
        assert_eq!(
            watched(&mut w, &rules),
            vec![
                (
                    "api".into(),
                    "eu".into(),
                    vec!["eu".into(), "any".into()],
                    1
                ),
                ("web".into(), "us".into(), vec!["any".into()], 1),
            ]
        );
    }

    #[test]
    fn a_message_or_a_chunk_fed_twice_counts_once() {
        let rules = rules();
        let mut w = PartitionWatch::new(5, 7);
        assert!(!w.is_ready());
        let chunk = || {
            vec![Chunk {
                id: "c1".into(),
                first: 0,
                count: 1,
            }]
        };
        let b = batch(&[("api", "lat", "eu")], chunk());
        w.feed(&rules, 4, &b.view(), NOW); // before the start: skipped
        w.feed(&rules, 5, &b.view(), NOW);
        w.feed(&rules, 5, &b.view(), NOW); // read again after a refetch
        w.feed(&rules, 6, &b.view(), NOW); // a client's retry of the same chunk
        assert!(w.is_ready());
        assert_eq!(watched(&mut w, &rules)[0].3, 1);
        w.feed(
            &rules,
            7,
            &batch(&[("api", "lat", "eu")], vec![]).view(),
            NOW,
        );
        assert_eq!(watched(&mut w, &rules)[0].3, 2);
    }

    #[test]
    fn a_message_with_a_bad_sample_is_not_fed() {
        let rules = rules();
        let mut w = PartitionWatch::new(0, 0);
        let mut b = batch(&[("api", "lat", "eu"), ("api", "lat", "eu")], vec![]);
        b.samples[1].value = f64::NAN;
        w.feed(&rules, 0, &b.view(), NOW);
        assert!(watched(&mut w, &rules).is_empty());
        assert!(!w.wants(0), "its offset is passed all the same");
    }

    #[test]
    fn a_restored_series_keeps_every_matching_rule_and_outlives_its_samples() {
        let rules = rules();
        let mut w = PartitionWatch::new(0, 0);
        let series = Series {
            service: "api".into(),
            metric: "lat".into(),
            tags: [("region".to_owned(), "eu".to_owned())].into(),
        };
        let id = series_id("api", "lat", [("region", "eu")]);
        let firing: SeriesState = serde_json::from_value(serde_json::json!({
            "phase": "firing", "since": "2026-09-21T00:00:00Z", "severity": "warning",
            "last_held": "2026-09-21T00:00:00Z", "missing": 0, "seq": 4
        }))
        .unwrap();
        w.restore(&rules, id, &series, 1, firing.clone());
        let all = watched(&mut w, &rules);
        assert_eq!(all[0].2, vec!["eu".to_owned(), "any".to_owned()]);
        w.prune(NOW + 3_600_000);
        let kept: Vec<_> = w.watched_mut().map(|w| w.rules[1].1.clone()).collect();
        assert_eq!(
            kept,
            vec![firing],
            "a firing series without samples is kept"
        );
        w.feed(
            &rules,
            0,
            &batch(&[("web", "lat", "us")], vec![]).view(),
            NOW,
        );
        w.prune(NOW + 3_600_000);
        assert_eq!(
            watched(&mut w, &rules).len(),
            1,
            "an idle inactive series is forgotten"
        );
    }

    #[test]
    fn an_evaluation_announces_each_transition_once_it_is_kept() {
        let rules = rules();
        let mut w = PartitionWatch::new(0, 0);
        let b = batch(&[("api", "lat", "eu"), ("api", "lat", "eu")], vec![]);
        w.feed(&rules, 0, &b.view(), NOW);
        let at = DateTime::from_timestamp_millis(NOW).unwrap();
        let out = w.evaluate(&rules, at);
        let mut seen: Vec<_> = out
            .iter()
            .map(|(b, s)| (b.rule.as_str(), b.state, b.value, b.seq, s.seq))
            .collect();
        seen.sort_by_key(|s| s.0);
        assert_eq!(
            seen,
            vec![
                (
                    "any",
                    tidemark_schemas::BreachState::Firing,
                    Some(7.0),
                    1,
                    1
                ),
                ("eu", tidemark_schemas::BreachState::Firing, Some(2.0), 1, 1),
            ]
        );
        let id = series_id("api", "lat", [("region", "eu")]);
        assert_eq!(
            out[0].0.fingerprint,
            breach::fingerprint(&out[0].0.rule, id)
        );
        // Not kept (unpublished): announced again, with the same seq.
        assert_eq!(w.evaluate(&rules, at).len(), 2);
        w.keep(&rules, out);
        assert!(
            w.evaluate(&rules, at).is_empty(),
            "kept: nothing new to announce"
        );
    }

    /// A heartbeat of checkout at `ts`.
    fn heartbeat(ts: i64) -> SampleBatch {
        let mut b = batch(&[("checkout", "heartbeat", "eu")], vec![]);
        b.samples[0].timestamp = ts;
        b
    }

    fn absent_rules() -> Vec<Rule> {
        crate::parse(
            "rules:
  - {name: heartbeat, service: checkout, metric: heartbeat, absent: 2m, for: 1m, severity: critical, annotations: {summary: '{{ value }} heartbeats'}}
  - {name: any, service: '*', metric: lat, stat: max, window: 5m, op: '>', threshold: 100, severity: warning}
receivers: []
routes: []
",
        )
        .unwrap()
    }

    #[test]
    fn an_absent_rule_fires_once_its_series_is_silent_for_its_duration_and_resolves_on_a_sample() {
        let rules = absent_rules();
        let t = NOW - NOW.rem_euclid(60_000);
        // Every 10 s from t - 1m until t, then one at t + 5m. The first evaluation, at
        // t - 1m, has the first sample at its very instant, outside its window: the
        // series has not started, it is not silent.
        let fed: Vec<i64> = (-6..0)
            .map(|n| t + n * 10_000)
            .chain([t + 300_000])
            .collect();
        let mut w = PartitionWatch::new(0, 0);
        let mut seen = Vec::new();
        for step in -6..=60 {
            let at_ms = t + step * 10_000;
            for (offset, &ts) in fed.iter().enumerate() {
                if ts <= at_ms {
                    w.feed(&rules, offset as i64, &heartbeat(ts).view(), ts);
                }
            }
            let at = DateTime::from_timestamp_millis(at_ms).unwrap();
            let out = w.evaluate(&rules, at);
            for (b, _) in &out {
                let summary = b.annotations["summary"].clone();
                seen.push((at_ms - t, b.state, b.value, b.reason.clone(), summary));
            }
            // As the aggregator does: the sweep comes before the states are kept.
            w.prune(at_ms - 120_000 - 10_000);
            w.keep(&rules, out);
        }
        use tidemark_schemas::BreachState::{Firing, Ok, Pending};
        let row = |at, state, value, reason: &str, summary: &str| {
            (
                at,
                state,
                Some(value),
                reason.to_owned(),
                summary.to_owned(),
            )
        };
        assert_eq!(
            seen,
            vec![
                row(120_000, Pending, 0.0, "breached", "0 heartbeats"),
                row(180_000, Firing, 0.0, "breached", "0 heartbeats"),
                row(310_000, Ok, 1.0, "recovered", "1 heartbeats"),
                // That sample's 10 s sub-window ends at 5m10s: silent 2m from there.
                row(430_000, Pending, 0.0, "breached", "0 heartbeats"),
                row(490_000, Firing, 0.0, "breached", "0 heartbeats"),
            ]
        );
        let breach = {
            let mut w = PartitionWatch::new(0, 0);
            w.feed(&rules, 0, &heartbeat(t - 10_000).view(), t - 10_000);
            let mut out = w.evaluate(
                &rules,
                DateTime::from_timestamp_millis(t + 120_000).unwrap(),
            );
            out.remove(0).0
        };
        assert_eq!(
            (
                breach.stat.as_str(),
                breach.op.as_str(),
                breach.threshold,
                breach.window
            ),
            ("count", "<", 1.0, 120_000)
        );
    }

    #[test]
    fn a_series_an_absent_rule_watches_is_never_pruned() {
        let rules = absent_rules();
        let mut w = PartitionWatch::new(0, 0);
        w.feed(&rules, 0, &heartbeat(NOW - 1_000).view(), NOW);
        w.feed(
            &rules,
            1,
            &batch(&[("web", "lat", "us")], vec![]).view(),
            NOW,
        );
        // An hour later, still inactive (say its pending transition was not published).
        w.prune(NOW + 3_600_000);
        let left: Vec<_> = w.watched().map(|w| w.series.metric.clone()).collect();
        assert_eq!(left, vec!["heartbeat".to_owned()]);
        let later = DateTime::from_timestamp_millis(NOW + 3_600_000).unwrap();
        let out = w.evaluate(&rules, later);
        assert_eq!(
            out.iter()
                .map(|(b, _)| (b.rule.as_str(), b.state))
                .collect::<Vec<_>>(),
            vec![("heartbeat", tidemark_schemas::BreachState::Pending)]
        );
        // A reload that drops the absent rule lets it go.
        let rest = rules[1..].to_vec();
        w.reload(&rules, &rest, NOW + 3_600_000);
        w.prune(NOW + 3_600_000);
        assert_eq!(w.watched().count(), 0);
    }

    #[test]
    fn a_reload_keeps_states_by_name_and_waits_for_windows_it_grew() {
        let old = rules();
        let new = crate::parse(
            "rules:
  - {name: any, service: '*', metric: lat, stat: max, window: 5m, op: '>', threshold: 100, severity: warning}
  - {name: wide, service: api, metric: lat, stat: count, window: 10m, op: '>', threshold: 1, severity: warning}
receivers: []
routes: []
",
        )
        .unwrap();
        let mut w = PartitionWatch::new(0, 0);
        w.feed(
            &old,
            0,
            &batch(&[("api", "lat", "eu"), ("web", "lat", "us")], vec![]).view(),
            NOW,
        );
        let at = DateTime::from_timestamp_millis(NOW).unwrap();
        let fired = w.evaluate(&old, at);
        assert_eq!(
            fired.len(),
            2,
            "any over api and over web (eu counts 1, not > 1)"
        );
        w.keep(&old, fired);
        w.reload(&old, &new, NOW);
        let mut names = watched(&mut w, &new);
        names.iter_mut().for_each(|n| n.3 = 0);
        assert_eq!(
            names,
            vec![
                (
                    "api".into(),
                    "eu".into(),
                    vec!["any".into(), "wide".into()],
                    0
                ),
                ("web".into(), "us".into(), vec!["any".into()], 0),
            ]
        );
        // `any` keeps its firing state (the threshold rose above 7: it resolves); `wide`
        // reaches 10 min back, 5 min before the reload: it waits until then.
        let out = w.evaluate(&new, at);
        let seen: Vec<_> = out
            .iter()
            .map(|(b, _)| (b.rule.as_str(), b.state, b.seq))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("any", tidemark_schemas::BreachState::Ok, 2),
                ("any", tidemark_schemas::BreachState::Ok, 2),
            ]
        );
        let later = DateTime::from_timestamp_millis(NOW + 10 * 60_000).unwrap();
        let mut recent = batch(&[("api", "lat", "eu"), ("api", "lat", "eu")], vec![]);
        for sample in &mut recent.samples {
            sample.timestamp = NOW + 9 * 60_000;
        }
        w.feed(&new, 1, &recent.view(), NOW + 10 * 60_000 - 1);
        let wide: Vec<_> = w
            .evaluate(&new, later)
            .into_iter()
            .filter(|(b, _)| b.rule == "wide")
            .map(|(b, _)| (b.state, b.seq))
            .collect();
        assert_eq!(wide, vec![(tidemark_schemas::BreachState::Firing, 1)]);
    }

    #[test]
    fn a_window_between_sub_window_boundaries_covers_at_least_its_length() {
        let rules = crate::parse(
            "rules:
  - {name: slow, service: api, metric: lat, stat: count, window: 10s, op: '<', threshold: 1, severity: warning}
receivers: []
routes: []
",
        )
        .unwrap();
        let mut w = PartitionWatch::new(0, 0);
        // NOW is on a 10 s boundary; a sample 3 s before it, evaluated 7 s after it: the
        // sample lies within [at - 10 s, at), so the window must hold it.
        let mut b = batch(&[("api", "lat", "eu")], vec![]);
        b.samples[0].timestamp = NOW - 3_000;
        w.feed(&rules, 0, &b.view(), NOW);
        let at = DateTime::from_timestamp_millis(NOW + 7_000).unwrap();
        assert!(w.evaluate(&rules, at).is_empty(), "count 1: not below 1");
    }
}
